package planner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/rehome/rehome/services/planner"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// controlPlane is the outcome of the control-plane scenario (see
// runControlPlane).
type controlPlane struct {
	shards, nodes       int
	populate            time.Duration // writing the map into KV (setup, not a figure)
	coldStart           time.Duration // planner start to acting, view loaded
	kvBytesPerShard     float64       // the placement bucket's stream bytes per entry
	heapBytesPerShard   float64       // Go heap grown by one planner's load, per shard
	takeover            time.Duration // acting planner stopped + a verdict -> standby's first task
	firstTask           event.Task
	verdictLock         time.Duration // the view locked for one down verdict (apply)
	roundLockMax        time.Duration // the longest planning round (upper bound of its bucket)
	statusP99           time.Duration // status calls during a rack outage, measured by the caller
	heartbeatP99        time.Duration // heartbeat handling during it (upper bound of its bucket)
	statusCalls, beats  int
	statusErrors        int
	wantShort           int // shards with a copy on rack-2 or storage-1
	underReplicatedRack int // under-replicated shards the status reports once the rack is down
}

// placementKey is shard i's id: 4 shards per object, ids as the client
// makes them.
func placementKey(r *rand.Rand, i int, obj *string) string {
	if i%4 == 0 {
		*obj = fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff,
			r.Uint32()&0xffff, r.Uint64()&0xffffffffffff)
	}
	return fmt.Sprintf("%s-c%06d", *obj, i%4)
}

// runControlPlane runs the control-plane scenario on a real embedded
// JetStream: nodes registered on racks, shards placement entries written
// into KV (three copies on three racks), then a planner cold-started from
// that map, a standby loaded beside it, the acting planner stopped and a
// node's down verdict written: the standby takes over and issues the first
// task. Then a rack goes down while status calls and heartbeats flow.
func runControlPlane(tb testing.TB, shards, nodes, racks int) controlPlane {
	tb.Helper()
	out := controlPlane{shards: shards, nodes: nodes}
	env := bustest.Start(tb)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	js, err := jetstream.New(env.NC, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		tb.Fatal(err)
	}
	kvNodes, err := js.KeyValue(ctx, bus.BucketNodes)
	if err != nil {
		tb.Fatal(err)
	}
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("storage-%d", i+1) // rack i % racks + 1
		nd := model.Node{V: 1, ID: names[i], Rack: fmt.Sprintf("rack-%d", i%racks+1), Addr: fmt.Sprintf("127.0.0.1:%d", 10000+i),
			BootID: "boot", CapacityBytes: 16 << 40, Started: time.Now()}
		b, _ := json.Marshal(nd)
		if _, err := kvNodes.Put(ctx, nd.ID, b); err != nil {
			tb.Fatal(err)
		}
	}
	// The map: each shard on three nodes of three different racks.
	start := time.Now()
	r := rand.New(rand.NewPCG(10, 10))
	perRack := nodes / racks
	p := model.Placement{V: 1, SHA256: "0000000000000000000000000000000000000000000000000000000000000000",
		Layout: model.Layout{RF: 3}, Size: 4 << 20}
	var obj string
	for i := range shards {
		p.Shard = placementKey(r, i, &obj)
		p.ObjectID, p.Key = obj, "key-"+obj
		ra := r.IntN(racks)
		rb := (ra + 1 + r.IntN(racks-1)) % racks
		rc := ra
		for rc == ra || rc == rb {
			rc = r.IntN(racks)
		}
		p.Nodes = []string{names[ra+racks*r.IntN(perRack)], names[rb+racks*r.IntN(perRack)], names[rc+racks*r.IntN(perRack)]}
		if ra == 1 || rb == 1 || rc == 1 || slices.Contains(p.Nodes, names[0]) {
			out.wantShort++ // a copy on rack-2 or on storage-1: short once they are down
		}
		b, _ := json.Marshal(p)
		if _, err := js.PublishAsync("$KV."+bus.BucketPlacement+"."+p.Shard, b, jetstream.WithStallWait(time.Minute)); err != nil {
			tb.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Minute):
		tb.Fatal("writing the map did not complete")
	}
	out.populate = time.Since(start)
	st, err := js.Stream(ctx, "KV_"+bus.BucketPlacement)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if info.State.Msgs != uint64(shards) {
		tb.Fatalf("the placement bucket holds %d entries, want %d", info.State.Msgs, shards)
	}
	out.kvBytesPerShard = float64(info.State.Bytes) / float64(shards)
	tb.Logf("map of %d entries written into KV in %s, %.1f bytes per entry in the stream", shards, out.populate, out.kvBytesPerShard)

	cfg := planner.Config{MaxInFlight: 256, AutoHeal: false}
	run := func(id string) (*planner.Service, func()) {
		nc, err := bus.Connect(env.URL, id, 5*time.Second)
		if err != nil {
			tb.Fatal(err)
		}
		pjs, err := jetstream.New(nc)
		if err != nil {
			tb.Fatal(err)
		}
		c := cfg
		c.ID = id
		svc, err := planner.New(c, nc, pjs, testLogger(), time.Now)
		if err != nil {
			tb.Fatal(err)
		}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- svc.Run(rctx) }()
		var once sync.Once
		halt := func() {
			once.Do(func() {
				stop()
				if err := <-done; err != nil {
					tb.Errorf("planner %s: %v", id, err)
				}
				nc.Close()
			})
		}
		tb.Cleanup(halt)
		return svc, halt
	}
	wait := func(what string, cond func() bool) {
		bustest.Eventually(tb, 15*time.Minute, what, cond)
	}

	// Cold start: a planner from the map in KV until it acts.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start = time.Now()
	a, stopA := run("planner-a")
	wait("planner-a acts", func() bool { return a.Acting() && a.Loaded() })
	out.coldStart = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	out.heapBytesPerShard = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(shards)
	tb.Logf("cold start %s, heap grown %.1f bytes per shard", out.coldStart, out.heapBytesPerShard)

	// A standby loads beside it.
	b, _ := run("planner-b")
	wait("planner-b loaded", b.Loaded)

	// Takeover: the acting planner stops (giving the lease back), a node
	// goes down; the standby must take over and issue its first task.
	tasks := subscribeDecoded[event.Task](tb, env.NC, event.TaskPrefix+">")
	kvLive, err := js.KeyValue(ctx, bus.BucketLiveness)
	if err != nil {
		tb.Fatal(err)
	}
	down := func(node string) {
		l := model.Liveness{V: 1, Node: node, State: model.StateDown, Since: time.Now().UTC()}
		b, _ := json.Marshal(l)
		if _, err := kvLive.Put(ctx, node, b); err != nil {
			tb.Fatal(err)
		}
	}
	start = time.Now()
	stopA()
	down(names[0])
	select {
	case t := <-tasks:
		out.takeover = time.Since(start)
		out.firstTask = t
	case <-time.After(5 * time.Minute):
		tb.Fatal("the standby issued no task within 5 minutes of the takeover")
	}
	if !b.Acting() {
		tb.Fatal("a task was issued, but not by the standby")
	}
	out.verdictLock = histSum(tb, b, "rehome_planner_lock_held_seconds", "verdict")
	tb.Logf("takeover to the first task %s; the verdict held the lock %s", out.takeover, out.verdictLock)

	// A rack outage: every node of rack-2 goes down while status calls and
	// heartbeats flow.
	var statusLat []time.Duration
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 0; ; i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			n := names[(i*7)%nodes]
			hb := &event.Heartbeat{Node: n, Rack: fmt.Sprintf("rack-%d", (i*7)%nodes%racks+1), Addr: "127.0.0.1:1", BootID: "boot",
				CapacityBytes: 16 << 40, UsedBytes: int64(i)}
			if err := bus.Publish(ctx, env.JS, event.HeartbeatPrefix+n, hb, ""); err != nil {
				return
			}
			out.beats++
		}
	}()
	call := func() {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		var s control.ClusterStatus
		t0 := time.Now()
		if err := bus.Call(cctx, env.NC, event.CtlStatus, struct{}{}, &s); err != nil {
			// Counted as a failure (and the latency of the attempt kept): the
			// figure must show it, not end the run.
			out.statusErrors++
			tb.Logf("status during the rack outage: %v (acting: %v)", err, b.Acting())
		} else {
			out.underReplicatedRack = s.UnderReplicated
		}
		statusLat = append(statusLat, time.Since(t0))
	}
	for i := 1; i < nodes; i += racks { // rack-2
		down(names[i])
		call()
	}
	// Until the planner has applied every verdict: the rack's shards all short.
	deadline := time.Now().Add(10 * time.Minute)
	for out.underReplicatedRack != out.wantShort && time.Now().Before(deadline) {
		call()
	}
	for range 20 {
		call()
	}
	close(stopLoad)
	<-loadDone
	out.statusCalls = len(statusLat)
	slices.Sort(statusLat)
	out.statusP99 = statusLat[(len(statusLat)*99)/100]
	out.heartbeatP99 = histQuantile(tb, b, "rehome_planner_handling_seconds", "heartbeat", 0.99)
	out.roundLockMax = histQuantile(tb, b, "rehome_planner_lock_held_seconds", "round", 1)
	return out
}

// histogram returns the histogram series name{op=op} of svc's registry.
func histogram(tb testing.TB, svc *planner.Service, name, op string) *dto.Histogram {
	tb.Helper()
	mfs, err := svc.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return m.GetHistogram()
				}
			}
		}
	}
	tb.Fatalf("no series %s{op=%q}", name, op)
	return nil
}

// histSum is the total time a histogram series recorded.
func histSum(tb testing.TB, svc *planner.Service, name, op string) time.Duration {
	return time.Duration(histogram(tb, svc, name, op).GetSampleSum() * float64(time.Second))
}

// histQuantile is the upper bound of the bucket holding quantile q of a
// histogram series (q = 1: its largest observation's bucket).
func histQuantile(tb testing.TB, svc *planner.Service, name, op string, q float64) time.Duration {
	h := histogram(tb, svc, name, op)
	need := uint64(q * float64(h.GetSampleCount()))
	if need == 0 {
		need = 1
	}
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() >= need {
			return time.Duration(b.GetUpperBound() * float64(time.Second))
		}
	}
	return time.Duration(h.GetSampleSum() * float64(time.Second))
}

// TestControlPlaneScaledDown runs the control-plane scenario on a small map
// and checks what a user would: the planner loads every entry, the standby
// takes over and repairs a shard of the node that went down (copying from a
// live holder onto a node that does not hold it), and status keeps
// answering during a rack outage with the rack's shards under-replicated.
func TestControlPlaneScaledDown(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs two planners on a real bus")
	}
	const shards, nodes, racks = 20000, 50, 5
	cp := runControlPlane(t, shards, nodes, racks)
	ft := cp.firstTask
	if ft.Kind != event.KindCopy || ft.Target == "storage-1" || slices.Contains(ft.Sources[:1], "storage-1") {
		t.Fatalf("first task after the takeover: %+v; want a copy away from storage-1", ft)
	}
	// Every shard with a copy on rack-2 or on storage-1 lacks one (no mover
	// runs), and status says so.
	if cp.underReplicatedRack != cp.wantShort || cp.wantShort < shards/2 {
		t.Fatalf("%d shards under-replicated with rack-2 and storage-1 down, want %d", cp.underReplicatedRack, cp.wantShort)
	}
	if cp.kvBytesPerShard <= 0 || cp.statusCalls < nodes/racks || cp.statusErrors > 0 {
		t.Fatalf("measurements missing: %+v", cp)
	}
}

// BenchmarkControlPlane10M runs the control-plane scenario at 10 M shards
// on 1,000 nodes in 10 racks through a real embedded JetStream (200 000
// shards with REHOME_BENCH_QUICK, REHOME_BENCH_SHARDS with it set): cold start, takeover to the first task,
// the lock time of one down verdict, status and heartbeat p99 during a rack
// outage, and bytes per shard in planner memory and in the JetStream store.
func BenchmarkControlPlane10M(b *testing.B) {
	shards := 10_000_000
	if os.Getenv("REHOME_BENCH_QUICK") != "" {
		shards = 200_000
	}
	if n, err := strconv.Atoi(os.Getenv("REHOME_BENCH_SHARDS")); err == nil && n > 0 {
		shards = n // a comparison at another scale
	}
	var cp controlPlane
	for b.Loop() {
		cp = runControlPlane(b, shards, 1000, 10)
	}
	b.ReportMetric(cp.coldStart.Seconds(), "cold_start_s")
	b.ReportMetric(cp.takeover.Seconds(), "takeover_s")
	b.ReportMetric(float64(cp.verdictLock.Microseconds())/1000, "verdict_lock_ms")
	b.ReportMetric(float64(cp.roundLockMax.Microseconds())/1000, "round_lock_max_ms")
	b.ReportMetric(float64(cp.statusP99.Microseconds())/1000, "status_p99_ms")
	b.ReportMetric(float64(cp.heartbeatP99.Microseconds())/1000, "heartbeat_p99_ms")
	b.ReportMetric(cp.heapBytesPerShard, "heap_B/shard")
	b.ReportMetric(cp.kvBytesPerShard, "kv_B/shard")
	b.ReportMetric(float64(cp.shards), "shards")
	b.ReportMetric(float64(cp.statusErrors), "status_errors")
	b.Logf("%d shards on %d nodes: map written into KV in %s; cold start %s; takeover to first task %s (%s); verdict lock %s; "+
		"longest round under lock <= %s; rack outage: %d status calls p99 %s, %d heartbeats p99 <= %s, %d under-replicated; "+
		"%.1f heap B/shard, %.1f KV B/shard",
		cp.shards, cp.nodes, cp.populate, cp.coldStart, cp.takeover, cp.firstTask.Task, cp.verdictLock, cp.roundLockMax,
		cp.statusCalls, cp.statusP99, cp.beats, cp.heartbeatP99, cp.underReplicatedRack, cp.heapBytesPerShard, cp.kvBytesPerShard)
}
