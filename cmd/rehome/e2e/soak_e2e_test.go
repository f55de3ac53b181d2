package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/cmd/rehome/faultplan"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/objects"
)

// The soak's cluster and client. Chunks are 512 KiB (the client's choice,
// kept in each manifest) so that objects around chunk and stripe
// boundaries stay small; every node gets a capacity far above what a soak
// of minutes writes, so that a full disk is the injected one (made of
// fillers of at most soakFiller bytes: a node refuses larger shards).
const (
	soakChunk    = 512 << 10
	soakCapacity = 4 << 30
	soakFiller   = 60 << 20
	soakNodes    = 7 // one more than 4+2: erasure-coded writes go on while a node is down
	// soakRecover bounds how long a process may take to be back after its
	// fault is cleared (restarted and registered, or resumed and up).
	soakRecover = 60 * time.Second
	// soakOpTimeout bounds one put or get of the client.
	soakOpTimeout = time.Minute
)

// soakSettings are the soak's knobs, from the environment.
type soakSettings struct {
	seed uint64        // SEED (random when unset; printed at start)
	dur  time.Duration // SOAK_FOR: how long faults are injected (50s when unset: make test's soak)
	heal time.Duration // SOAK_HEAL: the bound on healing after the last fault (3m when unset)
}

func soakSettingsFromEnv(t *testing.T) soakSettings {
	t.Helper()
	s := soakSettings{seed: mrand.Uint64() % 1e9, dur: 50 * time.Second, heal: 3 * time.Minute}
	if v := os.Getenv("SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SEED=%q: want a non-negative integer", v)
		}
		s.seed = n
	}
	for _, kv := range []struct {
		env string
		d   *time.Duration
	}{{"SOAK_FOR", &s.dur}, {"SOAK_HEAL", &s.heal}} {
		if v := os.Getenv(kv.env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a positive duration such as 5m", kv.env, v)
			}
			*kv.d = d
		}
	}
	// A soak of a chosen length must fit in go test's -timeout, or it
	// would be killed with no summary (make test's short one fits in its).
	if dl, ok := t.Deadline(); ok && os.Getenv("SOAK_FOR") != "" && time.Until(dl) < s.dur+s.heal+5*time.Minute {
		t.Fatalf("SOAK_FOR=%s plus SOAK_HEAL=%s does not fit in go test's -timeout (%s left): raise SOAK_TIMEOUT", s.dur, s.heal, time.Until(dl).Round(time.Second))
	}
	return s
}

// TestSoak is `make soak` (and, for 50 s, part of make test): a rehome dev
// cluster (7 nodes on 3 racks, 2 planners, 2 movers, short grace), a client
// writing replicated and erasure-coded objects and reading them back, and
// faults drawn from SEED (package faultplan) for SOAK_FOR: storage nodes
// killed and restarted under the same identity, paused shorter and longer
// than the down time, their disks filled; movers and planners killed and
// restarted. Then it waits, within SOAK_HEAL, for the cluster to heal and
// reads every acknowledged object one last time: any lost or corrupt one,
// or no heal in time, fails it. It prints a summary either way.
func TestSoak(t *testing.T) {
	set := soakSettingsFromEnv(t)
	t.Logf("soak: SEED=%d SOAK_FOR=%s SOAK_HEAL=%s (repeat with: make soak SEED=%d SOAK_FOR=%s)", set.seed, set.dur, set.heal, set.seed, set.dur)
	c := startDev(t, append([]string{"--nodes", strconv.Itoa(soakNodes), "--racks", "3", "--planners", "2", "--movers", "2",
		"--capacity", strconv.Itoa(soakCapacity)}, detectorTiming...)...)
	waitHealthy(t, c, soakNodes)

	var nodes, movers, planners []string
	pids := map[string]int{}
	for _, p := range c.processes() {
		pids[p.ID] = p.PID
		switch p.Role {
		case "storage":
			nodes = append(nodes, p.ID)
		case "mover":
			movers = append(movers, p.ID)
		case "planner":
			planners = append(planners, p.ID)
		}
	}
	plan, err := faultplan.New(faultplan.Config{Seed: set.seed, For: set.dur, Down: suspectPlusGrace,
		Nodes: nodes, Movers: movers, Planners: planners})
	if err != nil {
		t.Fatal(err)
	}
	sum := &soakSummary{set: set, faults: map[faultplan.Kind]int{}}
	// Registered after startDev, so it runs before the cluster stops.
	t.Cleanup(func() { sum.report(t) })

	cl := startSoakClient(t, c, set.seed)
	t.Cleanup(cl.halt) // should the soak fail before it halts the client
	sum.client = cl
	inj := &injector{t: t, c: c, pids: pids, sum: sum}
	start := time.Now()
	inj.run(plan, start.Add(set.dur))
	cl.halt()
	t.Logf("faults over after %s; client stopped; waiting for the heal", time.Since(start).Round(time.Millisecond))

	// Bounded: every node up, nothing under-replicated, lost or in flight.
	healStart := time.Now()
	bustest.CheckFor(t, set.heal, func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		down := 0
		for _, n := range st.Nodes {
			if n.State != "up" || n.Full {
				down++
			}
		}
		if down > 0 || len(st.Nodes) != soakNodes || st.UnderReplicated != 0 || st.Lost != 0 || st.InFlight != 0 {
			return fmt.Errorf("not healed: %d nodes listed, %d not up or full; under-replicated %d, lost %d, in flight %d",
				len(st.Nodes), down, st.UnderReplicated, st.Lost, st.InFlight)
		}
		return nil
	})
	sum.healedAfter = time.Since(inj.lastCleared)
	sum.healWait = time.Since(healStart)
	sum.healed = true

	sum.final = cl.verifyAll()
	sum.verified = true
	if err := sum.final.failure(len(cl.corrupt)); err != nil {
		t.Fatal(err)
	}
}

// TestSoakVerifierCatchesPlantedLoss proves the soak's verdict can fail:
// on a fault-free cluster the soak's client writes a few objects, then,
// behind the cluster's back, every copy of one acknowledged replicated
// object is deleted from the nodes' disks, three of the six pieces of an
// erasure-coded one (more than its 2 parity pieces), and the client's
// record of a third object no longer matches what the cluster returns
// (as if its bytes had changed). The final verification reports the first
// two lost and the third corrupt, verifies the rest, and the soak's
// verdict is a failure.
func TestSoakVerifierCatchesPlantedLoss(t *testing.T) {
	c := startDev(t, "--nodes", "6", "--racks", "3")
	waitHealthy(t, c, 6)
	cl := startSoakClient(t, c, 1)
	t.Cleanup(cl.halt)
	enough := func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		rep, ec := 0, 0
		for _, o := range cl.acked {
			if o.erasure {
				ec++
			} else {
				rep++
			}
		}
		return rep >= 3 && ec >= 1
	}
	waitFor(t, 60*time.Second, "three replicated and one erasure-coded object acknowledged", enough)
	cl.halt()

	var replicated, erasure, tampered string
	for _, key := range cl.keys {
		switch o := cl.acked[key]; {
		case o.erasure && erasure == "":
			erasure = key
		case !o.erasure && o.size > 0 && replicated == "":
			replicated = key
		case !o.erasure && tampered == "":
			tampered = key
		}
	}
	if replicated == "" || erasure == "" || tampered == "" {
		t.Fatalf("acknowledged %v: want a non-empty replicated object, another one and an erasure-coded one", cl.keys)
	}
	oc := c.objects(t)
	remove := func(key string, views []objects.ShardView) {
		for _, sv := range views {
			for _, node := range sv.Nodes {
				if err := os.Remove(filepath.Join(c.dir, node, "shards", sv.ID[:2], sv.ID)); err != nil {
					t.Fatalf("plant the loss of %s: %v", key, err)
				}
			}
		}
	}
	in, err := oc.Inspect(context.Background(), replicated)
	if err != nil {
		t.Fatal(err)
	}
	remove(replicated, in.Shards) // every copy of every chunk
	in, err = oc.Inspect(context.Background(), erasure)
	if err != nil {
		t.Fatal(err)
	}
	remove(erasure, in.Shards[:ecLayout.M+1]) // three pieces of its first stripe
	o := cl.acked[tampered]
	o.sum[0] ^= 1
	cl.acked[tampered] = o

	v := cl.verifyAll()
	t.Logf("planted: %s and %s lost, %s tampered; verdict: %d verified, %d lost, %d corrupt", replicated, erasure, tampered, v.verified, len(v.lost), len(v.corrupt))
	named := func(list []string, key string) bool {
		return slices.ContainsFunc(list, func(e string) bool { return strings.Contains(e, "get "+key+":") })
	}
	if len(v.lost) != 2 || !named(v.lost, replicated) || !named(v.lost, erasure) {
		t.Errorf("lost %q: want exactly %s and %s", v.lost, replicated, erasure)
	}
	if len(v.corrupt) != 1 || !named(v.corrupt, tampered) {
		t.Errorf("corrupt %q: want exactly %s", v.corrupt, tampered)
	}
	if v.verified != len(cl.keys)-3 {
		t.Errorf("verified %d of %d acknowledged, want all but the 3 planted", v.verified, len(cl.keys))
	}
	if err := v.failure(0); err == nil || !strings.Contains(err.Error(), "2 lost, 1 corrupt") {
		t.Errorf("the soak's verdict: %v, want a failure naming 2 lost and 1 corrupt", err)
	}
}

// soakObject is what the client keeps of an acknowledged object: not its
// bytes, their size and digest.
type soakObject struct {
	size    int64
	sum     [sha256.Size]byte
	erasure bool
}

// soakClient writes new objects and reads back acknowledged ones until
// halted; what it counts is read under mu.
type soakClient struct {
	oc      *objects.Client
	seed    uint64
	stop    chan struct{}
	halting sync.Once
	done    chan struct{}

	mu          sync.Mutex
	acked       map[string]soakObject
	keys        []string // acknowledged, in order
	written     int
	writtenEC   int
	bytes       int64
	failed      int
	firstFailed string
	reads       int
	readErrs    int
	firstRead   string
	corrupt     []string // reads that returned other bytes without an error
}

func startSoakClient(t *testing.T, c *cluster, seed uint64) *soakClient {
	t.Helper()
	oc := c.objects(t)
	oc.ChunkSize = soakChunk
	cl := &soakClient{oc: oc, seed: seed, acked: map[string]soakObject{}, stop: make(chan struct{}), done: make(chan struct{})}
	go cl.run()
	return cl
}

// soakSize draws an object's size and layout: small ones, and sizes at
// chunk boundaries (replicated) and stripe boundaries (erasure-coded).
func soakSize(rng *mrand.Rand) (int64, model.Layout) {
	edge := func(b int64) int64 { return b + rng.Int64N(3) - 1 } // b-1, b or b+1
	stripe := int64(ecLayout.K) * soakChunk
	switch r := rng.IntN(10); {
	case r < 3:
		return rng.Int64N(64 << 10), model.Layout{} // small, zero bytes included
	case r < 5:
		return edge(soakChunk * (1 + rng.Int64N(2))), model.Layout{}
	case r < 6:
		return rng.Int64N(64<<10) + 1, ecLayout
	case r < 8:
		return edge(stripe), ecLayout
	default:
		return edge(soakChunk * (1 + rng.Int64N(3))), ecLayout // part of a stripe
	}
}

// soakBody is object i's content: a ChaCha8 stream keyed by the seed and i,
// so it never needs to be kept.
func soakBody(seed uint64, i int, size int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(i))
	return io.LimitReader(mrand.NewChaCha8(key), size)
}

func (cl *soakClient) run() {
	defer close(cl.done)
	rng := mrand.New(mrand.NewPCG(cl.seed, 1))
	for i := 0; ; i++ {
		select {
		case <-cl.stop:
			return
		default:
		}
		cl.put(i, rng)
		cl.mu.Lock()
		key := ""
		if len(cl.keys) > 0 {
			key = cl.keys[rng.IntN(len(cl.keys))]
		}
		cl.mu.Unlock()
		if key != "" {
			cl.readOnce(key)
		}
	}
}

func (cl *soakClient) put(i int, rng *mrand.Rand) {
	key := fmt.Sprintf("soak-%06d", i)
	size, layout := soakSize(rng)
	h := sha256.New()
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	_, err := cl.oc.Put(ctx, key, io.TeeReader(soakBody(cl.seed, i, size), h), size, objects.PutOptions{Layout: layout})
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err != nil {
		// Not acknowledged: not a loss, counted.
		cl.failed++
		if cl.firstFailed == "" {
			cl.firstFailed = fmt.Sprintf("put %s (%d bytes): %v", key, size, err)
		}
		return
	}
	o := soakObject{size: size, erasure: layout.Erasure()}
	h.Sum(o.sum[:0])
	cl.acked[key] = o
	cl.keys = append(cl.keys, key)
	cl.written++
	cl.bytes += size
	if o.erasure {
		cl.writtenEC++
	}
}

// check reads key and compares its bytes with what was acknowledged: a read
// error is errRead-wrapped, other bytes errCorrupt-wrapped.
func (cl *soakClient) check(key string, want soakObject) error {
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	h := sha256.New()
	n := &countingWriter{w: h}
	if _, err := cl.oc.Get(ctx, key, n); err != nil {
		return fmt.Errorf("%w: get %s: %w", errRead, key, err)
	}
	if got := h.Sum(nil); n.n != want.size || !bytes.Equal(got, want.sum[:]) {
		return fmt.Errorf("%w: get %s: %d bytes with sha256 %x, acknowledged %d bytes with %x", errCorrupt, key, n.n, got, want.size, want.sum)
	}
	return nil
}

var (
	errRead    = errors.New("read failed")
	errCorrupt = errors.New("bytes differ")
)

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.w.Write(p)
}

// readOnce reads an acknowledged object during the run: a failed read
// (a node paused or dead) is counted, other bytes are a corruption.
func (cl *soakClient) readOnce(key string) {
	cl.mu.Lock()
	want := cl.acked[key]
	cl.mu.Unlock()
	err := cl.check(key, want)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.reads++
	switch {
	case errors.Is(err, errCorrupt):
		cl.corrupt = append(cl.corrupt, err.Error())
	case err != nil:
		cl.readErrs++
		if cl.firstRead == "" {
			cl.firstRead = err.Error()
		}
	}
}

// halt stops the client after its current operation and waits for it.
// Idempotent.
func (cl *soakClient) halt() {
	cl.halting.Do(func() { close(cl.stop) })
	<-cl.done
}

// soakVerdict is the last read of every acknowledged object.
type soakVerdict struct {
	verified      int
	lost, corrupt []string
}

// failure is the soak's verdict on v and the corrupt reads seen during the
// run: nil when every acknowledged object was intact.
func (v soakVerdict) failure(corruptDuringRun int) error {
	if len(v.lost) == 0 && len(v.corrupt) == 0 && corruptDuringRun == 0 {
		return nil
	}
	return fmt.Errorf("acknowledged objects not intact: %d lost, %d corrupt at the end, %d corrupt reads during the run",
		len(v.lost), len(v.corrupt), corruptDuringRun)
}

// verifyAll reads every acknowledged object (after halt); a failed read is
// tried once more before the object counts as lost.
func (cl *soakClient) verifyAll() soakVerdict {
	var v soakVerdict
	for _, key := range cl.keys {
		err := cl.check(key, cl.acked[key])
		if errors.Is(err, errRead) {
			err = cl.check(key, cl.acked[key])
		}
		switch {
		case err == nil:
			v.verified++
		case errors.Is(err, errCorrupt):
			v.corrupt = append(v.corrupt, err.Error())
		default:
			v.lost = append(v.lost, err.Error())
		}
	}
	return v
}

// injector applies a plan's faults to the cluster, one per lane at a time.
type injector struct {
	t           *testing.T
	c           *cluster
	pids        map[string]int // the live pid of each process (restarts change it)
	sum         *soakSummary
	lastCleared time.Time
}

// laneRun is one lane's progress through its faults.
type laneRun struct {
	faults []faultplan.Fault
	next   int
	freeAt time.Time // since when the lane has been free

	active  *faultplan.Fault
	started time.Time
	until   time.Time
	clear   func() (recovered func() error) // ends the active fault

	clearedAt time.Time
	recovered func() error // nil once recovered
	recoverBy time.Time
	checked   time.Time // the last recovery check (each is a CLI call)
	lastErr   error     // what that check said
}

// run injects the plan's faults until end, then clears any still active
// and waits for each process to be back; it fails the test if one is not
// within soakRecover.
func (inj *injector) run(plan faultplan.Plan, end time.Time) {
	now := time.Now()
	lanes := []*laneRun{{faults: plan.Nodes, freeAt: now}, {faults: plan.Services, freeAt: now}}
	inj.lastCleared = now
	bustest.CheckFor(inj.t, time.Until(end)+2*soakRecover, func() error {
		busy := false
		for _, l := range lanes {
			if inj.step(l, time.Now(), end) {
				busy = true
			}
		}
		if busy || time.Now().Before(end) {
			return errors.New("faults still active or recovering: " + inj.describe(lanes))
		}
		return nil
	})
}

// step moves one lane on at now and reports whether it is busy.
func (inj *injector) step(l *laneRun, now, end time.Time) bool {
	t := inj.t
	switch {
	case l.active != nil:
		if now.Before(l.until) && now.Before(end) {
			return true
		}
		// Held longer than planned when the loop waited on the cluster
		// (an injection reading cluster status while no planner acts).
		t.Logf("%s clear %s (held %s)", inj.stamp(), l.active, now.Sub(l.started).Round(time.Millisecond))
		l.recovered, l.recoverBy, l.clearedAt = l.clear(), now.Add(soakRecover), now
		l.active = nil
		inj.lastCleared = now
		return true
	case l.recovered != nil:
		if now.Sub(l.checked) < 250*time.Millisecond {
			return true
		}
		l.checked = now
		err := l.recovered()
		l.lastErr = err
		if err == nil {
			t.Logf("%s back %s after the clear", inj.stamp(), now.Sub(l.clearedAt).Round(time.Millisecond))
			l.recovered, l.freeAt = nil, now
			return false
		}
		if now.After(l.recoverBy) {
			t.Fatalf("not recovered %s after its fault was cleared: %v", soakRecover, err)
		}
		return true
	case l.next < len(l.faults):
		f := l.faults[l.next]
		if now.Before(l.freeAt.Add(f.Gap)) || !now.Add(f.Hold).Before(end) {
			return false
		}
		l.next++
		t.Logf("%s inject %s", inj.stamp(), f)
		l.active, l.until, l.started = &f, now.Add(f.Hold), now
		l.clear = inj.inject(f)
		inj.sum.faults[f.Kind]++
		return true
	}
	return false
}

func (inj *injector) stamp() string {
	return time.Now().UTC().Format("15:04:05.000")
}

func (inj *injector) describe(lanes []*laneRun) string {
	var parts []string
	for _, l := range lanes {
		switch {
		case l.active != nil:
			parts = append(parts, "active: "+l.active.String())
		case l.recovered != nil && l.lastErr != nil:
			parts = append(parts, "recovering: "+l.lastErr.Error())
		}
	}
	return strings.Join(parts, "; ")
}

// inject starts fault f and returns what ends it, which returns the check
// that the target is back.
func (inj *injector) inject(f faultplan.Fault) func() func() error {
	t, c, id := inj.t, inj.c, f.Target
	kill := func() {
		if err := syscall.Kill(inj.pids[id], syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s (pid %d): %v", id, inj.pids[id], err)
		}
	}
	signal := func(sig syscall.Signal) {
		if err := syscall.Kill(inj.pids[id], sig); err != nil {
			t.Fatalf("%s %s (pid %d): %v", sig, id, inj.pids[id], err)
		}
	}
	switch f.Kind {
	case faultplan.KillNode:
		old := c.nodeAddr(t, id)
		kill()
		return func() func() error {
			inj.pids[id] = c.restart(t, id)
			return func() error { return inj.nodeBack(id, old) }
		}
	case faultplan.PauseShort, faultplan.PauseLong:
		signal(syscall.SIGSTOP)
		// Should the soak fail during the pause, the node resumes before
		// the cleanups that stop it (a stopped process ignores SIGTERM).
		pid := inj.pids[id]
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
		return func() func() error {
			signal(syscall.SIGCONT)
			return func() error { return inj.nodeBack(id, "") }
		}
	case faultplan.FullDisk:
		fls := fillNode(t, c, id, c.nodeAddr(t, id))
		return func() func() error {
			for _, fl := range fls {
				fl.abort()
			}
			ended := 0
			return func() error {
				for ; ended < len(fls); ended++ {
					select {
					case <-fls[ended].res:
					default:
						return fmt.Errorf("%s: %d of %d fillers' writes have not ended", id, len(fls)-ended, len(fls))
					}
				}
				return inj.nodeBack(id, "")
			}
		}
	case faultplan.KillMover, faultplan.KillPlanner:
		kill()
		return func() func() error {
			inj.pids[id] = c.restart(t, id)
			return func() error { return inj.serviceBack(id) }
		}
	}
	t.Fatalf("unknown fault kind %q", f.Kind)
	return nil
}

// fillNode takes all the room node has left with fillers of at most
// soakFiller bytes, all writing at once.
func fillNode(t *testing.T, c *cluster, node, addr string) []*filler {
	t.Helper()
	var fls []*filler
	var held int64
	for i := 1; ; i++ {
		f, err := startFillerPart(t, c, node, addr, soakCapacity, fillerPart{id: fmt.Sprintf("filler-%d", i), held: held, limit: soakFiller})
		switch {
		case errors.Is(err, errTooFull) && len(fls) > 0:
			return fls
		case err != nil:
			t.Fatal(err)
		}
		fls = append(fls, f)
		held += f.size
	}
}

// nodeBack reports whether storage node id is up and accepting shards
// (registered at another address than old, when old is set: restarted).
func (inj *injector) nodeBack(id, old string) error {
	st, err := inj.c.status()
	if err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if n.ID != id {
			continue
		}
		if n.State != "up" || n.Full || (old != "" && n.Addr == old) {
			return fmt.Errorf("%s is %s (full %v, address %s, before the restart %s)", id, n.State, n.Full, n.Addr, old)
		}
		return nil
	}
	return fmt.Errorf("%s not in cluster status", id)
}

// serviceBack reports whether a restarted service answers on /healthz
// (running and connected to the bus).
func (inj *injector) serviceBack(id string) error {
	for _, p := range inj.c.processes() {
		if p.ID != id {
			continue
		}
		hc := http.Client{Timeout: 2 * time.Second}
		resp, err := hc.Get("http://" + p.Metrics + "/healthz")
		if err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: /healthz answered %s", id, resp.Status)
		}
		return nil
	}
	return fmt.Errorf("%s not in processes.json", id)
}

// soakSummary is what the soak prints at its end, passed or failed.
type soakSummary struct {
	set         soakSettings
	faults      map[faultplan.Kind]int
	client      *soakClient
	healed      bool
	healedAfter time.Duration // from the last fault cleared to healthy
	healWait    time.Duration // from the client's halt to healthy
	verified    bool
	final       soakVerdict
}

func (s *soakSummary) report(t *testing.T) {
	var b strings.Builder
	fmt.Fprintf(&b, "soak summary: SEED=%d SOAK_FOR=%s\n", s.set.seed, s.set.dur)
	total := 0
	var kinds []string
	for _, k := range append(slices.Clone(faultplan.NodeKinds), faultplan.ServiceKinds...) {
		total += s.faults[k]
		kinds = append(kinds, fmt.Sprintf("%s %d", k, s.faults[k]))
	}
	fmt.Fprintf(&b, "  faults injected: %d (%s)\n", total, strings.Join(kinds, ", "))
	if cl := s.client; cl != nil {
		cl.mu.Lock()
		fmt.Fprintf(&b, "  objects acknowledged: %d (%d erasure-coded), %.1f MiB; writes failed (not acknowledged): %d\n",
			cl.written, cl.writtenEC, float64(cl.bytes)/(1<<20), cl.failed)
		if cl.firstFailed != "" {
			fmt.Fprintf(&b, "    first failed write: %s\n", cl.firstFailed)
		}
		fmt.Fprintf(&b, "  reads during the run: %d, failed %d, corrupt %d\n", cl.reads, cl.readErrs, len(cl.corrupt))
		if cl.firstRead != "" {
			fmt.Fprintf(&b, "    first failed read: %s\n", cl.firstRead)
		}
		for _, e := range first(cl.corrupt, 5) {
			fmt.Fprintf(&b, "    CORRUPT: %s\n", e)
		}
		cl.mu.Unlock()
	}
	if s.healed {
		fmt.Fprintf(&b, "  healthy %s after the last fault was cleared (%s after the client stopped)\n",
			s.healedAfter.Round(time.Millisecond), s.healWait.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "  NOT HEALED within SOAK_HEAL=%s (or the soak stopped before)\n", s.set.heal)
	}
	if s.verified {
		fmt.Fprintf(&b, "  final read of every acknowledged object: %d verified (sha256), %d lost, %d corrupt\n",
			s.final.verified, len(s.final.lost), len(s.final.corrupt))
		for _, e := range first(append(slices.Clone(s.final.lost), s.final.corrupt...), 10) {
			fmt.Fprintf(&b, "    %s\n", e)
		}
	}
	if t.Failed() {
		fmt.Fprintf(&b, "  FAILED: repeat with make soak SEED=%d SOAK_FOR=%s (logs of the cluster follow)", s.set.seed, s.set.dur)
	} else {
		b.WriteString("  PASSED: nothing acknowledged was lost")
	}
	t.Log(b.String())
	if d := os.Getenv("REHOME_ARTIFACTS"); d != "" {
		_ = os.MkdirAll(d, 0o755)
		_ = os.WriteFile(filepath.Join(d, "soak-summary.txt"), []byte(b.String()+"\n"), 0o644)
	}
}

func first(xs []string, n int) []string { return xs[:min(n, len(xs))] }
