package core

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

var defaultLimits = Limits{PerNodeIn: 4, PerNodeOut: 4, MaxInFlight: 64}

// planOf plans one round and returns its copies.
func planOf(v *View, now time.Time, lim Limits) []Decision { return v.Round(now, lim).Copies }

func shardsOf(v *View, ds []Decision) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func TestPlanOrdersByRiskThenID(t *testing.T) {
	v := TestView(t, 9, 3)
	Put(t, v, "c-two-live", 1, "storage-1", "storage-2", "storage-3")
	Put(t, v, "a-two-live", 1, "storage-1", "storage-5", "storage-6")
	Put(t, v, "z-one-live", 1, "storage-1", "storage-4", "storage-3")
	Put(t, v, "healthy", 1, "storage-7", "storage-8", "storage-9")
	setState(t, v, "storage-1", model.StateDown, Epoch)
	setState(t, v, "storage-4", model.StateDown, Epoch)

	got := shardsOf(v, planOf(v, Epoch, Limits{PerNodeIn: 10, PerNodeOut: 10, MaxInFlight: 10}))
	want := []string{"z-one-live", "a-two-live", "c-two-live"}
	if !slices.Equal(got, want) {
		t.Fatalf("planned %v, want %v", got, want)
	}
	got = shardsOf(v, planOf(v, Epoch, Limits{PerNodeIn: 10, PerNodeOut: 10, MaxInFlight: 1}))
	if !slices.Equal(got, want[:1]) {
		t.Fatalf("with one slot planned %v, want the most at risk %v", got, want[:1])
	}
}

func TestPlanDecisionContents(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "s1", 4096, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, Epoch)
	ds := planOf(v, Epoch.Add(time.Minute), defaultLimits)
	if len(ds) != 1 {
		t.Fatalf("%d decisions, want 1", len(ds))
	}
	d := ds[0]
	ids := func(rs []NodeRef) []string {
		var out []string
		for _, r := range rs {
			out = append(out, v.Nodes[r].ID)
		}
		return out
	}
	// rack-1 lost its copy: storage-4 is the only rack-1 node left.
	if tg := v.Nodes[d.Target].ID; tg != "storage-4" || d.Relaxed {
		t.Fatalf("target %s relaxed=%v, want storage-4 in the rack without a copy", tg, d.Relaxed)
	}
	if src := ids(d.Sources); len(src) != 2 || slices.Contains(src, "storage-1") {
		t.Fatalf("sources %v: want the two live holders", src)
	}
	if d.Bytes != 4096 || d.Attempt != 1 {
		t.Fatalf("bytes %d attempt %d", d.Bytes, d.Attempt)
	}
	if want := fmt.Sprintf("storage-1-%d", Epoch.UnixMilli()); d.Incident != want {
		t.Fatalf("incident %q, want %q", d.Incident, want)
	}
	if id := v.TaskID(d); id != "s1-storage-4-1" {
		t.Fatalf("task id %q", id)
	}
}

func TestPlanRespectsThrottles(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for iter := 0; iter < 200; iter++ {
		racks := 2 + r.IntN(4)
		n := racks * (2 + r.IntN(3))
		v := TestView(t, n, racks)
		for i := 0; i < 300; i++ {
			nodes := r.Perm(n)[:3]
			var names []string
			for _, x := range nodes {
				names = append(names, fmt.Sprintf("storage-%d", x+1))
			}
			Put(t, v, fmt.Sprintf("sh-%04d", i), 1+r.Int64N(1<<20), names...)
		}
		dead := fmt.Sprintf("storage-%d", 1+r.IntN(n))
		setState(t, v, dead, model.StateDown, Epoch)
		lim := Limits{PerNodeIn: 1 + r.IntN(4), PerNodeOut: 1 + r.IntN(4), MaxInFlight: 1 + r.IntN(40)}
		ds := planOf(v, Epoch, lim)
		in, out := map[NodeRef]int{}, map[NodeRef]int{}
		seen := map[uint32]bool{}
		for _, d := range ds {
			in[d.Target]++
			out[d.Sources[0]]++
			if seen[d.Shard] {
				t.Fatalf("iter %d: shard %s planned twice", iter, d.ID)
			}
			seen[d.Shard] = true
			if v.holds(d.Shard, d.Target) || v.Nodes[d.Target].EffState() != model.StateUp {
				t.Fatalf("iter %d: bad target %s for %s", iter, v.Nodes[d.Target].ID, d.ID)
			}
		}
		if len(ds) > lim.MaxInFlight {
			t.Fatalf("iter %d: %d tasks over the global limit %d", iter, len(ds), lim.MaxInFlight)
		}
		for nr, k := range in {
			if k > lim.PerNodeIn {
				t.Fatalf("iter %d: %d tasks into %s, limit %d", iter, k, v.Nodes[nr].ID, lim.PerNodeIn)
			}
		}
		for nr, k := range out {
			if k > lim.PerNodeOut {
				t.Fatalf("iter %d: %d tasks out of %s, limit %d", iter, k, v.Nodes[nr].ID, lim.PerNodeOut)
			}
		}
		// Never idle: if the global budget is not used up, no skipped shard
		// could have been given a free source and a free target.
		if len(ds) < lim.MaxInFlight {
			v.Reserve(Plan{Copies: ds}, Epoch, time.Minute)
			if more := planOf(v, Epoch, lim); len(more) != 0 {
				t.Fatalf("iter %d: a second plan found %d more tasks within the limits", iter, len(more))
			}
		}
	}
}

func TestNoTaskForAShardInFlight(t *testing.T) {
	v := TestView(t, 6, 3)
	for i := 0; i < 10; i++ {
		Put(t, v, fmt.Sprintf("s%02d", i), 10, "storage-1", "storage-2", "storage-3")
	}
	setState(t, v, "storage-1", model.StateDown, Epoch)
	ds := planOf(v, Epoch, defaultLimits)
	if len(ds) != 4 { // only storage-4 may receive them: PerNodeIn = 4
		t.Fatalf("%d tasks, want 4 (storage-4's in-limit)", len(ds))
	}
	v.Reserve(Plan{Copies: ds}, Epoch, time.Minute)
	if more := planOf(v, Epoch, defaultLimits); len(more) != 0 {
		t.Fatalf("planned %v while storage-4 is full and the rest in flight", shardsOf(v, more))
	}
	// One copy lands: the map shows storage-4; its flight ends; one more is planned.
	first := ds[0]
	Put(t, v, first.ID, 10, "storage-1", "storage-2", "storage-3", "storage-4")
	if v.Flights[first.Shard] != nil {
		t.Fatal("flight not ended by the map showing the target")
	}
	more := planOf(v, Epoch, defaultLimits)
	if len(more) != 1 || slices.Contains(shardsOf(v, ds), more[0].ID) {
		t.Fatalf("after one landed planned %v", shardsOf(v, more))
	}
	if tt := v.Totals(); tt.UnderReplicated != 9 || tt.InFlight != 3 {
		t.Fatalf("totals %+v", tt)
	}
}

func TestSuspectHolderIsNotRepaired(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateSuspect, Epoch)
	if ds := planOf(v, Epoch, defaultLimits); len(ds) != 0 {
		t.Fatalf("planned %v for a suspect holder", shardsOf(v, ds))
	}
	setState(t, v, "storage-2", model.StateMaintenance, Epoch)
	if tt := v.Totals(); tt.UnderReplicated != 0 || tt.Lost != 0 {
		t.Fatalf("totals %+v with suspect and maintenance holders", tt)
	}
	// A suspect holder is only a source when no holder is up.
	setState(t, v, "storage-3", model.StateDown, Epoch)
	ds := planOf(v, Epoch, defaultLimits)
	if len(ds) != 1 || v.Nodes[ds[0].Sources[0]].ID != "storage-1" {
		t.Fatalf("want one task read from suspect storage-1, got %+v", ds)
	}
}

func TestLostDetectionAndReturn(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "s1", 100, "storage-1", "storage-2", "storage-3")
	Put(t, v, "s2", 100, "storage-1", "storage-2", "storage-6")
	for _, n := range []string{"storage-1", "storage-2", "storage-3"} {
		setState(t, v, n, model.StateDown, Epoch)
	}
	tt := v.Totals()
	if tt.Lost != 1 || tt.UnderReplicated != 1 || tt.BytesRemaining != 200 {
		t.Fatalf("totals %+v: want 1 lost, 1 under-replicated missing 2 copies", tt)
	}
	ann := v.LostToAnnounce(10)
	if len(ann) != 1 || v.IDs.String(ann[0]) != "s1" {
		t.Fatalf("lost to announce %v", ann)
	}
	v.Record(ann[0]).Flags |= FlagLostSent
	if again := v.LostToAnnounce(10); len(again) != 0 {
		t.Fatal("lost shard announced twice")
	}
	for _, d := range planOf(v, Epoch, defaultLimits) {
		if d.ID == "s1" {
			t.Fatal("planned a copy of a shard with no live holder")
		}
	}
	// A holder comes back: the shard is no longer lost; lost again later, it is announced again.
	setState(t, v, "storage-3", model.StateUp, Epoch)
	if tt := v.Totals(); tt.Lost != 0 {
		t.Fatalf("lost = %d after a holder returned", tt.Lost)
	}
	setState(t, v, "storage-3", model.StateDown, Epoch)
	if ann := v.LostToAnnounce(10); len(ann) != 1 {
		t.Fatal("a second loss was not announced")
	}
}

func TestUnregisteredHolderCountsAsMissing(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "s1", 10, "storage-1", "storage-2", "ghost")
	v.fresh()
	if tt := v.Totals(); tt.UnderReplicated != 1 {
		t.Fatalf("totals %+v: a holder with no registration is not live", tt)
	}
}

func TestDownHoldersStayAndCountAgain(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, Epoch)
	Put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3", "storage-4")
	if tt := v.Totals(); tt.UnderReplicated != 0 {
		t.Fatalf("totals %+v after the repair landed", tt)
	}
	if v.Nodes[v.NodeIndex["storage-1"]].Shards != 1 || v.Nodes[v.NodeIndex["storage-4"]].Shards != 1 {
		t.Fatal("per-node shard counts do not follow the map")
	}
	setState(t, v, "storage-1", model.StateUp, Epoch)
	if live := v.liveCount(0); live != 4 {
		t.Fatalf("%d live copies after the down holder returned, want 4", live)
	}
}

func TestFailedTargetIsAvoidedWithBackoff(t *testing.T) {
	v := TestView(t, 9, 3)
	Put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, Epoch)
	ds := planOf(v, Epoch, defaultLimits)
	if len(ds) != 1 {
		t.Fatalf("%d decisions", len(ds))
	}
	first := ds[0].Target
	v.Reserve(Plan{Copies: ds}, Epoch, time.Minute)
	v.EndFlight(ds[0].Shard)
	v.failed(ds[0].Shard, ds[0].Sources[0], first, ds[0].Attempt, ds[0].Attempt, Epoch, blameTarget)
	if again := planOf(v, Epoch.Add(500*time.Millisecond), defaultLimits); len(again) != 0 {
		t.Fatal("re-planned within the backoff")
	}
	again := planOf(v, Epoch.Add(2*time.Second), defaultLimits)
	if len(again) != 1 || again[0].Target == first || again[0].Attempt != 2 {
		t.Fatalf("after failure: %+v (first target %s)", again, v.Nodes[first].ID)
	}
	if v.TaskID(again[0]) == v.TaskID(ds[0]) {
		t.Fatal("retry reuses the task id")
	}
}

func TestFailedOnlyTargetIsRetried(t *testing.T) {
	v := TestView(t, 4, 4)
	Put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, Epoch)
	ds := planOf(v, Epoch, defaultLimits)
	v.Reserve(Plan{Copies: ds}, Epoch, time.Minute)
	v.EndFlight(ds[0].Shard)
	v.failed(ds[0].Shard, ds[0].Sources[0], ds[0].Target, 1, 1, Epoch, blameTarget)
	again := planOf(v, Epoch.Add(time.Minute), defaultLimits)
	if len(again) != 1 || v.Nodes[again[0].Target].ID != "storage-4" {
		t.Fatalf("the only possible target must be tried again: %+v", again)
	}
}

func TestFailedTargetKeepsRackRuleUntilItFailsAgain(t *testing.T) {
	v := TestView(t, 6, 3) // storage-4 is the only rack-1 node left
	Put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, Epoch)
	now := Epoch
	var targets []string
	for attempt := 1; attempt <= 3; attempt++ {
		now = now.Add(time.Minute)
		ds := planOf(v, now, defaultLimits)
		if len(ds) != 1 || ds[0].Attempt != attempt {
			t.Fatalf("attempt %d: %+v", attempt, ds)
		}
		targets = append(targets, v.Nodes[ds[0].Target].ID)
		v.Reserve(Plan{Copies: ds}, now, time.Minute)
		v.EndFlight(ds[0].Shard)
		v.failed(ds[0].Shard, ds[0].Sources[0], ds[0].Target, ds[0].Attempt, ds[0].Attempt, now, blameTarget)
	}
	if targets[0] != "storage-4" || targets[1] != "storage-4" || targets[2] == "storage-4" {
		t.Fatalf("targets over three attempts %v: want storage-4 twice (rack rule), then another", targets)
	}
}

func TestAllocationsCountAsPending(t *testing.T) {
	v := TestView(t, 3, 3)
	r := v.NodeIndex["storage-2"]
	v.AddAllocation("key", map[NodeRef]int64{r: 500}, Epoch.Add(time.Minute))
	if c := v.Candidates()[r]; c.PendingBytes != 500 {
		t.Fatalf("pending %d", c.PendingBytes)
	}
	v.Expire(Epoch.Add(2 * time.Minute))
	if c := v.Candidates()[r]; c.PendingBytes != 0 {
		t.Fatalf("pending %d after expiry", c.PendingBytes)
	}
}

func TestStatusAndProgress(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "a", 100, "storage-1", "storage-2", "storage-3")
	Put(t, v, "b", 50, "storage-4", "storage-5", "storage-6")
	v.Heartbeat("storage-2", 300, 1000, Epoch)
	setState(t, v, "storage-1", model.StateDown, Epoch)
	st := v.ClusterStatus()
	if st.Shards != 2 || st.Objects != 2 || st.UnderReplicated != 1 || st.BytesRemaining != 100 || len(st.Nodes) != 6 {
		t.Fatalf("status %+v", st)
	}
	if n := st.Nodes[0]; n.ID != "storage-1" || n.Rack != "rack-1" || n.State != model.StateDown || n.Shards != 1 {
		t.Fatalf("first node %+v", n)
	}
	if n := st.Nodes[2]; n.ID != "storage-2" || n.Fill != 0.3 || n.Bytes != 100 {
		t.Fatalf("storage-2 %+v (sorted by rack then id)", n)
	}
	p := v.Progress(Epoch, time.Minute)
	if p.UnderReplicated != 1 || p.ETASeconds != -1 || p.Stalled {
		t.Fatalf("progress %+v", p)
	}
	v.VerifiedCopy(50, Epoch.Add(5*time.Second))
	p = v.Progress(Epoch.Add(10*time.Second), time.Minute)
	if p.RateBytesPerSec != 5 || p.ETASeconds != 20 {
		t.Fatalf("rate %.2f eta %.2f, want 5 B/s (50 B over the 10 s of work) and 20 s", p.RateBytesPerSec, p.ETASeconds)
	}
	if p = v.Progress(Epoch.Add(66*time.Second), time.Minute); !p.Stalled {
		t.Fatal("not stalled after a minute without a verified copy")
	}
	setState(t, v, "storage-1", model.StateUp, Epoch)
	if p = v.Progress(Epoch.Add(70*time.Second), time.Minute); p.Stalled || p.ETASeconds != 0 || p.UnderReplicated != 0 {
		t.Fatalf("healthy progress %+v", p)
	}
}

func TestRemovePlacementReleasesEverything(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "s1", 10, "storage-1", "storage-2", "storage-3")
	setState(t, v, "storage-1", model.StateDown, Epoch)
	Put(t, v, "s2", 10, "storage-2", "storage-3", "storage-4", "storage-5")
	p := v.Round(Epoch, defaultLimits)
	if len(p.Copies) != 1 || len(p.Trims) != 1 {
		t.Fatalf("round %+v: want a copy of s1 and a trim of s2", p)
	}
	v.Reserve(p, Epoch, time.Minute)
	v.RemovePlacement("s1")
	v.RemovePlacement("s2")
	tt := v.Totals()
	if tt.Shards != 0 || tt.Objects != 0 || tt.UnderReplicated != 0 || tt.InFlight != 0 {
		t.Fatalf("totals %+v after removal", tt)
	}
	if len(v.Trims) != 0 || len(v.surplus) != 0 || len(v.shortSince) != 0 {
		t.Fatalf("trims %v surplus %v shortSince %v after removal", v.Trims, v.surplus, v.shortSince)
	}
	for _, n := range v.Nodes {
		if n.Shards != 0 || n.inTasks != 0 || n.outTasks != 0 || n.inBytes != 0 {
			t.Fatalf("node %+v keeps counters", n)
		}
	}
}

// TestMemoryPerShard loads a map of 44-byte shard ids and checks the view
// stays within 115 bytes per shard: 100 for the shard record, its id and
// the queues, and the node → shards index's 4 bytes per holder (12 for
// three copies) with the slack of its growing slices.
func TestMemoryPerShard(t *testing.T) {
	const n = 4 * pageSize // whole pages: at 10 M shards the last page's slack is noise
	v := TestView(t, 100, 10)
	v.Loading = true
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
		if _, err := v.UpsertPlacement(p); err != nil {
			t.Fatal(err)
		}
	}
	v.Loading = false
	v.Rescan()
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.1f bytes per shard", per)
	if per > 115 {
		t.Fatalf("%.1f bytes of planner memory per shard, want <= 115", per)
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
	v := TestView(b, nodes, racks)
	v.Loading = true
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("storage-%d", i+1) // rack (i % racks) + 1
		v.Heartbeat(names[i], 0, 4<<40, Epoch)    // 4 TiB disks: ~1.2 TiB of shards each
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
		if _, err := v.UpsertPlacement(p); err != nil {
			b.Fatal(err)
		}
	}
	v.Loading = false
	v.Rescan()
	lim := Limits{PerNodeIn: 2, PerNodeOut: 2, MaxInFlight: 64, MaxFill: 0.9}
	var planned, queued int
	for b.Loop() {
		setState(b, v, "storage-7", model.StateDown, Epoch)
		p := v.Round(Epoch, lim)
		b.StopTimer()
		planned, queued = len(p.Copies), v.Totals().UnderReplicated
		runtime.GC()
		runtime.ReadMemStats(&after)
		setState(b, v, "storage-7", model.StateUp, Epoch)
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
	v := TestView(b, 99, 3)
	v.Loading = true
	p := model.Placement{V: 1, Key: "k", SHA256: sha, Layout: model.Layout{RF: 3}, Size: 4 << 20}
	for i := 0; i < n; i++ {
		p.Shard = fmt.Sprintf("%08x-1234-5678-9abc-def012345678-c%06d", i/4, i%4)
		p.ObjectID = p.Shard[:36]
		// storage-1 (rack-1) plus one node of rack-2 and one of rack-3
		p.Nodes = []string{"storage-1", fmt.Sprintf("storage-%d", 2+3*(i%33)), fmt.Sprintf("storage-%d", 3+3*(i%33))}
		if _, err := v.UpsertPlacement(p); err != nil {
			b.Fatal(err)
		}
	}
	v.Loading = false
	setState(b, v, "storage-1", model.StateDown, Epoch)
	lim := Limits{PerNodeIn: 4, PerNodeOut: 100, MaxInFlight: 100000}
	v.Reserve(Plan{Copies: planOf(v, Epoch, lim)}, Epoch, time.Hour) // fills rack-1's 32 nodes
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ds := planOf(v, Epoch, lim); len(ds) != 0 {
			b.Fatalf("planned %d with every target full", len(ds))
		}
	}
}

func TestCandidatesLoadFromMapRoomFromHeartbeat(t *testing.T) {
	v := TestView(t, 3, 3)
	Put(t, v, "s1", 100, "storage-1", "storage-2", "storage-3")
	// storage-1 shares a disk with others: its heartbeat reports 600 of 1000 used.
	v.Heartbeat("storage-1", 600, 1000, Epoch)
	v.Heartbeat("storage-2", 50, 1000, Epoch) // heartbeat lags behind the map
	cs := v.Candidates()
	if c := cs[v.NodeIndex["storage-1"]]; c.UsedBytes != 100 || c.OtherBytes != 500 || c.CapacityBytes != 1000 {
		t.Fatalf("storage-1 %+v: want load 100, 500 taken by others, capacity 1000", c)
	}
	if c := cs[v.NodeIndex["storage-2"]]; c.UsedBytes != 100 || c.OtherBytes != 0 {
		t.Fatalf("storage-2 %+v: want load 100 (the map's), nothing else", c)
	}
}
