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
	"runtime"
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
	if n := benchenv.Int("REHOME_BENCH_BATCH", 0); n > 0 { // the planner's --batch (1: one shard per task)
		args = append(args, "--planner-flag=--batch="+strconv.Itoa(n))
	}
	args = append(args, extra...)
	// REHOME_BENCH_DEV_FLAGS: more `rehome dev` flags for every bench
	// cluster, for A/B runs (e.g. --storage-flag=--repair-nice=0).
	args = append(args, strings.Fields(os.Getenv("REHOME_BENCH_DEV_FLAGS"))...)
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
	// A long-running client, like the S3 gateway: node addresses and states
	// come from watches, not from reading both buckets on every GET.
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	oc.Watch(ctx)
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
	// Copy tasks issued and not yet answered (each shard's task id -> the
	// id of the task message carrying it: a batch counts until its last
	// shard is answered), and the most task messages there were at once.
	inFlight map[string]string
	peak     int
	moved    int64 // bytes of rebalancing copies verified
}

func tapBus(b *testing.B, nc *nats.Conn) *busTap {
	b.Helper()
	t := &busTap{down: map[string]time.Time{}, done: map[string]event.Done{}, doneAt: map[string]time.Time{},
		counts: map[string]int{}, inFlight: map[string]string{}}
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
		for _, m := range task.Members() {
			t.inFlight[m.Task] = task.Task
		}
		t.peak = max(t.peak, t.tasksInFlight())
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
	t.peak = t.tasksInFlight()
	return p
}

// tasksInFlight counts the task messages with a shard unanswered (t.mu held).
func (t *busTap) tasksInFlight() int {
	msgs := map[string]bool{}
	for _, m := range t.inFlight {
		msgs[m] = true
	}
	return len(msgs)
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
// (SPEC's verdict-to-healthy figure) and 12 nodes in 4 racks. Data written:
// 1000 MB per 6 nodes (2000 MB on 12), so that every shape loses ~500 MB
// (REHOME_BENCH_QUICK: 200 MB per 6 nodes; REHOME_BENCH_MB overrides the
// 6-node figure).
func BenchmarkRepairThroughput(b *testing.B) {
	written := int64(1000)
	if benchenv.Quick() {
		written = 200
	}
	written = int64(benchenv.Int("REHOME_BENCH_MB", int(written)))
	const objSize = 4 * model.DefaultChunkSize
	for _, shape := range []struct{ nodes, racks int }{{6, 6}, {6, 3}, {12, 4}} {
		b.Run(fmt.Sprintf("%dnodes_%dracks", shape.nodes, shape.racks), func(b *testing.B) {
			objs := max(1, int(float64(written)*float64(shape.nodes)/6*benchMB/objSize+0.5))
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
// REHOME_BENCH_SMALL_OBJECTS overrides), so that ~750 shards are repaired;
// REHOME_BENCH_BATCH sets the planner's --batch in this and every bench
// cluster (default: its own default; 1: one shard per task, as before
// batching).
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
	due  time.Time // when it was to be sent (open loop: the schedule, not the sender, decides)
	took time.Duration
	err  error
}

// openLoop GETs random small objects through the objects client (what a
// user's read costs: manifest, node view, placement, shard) at a fixed rate,
// each on its own goroutine when it falls due, whatever the earlier ones
// are doing, and times each from when it was due: a slow period delays
// nothing and is sampled as often as a quick one. Safe for concurrent use.
type openLoop struct {
	mu      sync.Mutex
	samples []latencySample
	stop    chan struct{}
	done    chan struct{}
}

// maxOpenGets bounds the GETs in flight; beyond it a due GET waits for a
// slot, the wait counted in its latency.
const maxOpenGets = 512

func (bc *benchCluster) openLoopGets(keys []string, perSec int) *openLoop {
	o := &openLoop{stop: make(chan struct{}), done: make(chan struct{})}
	every := time.Second / time.Duration(perSec)
	go func() {
		defer close(o.done)
		rng := mrand.New(mrand.NewPCG(1, 2))
		slots := make(chan struct{}, maxOpenGets)
		var wg sync.WaitGroup
		defer wg.Wait()
		tick := time.NewTicker(every)
		defer tick.Stop()
		t0 := time.Now()
		for i := 0; ; {
			select {
			case <-o.stop:
				return
			case <-tick.C:
			}
			// Every GET due by now goes out, even those a late tick skipped.
			for ; !t0.Add(time.Duration(i) * every).After(time.Now()); i++ {
				due := t0.Add(time.Duration(i) * every)
				key := keys[rng.IntN(len(keys))]
				select { // an overloaded cluster falls behind forever: stop still stops
				case slots <- struct{}{}:
				case <-o.stop:
					return
				}
				wg.Go(func() {
					defer func() { <-slots }()
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					_, err := bc.oc.Get(ctx, key, io.Discard)
					cancel()
					o.mu.Lock()
					o.samples = append(o.samples, latencySample{due: due, took: time.Since(due), err: err})
					o.mu.Unlock()
				})
			}
		}
	}()
	return o
}

func (o *openLoop) finish() []latencySample {
	close(o.stop)
	<-o.done
	return o.samples
}

// between returns the latencies of the samples due in [from, to) and how
// many of them failed.
func between(samples []latencySample, from, to time.Time) (took []time.Duration, errs int) {
	for _, s := range samples {
		if s.due.Before(from) || !s.due.Before(to) {
			continue
		}
		if s.err != nil {
			errs++
			continue
		}
		took = append(took, s.took)
	}
	return took, errs
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

// cpuUsed is the CPU time used so far by the cluster's processes (the
// supervisor with its embedded bus, and every service) and this one (the
// clients).
func (bc *benchCluster) cpuUsed() time.Duration {
	pids := []int{os.Getpid(), bc.cmd.Process.Pid}
	for _, p := range bc.processes() {
		pids = append(pids, p.PID)
	}
	var total time.Duration
	for _, pid := range pids {
		if cpu, _, err := procCPU(pid); err == nil {
			total += cpu
		}
	}
	return total
}

// BenchmarkGetLatencyDuringRebuild measures clients and repair together
// (SPEC §11), on two `rehome dev` clusters of 6 nodes in 3 racks with the
// same data (bulk data, the rebuild's load, and 200 objects of 64 KiB), the
// default throttles (adaptive repair pacing) and the same victim choice
// (the fullest node):
//
//   - unloaded: the victim is killed with no client traffic; repair's
//     unloaded rate is its bytes over verdict -> healthy;
//   - loaded: open-loop clients GET random small objects at a fixed rate
//     (REHOME_BENCH_GET_RATE per second, default 300: about half of this 2-core machine), each timed from when
//     it was due: 5 s idle, then the victim is killed and the clients go on
//     until it is healed. idle_p99_ms is the p99 of the GETs due in the idle
//     phase, rebuild_p99_ms of those due from the kill to healthy (the whole
//     window, the detection delay included); repair's loaded rate is its
//     bytes over verdict -> healthy.
//
// client_cpu_share is the share of the machine (all cores) the cluster and
// its clients used during the idle phase: what the client load costs.
// Bulk data: 600 MB, ~300 MB re-homed (REHOME_BENCH_QUICK: 300 MB;
// REHOME_BENCH_REBUILD_MB overrides).
func BenchmarkGetLatencyDuringRebuild(b *testing.B) {
	written := 600
	if benchenv.Quick() {
		written = 300
	}
	written = benchenv.Int("REHOME_BENCH_REBUILD_MB", written)
	perSec := benchenv.Int("REHOME_BENCH_GET_RATE", 300)
	const objSize = 4 * model.DefaultChunkSize
	objs := max(1, int(float64(written)*benchMB/objSize+0.5))
	const idleFor = 5 * time.Second
	for range b.N {
		// Unloaded repair.
		bc := startBenchCluster(b, 6, 3)
		bc.putObjects("small", 200, 64<<10, 8)
		bc.putObjects("bulk", objs, objSize, 2)
		before := bc.placements()
		unloaded := bc.killAndHeal(bc.fullestOutside(nil).ID, before, 25*time.Millisecond)
		bc.stop()

		// Loaded: the same data, open-loop clients throughout.
		bc = startBenchCluster(b, 6, 3)
		keys := bc.putObjects("small", 200, 64<<10, 8)
		bc.putObjects("bulk", objs, objSize, 2)
		before = bc.placements()
		victim := bc.fullestOutside(nil)
		gets := bc.openLoopGets(keys, perSec)
		idleFrom := time.Now()
		cpu0 := bc.cpuUsed()
		until := idleFrom.Add(idleFor)
		waitFor(b, idleFor+5*time.Second, "idle phase", func() bool { return time.Now().After(until) })
		cpuShare := float64(bc.cpuUsed()-cpu0) / float64(time.Since(idleFrom)) / float64(runtime.NumCPU())
		loaded := bc.killAndHeal(victim.ID, before, 25*time.Millisecond)
		samples := gets.finish()

		idle, idleErrs := between(samples, idleFrom, loaded.killed)
		during, duringErrs := between(samples, loaded.killed, loaded.healthy)
		if idleErrs+duringErrs > 0 {
			b.Errorf("%d idle and %d rebuild-time GETs failed", idleErrs, duringErrs)
		}
		if len(during) < 50 {
			b.Errorf("only %d client GETs were due during the rebuild: too few for a p99 (write more with REHOME_BENCH_REBUILD_MB)", len(during))
		}
		idleP99, rebuildP99 := percentile(idle, 0.99), percentile(during, 0.99)
		unloadedMBps, loadedMBps := mbps(unloaded.bytes, unloaded.verdictToHealthy()), mbps(loaded.bytes, loaded.verdictToHealthy())
		b.ReportMetric(ms(idleP99), "idle_p99_ms")
		b.ReportMetric(ms(rebuildP99), "rebuild_p99_ms")
		b.ReportMetric(ms(rebuildP99)/ms(idleP99), "ratio")
		b.ReportMetric(loadedMBps, "repair_loaded_MBps")
		b.ReportMetric(unloadedMBps, "repair_unloaded_MBps")
		b.ReportMetric(loadedMBps/unloadedMBps, "repair_ratio")
		b.ReportMetric(cpuShare, "client_cpu_share")
		b.ReportMetric(float64(loaded.bytes)/benchMB, "rebuilt_MB")
		b.Logf("clients and repair, 6 nodes / 3 racks, default throttles: open-loop GETs of 64 KiB objects at %d/s (cluster and clients used %.0f%% of the %d cores while idle); "+
			"GET idle p50 %.2f ms p99 %.2f ms (n=%d), kill -> healthy p50 %.2f ms p99 %.2f ms (n=%d): ratio %.2f, %s target <= 2; "+
			"repair of %.0f MB under that load %.1f MB/s (verdict -> healthy %s), unloaded %.0f MB at %.1f MB/s (%s): %.2f, %s target >= 0.5",
			perSec, 100*cpuShare, runtime.NumCPU(),
			ms(percentile(idle, 0.5)), ms(idleP99), len(idle), ms(percentile(during, 0.5)), ms(rebuildP99), len(during), ms(rebuildP99)/ms(idleP99), meets(ms(rebuildP99)/ms(idleP99) <= 2),
			float64(loaded.bytes)/benchMB, loadedMBps, loaded.verdictToHealthy().Round(time.Millisecond), float64(unloaded.bytes)/benchMB, unloadedMBps,
			unloaded.verdictToHealthy().Round(time.Millisecond), loadedMBps/unloadedMBps, meets(loadedMBps/unloadedMBps >= 0.5))
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
