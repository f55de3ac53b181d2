package core

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// planHarness is the exported Harness with the test's helpers: it plans
// rounds at the decision level (plan: decisions reserved, nothing issued),
// or steps them through the harness's map and queue (Step: effects), and
// plays the movers' answers and the detector's verdicts.
type planHarness struct {
	*Harness
	t      testing.TB
	v      *View
	lim    Limits
	rounds []Plan
}

func newPlanHarness(t testing.TB, nodes, racks int, lim Limits) *planHarness {
	t.Helper()
	h := &planHarness{Harness: NewHarness(Epoch, Policy{MaxAttempts: 5, RetryLater: time.Minute}, lim), t: t, lim: lim}
	h.v = h.View
	if err := h.AddNodes(nodes, racks); err != nil {
		t.Fatal(err)
	}
	h.v.Rescan()
	return h
}

// put maps a replicated shard (3 copies) on nodes through the harness's map.
func (h *planHarness) put(id string, size int64, nodes ...string) {
	h.t.Helper()
	if err := h.Write(model.Placement{V: 1, Shard: id, Key: "k-" + id, ObjectID: "obj-" + id, Size: size,
		SHA256: sha, Layout: model.Layout{RF: 3}, Nodes: nodes}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *planHarness) state(node string, st model.State) {
	h.t.Helper()
	if err := h.SetLiveness(node, st); err != nil {
		h.t.Fatal(err)
	}
}

func (h *planHarness) advance(d time.Duration) { h.Advance(d) }

// plan runs one round at the harness's time, reserves it as the service
// would after publishing, and records it.
func (h *planHarness) plan() Plan {
	p := h.v.Round(h.Now, h.lim)
	h.v.Reserve(p, h.Now, time.Hour)
	for _, t := range p.Trims { // the service names the task after its map update
		h.v.Trims[t.Shard].Task = TrimPrefix + t.ID
	}
	h.rounds = append(h.rounds, p)
	return p
}

// holderIDs returns a shard's holders by id.
func (h *planHarness) holderIDs(id string) []string {
	sh, ok := h.v.IDs.Lookup(id)
	if !ok {
		h.t.Fatalf("no shard %s", id)
	}
	var out []string
	for _, r := range h.v.holders(sh) {
		out = append(out, h.v.Nodes[r].ID)
	}
	return out
}

func (h *planHarness) entry(id string, nodes []string) model.Placement {
	sh, _ := h.v.IDs.Lookup(id)
	return model.Placement{V: 1, Shard: id, Key: "k-" + id, ObjectID: "obj-" + id, Size: h.v.Record(sh).size,
		SHA256: sha, Layout: model.Layout{RF: 3}, Nodes: nodes}
}

// land plays a verified copy: the map gains the target (add before remove:
// nothing else changes).
func (h *planHarness) land(d Decision) {
	h.t.Helper()
	if err := h.Write(h.entry(d.ID, append(h.holderIDs(d.ID), h.v.Nodes[d.Target].ID))); err != nil {
		h.t.Fatalf("landing %s: %v", d.ID, err)
	}
	if h.v.Flights[d.Shard] != nil {
		h.t.Fatalf("landing %s: still in flight", d.ID)
	}
}

// fail plays a final failure of a copy; it returns whether the shard was parked.
func (h *planHarness) fail(d Decision) bool {
	f := h.v.Flights[d.Shard]
	if f == nil {
		h.t.Fatalf("no flight for %s", d.ID)
	}
	h.v.EndFlight(d.Shard)
	return h.v.failed(d.Shard, f.source, f.target, f.attempt, f.serial, h.Now, blameTarget)
}

// trimmed plays a trim: the map loses the node, then its delete is done.
func (h *planHarness) trimmed(t TrimDecision) {
	h.t.Helper()
	node := h.v.Nodes[t.Node].ID
	rest := slices.DeleteFunc(h.holderIDs(t.ID), func(n string) bool { return n == node })
	if err := h.Write(h.entry(t.ID, rest)); err != nil {
		h.t.Fatal(err)
	}
	h.v.EndTrim(t.Shard)
}

func (h *planHarness) name(r NodeRef) string { return h.v.Nodes[r].ID }

var wide = Limits{PerNodeIn: 100, PerNodeOut: 100, MaxInFlight: 1000}

func TestHarnessOrdersByRiskThenOldestThenID(t *testing.T) {
	h := newPlanHarness(t, 9, 3, wide)
	h.put("b-old", 1, "storage-1", "storage-2", "storage-3")
	h.put("a-young", 1, "storage-1", "storage-5", "storage-6")
	h.put("c-old", 1, "storage-1", "storage-8", "storage-9")
	h.put("z-risky", 1, "storage-4", "storage-7", "storage-2")
	h.state("storage-1", model.StateDown) // b-old, a-young, c-old short since t0
	h.v.fresh()
	// a-young is healed by a copy landing outside the planner, then lost again later.
	h.put("a-young", 1, "storage-1", "storage-5", "storage-6", "storage-4")
	h.advance(time.Minute)
	h.put("a-young", 1, "storage-1", "storage-5", "storage-6")
	h.advance(time.Minute)
	h.state("storage-4", model.StateDown)
	h.state("storage-7", model.StateDown) // z-risky: one copy left, newest of all

	got := shardsOf(h.v, h.plan().Copies)
	want := []string{"z-risky", "b-old", "c-old", "a-young"}
	if !slices.Equal(got, want) {
		t.Fatalf("planned %v, want %v (margin, then first seen short, then id)", got, want)
	}
	if d := h.rounds[0].Copies[0]; d.Margin != 0 || h.rounds[0].Copies[1].Margin != 1 {
		t.Fatalf("margins %d, %d", d.Margin, h.rounds[0].Copies[1].Margin)
	}
}

// TestHarnessSecondFailureReRanks: a node loss fills the queue and the
// throttles; a second loss leaves some shards with one copy: they jump the
// queue at once, on the next round, ahead of older shards with two copies,
// and may use one slot beyond the nodes' caps.
func TestHarnessSecondFailureReRanks(t *testing.T) {
	h := newPlanHarness(t, 12, 4, Limits{PerNodeIn: 1, PerNodeOut: 2, MaxInFlight: 64})
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		p := r.Perm(12)
		h.put(fmt.Sprintf("s%03d", i), 10, fmt.Sprintf("storage-%d", p[0]+1), fmt.Sprintf("storage-%d", p[1]+1), fmt.Sprintf("storage-%d", p[2]+1))
	}
	h.state("storage-1", model.StateDown)
	first := h.plan()
	if len(first.Copies) == 0 {
		t.Fatal("nothing planned after the first loss")
	}
	for _, d := range first.Copies {
		if d.Margin != 1 {
			t.Fatalf("first round planned %s at margin %d", d.ID, d.Margin)
		}
	}
	if again := h.plan(); len(again.Copies) != 0 {
		t.Fatalf("every target is at its cap, yet %d more copies were planned at margin 1", len(again.Copies))
	}
	h.advance(time.Second)
	h.state("storage-2", model.StateDown)
	var oneLeft []string
	h.v.fresh()
	for i := 0; i < 200; i++ {
		id := fmt.Sprintf("s%03d", i)
		sh, _ := h.v.IDs.Lookup(id)
		if h.v.liveCount(sh) == 1 && h.v.Flights[sh] == nil {
			oneLeft = append(oneLeft, id)
		}
	}
	if len(oneLeft) == 0 {
		t.Fatal("the second loss left no shard with a single copy")
	}
	second := h.plan()
	if len(second.Copies) == 0 {
		t.Fatalf("the second loss planned nothing for %d shards with one copy left", len(oneLeft))
	}
	// Single-copy shards first (a shard with two copies only after them),
	// using the slot beyond the nodes' caps.
	if d := second.Copies[0]; d.Margin != 0 || !slices.Contains(oneLeft, d.ID) {
		t.Fatalf("after the second loss the first copy planned is %s (margin %d), not a single-copy shard", d.ID, d.Margin)
	}
	extra := false
	for i, d := range second.Copies {
		if i > 0 && d.Margin < second.Copies[i-1].Margin {
			t.Fatalf("round planned %s (margin %d) after a shard of margin %d", d.ID, d.Margin, second.Copies[i-1].Margin)
		}
		tg := &h.v.Nodes[d.Target]
		if tg.inTasks > h.lim.PerNodeIn+1 {
			t.Fatalf("%s writes %d copies, cap %d + 1", tg.ID, tg.inTasks, h.lim.PerNodeIn)
		}
		extra = extra || (d.Margin == 0 && tg.inTasks == h.lim.PerNodeIn+1)
	}
	if !extra {
		t.Fatal("no single-copy shard used the slot beyond a node's cap, though every target was at its cap")
	}
}

func TestHarnessCapsHoldAndSingleCopyExceedsByOne(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 100; iter++ {
		racks := 2 + r.IntN(4)
		n := racks * (2 + r.IntN(3))
		lim := Limits{PerNodeIn: 1 + r.IntN(3), PerNodeOut: 1 + r.IntN(3), MaxInFlight: 1 + r.IntN(50)}
		h := newPlanHarness(t, n, racks, lim)
		for i := 0; i < 300; i++ {
			p := r.Perm(n)
			h.put(fmt.Sprintf("sh-%04d", i), 1+r.Int64N(1<<20), fmt.Sprintf("storage-%d", p[0]+1),
				fmt.Sprintf("storage-%d", p[1]+1), fmt.Sprintf("storage-%d", p[2]+1))
		}
		for k := 0; k < 1+r.IntN(2); k++ {
			h.state(fmt.Sprintf("storage-%d", 1+r.IntN(n)), model.StateDown)
		}
		for round := 0; round < 5; round++ {
			p := h.plan()
			if h.v.copyFlights > lim.MaxInFlight {
				t.Fatalf("iter %d: %d copies in flight, global cap %d", iter, h.v.copyFlights, lim.MaxInFlight)
			}
			for _, d := range p.Copies {
				tg, src := &h.v.Nodes[d.Target], &h.v.Nodes[d.Sources[0]]
				capIn, capOut := lim.PerNodeIn, lim.PerNodeOut
				if d.Margin == 0 {
					capIn, capOut = capIn+1, capOut+1
				}
				if tg.inTasks > capIn || src.outTasks > capOut {
					t.Fatalf("iter %d: %s (margin %d): target %s writes %d (cap %d), source %s reads %d (cap %d)",
						iter, d.ID, d.Margin, tg.ID, tg.inTasks, capIn, src.ID, src.outTasks, capOut)
				}
				if d.Margin > 0 && (tg.inTasks > lim.PerNodeIn || src.outTasks > lim.PerNodeOut) {
					t.Fatalf("iter %d: %s has two copies yet used a single-copy slot", iter, d.ID)
				}
			}
			// A few land; the rest stay in flight.
			for i, d := range p.Copies {
				if i%2 == 0 {
					h.land(d)
				}
			}
		}
	}
}

// TestHarnessNeverLazy: a landed copy frees its slots and the very next
// round uses them.
func TestHarnessNeverLazy(t *testing.T) {
	h := newPlanHarness(t, 6, 3, Limits{PerNodeIn: 1, PerNodeOut: 2, MaxInFlight: 64})
	for i := 0; i < 10; i++ {
		h.put(fmt.Sprintf("s%02d", i), 10, "storage-1", "storage-2", "storage-3")
	}
	h.state("storage-1", model.StateDown) // storage-4 is the only rack-1 target
	for i := 0; i < 10; i++ {
		p := h.plan()
		if len(p.Copies) != 1 || h.name(p.Copies[0].Target) != "storage-4" {
			t.Fatalf("round %d planned %d copies: want exactly one, to storage-4", i, len(p.Copies))
		}
		if more := h.plan(); len(more.Copies) != 0 {
			t.Fatalf("round %d: planned beyond storage-4's single slot", i)
		}
		h.land(p.Copies[0])
	}
	if tt := h.v.Totals(); tt.UnderReplicated != 0 || tt.InFlight != 0 {
		t.Fatalf("totals %+v after ten rounds", tt)
	}
}

// TestHarnessRelaxesOnlyWhenNoValidTarget: the rack rule is relaxed at once
// when every node of the racks without a live copy is full or down, not
// after failures; and kept while one such node is merely busy.
func TestHarnessRelaxesOnlyWhenNoValidTarget(t *testing.T) {
	lim := Limits{PerNodeIn: 1, PerNodeOut: 4, MaxInFlight: 64, MaxFill: 0.9}
	h := newPlanHarness(t, 6, 3, lim) // rack-1: storage-1, storage-4
	h.put("s1", 100, "storage-1", "storage-2", "storage-3")
	h.put("s2", 100, "storage-1", "storage-2", "storage-3")
	h.v.Heartbeat("storage-4", 95, 100, Epoch) // 95% full: above MaxFill
	h.state("storage-1", model.StateDown)
	p := h.plan()
	if len(p.Copies) != 2 {
		t.Fatalf("planned %d copies, want 2", len(p.Copies))
	}
	for _, d := range p.Copies {
		if !d.Relaxed || d.Attempt != 1 || h.name(d.Target) == "storage-4" {
			t.Fatalf("%s: target %s relaxed=%v attempt %d: want another rack, relaxed, on attempt 1",
				d.ID, h.name(d.Target), d.Relaxed, d.Attempt)
		}
	}

	// Room on storage-4 but busy: wait for it rather than relax.
	h2 := newPlanHarness(t, 6, 3, lim)
	h2.put("s1", 100, "storage-1", "storage-2", "storage-3")
	h2.put("s2", 100, "storage-1", "storage-2", "storage-3")
	h2.state("storage-1", model.StateDown)
	p = h2.plan()
	if len(p.Copies) != 1 || p.Copies[0].Relaxed || h2.name(p.Copies[0].Target) != "storage-4" {
		t.Fatalf("planned %+v: want one copy to storage-4, the other waiting", p.Copies)
	}
	// storage-4 goes down: its copy in flight is abandoned, and both
	// shards relax at once.
	inFlight := p.Copies[0].ID
	h2.state("storage-4", model.StateDown)
	p = h2.plan()
	if len(p.Copies) != 2 || !p.Copies[0].Relaxed || !p.Copies[1].Relaxed {
		t.Fatalf("with rack-1 all down planned %+v: want both relaxed, %s's copy to storage-4 abandoned", p.Copies, inFlight)
	}
	for _, d := range p.Copies {
		if d.ID == inFlight && (d.Attempt != 1 || d.Serial != 2) {
			t.Fatalf("abandoned %s planned again at attempt %d serial %d: want attempt 1 (no failure counted), serial 2 (a new task id)", d.ID, d.Attempt, d.Serial)
		}
	}
}

func TestHarnessTargetsSkipFullNodesAndBalance(t *testing.T) {
	h := newPlanHarness(t, 9, 3, Limits{PerNodeIn: 100, PerNodeOut: 100, MaxInFlight: 1000, MaxFill: 0.9})
	for i := 0; i < 60; i++ {
		h.put(fmt.Sprintf("s%02d", i), 1<<20, "storage-1", "storage-2", "storage-3")
	}
	h.v.Heartbeat("storage-4", 900<<20, 1000<<20, Epoch) // rack-1: storage-4 full, storage-7 has room
	h.v.Heartbeat("storage-7", 0, 1000<<20, Epoch)
	h.state("storage-1", model.StateDown)
	p := h.plan()
	for _, d := range p.Copies {
		if h.name(d.Target) != "storage-7" || d.Relaxed {
			t.Fatalf("%s went to %s (relaxed=%v): storage-4 is above MaxFill, storage-7 has room", d.ID, h.name(d.Target), d.Relaxed)
		}
	}
	if len(p.Copies) != 60 {
		t.Fatalf("planned %d of 60", len(p.Copies))
	}
}

func TestHarnessSourcesSpreadOverSurvivors(t *testing.T) {
	h := newPlanHarness(t, 10, 10, Limits{PerNodeIn: 1000, PerNodeOut: 1000, MaxInFlight: 100000})
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 900; i++ {
		p := r.Perm(9)
		h.put(fmt.Sprintf("s%03d", i), 10, "storage-10", fmt.Sprintf("storage-%d", p[0]+1), fmt.Sprintf("storage-%d", p[1]+1))
	}
	h.state("storage-10", model.StateDown)
	p := h.plan()
	if len(p.Copies) != 900 {
		t.Fatalf("planned %d of 900", len(p.Copies))
	}
	reads := map[string]int{}
	for _, d := range p.Copies {
		reads[h.name(d.Sources[0])]++
	}
	maxN := 0
	for _, n := range reads {
		maxN = max(maxN, n)
	}
	if mm := float64(maxN) / (900.0 / 9); len(reads) != 9 || mm > 1.5 {
		t.Fatalf("reads %v: max/mean %.2f over %d sources, want 9 sources and <= 1.5", reads, mm, len(reads))
	}
}

// TestHarnessRepairTargetsSpreadOverIdleNodes: a lost node's shards go to
// as many different targets as there are idle nodes, even when the nodes'
// fills differ by a few shards (within repairFillBand): ranked by exact
// fill, the emptiest nodes took two copies each (their write slots) while
// others sat idle, and the repair took twice the copy time.
func TestHarnessRepairTargetsSpreadOverIdleNodes(t *testing.T) {
	h := newPlanHarness(t, 40, 40, Limits{PerNodeIn: 2, PerNodeOut: 2, MaxInFlight: 1000})
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 200; i++ { // other shards: the survivors' fills differ by a few GiB
		p := r.Perm(39)
		h.put(fmt.Sprintf("f%03d", i), 1<<30, fmt.Sprintf("storage-%d", p[0]+1), fmt.Sprintf("storage-%d", p[1]+1), fmt.Sprintf("storage-%d", p[2]+1))
	}
	for i := 0; i < 20; i++ {
		p := r.Perm(39)
		h.put(fmt.Sprintf("s%02d", i), 1<<30, "storage-40", fmt.Sprintf("storage-%d", p[0]+1), fmt.Sprintf("storage-%d", p[1]+1))
	}
	for i := 1; i <= 40; i++ { // 10 TiB disks: every node within one fill band
		h.v.Heartbeat(fmt.Sprintf("storage-%d", i), 0, 10<<40, Epoch)
	}
	h.state("storage-40", model.StateDown)
	p := h.plan()
	if len(p.Copies) != 20 {
		t.Fatalf("planned %d of 20", len(p.Copies))
	}
	writes := map[string]int{}
	for _, d := range p.Copies {
		if writes[h.name(d.Target)]++; writes[h.name(d.Target)] > 1 {
			t.Fatalf("%s is the target of %d copies while %d of 39 nodes got none: %v",
				h.name(d.Target), writes[h.name(d.Target)], 39-len(writes), writes)
		}
	}
}

// TestHarnessFailuresBackOffThenPark: failed attempts back off and avoid
// the failed target; the MaxAttempts-th failure parks the shard for
// RetryLater, then a new round starts at attempt 1 with fresh task ids.
func TestHarnessFailuresBackOffThenPark(t *testing.T) {
	h := newPlanHarness(t, 9, 3, wide)
	h.put("s1", 10, "storage-1", "storage-2", "storage-3")
	h.state("storage-1", model.StateDown)
	ids := map[string]bool{}
	for attempt := 1; attempt <= 5; attempt++ {
		p := h.plan()
		if len(p.Copies) != 1 || p.Copies[0].Attempt != attempt {
			t.Fatalf("attempt %d: planned %+v", attempt, p.Copies)
		}
		id := h.v.TaskID(p.Copies[0])
		if ids[id] {
			t.Fatalf("task id %s reused", id)
		}
		ids[id] = true
		parked := h.fail(p.Copies[0])
		if parked != (attempt == 5) {
			t.Fatalf("attempt %d: parked=%v", attempt, parked)
		}
		if again := h.plan(); len(again.Copies) != 0 {
			t.Fatalf("attempt %d: re-planned within the backoff", attempt)
		}
		h.advance(31 * time.Second) // past any backoff, not past RetryLater + 31 s twice
	}
	// Parked for a minute from the fifth failure: 31 s later still parked.
	if p := h.plan(); len(p.Copies) != 0 {
		t.Fatalf("planned %+v while parked", p.Copies)
	}
	h.advance(30 * time.Second)
	p := h.plan()
	if len(p.Copies) != 1 || p.Copies[0].Attempt != 1 || ids[h.v.TaskID(p.Copies[0])] {
		t.Fatalf("after RetryLater planned %+v: want attempt 1 with a new task id", p.Copies)
	}
	if tt := h.v.Totals(); tt.UnderReplicated != 1 {
		t.Fatalf("totals %+v: the shard must stay counted, never dropped", tt)
	}
}

func TestHarnessByteCap(t *testing.T) {
	const perSec = 10 << 20
	lim := Limits{PerNodeIn: 1000, PerNodeOut: 1000, MaxInFlight: 1000,
		Bytes: rate.NewLimiter(rate.Limit(perSec), perSec)}
	h := newPlanHarness(t, 9, 3, lim)
	for i := 0; i < 100; i++ {
		h.put(fmt.Sprintf("s%03d", i), 4<<20, "storage-1", "storage-2", "storage-3")
	}
	h.state("storage-1", model.StateDown)
	var admitted int64
	start := h.Now
	for i := 0; i < 50; i++ {
		p := h.plan()
		for _, d := range p.Copies {
			admitted += d.Bytes
			h.land(d)
		}
		if i == 0 && (len(p.Copies) != 2 || p.Wait <= 0) {
			t.Fatalf("first round: %d copies wait %s: want 2 (burst of 10 MiB) and a wait", len(p.Copies), p.Wait)
		}
		h.advance(100 * time.Millisecond)
	}
	elapsed := h.Now.Sub(start).Seconds()
	if limit := perSec*elapsed + perSec; float64(admitted) > limit || float64(admitted) < perSec*elapsed-float64(8<<20) {
		t.Fatalf("admitted %d bytes in %.1f s at a cap of %d/s (burst %d)", admitted, elapsed, perSec, perSec)
	}
}

// TestHarnessAddBeforeRemove: planning and reserving a copy leaves the map
// alone; only a verified copy changes it, adding the target and keeping the
// down holder listed.
func TestHarnessAddBeforeRemove(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("s1", 10, "storage-1", "storage-2", "storage-3")
	h.state("storage-1", model.StateDown)
	p := h.plan()
	if got := h.holderIDs("s1"); !slices.Equal(got, []string{"storage-1", "storage-2", "storage-3"}) {
		t.Fatalf("holders %v changed before the copy was verified", got)
	}
	h.land(p.Copies[0])
	if got := h.holderIDs("s1"); !slices.Equal(got, []string{"storage-1", "storage-2", "storage-3", "storage-4"}) {
		t.Fatalf("holders %v after the copy landed", got)
	}
}

// TestHarnessTrimsAfterReturn: a node returning after its shards were
// re-homed leaves them with four up copies; one is trimmed per shard, the
// worst placed (a copy sharing its rack), never below three, throttled by
// the nodes' out slots and never while a copy is in flight.
func TestHarnessTrimsAfterReturn(t *testing.T) {
	h := newPlanHarness(t, 6, 3, Limits{PerNodeIn: 10, PerNodeOut: 2, MaxInFlight: 64})
	for i := 0; i < 8; i++ {
		h.put(fmt.Sprintf("s%d", i), 10, "storage-1", "storage-2", "storage-3")
	}
	h.state("storage-1", model.StateDown)
	for {
		p := h.plan()
		if len(p.Copies) == 0 {
			break
		}
		for _, d := range p.Copies {
			h.land(d) // to storage-4, rack-1
		}
	}
	if len(h.v.surplus) != 0 {
		t.Fatal("surplus before the node returned")
	}
	h.advance(time.Minute)
	h.state("storage-1", model.StateUp)
	h.v.fresh()
	if len(h.v.surplus) != 8 || !h.v.Nodes[h.v.NodeIndex["storage-1"]].returning {
		t.Fatalf("%d shards with surplus after the return, want 8", len(h.v.surplus))
	}
	trimmed := map[string]int{}
	for round := 0; round < 20 && len(h.v.surplus) > 0; round++ {
		p := h.plan()
		perNode := map[NodeRef]int{}
		for _, tr := range p.Trims {
			perNode[tr.Node]++
			trimmed[tr.ID]++
			// rack-1 holds two copies (storage-1, storage-4): one of them goes.
			if n := h.name(tr.Node); n != "storage-1" && n != "storage-4" {
				t.Fatalf("trimmed %s from %s: its rack holds no other copy", tr.ID, n)
			}
		}
		for n, k := range perNode {
			if h.v.Nodes[n].trimTasks > TrimsPerNode || h.v.Nodes[n].outTasks != 0 {
				t.Fatalf("%s runs %d trims (+%d), cap %d, and %d reads (trims take no read slot)", h.name(n), h.v.Nodes[n].trimTasks, k, TrimsPerNode, h.v.Nodes[n].outTasks)
			}
		}
		if again := h.plan(); len(again.Trims) != 0 && len(p.Trims) > 0 {
			for _, tr := range again.Trims {
				if slices.ContainsFunc(p.Trims, func(x TrimDecision) bool { return x.Shard == tr.Shard }) {
					t.Fatalf("second trim of %s while one is in flight", tr.ID)
				}
			}
		}
		for _, r := range h.rounds[len(h.rounds)-2:] {
			for _, tr := range r.Trims {
				h.trimmed(tr)
			}
		}
	}
	if len(trimmed) != 8 {
		t.Fatalf("trimmed %v, want each of the 8 shards once", trimmed)
	}
	for i := 0; i < 8; i++ {
		id := fmt.Sprintf("s%d", i)
		sh, _ := h.v.IDs.Lookup(id)
		if live, up := h.v.counts(sh); live != 3 || up != 3 || trimmed[id] != 1 {
			t.Fatalf("%s: %d live, %d up holders %v after %d trims", id, live, up, h.holderIDs(id), trimmed[id])
		}
	}
}

func TestHarnessNoTrimWhileCopyInFlightNorBelowCopies(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("busy", 10, "storage-1", "storage-2", "storage-3", "storage-4")
	h.put("suspect", 10, "storage-1", "storage-2", "storage-3", "storage-5")
	h.state("storage-5", model.StateSuspect) // 3 up + 1 suspect: nothing to trim
	h.state("storage-4", model.StateDown)
	h.state("storage-1", model.StateDown)
	p := h.plan() // busy: 2 live -> a copy
	if len(p.Copies) == 0 {
		t.Fatal("no copy planned")
	}
	h.state("storage-1", model.StateUp)
	h.state("storage-4", model.StateUp) // busy now has 4 up copies, and a copy in flight
	if p := h.plan(); len(p.Trims) != 0 {
		t.Fatalf("trimmed %+v: a copy is in flight for busy, suspect has 3 up copies", p.Trims)
	}
}

// TestHarnessTrimmedNodeIsNeitherSourceNorTarget: while a copy's delete is
// pending on a node, a repair of that shard neither reads it nor re-makes it there.
func TestHarnessTrimmedNodeIsNeitherSourceNorTarget(t *testing.T) {
	all := []string{"storage-1", "storage-2", "storage-3", "storage-4"}
	// Not a source: the trim is decided, the map update not seen yet, and
	// two other holders go down.
	h := newPlanHarness(t, 6, 6, wide)
	h.put("s1", 10, all...)
	p := h.plan()
	if len(p.Trims) != 1 {
		t.Fatalf("trims %+v", p.Trims)
	}
	victim := p.Trims[0].Node
	others := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == h.name(victim) })
	h.state(others[0], model.StateDown)
	h.state(others[1], model.StateDown)
	p = h.plan()
	if len(p.Copies) != 1 || slices.Contains(p.Copies[0].Sources, victim) {
		t.Fatalf("copies %+v: want one, not read from %s whose copy is being deleted", p.Copies, h.name(victim))
	}

	// Not a target: the map no longer lists it, its delete still pending.
	h = newPlanHarness(t, 4, 4, wide)
	h.put("s1", 10, all...)
	p = h.plan()
	victim = p.Trims[0].Node
	rest := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == h.name(victim) })
	if _, err := h.v.UpsertPlacement(h.entry("s1", rest)); err != nil {
		t.Fatal(err)
	}
	h.state(rest[0], model.StateDown)
	if p = h.plan(); len(p.Copies) != 0 {
		t.Fatalf("planned %+v onto %s before its delete finished", p.Copies, h.name(victim))
	}
	sh, _ := h.v.IDs.Lookup("s1")
	h.v.EndTrim(sh) // the delete is done: now it may receive the copy again
	if p = h.plan(); len(p.Copies) != 1 || p.Copies[0].Target != victim {
		t.Fatalf("after the delete planned %+v, want a copy to %s", p.Copies, h.name(victim))
	}
}

// TestLandIgnoresALateReportOfATrimmedCopy: a copy's report with no task in
// flight lands (a planner that took over did not issue it) unless the entry
// lately lost that holder: a late report of a copy trimmed since is stale
// and lists nothing; once the holder is listed again, it is forgotten.
func TestLandIgnoresALateReportOfATrimmedCopy(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("s0", 10, "storage-1", "storage-2", "storage-3")
	h.put("s1", 10, "storage-1", "storage-2", "storage-3")
	report := func(shard, target string) Landing {
		return h.v.Land(event.Done{Task: shard + "-" + target + "-1", Shard: shard, Kind: event.KindCopy, Target: target, Bytes: 10}, h.Now)
	}
	if l := report("s0", "storage-4"); l.Stale || l.InPlace || l.Entry != nil {
		t.Fatalf("report of an unknown task, nothing removed: %+v, want the entry read and the target added", l)
	}
	// s1 went to storage-4 (four holders), then storage-4's copy was trimmed.
	for _, nodes := range [][]string{{"storage-1", "storage-2", "storage-3", "storage-4"}, {"storage-1", "storage-2", "storage-3"}} {
		if err := h.Write(h.entry("s1", nodes)); err != nil {
			t.Fatal(err)
		}
	}
	if l := report("s1", "storage-4"); !l.Stale {
		t.Fatalf("late report of a copy trimmed since: %+v, want stale", l)
	}
	if l := report("s1", "storage-5"); l.Stale {
		t.Fatalf("report naming a node the entry never lost: %+v, want it landed", l)
	}
	if err := h.Write(h.entry("s1", []string{"storage-1", "storage-2", "storage-3", "storage-4"})); err != nil {
		t.Fatal(err)
	}
	if l := report("s1", "storage-4"); l.Stale {
		t.Fatalf("storage-4 listed again, then a report: %+v, want it landed (already listed)", l)
	}
}
