package e2e

// Repair benchmarks through the real binary (SPEC §6, issue 4): `rehome dev`
// clusters, data written through the objects client, one storage process
// killed with SIGKILL, and the heal timed from the detector's down verdict to
// the planner's "healthy" (nothing under-replicated, nothing left to rebuild).
// Every ratio is measured against a reference taken in the same run. They
// run under `make bench` (go test -run '^$' -bench .), one experiment per
// b.N iteration; run them once with -benchtime 1x:
//
//	go test -run '^$' -bench 'Repair|GetLatency' -benchtime 1x ./cmd/rehome/e2e
//
// Sizes: REHOME_BENCH_QUICK=1 runs smaller experiments; REHOME_BENCH_MB sets
// the data written by BenchmarkRepairThroughput (MB),
// REHOME_BENCH_SMALL_OBJECTS the objects of
// BenchmarkControlMessagesPerRepairedShard and REHOME_BENCH_REBUILD_MB the
// data written by BenchmarkGetLatencyDuringRebuild.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/benchenv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/objects"
	"github.com/rehome/rehome/shared/shardapi"
)

const (
	// benchMovers is how many mover processes the benchmark clusters run
	// (rehome dev's default, passed explicitly).
	benchMovers = 2
	// benchMB is the unit of every MB figure: 10^6 bytes.
	benchMB = 1e6
	// benchHealTimeout bounds one heal.
	benchHealTimeout = 3 * time.Minute
)

// benchTiming makes a death a verdict within ~1.5 s: what is timed starts at
// the verdict anyway.
var benchTiming = []string{"--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "2s"}

// benchCluster is a `rehome dev` cluster with a bus connection, an objects
// client and a tap on the bus.
type benchCluster struct {
	*cluster
	b      *testing.B
	nodes  int
	nc     *nats.Conn
	js     jetstream.JetStream
	oc     *objects.Client
	shards *shardapi.Client
	tap    *busTap
}

// startBenchCluster starts `rehome dev` with nodes in racks, the bench's
// movers and timing, and extra flags.
func startBenchCluster(b *testing.B, nodes, racks int, extra ...string) *benchCluster {
	b.Helper()
	args := append([]string{"--nodes", strconv.Itoa(nodes), "--racks", strconv.Itoa(racks), "--movers", strconv.Itoa(benchMovers)}, benchTiming...)
	args = append(args, extra...)
	c := startDev(b, args...)
	waitHealthy(b, c, nodes)
	nc, err := bus.Connect(c.url, "bench-repair", 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	shards := shardapi.New(c.token())
	oc, err := objects.New(context.Background(), nc, js, shards)
	if err != nil {
		b.Fatal(err)
	}
	bc := &benchCluster{cluster: c, b: b, nodes: nodes, nc: nc, js: js, oc: oc, shards: shards}
	// The tap counts every control message, KV writes and acks included,
	// which only the admin user may see.
	tapNC, err := bus.Connect(c.adminURL, "bench-tap", 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(tapNC.Close)
	bc.tap = tapBus(b, tapNC)
	return bc
}

// putObjects writes count objects of size random bytes each (cut into the
// client's 4 MiB chunks), named prefix-NNNNN, par objects at a time, and
// returns their keys.
func (bc *benchCluster) putObjects(prefix string, count int, size int64, par int) []string {
	bc.b.Helper()
	keys := make([]string, count)
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(par)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%05d", prefix, i)
		g.Go(func() error {
			buf := make([]byte, size)
			var seed [32]byte
			copy(seed[:], keys[i])
			_, _ = mrand.NewChaCha8(seed).Read(buf)
			_, err := bc.oc.Put(ctx, keys[i], bytes.NewReader(buf), size, objects.PutOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		bc.b.Fatalf("put %s objects: %v", prefix, err)
	}
	return keys
}

// placements reads the whole placement map.
func (bc *benchCluster) placements() map[string]model.Placement {
	bc.b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := bc.js.KeyValue(ctx, bus.BucketPlacement)
	if err != nil {
		bc.b.Fatal(err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		bc.b.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string]model.Placement{}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return out
			}
			var p model.Placement
			if err := json.Unmarshal(e.Value(), &p); err != nil {
				bc.b.Fatalf("placement %s: %v", e.Key(), err)
			}
			out[p.Shard] = p
		case <-ctx.Done():
			bc.b.Fatal("reading the placement map timed out")
		}
	}
}

// lossOf is what node holds according to the map: its shards and their bytes.
func lossOf(pl map[string]model.Placement, node string) (shards map[string]model.Placement, size int64) {
	shards = map[string]model.Placement{}
	for id, p := range pl {
		if slices.Contains(p.Nodes, node) {
			shards[id] = p
			size += p.Size
		}
	}
	return shards, size
}

// incident is one node's death and heal, as timed by the benchmark.
type incident struct {
	victim    string
	killed    time.Time
	verdict   time.Time // the down verdict's own timestamp
	healthy   time.Time // first status poll that saw the heal complete
	shards    int       // replicas the victim held (the map's view before the kill)
	bytes     int64
	polls     int
	copyFirst time.Time // first and last verified copy (done events)
	copyLast  time.Time
}

func (in incident) verdictToHealthy() time.Duration { return in.healthy.Sub(in.verdict) }

// killAndHeal SIGKILLs victim's storage process, waits for its down verdict
// and then polls the planner's status every poll (the control call behind
// `rehome cluster status --json`, made directly: a CLI process per poll would
// blur the timing) until the victim is down and nothing is under-replicated,
// lost or left to rebuild; the CLI is asked once more at the end.
func (bc *benchCluster) killAndHeal(victim string, before map[string]model.Placement, poll time.Duration) incident {
	bc.b.Helper()
	lost, lostBytes := lossOf(before, victim)
	in := incident{victim: victim, shards: len(lost), bytes: lostBytes}
	pid := 0
	for _, p := range bc.processes() {
		if p.ID == victim {
			pid = p.PID
		}
	}
	if pid == 0 {
		bc.b.Fatalf("%s not in processes.json", victim)
	}
	in.killed = time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		bc.b.Fatal(err)
	}
	waitFor(bc.b, 30*time.Second, victim+" down verdict", func() bool {
		t, ok := bc.tap.downAt(victim)
		in.verdict = t
		return ok
	})
	deadline := time.Now().Add(benchHealTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var st control.ClusterStatus
		err := bus.Call(ctx, bc.nc, event.CtlStatus, struct{}{}, &st)
		cancel()
		now := time.Now()
		in.polls++
		if err == nil && healed(st, victim) {
			in.healthy = now
			break
		}
		if now.After(deadline) {
			bc.b.Fatalf("no heal within %s of %s's verdict: last status %+v (err %v)", benchHealTimeout, victim, st, err)
		}
		time.Sleep(poll)
	}
	in.copyFirst, in.copyLast = bc.tap.copyWindow(in.verdict)
	// The operator's view agrees.
	if st, err := bc.status(); err != nil || !healed(st, victim) {
		bc.b.Errorf("after the heal, cluster status --json says %+v (err %v)", st, err)
	}
	return in
}

// healed reports whether st shows victim down and nothing left to repair.
func healed(st control.ClusterStatus, victim string) bool {
	down := false
	for _, n := range st.Nodes {
		if n.ID == victim {
			down = n.State == model.StateDown
		}
	}
	return down && st.UnderReplicated == 0 && st.Lost == 0 && st.BytesRemaining == 0
}

// busTap watches the bus: verdicts, verified copies, and, while counting,
// how many messages cross it by subject class. Safe for concurrent use.
type busTap struct {
	mu       sync.Mutex
	down     map[string]time.Time  // node -> down verdict timestamp
	done     map[string]event.Done // shard -> its last verified copy
	doneAt   map[string]time.Time  // shard -> when that copy was reported
	counting bool
	counts   map[string]int
	// Copy tasks issued and not yet answered, and the most there were at once.
	inFlight map[string]bool
	peak     int
	moved    int64 // bytes of rebalancing copies verified
}

func tapBus(b *testing.B, nc *nats.Conn) *busTap {
	b.Helper()
	t := &busTap{down: map[string]time.Time{}, done: map[string]event.Done{}, doneAt: map[string]time.Time{},
		counts: map[string]int{}, inFlight: map[string]bool{}}
	for _, subj := range []string{"rehome.>", "$KV.>", "$JS.ACK.>", pullRequestPrefix + ">"} {
		sub, err := nc.Subscribe(subj, t.observe)
		if err != nil {
			b.Fatal(err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		b.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return t
}

func (t *busTap) observe(m *nats.Msg) {
	now := time.Now()
	var (
		down     event.Verdict
		isDown   bool
		done     event.Done
		isDone   bool
		task     event.Task
		isTask   bool
		failed   event.Failed
		isFailed bool
		subject  = m.Subject
	)
	switch {
	case strings.HasPrefix(subject, event.DownPrefix):
		isDown = event.Decode(m.Data, &down) == nil
	case strings.HasPrefix(subject, event.DonePrefix):
		isDone = event.Decode(m.Data, &done) == nil && done.Kind == event.KindCopy
	case strings.HasPrefix(subject, event.TaskPrefix):
		isTask = event.Decode(m.Data, &task) == nil && task.Kind == event.KindCopy
	case strings.HasPrefix(subject, event.FailedPrefix):
		isFailed = event.Decode(m.Data, &failed) == nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counting {
		t.counts[subjectClass(subject)]++
	}
	switch {
	case isDown:
		t.down[down.Node] = down.TS
	case isDone:
		if done.Incident == rebalanceIncident {
			t.moved += done.Bytes
		}
		t.done[done.Shard] = done
		t.doneAt[done.Shard] = now
		delete(t.inFlight, done.Task)
	case isTask:
		t.inFlight[task.Task] = true
		t.peak = max(t.peak, len(t.inFlight))
	case isFailed:
		delete(t.inFlight, failed.Task)
	}
}

// peakCopies returns the most copy tasks that were issued and unanswered at
// once, and restarts the count.
func (t *busTap) peakCopies() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peak
	t.peak = len(t.inFlight)
	return p
}

// pullRequestPrefix is the subject of JetStream pull requests (a consumer
// asking for its next messages).
const pullRequestPrefix = "$JS.API.CONSUMER.MSG.NEXT."

// subjectClass groups subjects: per-entity subjects lose their last token,
// control calls are one class, JetStream acks one class.
func subjectClass(s string) string {
	switch {
	case strings.HasPrefix(s, event.ControlPrefix):
		return strings.TrimSuffix(event.ControlPrefix, ".")
	case strings.HasPrefix(s, "$JS.ACK."):
		return "$JS.ACK"
	case strings.HasPrefix(s, pullRequestPrefix):
		return strings.TrimSuffix(pullRequestPrefix, ".")
	case s == event.HealProgress, s == event.HealStalled, s == event.DetectorHeld, s == event.DetectorReleased:
		return s
	}
	if i := strings.LastIndexByte(s, '.'); i > 0 {
		return s[:i]
	}
	return s
}

func (t *busTap) downAt(node string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ts, ok := t.down[node]
	return ts, ok
}

// copyWindow returns when the first and the last verified copy after since
// were reported.
func (t *busTap) copyWindow(since time.Time) (first, last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, at := range t.doneAt {
		if at.Before(since) {
			continue
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	return first, last
}

// copies returns the verified copies of the given shards: shard -> done event.
func (t *busTap) copies(shards map[string]model.Placement) map[string]event.Done {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]event.Done{}
	for id := range shards {
		if d, ok := t.done[id]; ok {
			out[id] = d
		}
	}
	return out
}

// count starts (true) or stops (false) counting messages; starting clears the counts.
func (t *busTap) count(on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if on {
		t.counts = map[string]int{}
	}
	t.counting = on
}

func (t *busTap) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.counts))
	for k, v := range t.counts {
		out[k] = v
	}
	return out
}

// baselineJob is one plain file copy: a shard file from one node's data dir
// into another's.
type baselineJob struct {
	shard    string
	src, dst string // data dirs of the source and target nodes
	size     int64
	sha256   string
}

// baselineCopy copies every job's shard file (header and bytes, as the store
// keeps it) with par copies at once: read it from the source dir while
// hashing the shard bytes, write a temp file in the target dir, fsync, check
// the hash, rename, fsync the directory. It returns the shard bytes copied and the wall time, and
// removes the copies afterwards.
func baselineCopy(b *testing.B, jobs []baselineJob, par int) (int64, time.Duration) {
	b.Helper()
	dirs := map[string]bool{}
	for _, j := range jobs {
		d := filepath.Join(j.dst, "bench-baseline")
		if !dirs[d] {
			if err := os.MkdirAll(d, 0o750); err != nil {
				b.Fatal(err)
			}
			dirs[d] = true
		}
	}
	defer func() {
		for d := range dirs {
			_ = os.RemoveAll(d)
		}
	}()
	var (
		mu    sync.Mutex
		total int64
	)
	g := errgroup.Group{}
	g.SetLimit(par)
	start := time.Now()
	for _, j := range jobs {
		g.Go(func() error {
			n, err := baselineCopyOne(j)
			mu.Lock()
			total += n
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("baseline copy: %v", err)
	}
	return total, time.Since(start)
}

var baselineBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func baselineCopyOne(j baselineJob) (int64, error) {
	src, err := os.Open(filepath.Join(j.src, "shards", j.shard[:2], j.shard))
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dir := filepath.Join(j.dst, "bench-baseline")
	tmp, err := os.CreateTemp(dir, ".tmp-"+j.shard+"-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bp := baselineBufs.Get().(*[]byte)
	defer baselineBufs.Put(bp)
	// The header is copied as is; the shard bytes after it are hashed.
	if _, err := io.CopyBuffer(tmp, io.LimitReader(src, disk.HeaderSize), *bp); err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h), src, *bp)
	if err != nil {
		return n, err
	}
	if err := tmp.Sync(); err != nil {
		return n, err
	}
	if err := tmp.Close(); err != nil {
		return n, err
	}
	if n != j.size || hex.EncodeToString(h.Sum(nil)) != j.sha256 {
		return n, fmt.Errorf("shard %s from %s: %d bytes with another checksum", j.shard, j.src, n)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, j.shard)); err != nil {
		return n, err
	}
	// As the store does: the rename is durable only once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return n, err
	}
	defer d.Close()
	return n, d.Sync()
}

// benchParallelism is how many copies rehome runs at once in the benchmark
// clusters: every mover process runs its default number of workers.
func benchParallelism() int { return benchMovers * mover.DefaultConfig().Workers }

func meets(ok bool) string {
	if ok {
		return "meets"
	}
	return "MISSES"
}

func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / benchMB / d.Seconds()
}

// BenchmarkRepairThroughput writes data in 4 MiB chunks (RF 3) to a 6-node
// cluster, kills the fullest node and times the heal from the down verdict
// (its event timestamp) to the first status showing nothing under-replicated.
// rehome_MBps is the victim's bytes over that time. The baseline, in the same
// run, copies the same shard files between the same data dirs (each verified
// copy's source to its target, as the done events report them) with a plain
// checksummed, fsynced file copy at rehome's parallelism (movers x workers).
// Three shapes: 6 nodes in 6 racks (targets spread), 6 nodes in 3 racks
// (SPEC's verdict-to-healthy figure) and 12 nodes in 4 racks. Data written: 1000 MB, so that ~500 MB
// are lost (REHOME_BENCH_QUICK: 200 MB; REHOME_BENCH_MB overrides).
func BenchmarkRepairThroughput(b *testing.B) {
	written := int64(1000)
	if benchenv.Quick() {
		written = 200
	}
	written = int64(benchenv.Int("REHOME_BENCH_MB", int(written)))
	const objSize = 4 * model.DefaultChunkSize
	objs := max(1, int(float64(written)*benchMB/objSize+0.5))
	for _, shape := range []struct{ nodes, racks int }{{6, 6}, {6, 3}, {12, 4}} {
		b.Run(fmt.Sprintf("%dnodes_%dracks", shape.nodes, shape.racks), func(b *testing.B) {
			for range b.N {
				bc := startBenchCluster(b, shape.nodes, shape.racks)
				t0 := time.Now()
				bc.putObjects("bulk", objs, objSize, 2)
				putTime := time.Since(t0)
				before := bc.placements()
				victim := bc.fullestOutside(nil)
				in := bc.killAndHeal(victim.ID, before, 25*time.Millisecond)

				lost, _ := lossOf(before, victim.ID)
				copies := bc.tap.copies(lost)
				var jobs []baselineJob
				var copied int64
				for id, d := range copies {
					copied += d.Bytes
					if d.Source == "" {
						continue // the target already held it: nothing was copied
					}
					p := lost[id]
					jobs = append(jobs, baselineJob{shard: id, src: filepath.Join(bc.dir, d.Source), dst: filepath.Join(bc.dir, d.Target), size: p.Size, sha256: p.SHA256})
				}
				if len(copies) != in.shards {
					b.Errorf("%d of the %d lost replicas were reported copied", len(copies), in.shards)
				}
				// The baseline copies as many files at once as rehome ran
				// copies: what the planner issued at most, within the movers' slots.
				peak := bc.tap.peakCopies()
				par := min(max(peak, 1), benchParallelism())
				baseBytes, baseTime := baselineCopy(b, jobs, par)
				var copyMS []time.Duration
				for _, d := range copies {
					copyMS = append(copyMS, time.Duration(d.DurationMS)*time.Millisecond)
				}

				v2h := in.verdictToHealthy()
				rehome := mbps(in.bytes, v2h)
				base := mbps(baseBytes, baseTime)
				ratio := rehome / base
				copyPhase := in.copyLast.Sub(in.verdict)
				b.ReportMetric(rehome, "rehome_MBps")
				b.ReportMetric(base, "baseline_MBps")
				b.ReportMetric(ratio, "ratio")
				b.ReportMetric(v2h.Seconds(), "verdict_to_healthy_seconds")
				b.ReportMetric(float64(in.bytes)/benchMB, "rehomed_MB")
				b.ReportMetric(float64(in.shards), "rehomed_shards")
				b.ReportMetric(in.verdict.Sub(in.killed).Seconds(), "kill_to_verdict_seconds")
				// Spread over the survivors: re-homed replicas written to, and
				// read from, each one (max / mean).
				writes, reads := map[string]int{}, map[string]int{}
				for _, d := range copies {
					writes[d.Target]++
					if d.Source != "" {
						reads[d.Source]++
					}
				}
				survivors := shape.nodes - 1
				wSpread, rSpread := spread(writes, survivors), spread(reads, survivors)
				b.ReportMetric(wSpread, "write_spread")
				b.ReportMetric(rSpread, "read_spread")
				b.Logf("spread over %d survivors (max/mean): writes %.2f %v, reads %.2f %v", survivors, wSpread, writes, rSpread, reads)
				b.Logf("repair throughput, %d nodes / %d racks, %d movers x %d workers: wrote %d objects = %.0f MB (RF 3, %s); killed %s holding %d replicas = %.1f MB; "+
					"verdict -> healthy %s (%d status polls; kill -> verdict %s; verdict -> first verified copy %s, last %s; at most %d copies at once, each p50 %s p99 %s) = %.1f MB/s; "+
					"baseline: %d plain copies (read, sha256, write temp, fsync, rename, fsync dir) of %.1f MB at parallelism %d in %s = %.1f MB/s; "+
					"ratio %.2f: %s target >= 0.8", shape.nodes, shape.racks, benchMovers, mover.DefaultConfig().Workers,
					objs, float64(int64(objs)*objSize)/benchMB, putTime.Round(time.Millisecond), victim.ID, in.shards, float64(in.bytes)/benchMB,
					v2h.Round(time.Millisecond), in.polls, in.verdict.Sub(in.killed).Round(time.Millisecond), in.copyFirst.Sub(in.verdict).Round(time.Millisecond), copyPhase.Round(time.Millisecond),
					peak, percentile(copyMS, 0.5), percentile(copyMS, 0.99), rehome,
					len(jobs), float64(baseBytes)/benchMB, par, baseTime.Round(time.Millisecond), base, ratio, meets(ratio >= 0.8))
				if shape.racks == 3 {
					b.Logf("verdict -> healthy with %.0f MB lost on %d nodes / %d racks: %s; %s target <= 4 s for ~500 MB",
						float64(in.bytes)/benchMB, shape.nodes, shape.racks, v2h.Round(time.Millisecond), meets(v2h <= 4*time.Second))
				}
				if copied != in.bytes {
					b.Logf("note: done events report %d bytes, the map said the victim held %d", copied, in.bytes)
				}
			}
		})
	}
}

// spread is max/mean of per-node counts over n nodes (nodes absent from
// counts count 0).
func spread(counts map[string]int, n int) float64 {
	total, most := 0, 0
	for _, c := range counts {
		total += c
		most = max(most, c)
	}
	if total == 0 || n == 0 {
		return 0
	}
	return float64(most) / (float64(total) / float64(n))
}

// BenchmarkControlMessagesPerRepairedShard writes small objects (one shard
// each, RF 3) to 6 nodes in 3 racks, kills the fullest node and counts every
// message on the bus from the kill until 2 s after the heal completed.
// control_msgs_per_shard counts everything the repair puts there, per
// repaired shard: events on rehome.> (verdicts, plans, tasks, results), KV
// writes ($KV.>, placement map and liveness), JetStream acks ($JS.ACK.>) and
// pull requests ($JS.API.CONSUMER.MSG.NEXT.>). Left out, and reported apart:
// heartbeats, node re-registrations and the planner's lease renewals
// (periodic, repair or not), the periodic rehome.heal.progress, and
// rehome.ctl.* (the benchmark's own status polls). events_per_shard is the
// rehome.> part alone (the figure before acks, KV writes and pulls were
// counted). 1500 objects of 4 KiB (REHOME_BENCH_QUICK: 300;
// REHOME_BENCH_SMALL_OBJECTS overrides), so that ~750 shards are repaired.
func BenchmarkControlMessagesPerRepairedShard(b *testing.B) {
	count := 1500
	if benchenv.Quick() {
		count = 300
	}
	count = benchenv.Int("REHOME_BENCH_SMALL_OBJECTS", count)
	for range b.N {
		bc := startBenchCluster(b, 6, 3)
		bc.putObjects("small", count, 4<<10, 8)
		before := bc.placements()
		victim := bc.fullestOutside(nil)
		bc.tap.count(true)
		in := bc.killAndHeal(victim.ID, before, 100*time.Millisecond)
		settle := time.Now().Add(2 * time.Second)
		waitFor(b, 5*time.Second, "settle", func() bool { return time.Now().After(settle) })
		bc.tap.count(false)
		counts := bc.tap.snapshot()

		background := map[string]bool{
			strings.TrimSuffix(event.HeartbeatPrefix, "."): true,
			event.HealProgress:                           true,
			strings.TrimSuffix(event.ControlPrefix, "."): true,
			"$KV." + bus.BucketNodes:                     true,
			"$KV." + bus.BucketLease:                     true,
		}
		var all, events int
		var classes []string
		for class, n := range counts {
			classes = append(classes, class)
			if background[class] {
				continue
			}
			all += n
			if strings.HasPrefix(class, "rehome.") {
				events += n
			}
		}
		sort.Strings(classes)
		var parts []string
		for _, class := range classes {
			parts = append(parts, fmt.Sprintf("%s=%d", class, counts[class]))
		}
		s := float64(in.shards)
		perShard := float64(all) / s
		b.ReportMetric(perShard, "control_msgs_per_shard")
		b.ReportMetric(float64(events)/s, "events_per_shard")
		b.ReportMetric(float64(in.shards), "repaired_shards")
		b.ReportMetric(float64(counts[event.HealProgress]), "progress_msgs")
		b.ReportMetric(float64(counts["$KV."+bus.BucketPlacement])/s, "map_writes_per_shard")
		b.ReportMetric(float64(counts["$JS.ACK"])/s, "js_acks_per_shard")
		b.ReportMetric(float64(counts[strings.TrimSuffix(pullRequestPrefix, ".")])/s, "pulls_per_shard")
		b.ReportMetric(in.verdictToHealthy().Seconds(), "verdict_to_healthy_seconds")
		b.Logf("control messages: %d objects of 4 KiB on 6 nodes / 3 racks; killed %s holding %d replicas; from the kill to 2 s after healthy (verdict -> healthy %s): "+
			"%d messages = %.2f per repaired shard, all counted (events %.2f, placement-map writes %.2f, JetStream acks %.2f, pull requests %.2f): %s target <= 4; "+
			"not counted: heartbeats, node registrations, lease renewals, progress, control calls; by subject class: %s",
			count, victim.ID, in.shards, in.verdictToHealthy().Round(time.Millisecond), all, perShard,
			float64(events)/s, float64(counts["$KV."+bus.BucketPlacement])/s, float64(counts["$JS.ACK"])/s,
			float64(counts[strings.TrimSuffix(pullRequestPrefix, ".")])/s, meets(perShard <= 4), strings.Join(parts, " "))
	}
}

// latencySample is one timed GET.
type latencySample struct {
	start time.Time
	took  time.Duration
	err   error
}

// getSampler GETs a random small object every getEvery (or as soon as the
// previous GET ended, if later) through the objects client (what a user's
// read costs: manifest, node view, placement, shard), and after it one of its
// shards straight from a live holder's storage API, until stopped.
const getEvery = 5 * time.Millisecond

type getSampler struct {
	mu      sync.Mutex
	client  []latencySample
	storage []latencySample
	stop    chan struct{}
	done    chan struct{}
}

func (bc *benchCluster) sampleGets(keys []string, pl map[string]model.Placement, down func() []string) *getSampler {
	s := &getSampler{stop: make(chan struct{}), done: make(chan struct{})}
	addrs := map[string]string{}
	st, err := bc.status()
	if err != nil {
		bc.b.Fatal(err)
	}
	for _, n := range st.Nodes {
		addrs[n.ID] = n.Addr
	}
	byKey := map[string]model.Placement{}
	for _, p := range pl {
		byKey[p.Key] = p
	}
	go func() {
		defer close(s.done)
		rng := mrand.New(mrand.NewPCG(1, 2))
		tick := time.NewTicker(getEvery)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			key := keys[rng.IntN(len(keys))]
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := bc.oc.Get(ctx, key, io.Discard)
			cancel()
			client := latencySample{start: t0, took: time.Since(t0), err: err}

			p := byKey[key]
			dead := down()
			holders := slices.DeleteFunc(slices.Clone(p.Nodes), func(n string) bool { return slices.Contains(dead, n) })
			var sample latencySample
			if len(holders) > 0 {
				addr := addrs[holders[rng.IntN(len(holders))]]
				t1 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				body, _, err := bc.shards.Get(ctx, addr, p.Shard)
				if err == nil {
					_, err = io.Copy(io.Discard, body)
					body.Close()
				}
				cancel()
				sample = latencySample{start: t1, took: time.Since(t1), err: err}
			}
			s.mu.Lock()
			s.client = append(s.client, client)
			if !sample.start.IsZero() {
				s.storage = append(s.storage, sample)
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *getSampler) finish() (client, storage []latencySample) {
	close(s.stop)
	<-s.done
	return s.client, s.storage
}

// latencyStats splits samples into those started while idle and those
// started while a rebuild ran (between a verdict and the heal); samples from
// a kill to its verdict, and from a heal to settle after it, belong to neither.
func latencyStats(samples []latencySample, incidents []incident, settle time.Duration) (idle, rebuild []time.Duration, errs int) {
	for _, s := range samples {
		if s.err != nil {
			errs++
			continue
		}
		phase := "idle"
		for _, in := range incidents {
			switch {
			case !s.start.Before(in.verdict) && s.start.Before(in.healthy):
				phase = "rebuild"
			case !s.start.Before(in.killed) && s.start.Before(in.verdict),
				!s.start.Before(in.healthy) && s.start.Before(in.healthy.Add(settle)):
				phase = "neither"
			}
		}
		switch phase {
		case "idle":
			idle = append(idle, s.took)
		case "rebuild":
			rebuild = append(rebuild, s.took)
		}
	}
	return idle, rebuild, errs
}

// percentile returns the q-quantile (0..1) of ds by the nearest-rank method.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkGetLatencyDuringRebuild writes bulk data (the rebuild's load) and
// 200 objects of 64 KiB to 6 nodes in 3 racks with the default throttles,
// then GETs random small objects, one every 5 ms: idle, while the rebuild after
// a node's death runs (from its verdict to healthy), idle again, and (full
// run) a second death in another rack and its rebuild, then idle. It reports
// the p99 of client GETs (objects client: manifest, node view, placement,
// shard) idle and during rebuilds, and their ratio; the same for GETs straight
// from a storage node's API. Bulk data: 600 MB (~300 MB re-homed per death;
// REHOME_BENCH_QUICK: 400 MB and one death; REHOME_BENCH_REBUILD_MB overrides).
func BenchmarkGetLatencyDuringRebuild(b *testing.B) {
	written, deaths := 600, 2
	if benchenv.Quick() {
		written, deaths = 400, 1
	}
	written = benchenv.Int("REHOME_BENCH_REBUILD_MB", written)
	const objSize = 4 * model.DefaultChunkSize
	objs := max(1, int(float64(written)*benchMB/objSize+0.5))
	idleFor := 5 * time.Second
	const settle = time.Second
	for range b.N {
		bc := startBenchCluster(b, 6, 3)
		keys := bc.putObjects("small", 200, 64<<10, 8)
		bc.putObjects("bulk", objs, objSize, 2)
		pl := bc.placements()
		var (
			mu   sync.Mutex
			dead []string
		)
		downNodes := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(dead) }
		sampler := bc.sampleGets(keys, pl, downNodes)
		pause := func(d time.Duration) {
			until := time.Now().Add(d)
			waitFor(b, d+5*time.Second, "idle phase", func() bool { return time.Now().After(until) })
		}
		pause(idleFor)
		var incidents []incident
		var racks []string
		for range deaths {
			before := bc.placements()
			victim := bc.fullestOutside(racks)
			racks = append(racks, victim.Rack)
			mu.Lock()
			dead = append(dead, victim.ID) // storage GETs go to live holders only
			mu.Unlock()
			in := bc.killAndHeal(victim.ID, before, 25*time.Millisecond)
			incidents = append(incidents, in)
			pause(settle + idleFor)
		}
		client, storage := sampler.finish()

		cIdle, cRebuild, cErrs := latencyStats(client, incidents, settle)
		sIdle, sRebuild, sErrs := latencyStats(storage, incidents, settle)
		if cErrs+sErrs > 0 {
			b.Errorf("%d client and %d storage GETs failed", cErrs, sErrs)
		}
		if len(cRebuild) < 50 {
			b.Errorf("only %d client GETs ran during the rebuilds: too few for a p99 (write more with REHOME_BENCH_REBUILD_MB)", len(cRebuild))
		}
		idleP99, rebuildP99 := percentile(cIdle, 0.99), percentile(cRebuild, 0.99)
		ratio := ms(rebuildP99) / ms(idleP99)
		sIdleP99, sRebuildP99 := percentile(sIdle, 0.99), percentile(sRebuild, 0.99)
		sRatio := ms(sRebuildP99) / ms(sIdleP99)
		var rebuilt int64
		var rebuildTime time.Duration
		var desc []string
		for _, in := range incidents {
			rebuilt += in.bytes
			rebuildTime += in.verdictToHealthy()
			desc = append(desc, fmt.Sprintf("%s: %.0f MB in %s", in.victim, float64(in.bytes)/benchMB, in.verdictToHealthy().Round(time.Millisecond)))
		}
		b.ReportMetric(ms(idleP99), "idle_p99_ms")
		b.ReportMetric(ms(rebuildP99), "rebuild_p99_ms")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(ms(sIdleP99), "storage_idle_p99_ms")
		b.ReportMetric(ms(sRebuildP99), "storage_rebuild_p99_ms")
		b.ReportMetric(sRatio, "storage_ratio")
		b.ReportMetric(float64(rebuilt)/benchMB, "rebuilt_MB")
		b.Logf("GET latency during rebuild, 6 nodes / 3 racks, default throttles: %d objects of 64 KiB read every %s while idle and during %d rebuild(s) (%s; %.1f MB/s); "+
			"client GET (objects client): idle p50 %.2f ms p99 %.2f ms (n=%d), rebuild p50 %.2f ms p99 %.2f ms (n=%d): ratio %.2f, %s target <= 2; "+
			"storage API GET: idle p50 %.2f ms p99 %.2f ms (n=%d), rebuild p50 %.2f ms p99 %.2f ms (n=%d): ratio %.2f",
			len(keys), getEvery, len(incidents), strings.Join(desc, ", "), mbps(rebuilt, rebuildTime),
			ms(percentile(cIdle, 0.5)), ms(idleP99), len(cIdle), ms(percentile(cRebuild, 0.5)), ms(rebuildP99), len(cRebuild), ratio, meets(ratio <= 2),
			ms(percentile(sIdle, 0.5)), ms(sIdleP99), len(sIdle), ms(percentile(sRebuild, 0.5)), ms(sRebuildP99), len(sRebuild), sRatio)
	}
}

// fullestOutside returns the fullest live node in none of the given racks
// (a second death in another rack keeps every rack populated).
func (bc *benchCluster) fullestOutside(racks []string) control.NodeStatus {
	bc.b.Helper()
	st, err := bc.status()
	if err != nil {
		bc.b.Fatal(err)
	}
	var best control.NodeStatus
	for _, n := range st.Nodes {
		if n.State == model.StateUp && !slices.Contains(racks, n.Rack) && n.Bytes > best.Bytes {
			best = n
		}
	}
	if best.ID == "" {
		bc.b.Fatalf("no live node with data outside racks %v", racks)
	}
	return best
}
