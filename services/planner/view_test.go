package planner

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

const sha = "0000000000000000000000000000000000000000000000000000000000000000"

// testView builds a loaded view of n up nodes dealt round-robin on racks.
func testView(t testing.TB, n, racks int) *view {
	t.Helper()
	v := newView(func() time.Time { return t0 }, policy{maxAttempts: 5, retryLater: time.Minute})
	for i := 1; i <= n; i++ {
		err := v.setNode(model.Node{V: 1, ID: fmt.Sprintf("storage-%d", i), Rack: fmt.Sprintf("rack-%d", (i-1)%racks+1),
			Addr: fmt.Sprintf("127.0.0.1:%d", 9000+i), CapacityBytes: 1 << 40})
		if err != nil {
			t.Fatal(err)
		}
	}
	v.rescan()
	return v
}

func put(t testing.TB, v *view, id string, size int64, nodes ...string) {
	t.Helper()
	_, err := v.upsertPlacement(model.Placement{V: 1, Shard: id, Key: "k-" + id, ObjectID: "obj-" + id, Size: size,
		SHA256: sha, Layout: model.Layout{RF: 3}, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
}

func setState(t testing.TB, v *view, node string, st model.State, since time.Time) {
	t.Helper()
	if _, err := v.setLiveness(model.Liveness{V: 1, Node: node, State: st, Since: since}); err != nil {
		t.Fatal(err)
	}
}

var defaultLimits = limits{perNodeIn: 4, perNodeOut: 4, maxInFlight: 64}

// planOf plans one round and returns its copies.
func planOf(v *view, now time.Time, lim limits) []decision { return v.round(now, lim).copies }

func shardsOf(v *view, ds []decision) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.id
	}
	return out
}

func TestPlanOrdersByRiskThenID(t *testing.T) {
	v := testView(t, 9, 3)
	put(t, v, "c-two-live", 1, "storage-1", "storage-2", "storage-3")
	put(t, v, "a-two-live", 1, "storage-1", "storage-5", "storage-6")
	put(t, v, "z-one-live", 1, "storage-1", "storage-4", "storage-3")
	put(t, v, "healthy", 1, "storage-7", "storage-8", "storage-9")
	setState(t, v, "storage-1", model.StateDown, t0)
	setState(t, v, "storage-4", model.StateDown, t0)

	got := shardsOf(v, planOf(v, t0, limits{perNodeIn: 10, perNodeOut: 10, maxInFlight: 10}))
	want := []string{"z-one-live", "a-two-live", "c-two-live"}
	if !slices.Equal(got, want) {
		t.Fatalf("planned %v, want %v", got, want)
	}
	got = shardsOf(v, planOf(v, t0, limits{perNodeIn: 10, perNodeOut: 10, maxInFlight: 1}))
	if !slices.Equal(got, want[:1]) {
		t.Fatalf("with one slot planned %v, want the most at risk %v", got, want[:1])
	}
}

func TestPlanDecisionContents(t *testing.T) {
	v := testView(t, 6, 3)
	put(t, v, "s1", 4096, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, t0)
	ds := planOf(v, t0.Add(time.Minute), defaultLimits)
	if len(ds) != 1 {
		t.Fatalf("%d decisions, want 1", len(ds))
	}
	d := ds[0]
	ids := func(rs []nodeRef) []string {
		var out []string
		for _, r := range rs {
			out = append(out, v.nodes[r].id)
		}
		return out
	}
	// rack-1 lost its copy: storage-4 is the only rack-1 node left.
	if tg := v.nodes[d.target].id; tg != "storage-4" || d.relaxed {
		t.Fatalf("target %s relaxed=%v, want storage-4 in the rack without a copy", tg, d.relaxed)
	}
	if src := ids(d.sources); len(src) != 2 || slices.Contains(src, "storage-1") {
		t.Fatalf("sources %v: want the two live holders", src)
	}
	if d.bytes != 4096 || d.attempt != 1 {
		t.Fatalf("bytes %d attempt %d", d.bytes, d.attempt)
	}
	if want := fmt.Sprintf("storage-1-%d", t0.UnixMilli()); d.incident != want {
		t.Fatalf("incident %q, want %q", d.incident, want)
	}
	if id := v.taskID(d); id != "s1-storage-4-1" {
		t.Fatalf("task id %q", id)
	}
}

func TestPlanRespectsThrottles(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for iter := 0; iter < 200; iter++ {
		racks := 2 + r.IntN(4)
		n := racks * (2 + r.IntN(3))
		v := testView(t, n, racks)
		for i := 0; i < 300; i++ {
			nodes := r.Perm(n)[:3]
			var names []string
			for _, x := range nodes {
				names = append(names, fmt.Sprintf("storage-%d", x+1))
			}
			put(t, v, fmt.Sprintf("sh-%04d", i), 1+r.Int64N(1<<20), names...)
		}
		dead := fmt.Sprintf("storage-%d", 1+r.IntN(n))
		setState(t, v, dead, model.StateDown, t0)
		lim := limits{perNodeIn: 1 + r.IntN(4), perNodeOut: 1 + r.IntN(4), maxInFlight: 1 + r.IntN(40)}
		ds := planOf(v, t0, lim)
		in, out := map[nodeRef]int{}, map[nodeRef]int{}
		seen := map[uint32]bool{}
		for _, d := range ds {
			in[d.target]++
			out[d.sources[0]]++
			if seen[d.shard] {
				t.Fatalf("iter %d: shard %s planned twice", iter, d.id)
			}
			seen[d.shard] = true
			if v.holds(d.shard, d.target) || v.nodes[d.target].effState() != model.StateUp {
				t.Fatalf("iter %d: bad target %s for %s", iter, v.nodes[d.target].id, d.id)
			}
		}
		if len(ds) > lim.maxInFlight {
			t.Fatalf("iter %d: %d tasks over the global limit %d", iter, len(ds), lim.maxInFlight)
		}
		for nr, k := range in {
			if k > lim.perNodeIn {
				t.Fatalf("iter %d: %d tasks into %s, limit %d", iter, k, v.nodes[nr].id, lim.perNodeIn)
			}
		}
		for nr, k := range out {
			if k > lim.perNodeOut {
				t.Fatalf("iter %d: %d tasks out of %s, limit %d", iter, k, v.nodes[nr].id, lim.perNodeOut)
			}
		}
		// Never idle: if the global budget is not used up, no skipped shard
		// could have been given a free source and a free target.
		if len(ds) < lim.maxInFlight {
			v.reserve(roundPlan{copies: ds}, t0, time.Minute)
			if more := planOf(v, t0, lim); len(more) != 0 {
				t.Fatalf("iter %d: a second plan found %d more tasks within the limits", iter, len(more))
			}
		}
	}
}

func TestNoTaskForAShardInFlight(t *testing.T) {
	v := testView(t, 6, 3)
	for i := 0; i < 10; i++ {
		put(t, v, fmt.Sprintf("s%02d", i), 10, "storage-1", "storage-2", "storage-3")
	}
	setState(t, v, "storage-1", model.StateDown, t0)
	ds := planOf(v, t0, defaultLimits)
	if len(ds) != 4 { // only storage-4 may receive them: PerNodeIn = 4
		t.Fatalf("%d tasks, want 4 (storage-4's in-limit)", len(ds))
	}
	v.reserve(roundPlan{copies: ds}, t0, time.Minute)
	if more := planOf(v, t0, defaultLimits); len(more) != 0 {
		t.Fatalf("planned %v while storage-4 is full and the rest in flight", shardsOf(v, more))
	}
	// One copy lands: the map shows storage-4; its flight ends; one more is planned.
	first := ds[0]
	put(t, v, first.id, 10, "storage-1", "storage-2", "storage-3", "storage-4")
	if v.flights[first.shard] != nil {
		t.Fatal("flight not ended by the map showing the target")
	}
	more := planOf(v, t0, defaultLimits)
	if len(more) != 1 || slices.Contains(shardsOf(v, ds), more[0].id) {
		t.Fatalf("after one landed planned %v", shardsOf(v, more))
	}
	if tt := v.totals(); tt.underReplicated != 9 || tt.inFlight != 3 {
		t.Fatalf("totals %+v", tt)
	}
}

func TestSuspectHolderIsNotRepaired(t *testing.T) {
	v := testView(t, 6, 3)
	put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateSuspect, t0)
	if ds := planOf(v, t0, defaultLimits); len(ds) != 0 {
		t.Fatalf("planned %v for a suspect holder", shardsOf(v, ds))
	}
	setState(t, v, "storage-2", model.StateMaintenance, t0)
	if tt := v.totals(); tt.underReplicated != 0 || tt.lost != 0 {
		t.Fatalf("totals %+v with suspect and maintenance holders", tt)
	}
	// A suspect holder is only a source when no holder is up.
	setState(t, v, "storage-3", model.StateDown, t0)
	ds := planOf(v, t0, defaultLimits)
	if len(ds) != 1 || v.nodes[ds[0].sources[0]].id != "storage-1" {
		t.Fatalf("want one task read from suspect storage-1, got %+v", ds)
	}
}

func TestLostDetectionAndReturn(t *testing.T) {
	v := testView(t, 6, 3)
	put(t, v, "s1", 100, "storage-1", "storage-2", "storage-3")
	put(t, v, "s2", 100, "storage-1", "storage-2", "storage-6")
	for _, n := range []string{"storage-1", "storage-2", "storage-3"} {
		setState(t, v, n, model.StateDown, t0)
	}
	tt := v.totals()
	if tt.lost != 1 || tt.underReplicated != 1 || tt.bytesRemaining != 200 {
		t.Fatalf("totals %+v: want 1 lost, 1 under-replicated missing 2 copies", tt)
	}
	ann := v.lostToAnnounce(10)
	if len(ann) != 1 || v.ids.String(ann[0]) != "s1" {
		t.Fatalf("lost to announce %v", ann)
	}
	v.rec(ann[0]).flags |= flagLostSent
	if again := v.lostToAnnounce(10); len(again) != 0 {
		t.Fatal("lost shard announced twice")
	}
	for _, d := range planOf(v, t0, defaultLimits) {
		if d.id == "s1" {
			t.Fatal("planned a copy of a shard with no live holder")
		}
	}
	// A holder comes back: the shard is no longer lost; lost again later, it is announced again.
	setState(t, v, "storage-3", model.StateUp, t0)
	if tt := v.totals(); tt.lost != 0 {
		t.Fatalf("lost = %d after a holder returned", tt.lost)
	}
	setState(t, v, "storage-3", model.StateDown, t0)
	if ann := v.lostToAnnounce(10); len(ann) != 1 {
		t.Fatal("a second loss was not announced")
	}
}

func TestUnregisteredHolderCountsAsMissing(t *testing.T) {
	v := testView(t, 6, 3)
	put(t, v, "s1", 10, "storage-1", "storage-2", "ghost")
	v.fresh()
	if tt := v.totals(); tt.underReplicated != 1 {
		t.Fatalf("totals %+v: a holder with no registration is not live", tt)
	}
}

func TestDownHoldersStayAndCountAgain(t *testing.T) {
	v := testView(t, 6, 3)
	put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, t0)
	put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3", "storage-4")
	if tt := v.totals(); tt.underReplicated != 0 {
		t.Fatalf("totals %+v after the repair landed", tt)
	}
	if v.nodes[v.nodeIdx["storage-1"]].shards != 1 || v.nodes[v.nodeIdx["storage-4"]].shards != 1 {
		t.Fatal("per-node shard counts do not follow the map")
	}
	setState(t, v, "storage-1", model.StateUp, t0)
	if live := v.liveCount(0); live != 4 {
		t.Fatalf("%d live copies after the down holder returned, want 4", live)
	}
}

func TestFailedTargetIsAvoidedWithBackoff(t *testing.T) {
	v := testView(t, 9, 3)
	put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, t0)
	ds := planOf(v, t0, defaultLimits)
	if len(ds) != 1 {
		t.Fatalf("%d decisions", len(ds))
	}
	first := ds[0].target
	v.reserve(roundPlan{copies: ds}, t0, time.Minute)
	v.endFlight(ds[0].shard)
	v.failed(ds[0].shard, first, ds[0].attempt, ds[0].attempt, t0, true)
	if again := planOf(v, t0.Add(500*time.Millisecond), defaultLimits); len(again) != 0 {
		t.Fatal("re-planned within the backoff")
	}
	again := planOf(v, t0.Add(2*time.Second), defaultLimits)
	if len(again) != 1 || again[0].target == first || again[0].attempt != 2 {
		t.Fatalf("after failure: %+v (first target %s)", again, v.nodes[first].id)
	}
	if v.taskID(again[0]) == v.taskID(ds[0]) {
		t.Fatal("retry reuses the task id")
	}
}

func TestFailedOnlyTargetIsRetried(t *testing.T) {
	v := testView(t, 4, 4)
	put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, t0)
	ds := planOf(v, t0, defaultLimits)
	v.reserve(roundPlan{copies: ds}, t0, time.Minute)
	v.endFlight(ds[0].shard)
	v.failed(ds[0].shard, ds[0].target, 1, 1, t0, true)
	again := planOf(v, t0.Add(time.Minute), defaultLimits)
	if len(again) != 1 || v.nodes[again[0].target].id != "storage-4" {
		t.Fatalf("the only possible target must be tried again: %+v", again)
	}
}

func TestFailedTargetKeepsRackRuleUntilItFailsAgain(t *testing.T) {
	v := testView(t, 6, 3) // storage-4 is the only rack-1 node left
	put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, t0)
	now := t0
	var targets []string
	for attempt := 1; attempt <= 3; attempt++ {
		now = now.Add(time.Minute)
		ds := planOf(v, now, defaultLimits)
		if len(ds) != 1 || ds[0].attempt != attempt {
			t.Fatalf("attempt %d: %+v", attempt, ds)
		}
		targets = append(targets, v.nodes[ds[0].target].id)
		v.reserve(roundPlan{copies: ds}, now, time.Minute)
		v.endFlight(ds[0].shard)
		v.failed(ds[0].shard, ds[0].target, ds[0].attempt, ds[0].attempt, now, true)
	}
	if targets[0] != "storage-4" || targets[1] != "storage-4" || targets[2] == "storage-4" {
		t.Fatalf("targets over three attempts %v: want storage-4 twice (rack rule), then another", targets)
	}
}

func TestAllocationsCountAsPending(t *testing.T) {
	v := testView(t, 3, 3)
	r := v.nodeIdx["storage-2"]
	v.addAllocation("key", map[nodeRef]int64{r: 500}, t0.Add(time.Minute))
	if c := v.candidates()[r]; c.PendingBytes != 500 {
		t.Fatalf("pending %d", c.PendingBytes)
	}
	v.expire(t0.Add(2 * time.Minute))
	if c := v.candidates()[r]; c.PendingBytes != 0 {
		t.Fatalf("pending %d after expiry", c.PendingBytes)
	}
}

func TestStatusAndProgress(t *testing.T) {
	v := testView(t, 6, 3)
	put(t, v, "a", 100, "storage-1", "storage-2", "storage-3")
	put(t, v, "b", 50, "storage-4", "storage-5", "storage-6")
	v.heartbeat("storage-2", 300, 1000, t0)
	setState(t, v, "storage-1", model.StateDown, t0)
	st := v.clusterStatus()
	if st.Shards != 2 || st.Objects != 2 || st.UnderReplicated != 1 || st.BytesRemaining != 100 || len(st.Nodes) != 6 {
		t.Fatalf("status %+v", st)
	}
	if n := st.Nodes[0]; n.ID != "storage-1" || n.Rack != "rack-1" || n.State != model.StateDown || n.Shards != 1 {
		t.Fatalf("first node %+v", n)
	}
	if n := st.Nodes[2]; n.ID != "storage-2" || n.Fill != 0.3 || n.Bytes != 100 {
		t.Fatalf("storage-2 %+v (sorted by rack then id)", n)
	}
	p := v.progress(t0, time.Minute)
	if p.UnderReplicated != 1 || p.ETASeconds != -1 || p.Stalled {
		t.Fatalf("progress %+v", p)
	}
	v.verifiedCopy(50, t0.Add(5*time.Second))
	p = v.progress(t0.Add(10*time.Second), time.Minute)
	if p.RateBytesPerSec != 5 || p.ETASeconds != 20 {
		t.Fatalf("rate %.2f eta %.2f, want 5 B/s (50 B over the 10 s of work) and 20 s", p.RateBytesPerSec, p.ETASeconds)
	}
	if p = v.progress(t0.Add(66*time.Second), time.Minute); !p.Stalled {
		t.Fatal("not stalled after a minute without a verified copy")
	}
	setState(t, v, "storage-1", model.StateUp, t0)
	if p = v.progress(t0.Add(70*time.Second), time.Minute); p.Stalled || p.ETASeconds != 0 || p.UnderReplicated != 0 {
		t.Fatalf("healthy progress %+v", p)
	}
}

func TestRemovePlacementReleasesEverything(t *testing.T) {
	v := testView(t, 6, 3)
	put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, t0)
	put(t, v, "s2", 10, "storage-2", "storage-3", "storage-4", "storage-5")
	p := v.round(t0, defaultLimits)
	if len(p.copies) != 1 || len(p.trims) != 1 {
		t.Fatalf("round %+v: want a copy of s1 and a trim of s2", p)
	}
	v.reserve(p, t0, time.Minute)
	v.removePlacement("s1")
	v.removePlacement("s2")
	tt := v.totals()
	if tt.shards != 0 || tt.objects != 0 || tt.underReplicated != 0 || tt.inFlight != 0 {
		t.Fatalf("totals %+v after removal", tt)
	}
	if len(v.trims) != 0 || len(v.surplus) != 0 || len(v.shortSince) != 0 {
		t.Fatalf("trims %v surplus %v shortSince %v after removal", v.trims, v.surplus, v.shortSince)
	}
	for _, n := range v.nodes {
		if n.shards != 0 || n.inTasks != 0 || n.outTasks != 0 || n.inBytes != 0 {
			t.Fatalf("node %+v keeps counters", n)
		}
	}
}

// TestMemoryPerShard loads a map of 44-byte shard ids and checks the view
// stays within the 100 bytes per shard the 10 M-shard target allows.
func TestMemoryPerShard(t *testing.T) {
	const n = 4 * pageSize // whole pages: at 10 M shards the last page's slack is noise
	v := testView(t, 100, 10)
	v.loading = true
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	nodes := make([]string, 100)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("storage-%d", i+1)
	}
	p := model.Placement{V: 1, Key: "k", SHA256: sha, Layout: model.Layout{RF: 3}, Size: 4 << 20}
	for i := 0; i < n; i++ {
		p.Shard = fmt.Sprintf("%08x-1234-5678-9abc-def012345678-c%06d", i/4, i%4)
		p.ObjectID = p.Shard[:36]
		p.Nodes = []string{nodes[i%100], nodes[(i+1)%100], nodes[(i+2)%100]}
		if _, err := v.upsertPlacement(p); err != nil {
			t.Fatal(err)
		}
	}
	v.loading = false
	v.rescan()
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.1f bytes per shard", per)
	if per > 100 {
		t.Fatalf("%.1f bytes of planner memory per shard, want <= 100", per)
	}
	runtime.KeepAlive(v)
}

// BenchmarkPlanNodeLoss10M is the SPEC's planner figure: a synthetic map of
// 10 M shards (uuid-like object ids, 4 chunks each, three replicas in three
// racks) on 100 nodes in 10 racks; one op is a node going down and the
// planning round that follows (deriving the ~300 k-shard repair queue in
// risk order and choosing the first round's copies). It reports ns/op and
// the planner's heap per shard after the loss (map, queue and all), measured
// after a GC. Building the map takes a while; it is built once.
func BenchmarkPlanNodeLoss10M(b *testing.B) {
	const (
		shards = 10_000_000
		nodes  = 100
		racks  = 10
	)
	var base, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	v := testView(b, nodes, racks)
	v.loading = true
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("storage-%d", i+1) // rack (i % racks) + 1
		v.heartbeat(names[i], 0, 4<<40, t0)       // 4 TiB disks: ~1.2 TiB of shards each
	}
	r := rand.New(rand.NewPCG(10, 10))
	p := model.Placement{V: 1, Key: "k", SHA256: sha, Layout: model.Layout{RF: 3}, Size: 4 << 20}
	var obj string
	for i := 0; i < shards; i++ {
		if i%4 == 0 {
			obj = fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff,
				r.Uint32()&0xffff, r.Uint64()&0xffffffffffff)
		}
		p.Shard = fmt.Sprintf("%s-c%06d", obj, i%4)
		p.ObjectID = obj
		ra := r.IntN(racks)
		rb := (ra + 1 + r.IntN(racks-1)) % racks
		rc := ra
		for rc == ra || rc == rb {
			rc = r.IntN(racks)
		}
		p.Nodes = []string{names[ra+racks*r.IntN(nodes/racks)], names[rb+racks*r.IntN(nodes/racks)], names[rc+racks*r.IntN(nodes/racks)]}
		if _, err := v.upsertPlacement(p); err != nil {
			b.Fatal(err)
		}
	}
	v.loading = false
	v.rescan()
	lim := limits{perNodeIn: 2, perNodeOut: 2, maxInFlight: 64, maxFill: 0.9}
	var planned, queued int
	for b.Loop() {
		setState(b, v, "storage-7", model.StateDown, t0)
		p := v.round(t0, lim)
		b.StopTimer()
		planned, queued = len(p.copies), v.totals().underReplicated
		runtime.GC()
		runtime.ReadMemStats(&after)
		setState(b, v, "storage-7", model.StateUp, t0)
		v.fresh()
		b.StartTimer()
	}
	perShard := float64(after.HeapAlloc-base.HeapAlloc) / shards
	b.ReportMetric(perShard, "B/shard")
	b.ReportMetric(float64(queued), "queued")
	b.Logf("%d shards: node loss queued %d shards, first round planned %d copies; heap %.1f bytes/shard",
		shards, queued, planned, perShard)
	if planned == 0 || queued < 250_000 {
		b.Fatalf("planned %d of %d queued", planned, queued)
	}
	runtime.KeepAlive(v)
}

// BenchmarkPlanThrottled plans a large queue whose only rack-keeping targets
// are all busy while the global budget is not: the round must not cost a
// target search per queued shard.
func BenchmarkPlanThrottled(b *testing.B) {
	const n = 300000
	v := testView(b, 99, 3)
	v.loading = true
	p := model.Placement{V: 1, Key: "k", SHA256: sha, Layout: model.Layout{RF: 3}, Size: 4 << 20}
	for i := 0; i < n; i++ {
		p.Shard = fmt.Sprintf("%08x-1234-5678-9abc-def012345678-c%06d", i/4, i%4)
		p.ObjectID = p.Shard[:36]
		// storage-1 (rack-1) plus one node of rack-2 and one of rack-3
		p.Nodes = []string{"storage-1", fmt.Sprintf("storage-%d", 2+3*(i%33)), fmt.Sprintf("storage-%d", 3+3*(i%33))}
		if _, err := v.upsertPlacement(p); err != nil {
			b.Fatal(err)
		}
	}
	v.loading = false
	setState(b, v, "storage-1", model.StateDown, t0)
	lim := limits{perNodeIn: 4, perNodeOut: 100, maxInFlight: 100000}
	v.reserve(roundPlan{copies: planOf(v, t0, lim)}, t0, time.Hour) // fills rack-1's 32 nodes
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ds := planOf(v, t0, lim); len(ds) != 0 {
			b.Fatalf("planned %d with every target full", len(ds))
		}
	}
}

func TestCandidatesLoadFromMapRoomFromHeartbeat(t *testing.T) {
	v := testView(t, 3, 3)
	put(t, v, "s1", 100, "storage-1", "storage-2", "storage-3")
	// storage-1 shares a disk with others: its heartbeat reports 600 of 1000 used.
	v.heartbeat("storage-1", 600, 1000, t0)
	v.heartbeat("storage-2", 50, 1000, t0) // heartbeat lags behind the map
	cs := v.candidates()
	if c := cs[v.nodeIdx["storage-1"]]; c.UsedBytes != 100 || c.OtherBytes != 500 || c.CapacityBytes != 1000 {
		t.Fatalf("storage-1 %+v: want load 100, 500 taken by others, capacity 1000", c)
	}
	if c := cs[v.nodeIdx["storage-2"]]; c.UsedBytes != 100 || c.OtherBytes != 0 {
		t.Fatalf("storage-2 %+v: want load 100 (the map's), nothing else", c)
	}
}
