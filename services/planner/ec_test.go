package planner

import (
	"crypto/sha256"
	"encoding/hex"
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

// pieceID names piece index of stripe s of object obj as the client does.
func pieceID(obj string, s, index int) string { return fmt.Sprintf("%s-s%06dp%03d", obj, s, index) }

func pieceSum(id string) string {
	b := sha256.Sum256([]byte(id))
	return hex.EncodeToString(b[:])
}

func pieceEntry(obj string, s, index, k, m int, size int64, nodes ...string) model.Placement {
	id := pieceID(obj, s, index)
	return model.Placement{V: 1, Shard: id, Key: "key-" + obj, ObjectID: obj, Stripe: s, Index: index, Size: size,
		SHA256: pieceSum(id), Layout: model.Layout{K: k, M: m}, Nodes: nodes}
}

// putPiece maps one piece on nodes.
func putPiece(t testing.TB, v *view, obj string, s, index, k, m int, size int64, nodes ...string) {
	t.Helper()
	if _, err := v.upsertPlacement(pieceEntry(obj, s, index, k, m, size, nodes...)); err != nil {
		t.Fatal(err)
	}
}

// putStripe maps stripe s of obj with piece i on nodes[i].
func putStripe(t testing.TB, v *view, obj string, s, k, m int, size int64, nodes ...string) {
	t.Helper()
	if len(nodes) != k+m {
		t.Fatalf("%d nodes for %d+%d", len(nodes), k, m)
	}
	for i, n := range nodes {
		putPiece(t, v, obj, s, i, k, m, size, n)
	}
}

func nodeNames(n ...int) []string {
	out := make([]string, len(n))
	for i, x := range n {
		out[i] = fmt.Sprintf("storage-%d", x)
	}
	return out
}

// landRebuild plays the mover's Done for every piece of a rebuild: each
// piece's entry gains its target (its old holders stay listed).
func (h *planHarness) landRebuild(d decision) {
	h.t.Helper()
	for i, p := range d.rb.pieces {
		h.landPiece(p, d.rb.targets[i])
	}
}

func (h *planHarness) landPiece(p uint32, target nodeRef) {
	h.t.Helper()
	s := h.v.rec(p)
	g := h.v.group(p)
	id := h.v.ids.String(p)
	e := pieceEntry(g.obj, int(s.stripe), int(s.index), g.k, g.m, s.size, append(h.holderIDs(id), h.name(target))...)
	landed, err := h.v.upsertPlacement(e)
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
			r := h.v.nodeIdx[n]
			if h.v.live(r) {
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
			racks[h.v.nodes[h.v.nodeIdx[n]].rack]++
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
	putStripe(t, h.v, "obj", 0, 4, 2, 1000, nodeNames(1, 2, 3, 4, 5, 6)...)
	if tt := h.v.totals(); tt.stripes != 1 || tt.stripesDegraded != 0 || tt.shards != 6 || tt.objects != 1 {
		t.Fatalf("totals %+v", tt)
	}
	h.state("storage-1", model.StateDown)
	tt := h.v.totals()
	if tt.underReplicated != 1 || tt.lost != 0 || tt.bytesRemaining != 1000 || tt.stripesDegraded != 1 {
		t.Fatalf("totals %+v: want the one piece under-replicated, 1000 bytes, one degraded stripe", tt)
	}
	p := h.plan()
	if len(p.copies) != 1 || p.copies[0].rb == nil {
		t.Fatalf("planned %+v: want one rebuild", p.copies)
	}
	d := p.copies[0]
	if d.id != pieceID("obj", 0, 0) || len(d.rb.pieces) != 1 || d.margin != 1 || d.bytes != 4*1000 {
		t.Fatalf("decision %s pieces %d margin %d bytes %d: want piece 0, margin 1 (5 live - 4), 4 pieces read", d.id, len(d.rb.pieces), d.margin, d.bytes)
	}
	if tg := h.name(d.target); tg != "storage-7" && tg != "storage-8" {
		t.Fatalf("target %s: want a node holding no piece of the stripe", tg)
	}
	task := h.v.rebuildTask(d, h.v.taskID(d))
	if err := task.Validate(); err != nil {
		t.Fatalf("task %+v: %v", task, err)
	}
	if task.Kind != event.KindRebuild || task.K != 4 || task.M != 2 || len(task.Stripe) != 6 || len(task.Rebuild) != 1 ||
		task.Shard != d.id || task.Target != h.name(d.target) || task.Bytes != 1000 || task.SHA256 != pieceSum(d.id) {
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
	if want := fmt.Sprintf("storage-1-%d", t0.UnixMilli()); d.incident != want {
		t.Fatalf("incident %q, want %q", d.incident, want)
	}
	// Throttles: one in slot on the target, one out slot on each of the K read.
	if n := h.v.nodes[d.target]; n.inTasks != 1 || n.inBytes != 1000 {
		t.Fatalf("target %s: %d writes, %d bytes", n.id, n.inTasks, n.inBytes)
	}
	reads := 0
	for i := range h.v.nodes {
		reads += h.v.nodes[i].outTasks
	}
	if reads != 4 || h.v.copyFlights != 1 {
		t.Fatalf("%d reads charged, %d tasks in flight: want 4 and 1", reads, h.v.copyFlights)
	}
	if again := h.plan(); len(again.copies) != 0 {
		t.Fatalf("planned %+v while the rebuild is in flight", again.copies)
	}
	h.landRebuild(d)
	tt = h.v.totals()
	if tt.underReplicated != 0 || tt.inFlight != 0 || tt.stripesDegraded != 0 {
		t.Fatalf("totals after the rebuild landed %+v", tt)
	}
	for _, n := range h.v.nodes {
		if n.inTasks != 0 || n.outTasks != 0 || n.inBytes != 0 {
			t.Fatalf("node %s keeps counters %+v", n.id, n)
		}
	}
	if got := h.holderIDs(d.id); len(got) != 2 || got[0] != "storage-1" {
		t.Fatalf("holders %v: the down holder stays listed, the target is added", got)
	}
	h.checkStripeHealthy("obj", 0, 4, 2, 2)
}

func TestECRebuildTwoMissingPiecesInOneTask(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	putStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateDown)
	h.state("storage-6", model.StateDown)
	p := h.plan()
	if len(p.copies) != 1 || p.copies[0].rb == nil || len(p.copies[0].rb.pieces) != 2 {
		t.Fatalf("planned %+v: want one rebuild of both pieces", p.copies)
	}
	d := p.copies[0]
	if d.margin != 0 || h.v.ids.String(d.rb.pieces[1]) != pieceID("obj", 0, 5) {
		t.Fatalf("margin %d pieces %v", d.margin, d.rb.pieces)
	}
	tgs := []string{h.name(d.rb.targets[0]), h.name(d.rb.targets[1])}
	slices.Sort(tgs)
	if !slices.Equal(tgs, []string{"storage-7", "storage-8"}) {
		t.Fatalf("targets %v: want the two nodes holding no piece", tgs)
	}
	task := h.v.rebuildTask(d, h.v.taskID(d))
	if err := task.Validate(); err != nil || len(task.Rebuild) != 2 || task.Stripe[0].Node != "" || task.Stripe[5].Node != "" {
		t.Fatalf("task %+v: %v", task, err)
	}
	// One piece lands: its target's slot is free; the reads stay charged
	// until the other lands, and nothing is planned for the stripe meanwhile.
	h.landPiece(d.rb.pieces[0], d.rb.targets[0])
	if h.v.nodes[d.rb.targets[0]].inTasks != 0 || h.v.nodes[d.rb.targets[1]].inTasks != 1 || h.v.copyFlights != 1 {
		t.Fatal("landing one piece did not free exactly its target's slot")
	}
	if again := h.plan(); len(again.copies) != 0 {
		t.Fatalf("planned %+v while a piece of the stripe is still being rebuilt", again.copies)
	}
	h.landPiece(d.rb.pieces[1], d.rb.targets[1])
	if tt := h.v.totals(); tt.underReplicated != 0 || tt.inFlight != 0 {
		t.Fatalf("totals %+v", tt)
	}
	for _, n := range h.v.nodes {
		if n.outTasks != 0 {
			t.Fatalf("%s still charged %d reads", n.id, n.outTasks)
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
	putStripe(t, h.v, "ec-one", 0, 4, 2, 10, nodeNames(1, 5, 6, 7, 8, 10)...) // one missing: margin 1
	putStripe(t, h.v, "ec-two", 0, 4, 2, 10, nodeNames(1, 3, 6, 7, 8, 12)...) // two missing: margin 0
	putStripe(t, h.v, "ec-lost", 0, 2, 1, 10, nodeNames(1, 3, 11)...)         // two of 2+1 missing: lost
	h.state("storage-1", model.StateDown)
	h.state("storage-3", model.StateDown)
	p := h.plan()
	var got []string
	for _, d := range p.copies {
		got = append(got, fmt.Sprintf("%s@%d", d.id, d.margin))
	}
	want := []string{pieceID("ec-two", 0, 0) + "@0", "rep-one-live@0", pieceID("ec-one", 0, 0) + "@1", "rep-two-live@1"}
	if !slices.Equal(got, want) {
		t.Fatalf("planned %v, want %v (margin first, then id)", got, want)
	}
	tt := h.v.totals()
	if tt.lost != 3 || tt.underReplicated != 5 || tt.stripes != 3 || tt.stripesDegraded != 3 {
		t.Fatalf("totals %+v: want the 3 pieces of the lost stripe lost; 2+1 ec and 2 replicated under-replicated", tt)
	}
	if tt.bytesRemaining != 10+20+10+10+10 {
		t.Fatalf("bytes remaining %d", tt.bytesRemaining)
	}
}

func TestECLostStripeIsAnnouncedPerPieceAndComesBack(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	putStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	for _, n := range nodeNames(1, 2, 3) {
		h.state(n, model.StateDown)
	}
	tt := h.v.totals()
	if tt.lost != 6 || tt.underReplicated != 0 || tt.bytesRemaining != 0 || tt.stripesDegraded != 1 {
		t.Fatalf("totals %+v: want all 6 pieces of the stripe lost", tt)
	}
	ann := h.v.lostToAnnounce(100)
	if len(ann) != 6 {
		t.Fatalf("%d pieces to announce, want 6", len(ann))
	}
	for _, x := range ann {
		h.v.rec(x).flags |= flagLostSent
	}
	if again := h.v.lostToAnnounce(100); len(again) != 0 {
		t.Fatalf("announced %d pieces twice", len(again))
	}
	if p := h.plan(); len(p.copies) != 0 {
		t.Fatalf("planned %+v for an unrecoverable stripe", p.copies)
	}
	// A holder comes back: recoverable again, both missing pieces rebuilt in one task.
	h.state("storage-3", model.StateUp)
	if tt := h.v.totals(); tt.lost != 0 || tt.underReplicated != 2 {
		t.Fatalf("totals %+v after a holder returned", tt)
	}
	p := h.plan()
	if len(p.copies) != 1 || len(p.copies[0].rb.pieces) != 2 || p.copies[0].margin != 0 {
		t.Fatalf("planned %+v: want one rebuild of the two missing pieces at margin 0", p.copies)
	}
	// Lost again: announced again.
	h.state("storage-4", model.StateDown)
	if ann := h.v.lostToAnnounce(100); len(ann) != 6 {
		t.Fatalf("a second loss announced %d pieces, want 6", len(ann))
	}
}

// TestECDeletingAnObjectLosesNothing: pieces leaving the map one by one (an
// object being deleted) never make the rest of the stripe look lost.
func TestECDeletingAnObjectLosesNothing(t *testing.T) {
	v := testView(t, 8, 4)
	putStripe(t, v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	for i := 0; i < 6; i++ {
		v.removePlacement(pieceID("obj", 0, i))
		if tt := v.totals(); tt.lost != 0 || tt.underReplicated != 0 || len(v.lostToAnnounce(10)) != 0 {
			t.Fatalf("after removing %d pieces: totals %+v", i+1, tt)
		}
	}
	if tt := v.totals(); tt.stripes != 0 || tt.shards != 0 || len(v.stripes) != 0 {
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
		lim := limits{perNodeIn: 1 + r.IntN(3), perNodeOut: 1 + r.IntN(4), maxInFlight: 1 + r.IntN(20)}
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
			picks, err := placement.AllocateStripes(h.v.candidates(), k, m, specs)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, x := range picks[0] {
				names = append(names, h.v.nodes[x].id)
			}
			putStripe(t, h.v, fmt.Sprint("o", o), 0, k, m, 100, names...)
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
			for _, d := range p.copies {
				if d.rb == nil {
					t.Fatalf("iter %d: a copy planned for an erasure-coded piece", iter)
				}
				g := d.rb.group
				for i, tg := range d.rb.targets {
					for _, pc := range g.pieces {
						if h.v.holds(pc, tg) {
							t.Fatalf("iter %d: target %s of piece %d already holds a piece of its stripe", iter, h.name(tg), i)
						}
					}
					if slices.Index(d.rb.targets, tg) != i {
						t.Fatalf("iter %d: target %s twice in one rebuild", iter, h.name(tg))
					}
				}
				if h.v.copyFlights > lim.maxInFlight {
					t.Fatalf("iter %d: %d tasks in flight, cap %d", iter, h.v.copyFlights, lim.maxInFlight)
				}
				for _, x := range d.rb.targets {
					if h.v.nodes[x].inTasks > lim.perNodeIn+1 {
						t.Fatalf("iter %d: %s writes %d, cap %d", iter, h.name(x), h.v.nodes[x].inTasks, lim.perNodeIn)
					}
				}
				for _, x := range d.rb.reads {
					if h.v.nodes[x].outTasks > lim.perNodeOut+1 {
						t.Fatalf("iter %d: %s reads %d, cap %d", iter, h.name(x), h.v.nodes[x].outTasks, lim.perNodeOut)
					}
				}
			}
			for _, d := range p.copies {
				h.landRebuild(d)
			}
			if tt := h.v.totals(); tt.underReplicated == 0 && tt.inFlight == 0 {
				break
			}
		}
		if tt := h.v.totals(); tt.underReplicated != 0 || tt.lost != 0 {
			t.Fatalf("iter %d (%d nodes, %d racks, down %v): not healed: %+v", iter, n, racks, deadNames, tt)
		}
		upPerRack := map[string]int{}
		for i := range h.v.nodes {
			if nd := &h.v.nodes[i]; nd.effState() == model.StateUp {
				upPerRack[nd.rack]++
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
	lim := limits{perNodeIn: 1, perNodeOut: 1, maxInFlight: 64}
	h := newPlanHarness(t, 8, 4, lim)
	putStripe(t, h.v, "a", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	putStripe(t, h.v, "b", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateDown) // margin 1: no slot beyond the caps
	p := h.plan()
	if len(p.copies) != 1 {
		t.Fatalf("planned %d rebuilds: the first reads 4 of the 5 holders (one read each), the second cannot find 4", len(p.copies))
	}
	if again := h.plan(); len(again.copies) != 0 {
		t.Fatal("planned beyond the out caps")
	}
	h.landRebuild(p.copies[0])
	if next := h.plan(); len(next.copies) != 1 || next.copies[0].id != pieceID("b", 0, 0) {
		t.Fatalf("after the first landed planned %+v", next.copies)
	}
}

func TestECRebuildByteCapCountsKPieces(t *testing.T) {
	lim := limits{perNodeIn: 100, perNodeOut: 100, maxInFlight: 100,
		bytes: rate.NewLimiter(rate.Limit(4000), 4000)}
	h := newPlanHarness(t, 8, 4, lim)
	for _, o := range []string{"a", "b", "c"} {
		putStripe(t, h.v, o, 0, 4, 2, 1000, nodeNames(1, 2, 3, 4, 5, 6)...)
	}
	h.state("storage-1", model.StateDown)
	p := h.plan()
	if len(p.copies) != 1 || p.copies[0].bytes != 4000 || p.wait <= 0 {
		t.Fatalf("planned %d (bytes %v) wait %s: a 4000-byte cap admits one rebuild reading 4 x 1000", len(p.copies), p.copies, p.wait)
	}
}

func TestECFailedRebuildBacksOffAndAvoidsTarget(t *testing.T) {
	h := newPlanHarness(t, 10, 5, wide)
	putStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateDown)
	p := h.plan()
	d := p.copies[0]
	first := d.target
	if gaveUp := h.v.failedRebuild(h.v.flights[d.shard].rb, h.now, true); gaveUp {
		t.Fatal("parked after one failure")
	}
	if tt := h.v.totals(); tt.inFlight != 0 || h.v.nodes[first].inTasks != 0 {
		t.Fatalf("failure left %+v in flight", tt)
	}
	if again := h.plan(); len(again.copies) != 0 {
		t.Fatal("re-planned within the backoff")
	}
	h.advance(2 * time.Second)
	again := h.plan()
	if len(again.copies) != 1 || again.copies[0].target == first || again.copies[0].attempt != 2 {
		t.Fatalf("after the backoff planned %+v: want attempt 2 to another target than %s", again.copies, h.name(first))
	}
	if h.v.taskID(again.copies[0]) == h.v.taskID(d) {
		t.Fatal("the retry reuses the task id")
	}
}

// TestECTrimKeepsRackSpreadThenEmptierNode: a piece with two up holders
// (its old holder came back) keeps the one that keeps the stripe within M
// per rack, then the less filled one; never while a rebuild of the stripe runs.
func TestECTrimKeepsRackSpreadThenEmptierNode(t *testing.T) {
	// 12 nodes in 4 racks: rack-1 = 1, 5, 9; rack-3 = 3, 7, 11.
	h := newPlanHarness(t, 12, 4, wide)
	h.v.heartbeat("storage-7", 900, 1000, t0) // the fuller node
	h.v.heartbeat("storage-1", 0, 1000, t0)
	// Piece 0 on storage-1 and storage-7; pieces 1, 2 in rack-1 already.
	putPiece(t, h.v, "obj", 0, 0, 4, 2, 10, "storage-1", "storage-7")
	for i, n := range nodeNames(5, 9, 2, 4, 6) {
		putPiece(t, h.v, "obj", 0, i+1, 4, 2, 10, n)
	}
	p := h.plan()
	if len(p.trims) != 1 || h.name(p.trims[0].node) != "storage-1" {
		t.Fatalf("trims %+v: want storage-1 removed (rack-1 would hold 3 pieces), though it is emptier", p.trims)
	}
	// Both within M: the fuller goes.
	h2 := newPlanHarness(t, 12, 4, wide)
	h2.v.heartbeat("storage-7", 900, 1000, t0)
	putPiece(t, h2.v, "obj", 0, 0, 4, 2, 10, "storage-1", "storage-7")
	for i, n := range nodeNames(5, 2, 4, 6, 8) {
		putPiece(t, h2.v, "obj", 0, i+1, 4, 2, 10, n)
	}
	p = h2.plan()
	if len(p.trims) != 1 || h2.name(p.trims[0].node) != "storage-7" {
		t.Fatalf("trims %+v: want the fuller storage-7 removed", p.trims)
	}
	// A rebuild of the stripe in flight: no trim of its pieces.
	h3 := newPlanHarness(t, 12, 4, wide)
	putPiece(t, h3.v, "obj", 0, 0, 4, 2, 10, "storage-1", "storage-7")
	for i, n := range nodeNames(5, 2, 4, 6, 8) {
		putPiece(t, h3.v, "obj", 0, i+1, 4, 2, 10, n)
	}
	h3.state("storage-8", model.StateDown)
	p = h3.plan()
	if len(p.copies) != 1 || len(p.trims) != 0 {
		t.Fatalf("round %+v: want the rebuild and no trim", p)
	}
	if p = h3.plan(); len(p.trims) != 0 {
		t.Fatalf("trimmed %+v while a rebuild of the stripe is in flight", p.trims)
	}
}

// TestECTrimAfterReturn: the rebuilt piece's old holder returns: one of the
// two holders is trimmed, the stripe stays whole.
func TestECTrimAfterReturn(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	putStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateDown)
	h.landRebuild(h.plan().copies[0])
	h.advance(time.Minute)
	h.state("storage-1", model.StateUp)
	p := h.plan()
	if len(p.trims) != 1 || len(p.copies) != 0 {
		t.Fatalf("round %+v: want one trim", p)
	}
	h.trimmed(p.trims[0])
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
		putStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
		h.state("storage-1", model.StateDown)
		h.state("storage-2", model.StateDown)
		return h
	}
	a := build()
	d := a.plan().copies[0]
	task := a.v.rebuildTask(d, a.v.taskID(d))
	b := build()
	if !b.v.seedFlight(*task, 7, t0.Add(time.Minute)) {
		t.Fatal("rebuild task not seeded")
	}
	for i := range a.v.nodes {
		na, nb := a.v.nodes[i], b.v.nodes[b.v.nodeIdx[a.v.nodes[i].id]]
		if na.inTasks != nb.inTasks || na.outTasks != nb.outTasks || na.inBytes != nb.inBytes {
			t.Fatalf("%s: planned %d/%d/%d, seeded %d/%d/%d", na.id, na.inTasks, na.outTasks, na.inBytes, nb.inTasks, nb.outTasks, nb.inBytes)
		}
	}
	if p := b.plan(); len(p.copies) != 0 || b.v.copyFlights != 1 {
		t.Fatalf("seeded planner planned %+v", p.copies)
	}
	// The next task for the stripe takes a fresh serial.
	g := b.v.group(d.shard)
	b.v.failedRebuild(g.rb, b.now, false)
	b.advance(time.Minute)
	if p := b.plan(); len(p.copies) != 1 || b.v.taskID(p.copies[0]) == task.Task {
		t.Fatalf("after a failure planned %+v (task id %s reused?)", p.copies, task.Task)
	}
}

func TestECMalformedEntriesAreRefused(t *testing.T) {
	v := testView(t, 8, 4)
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
		if _, err := v.upsertPlacement(p); !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("case %d: %v, want invalid", i, err)
		}
	}
	if _, err := v.upsertPlacement(good); err != nil {
		t.Fatal(err)
	}
	clash := good
	clash.Shard = "another-piece"
	if _, err := v.upsertPlacement(clash); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("a second shard claiming stripe 0 index 0: %v, want invalid", err)
	}
	if _, err := v.upsertPlacement(good); err != nil {
		t.Fatalf("re-applying the same entry: %v", err)
	}
	if v.ids.Len() != 1 || v.stripeCount != 1 {
		t.Fatalf("%d shards, %d stripes", v.ids.Len(), v.stripeCount)
	}
}

// TestECPieceWithoutNodesIsRebuilt: a piece committed without a node (its
// write failed) is missing from the start and rebuilt.
func TestECPieceWithoutNodesIsRebuilt(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	putStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	putPiece(t, h.v, "obj", 0, 3, 4, 2, 100)
	p := h.plan()
	if len(p.copies) != 1 || p.copies[0].id != pieceID("obj", 0, 3) || p.copies[0].incident != incidentNone {
		t.Fatalf("planned %+v", p.copies)
	}
	if tg := h.name(p.copies[0].target); tg != "storage-7" && tg != "storage-8" && tg != "storage-4" {
		t.Fatalf("target %s holds a piece of the stripe", tg)
	}
}

// BenchmarkPlanNodeLossEC: 100 k stripes of 4+2 (600 k pieces) on 100 nodes
// in 10 racks; one op is a node going down and the planning round that
// follows, with tight throttles (most queued stripes find their nodes busy).
func BenchmarkPlanNodeLossEC(b *testing.B) {
	const stripes, nodes, racks = 100_000, 100, 10
	v := testView(b, nodes, racks)
	v.loading = true
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
			if _, err := v.upsertPlacement(pieceEntry(obj, 0, i, 4, 2, 1<<20, n)); err != nil {
				b.Fatal(err)
			}
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
		setState(b, v, "storage-7", model.StateUp, t0)
		v.fresh()
		b.StartTimer()
	}
	b.ReportMetric(float64(queued), "queued")
	if planned == 0 || queued < 5000 {
		b.Fatalf("planned %d of %d queued", planned, queued)
	}
}
