package core

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

func nodeNames(n ...int) []string {
	out := make([]string, len(n))
	for i, x := range n {
		out[i] = fmt.Sprintf("storage-%d", x)
	}
	return out
}

// landRebuild plays the mover's Done for every piece of a rebuild: each
// piece's entry gains its target (its old holders stay listed).
func (h *planHarness) landRebuild(d Decision) {
	h.t.Helper()
	for i, p := range d.RB.Pieces {
		h.landPiece(p, d.RB.targets[i])
	}
}

func (h *planHarness) landPiece(p uint32, target NodeRef) {
	h.t.Helper()
	s := h.v.Record(p)
	g := h.v.Group(p)
	id := h.v.IDs.String(p)
	e := pieceEntry(g.obj, int(s.stripe), int(s.index), g.k, g.m, s.size, append(h.holderIDs(id), h.name(target))...)
	landed, err := h.v.UpsertPlacement(e)
	if err != nil || !landed {
		h.t.Fatalf("landing %s on %s: landed=%v err=%v", id, h.name(target), landed, err)
	}
}

// checkStripeHealthy asserts stripe s of obj has every piece on a live
// holder, on distinct nodes, at most maxRack per rack.
func (h *planHarness) checkStripeHealthy(obj string, s, k, m, maxRack int) {
	h.t.Helper()
	var nodes []string
	racks := map[string]int{}
	for i := 0; i < k+m; i++ {
		var live []string
		for _, n := range h.holderIDs(pieceID(obj, s, i)) {
			r := h.v.NodeIndex[n]
			if h.v.Live(r) {
				live = append(live, n)
			}
		}
		if len(live) == 0 {
			h.t.Fatalf("%s stripe %d piece %d: no live holder", obj, s, i)
		}
		for _, n := range live {
			if slices.Contains(nodes, n) {
				h.t.Fatalf("%s stripe %d: %s holds two pieces", obj, s, n)
			}
			nodes = append(nodes, n)
			racks[h.v.Nodes[h.v.NodeIndex[n]].Rack]++
		}
	}
	for r, n := range racks {
		if n > maxRack {
			h.t.Fatalf("%s stripe %d: %d pieces in %s, want <= %d", obj, s, n, r, maxRack)
		}
	}
}

func TestECRebuildOneMissingPiece(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide) // storage-i in rack-((i-1)%4+1)
	PutStripe(t, h.v, "obj", 0, 4, 2, 1000, nodeNames(1, 2, 3, 4, 5, 6)...)
	if tt := h.v.Totals(); tt.Stripes != 1 || tt.StripesDegraded != 0 || tt.Shards != 6 || tt.Objects != 1 {
		t.Fatalf("totals %+v", tt)
	}
	h.state("storage-1", model.StateDown)
	tt := h.v.Totals()
	if tt.UnderReplicated != 1 || tt.Lost != 0 || tt.BytesRemaining != 1000 || tt.StripesDegraded != 1 {
		t.Fatalf("totals %+v: want the one piece under-replicated, 1000 bytes, one degraded stripe", tt)
	}
	p := h.plan()
	if len(p.Copies) != 1 || p.Copies[0].RB == nil {
		t.Fatalf("planned %+v: want one rebuild", p.Copies)
	}
	d := p.Copies[0]
	if d.ID != pieceID("obj", 0, 0) || len(d.RB.Pieces) != 1 || d.Margin != 1 || d.Bytes != 4*1000 {
		t.Fatalf("decision %s pieces %d margin %d bytes %d: want piece 0, margin 1 (5 live - 4), 4 pieces read", d.ID, len(d.RB.Pieces), d.Margin, d.Bytes)
	}
	if tg := h.name(d.Target); tg != "storage-7" && tg != "storage-8" {
		t.Fatalf("target %s: want a node holding no piece of the stripe", tg)
	}
	task := h.v.RebuildTask(d, h.v.TaskID(d))
	if err := task.Validate(); err != nil {
		t.Fatalf("task %+v: %v", task, err)
	}
	if task.Kind != event.KindRebuild || task.K != 4 || task.M != 2 || len(task.Stripe) != 6 || len(task.Rebuild) != 1 ||
		task.Shard != d.ID || task.Target != h.name(d.Target) || task.Bytes != 1000 || task.SHA256 != pieceSum(d.ID) {
		t.Fatalf("task %+v", task)
	}
	if task.Stripe[0].Node != "" || task.Rebuild[0].Node != task.Target || task.Rebuild[0].Index != 0 {
		t.Fatalf("stripe %+v rebuild %+v", task.Stripe, task.Rebuild)
	}
	for i, pc := range task.Stripe[1:] {
		if pc.Node != fmt.Sprintf("storage-%d", i+2) || pc.Shard != pieceID("obj", 0, i+1) || pc.SHA256 != pieceSum(pc.Shard) || pc.Size != 1000 {
			t.Fatalf("stripe piece %d: %+v", i+1, pc)
		}
	}
	if reads := task.Sources[:4]; slices.Contains(reads, "storage-1") || len(task.Sources) != 5 {
		t.Fatalf("sources %v: want the four read first, then the fifth live holder", task.Sources)
	}
	if want := fmt.Sprintf("storage-1-%d", Epoch.UnixMilli()); d.Incident != want {
		t.Fatalf("incident %q, want %q", d.Incident, want)
	}
	// Throttles: one in slot on the target, one out slot on each of the K read.
	if n := h.v.Nodes[d.Target]; n.inTasks != 1 || n.inBytes != 1000 {
		t.Fatalf("target %s: %d writes, %d bytes", n.ID, n.inTasks, n.inBytes)
	}
	reads := 0
	for i := range h.v.Nodes {
		reads += h.v.Nodes[i].outTasks
	}
	if reads != 4 || h.v.copyFlights != 1 {
		t.Fatalf("%d reads charged, %d tasks in flight: want 4 and 1", reads, h.v.copyFlights)
	}
	if again := h.plan(); len(again.Copies) != 0 {
		t.Fatalf("planned %+v while the rebuild is in flight", again.Copies)
	}
	h.landRebuild(d)
	tt = h.v.Totals()
	if tt.UnderReplicated != 0 || tt.InFlight != 0 || tt.StripesDegraded != 0 {
		t.Fatalf("totals after the rebuild landed %+v", tt)
	}
	for _, n := range h.v.Nodes {
		if n.inTasks != 0 || n.outTasks != 0 || n.inBytes != 0 {
			t.Fatalf("node %s keeps counters %+v", n.ID, n)
		}
	}
	if got := h.holderIDs(d.ID); len(got) != 2 || got[0] != "storage-1" {
		t.Fatalf("holders %v: the down holder stays listed, the target is added", got)
	}
	h.checkStripeHealthy("obj", 0, 4, 2, 2)
}

func TestECRebuildTwoMissingPiecesInOneTask(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	PutStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateDown)
	h.state("storage-6", model.StateDown)
	p := h.plan()
	if len(p.Copies) != 1 || p.Copies[0].RB == nil || len(p.Copies[0].RB.Pieces) != 2 {
		t.Fatalf("planned %+v: want one rebuild of both pieces", p.Copies)
	}
	d := p.Copies[0]
	if d.Margin != 0 || h.v.IDs.String(d.RB.Pieces[1]) != pieceID("obj", 0, 5) {
		t.Fatalf("margin %d pieces %v", d.Margin, d.RB.Pieces)
	}
	tgs := []string{h.name(d.RB.targets[0]), h.name(d.RB.targets[1])}
	slices.Sort(tgs)
	if !slices.Equal(tgs, []string{"storage-7", "storage-8"}) {
		t.Fatalf("targets %v: want the two nodes holding no piece", tgs)
	}
	task := h.v.RebuildTask(d, h.v.TaskID(d))
	if err := task.Validate(); err != nil || len(task.Rebuild) != 2 || task.Stripe[0].Node != "" || task.Stripe[5].Node != "" {
		t.Fatalf("task %+v: %v", task, err)
	}
	// One piece lands: its target's slot is free; the reads stay charged
	// until the other lands, and nothing is planned for the stripe meanwhile.
	h.landPiece(d.RB.Pieces[0], d.RB.targets[0])
	if h.v.Nodes[d.RB.targets[0]].inTasks != 0 || h.v.Nodes[d.RB.targets[1]].inTasks != 1 || h.v.copyFlights != 1 {
		t.Fatal("landing one piece did not free exactly its target's slot")
	}
	if again := h.plan(); len(again.Copies) != 0 {
		t.Fatalf("planned %+v while a piece of the stripe is still being rebuilt", again.Copies)
	}
	h.landPiece(d.RB.Pieces[1], d.RB.targets[1])
	if tt := h.v.Totals(); tt.UnderReplicated != 0 || tt.InFlight != 0 {
		t.Fatalf("totals %+v", tt)
	}
	for _, n := range h.v.Nodes {
		if n.outTasks != 0 {
			t.Fatalf("%s still charged %d reads", n.ID, n.outTasks)
		}
	}
	h.checkStripeHealthy("obj", 0, 4, 2, 2)
}

// TestECMarginSharesTheScaleWithReplication: the queue mixes replicated
// shards and missing pieces by margin (copies beyond 1, pieces beyond K).
func TestECMarginSharesTheScaleWithReplication(t *testing.T) {
	h := newPlanHarness(t, 12, 4, wide)
	h.put("rep-two-live", 10, "storage-1", "storage-2", "storage-4")          // margin 1
	h.put("rep-one-live", 10, "storage-1", "storage-9", "storage-3")          // margin 0 once 3 goes too
	PutStripe(t, h.v, "ec-one", 0, 4, 2, 10, nodeNames(1, 5, 6, 7, 8, 10)...) // one missing: margin 1
	PutStripe(t, h.v, "ec-two", 0, 4, 2, 10, nodeNames(1, 3, 6, 7, 8, 12)...) // two missing: margin 0
	PutStripe(t, h.v, "ec-lost", 0, 2, 1, 10, nodeNames(1, 3, 11)...)         // two of 2+1 missing: lost
	h.state("storage-1", model.StateDown)
	h.state("storage-3", model.StateDown)
	p := h.plan()
	var got []string
	for _, d := range p.Copies {
		got = append(got, fmt.Sprintf("%s@%d", d.ID, d.Margin))
	}
	want := []string{pieceID("ec-two", 0, 0) + "@0", "rep-one-live@0", pieceID("ec-one", 0, 0) + "@1", "rep-two-live@1"}
	if !slices.Equal(got, want) {
		t.Fatalf("planned %v, want %v (margin first, then id)", got, want)
	}
	tt := h.v.Totals()
	if tt.Lost != 3 || tt.UnderReplicated != 5 || tt.Stripes != 3 || tt.StripesDegraded != 3 {
		t.Fatalf("totals %+v: want the 3 pieces of the lost stripe lost; 2+1 ec and 2 replicated under-replicated", tt)
	}
	if tt.BytesRemaining != 10+20+10+10+10 {
		t.Fatalf("bytes remaining %d", tt.BytesRemaining)
	}
}

func TestECLostStripeIsAnnouncedPerPieceAndComesBack(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	PutStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	for _, n := range nodeNames(1, 2, 3) {
		h.state(n, model.StateDown)
	}
	tt := h.v.Totals()
	if tt.Lost != 6 || tt.UnderReplicated != 0 || tt.BytesRemaining != 0 || tt.StripesDegraded != 1 {
		t.Fatalf("totals %+v: want all 6 pieces of the stripe lost", tt)
	}
	ann := h.v.LostToAnnounce(100)
	if len(ann) != 6 {
		t.Fatalf("%d pieces to announce, want 6", len(ann))
	}
	for _, x := range ann {
		h.v.Record(x).Flags |= FlagLostSent
	}
	if again := h.v.LostToAnnounce(100); len(again) != 0 {
		t.Fatalf("announced %d pieces twice", len(again))
	}
	if p := h.plan(); len(p.Copies) != 0 {
		t.Fatalf("planned %+v for an unrecoverable stripe", p.Copies)
	}
	// A holder comes back: recoverable again, both missing pieces rebuilt in one task.
	h.state("storage-3", model.StateUp)
	if tt := h.v.Totals(); tt.Lost != 0 || tt.UnderReplicated != 2 {
		t.Fatalf("totals %+v after a holder returned", tt)
	}
	p := h.plan()
	if len(p.Copies) != 1 || len(p.Copies[0].RB.Pieces) != 2 || p.Copies[0].Margin != 0 {
		t.Fatalf("planned %+v: want one rebuild of the two missing pieces at margin 0", p.Copies)
	}
	// Lost again: announced again.
	h.state("storage-4", model.StateDown)
	if ann := h.v.LostToAnnounce(100); len(ann) != 6 {
		t.Fatalf("a second loss announced %d pieces, want 6", len(ann))
	}
}

// TestECDeletingAnObjectLosesNothing: pieces leaving the map one by one (an
// object being deleted) never make the rest of the stripe look lost.
func TestECDeletingAnObjectLosesNothing(t *testing.T) {
	v := TestView(t, 8, 4)
	PutStripe(t, v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	for i := 0; i < 6; i++ {
		v.RemovePlacement(pieceID("obj", 0, i))
		if tt := v.Totals(); tt.Lost != 0 || tt.UnderReplicated != 0 || len(v.LostToAnnounce(10)) != 0 {
			t.Fatalf("after removing %d pieces: totals %+v", i+1, tt)
		}
	}
	if tt := v.Totals(); tt.Stripes != 0 || tt.Shards != 0 || len(v.stripes) != 0 {
		t.Fatalf("totals %+v, %d stripe keys after removing the object", tt, len(v.stripes))
	}
}

// TestECRebuildProperties: random clusters of 8-16 nodes in 3-6 racks with
// 4+2 and 3+2 stripes allocated by the planner, one or two nodes lost: every
// stripe ends with K+M live pieces on distinct nodes, at most M per rack
// where racks allow; targets never hold a piece of their stripe.
func TestECRebuildProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for iter := 0; iter < 60; iter++ {
		racks := 3 + r.IntN(4)
		n := max(8, racks*2) + r.IntN(5)
		lim := Limits{PerNodeIn: 1 + r.IntN(3), PerNodeOut: 1 + r.IntN(4), MaxInFlight: 1 + r.IntN(20)}
		h := newPlanHarness(t, n, racks, lim)
		type stripeRef struct {
			obj  string
			k, m int
		}
		var all []stripeRef
		for o := 0; o < 20; o++ {
			k, m := 4, 2
			if o%3 == 0 {
				k = 3
			}
			var specs [][]placement.Shard
			specs = append(specs, nil)
			for i := 0; i < k+m; i++ {
				specs[0] = append(specs[0], placement.Shard{ID: pieceID(fmt.Sprint("o", o), 0, i), Size: 100})
			}
			picks, err := placement.AllocateStripes(h.v.Candidates(), k, m, specs)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, x := range picks[0] {
				names = append(names, h.v.Nodes[x].ID)
			}
			PutStripe(t, h.v, fmt.Sprint("o", o), 0, k, m, 100, names...)
			all = append(all, stripeRef{fmt.Sprint("o", o), k, m})
		}
		for _, s := range all {
			h.checkStripeHealthy(s.obj, 0, s.k, s.m, s.m)
		}
		dead := r.Perm(n)[:1+r.IntN(2)]
		var deadNames []string
		for _, x := range dead {
			deadNames = append(deadNames, fmt.Sprintf("storage-%d", x+1))
			h.state(deadNames[len(deadNames)-1], model.StateDown)
		}
		for round := 0; round < 200; round++ {
			p := h.plan()
			for _, d := range p.Copies {
				if d.RB == nil {
					t.Fatalf("iter %d: a copy planned for an erasure-coded piece", iter)
				}
				g := d.RB.Group
				for i, tg := range d.RB.targets {
					for _, pc := range g.pieces {
						if h.v.holds(pc, tg) {
							t.Fatalf("iter %d: target %s of piece %d already holds a piece of its stripe", iter, h.name(tg), i)
						}
					}
					if slices.Index(d.RB.targets, tg) != i {
						t.Fatalf("iter %d: target %s twice in one rebuild", iter, h.name(tg))
					}
				}
				if h.v.copyFlights > lim.MaxInFlight {
					t.Fatalf("iter %d: %d tasks in flight, cap %d", iter, h.v.copyFlights, lim.MaxInFlight)
				}
				for _, x := range d.RB.targets {
					if h.v.Nodes[x].inTasks > lim.PerNodeIn+1 {
						t.Fatalf("iter %d: %s writes %d, cap %d", iter, h.name(x), h.v.Nodes[x].inTasks, lim.PerNodeIn)
					}
				}
				for _, x := range d.RB.reads {
					if h.v.Nodes[x].outTasks > lim.PerNodeOut+1 {
						t.Fatalf("iter %d: %s reads %d, cap %d", iter, h.name(x), h.v.Nodes[x].outTasks, lim.PerNodeOut)
					}
				}
			}
			for _, d := range p.Copies {
				h.landRebuild(d)
			}
			if tt := h.v.Totals(); tt.UnderReplicated == 0 && tt.InFlight == 0 {
				break
			}
		}
		if tt := h.v.Totals(); tt.UnderReplicated != 0 || tt.Lost != 0 {
			t.Fatalf("iter %d (%d nodes, %d racks, down %v): not healed: %+v", iter, n, racks, deadNames, tt)
		}
		upPerRack := map[string]int{}
		for i := range h.v.Nodes {
			if nd := &h.v.Nodes[i]; nd.EffState() == model.StateUp {
				upPerRack[nd.Rack]++
			}
		}
		for _, s := range all {
			// At most M per rack where racks allow: when the up nodes of
			// each rack, M at most, add up to K+M.
			room := 0
			for _, c := range upPerRack {
				room += min(c, s.m)
			}
			maxRack := s.m
			if room < s.k+s.m {
				maxRack = s.k + s.m // racks do not allow: only distinct nodes
			}
			h.checkStripeHealthy(s.obj, 0, s.k, s.m, maxRack)
		}
	}
}

func TestECRebuildThrottles(t *testing.T) {
	lim := Limits{PerNodeIn: 1, PerNodeOut: 1, MaxInFlight: 64}
	h := newPlanHarness(t, 8, 4, lim)
	PutStripe(t, h.v, "a", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	PutStripe(t, h.v, "b", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateDown) // margin 1: no slot beyond the caps
	p := h.plan()
	if len(p.Copies) != 1 {
		t.Fatalf("planned %d rebuilds: the first reads 4 of the 5 holders (one read each), the second cannot find 4", len(p.Copies))
	}
	if again := h.plan(); len(again.Copies) != 0 {
		t.Fatal("planned beyond the out caps")
	}
	h.landRebuild(p.Copies[0])
	if next := h.plan(); len(next.Copies) != 1 || next.Copies[0].ID != pieceID("b", 0, 0) {
		t.Fatalf("after the first landed planned %+v", next.Copies)
	}
}

func TestECRebuildByteCapCountsKPieces(t *testing.T) {
	lim := Limits{PerNodeIn: 100, PerNodeOut: 100, MaxInFlight: 100,
		Bytes: rate.NewLimiter(rate.Limit(4000), 4000)}
	h := newPlanHarness(t, 8, 4, lim)
	for _, o := range []string{"a", "b", "c"} {
		PutStripe(t, h.v, o, 0, 4, 2, 1000, nodeNames(1, 2, 3, 4, 5, 6)...)
	}
	h.state("storage-1", model.StateDown)
	p := h.plan()
	if len(p.Copies) != 1 || p.Copies[0].Bytes != 4000 || p.Wait <= 0 {
		t.Fatalf("planned %d (bytes %v) wait %s: a 4000-byte cap admits one rebuild reading 4 x 1000", len(p.Copies), p.Copies, p.Wait)
	}
}

func TestECFailedRebuildBacksOffAndAvoidsTarget(t *testing.T) {
	h := newPlanHarness(t, 10, 5, wide)
	PutStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateDown)
	p := h.plan()
	d := p.Copies[0]
	first := d.Target
	if gaveUp := h.v.failedRebuild(h.v.Flights[d.Shard].RB, h.Now, blameTarget); gaveUp {
		t.Fatal("parked after one failure")
	}
	if tt := h.v.Totals(); tt.InFlight != 0 || h.v.Nodes[first].inTasks != 0 {
		t.Fatalf("failure left %+v in flight", tt)
	}
	if again := h.plan(); len(again.Copies) != 0 {
		t.Fatal("re-planned within the backoff")
	}
	h.advance(2 * time.Second)
	again := h.plan()
	if len(again.Copies) != 1 || again.Copies[0].Target == first || again.Copies[0].Attempt != 2 {
		t.Fatalf("after the backoff planned %+v: want attempt 2 to another target than %s", again.Copies, h.name(first))
	}
	if h.v.TaskID(again.Copies[0]) == h.v.TaskID(d) {
		t.Fatal("the retry reuses the task id")
	}
}

// TestECTrimKeepsRackSpreadThenEmptierNode: a piece with two up holders
// (its old holder came back) keeps the one that keeps the stripe within M
// per rack, then the less filled one; never while a rebuild of the stripe runs.
func TestECTrimKeepsRackSpreadThenEmptierNode(t *testing.T) {
	// 12 nodes in 4 racks: rack-1 = 1, 5, 9; rack-3 = 3, 7, 11.
	h := newPlanHarness(t, 12, 4, wide)
	h.v.Heartbeat("storage-7", 900, 1000, Epoch) // the fuller node
	h.v.Heartbeat("storage-1", 0, 1000, Epoch)
	// Piece 0 on storage-1 and storage-7; pieces 1, 2 in rack-1 already.
	putPiece(t, h.v, "obj", 0, 0, 4, 2, 10, "storage-1", "storage-7")
	for i, n := range nodeNames(5, 9, 2, 4, 6) {
		putPiece(t, h.v, "obj", 0, i+1, 4, 2, 10, n)
	}
	p := h.plan()
	if len(p.Trims) != 1 || h.name(p.Trims[0].Node) != "storage-1" {
		t.Fatalf("trims %+v: want storage-1 removed (rack-1 would hold 3 pieces), though it is emptier", p.Trims)
	}
	// Both within M: the fuller goes.
	h2 := newPlanHarness(t, 12, 4, wide)
	h2.v.Heartbeat("storage-7", 900, 1000, Epoch)
	putPiece(t, h2.v, "obj", 0, 0, 4, 2, 10, "storage-1", "storage-7")
	for i, n := range nodeNames(5, 2, 4, 6, 8) {
		putPiece(t, h2.v, "obj", 0, i+1, 4, 2, 10, n)
	}
	p = h2.plan()
	if len(p.Trims) != 1 || h2.name(p.Trims[0].Node) != "storage-7" {
		t.Fatalf("trims %+v: want the fuller storage-7 removed", p.Trims)
	}
	// A rebuild of the stripe in flight: no trim of its pieces.
	h3 := newPlanHarness(t, 12, 4, wide)
	putPiece(t, h3.v, "obj", 0, 0, 4, 2, 10, "storage-1", "storage-7")
	for i, n := range nodeNames(5, 2, 4, 6, 8) {
		putPiece(t, h3.v, "obj", 0, i+1, 4, 2, 10, n)
	}
	h3.state("storage-8", model.StateDown)
	p = h3.plan()
	if len(p.Copies) != 1 || len(p.Trims) != 0 {
		t.Fatalf("round %+v: want the rebuild and no trim", p)
	}
	if p = h3.plan(); len(p.Trims) != 0 {
		t.Fatalf("trimmed %+v while a rebuild of the stripe is in flight", p.Trims)
	}
}

// TestECTrimAfterReturn: the rebuilt piece's old holder returns: one of the
// two holders is trimmed, the stripe stays whole.
func TestECTrimAfterReturn(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	PutStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateDown)
	h.landRebuild(h.plan().Copies[0])
	h.advance(time.Minute)
	h.state("storage-1", model.StateUp)
	p := h.plan()
	if len(p.Trims) != 1 || len(p.Copies) != 0 {
		t.Fatalf("round %+v: want one trim", p)
	}
	h.trimmed(p.Trims[0])
	if len(h.v.surplus) != 0 {
		t.Fatalf("surplus %v after the trim", h.v.surplus)
	}
	h.checkStripeHealthy("obj", 0, 4, 2, 2)
}

// TestECSeedRestoresRebuildInFlight: a planner reading a queued rebuild task
// counts it in flight, with the same charges, and plans nothing more.
func TestECSeedRestoresRebuildInFlight(t *testing.T) {
	build := func() *planHarness {
		h := newPlanHarness(t, 8, 4, wide)
		PutStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
		h.state("storage-1", model.StateDown)
		h.state("storage-2", model.StateDown)
		return h
	}
	a := build()
	d := a.plan().Copies[0]
	task := a.v.RebuildTask(d, a.v.TaskID(d))
	b := build()
	if !b.v.SeedFlight(*task, 7, Epoch.Add(time.Minute)) {
		t.Fatal("rebuild task not seeded")
	}
	for i := range a.v.Nodes {
		na, nb := a.v.Nodes[i], b.v.Nodes[b.v.NodeIndex[a.v.Nodes[i].ID]]
		if na.inTasks != nb.inTasks || na.outTasks != nb.outTasks || na.inBytes != nb.inBytes {
			t.Fatalf("%s: planned %d/%d/%d, seeded %d/%d/%d", na.ID, na.inTasks, na.outTasks, na.inBytes, nb.inTasks, nb.outTasks, nb.inBytes)
		}
	}
	if p := b.plan(); len(p.Copies) != 0 || b.v.copyFlights != 1 {
		t.Fatalf("seeded planner planned %+v", p.Copies)
	}
	// The next task for the stripe takes a fresh serial.
	g := b.v.Group(d.Shard)
	b.v.failedRebuild(g.RB, b.Now, blameNone)
	b.advance(time.Minute)
	if p := b.plan(); len(p.Copies) != 1 || b.v.TaskID(p.Copies[0]) == task.Task {
		t.Fatalf("after a failure planned %+v (task id %s reused?)", p.Copies, task.Task)
	}
}

func TestECMalformedEntriesAreRefused(t *testing.T) {
	v := TestView(t, 8, 4)
	good := pieceEntry("obj", 0, 0, 4, 2, 10, "storage-1")
	bad := []func(p *model.Placement){
		func(p *model.Placement) { p.ObjectID = "" },
		func(p *model.Placement) { p.Index = 6 },
		func(p *model.Placement) { p.Stripe = -1 },
		func(p *model.Placement) { p.SHA256 = "zz" + p.SHA256[2:] },
	}
	for i, mod := range bad {
		p := good
		mod(&p)
		if _, err := v.UpsertPlacement(p); !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("case %d: %v, want invalid", i, err)
		}
	}
	if _, err := v.UpsertPlacement(good); err != nil {
		t.Fatal(err)
	}
	clash := good
	clash.Shard = "another-piece"
	if _, err := v.UpsertPlacement(clash); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("a second shard claiming stripe 0 index 0: %v, want invalid", err)
	}
	if _, err := v.UpsertPlacement(good); err != nil {
		t.Fatalf("re-applying the same entry: %v", err)
	}
	if v.IDs.Len() != 1 || v.stripeCount != 1 {
		t.Fatalf("%d shards, %d stripes", v.IDs.Len(), v.stripeCount)
	}
}

// TestECPieceWithoutNodesIsRebuilt: a piece committed without a node (its
// write failed) is missing from the start and rebuilt.
func TestECPieceWithoutNodesIsRebuilt(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	PutStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	putPiece(t, h.v, "obj", 0, 3, 4, 2, 100)
	p := h.plan()
	if len(p.Copies) != 1 || p.Copies[0].ID != pieceID("obj", 0, 3) || p.Copies[0].Incident != incidentNone {
		t.Fatalf("planned %+v", p.Copies)
	}
	if tg := h.name(p.Copies[0].Target); tg != "storage-7" && tg != "storage-8" && tg != "storage-4" {
		t.Fatalf("target %s holds a piece of the stripe", tg)
	}
}

// BenchmarkPlanNodeLossEC: 100 k stripes of 4+2 (600 k pieces) on 100 nodes
// in 10 racks; one op is a node going down and the planning round that
// follows, with tight throttles (most queued stripes find their nodes busy).
func BenchmarkPlanNodeLossEC(b *testing.B) {
	const stripes, nodes, racks = 100_000, 100, 10
	v := TestView(b, nodes, racks)
	v.Loading = true
	r := rand.New(rand.NewPCG(7, 7))
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("storage-%d", i+1)
	}
	for s := 0; s < stripes; s++ {
		obj := fmt.Sprintf("%08x-1234-5678-9abc-def012345678", s)
		rk := r.Perm(racks)[:6] // one piece per rack
		for i := 0; i < 6; i++ {
			n := names[rk[i]+racks*r.IntN(nodes/racks)]
			if _, err := v.UpsertPlacement(pieceEntry(obj, 0, i, 4, 2, 1<<20, n)); err != nil {
				b.Fatal(err)
			}
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
		setState(b, v, "storage-7", model.StateUp, Epoch)
		v.fresh()
		b.StartTimer()
	}
	b.ReportMetric(float64(queued), "queued")
	if planned == 0 || queued < 5000 {
		b.Fatalf("planned %d of %d queued", planned, queued)
	}
}
