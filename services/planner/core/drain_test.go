package core

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/rehome/rehome/shared/model"
)

// drainUntilDone plays rounds (copies land, trims are done) until nothing
// is planned, calling check after every step; it returns every decision.
func (h *planHarness) drainUntilDone(check func(step string)) (copies []Decision, trims []TrimDecision) {
	h.t.Helper()
	for round := 0; round < 200; round++ {
		p := h.plan()
		if len(p.Copies) == 0 && len(p.Trims) == 0 {
			return copies, trims
		}
		for _, d := range p.Copies {
			h.land(d)
			check("landed " + d.ID + " on " + h.name(d.Target))
		}
		for _, tr := range p.Trims {
			h.trimmed(tr)
			check("trimmed " + tr.ID + " from " + h.name(tr.Node))
		}
		copies, trims = append(copies, p.Copies...), append(trims, p.Trims...)
	}
	h.t.Fatal("still planning after 200 rounds")
	return nil, nil
}

// checkWhole fails unless every shard has 3 live holders in 3 racks.
func (h *planHarness) checkWhole(step string, ids []string) {
	h.t.Helper()
	for _, id := range ids {
		sh, _ := h.v.IDs.Lookup(id)
		racks := map[string]bool{}
		for _, r := range h.v.holders(sh) {
			if h.v.Nodes[r].EffState().Live() {
				racks[h.v.Nodes[r].Rack] = true
			}
		}
		if live := h.v.liveCount(sh); live < 3 || len(racks) < 3 {
			h.t.Fatalf("after %s: %s has %d live holders %v in %d racks, want 3 in 3", step, id, live, h.holderIDs(id), len(racks))
		}
	}
	if t := h.v.Totals(); t.UnderReplicated != 0 {
		h.t.Fatalf("after %s: %d under-replicated: a drain is no repair", step, t.UnderReplicated)
	}
}

// TestDrainMovesEveryCopyAndNeverDropsBelowTarget drains a node of rack-3:
// each copy is made elsewhere (its rack's other node keeps the rack rule),
// verified, then the draining copy is trimmed; at no step does a shard have
// fewer than 3 live holders in 3 racks, and nothing lands on the node.
func TestDrainMovesEveryCopyAndNeverDropsBelowTarget(t *testing.T) {
	h := newPlanHarness(t, 6, 3, Limits{PerNodeIn: 4, PerNodeOut: 4, MaxInFlight: 16})
	var ids []string
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("s%02d", i)
		ids = append(ids, id)
		// rack-1: 1,4; rack-2: 2,5; rack-3: 3,6. Half on storage-3.
		a, b, c := 1+3*(i%2), 2+3*((i/2)%2), 3+3*((i/4)%2)
		h.put(id, 1000, fmt.Sprintf("storage-%d", a), fmt.Sprintf("storage-%d", b), fmt.Sprintf("storage-%d", c))
	}
	on := h.v.Nodes[h.v.NodeIndex["storage-3"]].Shards
	if err := h.v.Drainable("storage-3", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.v.SetDrain("storage-3", true, DrainState{Since: h.Now}); err != nil {
		t.Fatal(err)
	}
	h.v.fresh()
	if got := h.v.Totals().moving; got != on {
		t.Fatalf("%d shards to move, want the %d on storage-3", got, on)
	}
	copies, trims := h.drainUntilDone(func(step string) { h.checkWhole(step, ids) })
	for _, d := range copies {
		if h.name(d.Target) != "storage-6" || !strings.HasPrefix(d.Incident, drainIncidentPrefix) {
			t.Fatalf("copy of %s to %s (incident %s): want rack-3's other node, under the drain", d.ID, h.name(d.Target), d.Incident)
		}
	}
	for _, tr := range trims {
		if h.name(tr.Node) != "storage-3" {
			t.Fatalf("trimmed %s from %s, want the draining copy", tr.ID, h.name(tr.Node))
		}
	}
	n := h.v.Nodes[h.v.NodeIndex["storage-3"]]
	if n.Shards != 0 || len(copies) != on || len(trims) != on {
		t.Fatalf("storage-3 holds %d shards after %d copies and %d trims, want 0 after %d each", n.Shards, len(copies), len(trims), on)
	}
	st, err := h.v.DrainStatus("storage-3", h.Now)
	if err != nil || len(st) != 1 || !st[0].Drained || st[0].ShardsMoved != on {
		t.Fatalf("drain status %+v %v", st, err)
	}
	if err := h.v.Removable("storage-3"); err != nil {
		t.Fatalf("a drained node is not removable: %v", err)
	}
	// A drained node accepts no new shard.
	for i, c := range h.v.Candidates() {
		if h.v.Nodes[i].ID == "storage-3" && !c.Leaving {
			t.Fatal("the drained node is a candidate for new shards")
		}
	}
}

// TestDrainYieldsToRepair: a node dies while another drains; every repair
// copy is planned before any drain move.
func TestDrainYieldsToRepair(t *testing.T) {
	h := newPlanHarness(t, 6, 3, Limits{PerNodeIn: 2, PerNodeOut: 2, MaxInFlight: 3})
	var ids []string
	for i := 0; i < 12; i++ {
		id := fmt.Sprintf("s%02d", i)
		ids = append(ids, id)
		h.put(id, 1000, "storage-1", "storage-2", "storage-3")
	}
	if _, err := h.v.SetDrain("storage-3", true, DrainState{Since: h.Now}); err != nil {
		t.Fatal(err)
	}
	h.state("storage-1", model.StateDown)
	repairing := true
	h.drainUntilDone(func(string) {})
	for _, p := range h.rounds {
		for _, d := range p.Copies {
			drain := strings.HasPrefix(d.Incident, drainIncidentPrefix)
			if drain && repairing {
				repairing = false
			} else if !drain && !repairing {
				t.Fatalf("repair copy of %s planned after a drain move", d.ID)
			}
		}
	}
	if repairing {
		t.Fatal("no drain move was ever planned")
	}
	for _, id := range ids {
		hs := h.holderIDs(id)
		if slices.Contains(hs, "storage-3") || len(hs) != 4 { // storage-1 stays listed while down
			t.Fatalf("%s held by %v at the end", id, hs)
		}
	}
}

// TestDrainRefusedUpFront: not enough nodes, racks or room, or a node that
// is not up.
func TestDrainRefusedUpFront(t *testing.T) {
	for _, tc := range []struct {
		name        string
		nodes, rack int
		capacity    int64
		drain, want string
		down        string
	}{
		{"three nodes", 3, 3, 1 << 40, "storage-1", "only 2 other up nodes", ""},
		{"alone in its rack", 4, 3, 1 << 40, "storage-2", "too few racks", ""},
		{"no room", 4, 3, 2900, "storage-1", "too little space", ""},
		{"down", 6, 3, 1 << 40, "storage-1", "is down", "storage-1"},
		{"unknown", 6, 3, 1 << 40, "storage-9", "unknown node", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newPlanHarness(t, tc.nodes, tc.rack, wide)
			for i := range h.v.Nodes {
				h.v.Nodes[i].capacity = tc.capacity
			}
			for i := 0; i < 3; i++ {
				h.put(fmt.Sprintf("s%d", i), 1000, "storage-1", "storage-2", "storage-3")
			}
			if tc.down != "" {
				h.state(tc.down, model.StateDown)
			}
			err := h.v.Drainable(tc.drain, 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("drainable(%s): %v, want %q", tc.drain, err, tc.want)
			}
		})
	}
}

// TestDrainMovesErasureCodedPieces: a piece on a draining node is copied to
// a node its stripe's rack rule allows, then trimmed from the drained node.
func TestDrainMovesErasureCodedPieces(t *testing.T) {
	h := newPlanHarness(t, 8, 4, wide)
	PutStripe(t, h.v, "obj", 0, 4, 2, 100, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.v.Rescan()
	if _, err := h.v.SetDrain("storage-2", true, DrainState{Since: h.Now}); err != nil {
		t.Fatal(err)
	}
	p := h.plan()
	if len(p.Copies) != 1 {
		t.Fatalf("planned %d copies, want the one piece on storage-2", len(p.Copies))
	}
	d := p.Copies[0]
	tg := h.v.Nodes[d.Target]
	if h.name(d.Sources[0]) != "storage-2" || tg.Draining || slices.Contains(nodeNames(1, 2, 3, 4, 5, 6), tg.ID) {
		t.Fatalf("piece move %s from %s to %s", d.ID, h.name(d.Sources[0]), tg.ID)
	}
	h.v.EndFlight(d.Shard)
	putPiece(t, h.v, "obj", 0, 1, 4, 2, 100, "storage-2", tg.ID)
	if h.v.Totals().UnderReplicated != 0 {
		t.Fatal("under-replicated during a piece move")
	}
	p = h.plan()
	if len(p.Trims) != 1 || h.name(p.Trims[0].Node) != "storage-2" {
		t.Fatalf("trims %+v, want the draining copy", p.Trims)
	}
	racks := map[string]int{}
	putPiece(t, h.v, "obj", 0, 1, 4, 2, 100, tg.ID)
	h.v.EndTrim(p.Trims[0].Shard)
	for i := 0; i < 6; i++ {
		sh, _ := h.v.IDs.Lookup(pieceID("obj", 0, i))
		for _, r := range h.v.holders(sh) {
			racks[h.v.Nodes[r].Rack]++
		}
	}
	for r, n := range racks {
		if n > 2 {
			t.Fatalf("rack %s holds %d pieces of a 4+2 stripe after the move: %v", r, n, racks)
		}
	}
	if n := h.v.Nodes[h.v.NodeIndex["storage-2"]].Shards; n != 0 {
		t.Fatalf("storage-2 holds %d pieces", n)
	}
}

// TestRemoveForgetsAndIgnoresLateRegistration: remove is refused while a
// node holds shards, and a removed node's registration counts for nothing.
func TestRemoveForgetsAndIgnoresLateRegistration(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("s0", 10, "storage-1", "storage-2", "storage-3")
	for node, want := range map[string]string{
		"storage-1": "drain it first", "storage-9": "unknown node",
	} {
		if err := h.v.Removable(node); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("removable(%s): %v, want %q", node, err, want)
		}
	}
	h.state("storage-1", model.StateDown)
	if err := h.v.Removable("storage-1"); err == nil || !strings.Contains(err.Error(), "wait until repair") {
		t.Fatalf("removable(dead node still listed): %v", err)
	}
	if err := h.v.Removable("storage-6"); err == nil {
		t.Fatal("an up node that was never drained is removable")
	}
	if _, err := h.v.SetDrain("storage-6", true, DrainState{Since: h.Now}); err != nil {
		t.Fatal(err)
	}
	if err := h.v.Removable("storage-6"); err != nil {
		t.Fatalf("a drained node holding nothing: %v", err)
	}
	h.v.Forget("storage-6")
	if err := h.v.SetNode(model.Node{V: 1, ID: "storage-6", Rack: "rack-3", Addr: "x:1", CapacityBytes: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	for _, n := range h.v.ClusterStatus().Nodes {
		if n.ID == "storage-6" {
			t.Fatalf("a removed node that registers again shows in status: %+v", n)
		}
	}
	if h.v.Nodes[h.v.NodeIndex["storage-6"]].Registered || h.v.draining != 0 {
		t.Fatal("a removed node's late registration counted, or its drain did not end")
	}
}

// TestDrainCancelKeepsWhatMoved: after a cancel nothing more moves, the
// copies that moved stay where they went, and the node takes shards again.
func TestDrainCancelKeepsWhatMoved(t *testing.T) {
	h := newPlanHarness(t, 6, 3, Limits{PerNodeIn: 1, PerNodeOut: 1, MaxInFlight: 2})
	for i := 0; i < 6; i++ {
		h.put(fmt.Sprintf("s%d", i), 1000, "storage-1", "storage-2", "storage-3")
	}
	if _, err := h.v.SetDrain("storage-3", true, DrainState{Since: h.Now}); err != nil {
		t.Fatal(err)
	}
	p := h.plan()
	if len(p.Copies) != 1 {
		t.Fatalf("planned %d copies, want 1 (one copy at a time into storage-6)", len(p.Copies))
	}
	moved := p.Copies[0]
	h.land(moved)
	h.v.EndFlight(moved.Shard) // the mover's result, as the service records it
	tr := h.plan().Trims       // the next copy may be planned beside it
	if len(tr) != 1 || tr[0].Shard != moved.Shard || h.name(tr[0].Node) != "storage-3" {
		t.Fatalf("trims %+v, want %s's copy on storage-3", tr, moved.ID)
	}
	h.trimmed(tr[0])
	if _, err := h.v.SetDrain("storage-3", false, DrainState{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range h.rounds[len(h.rounds)-1].Copies { // a copy under way when cancelled lands
		h.land(d)
		h.v.EndFlight(d.Shard)
	}
	after := len(h.rounds)
	h.drainUntilDone(func(string) {})
	for _, r := range h.rounds[after:] {
		if len(r.Copies) != 0 {
			t.Fatalf("copies planned after the cancel: %+v", r.Copies)
		}
	}
	if hs := h.holderIDs(moved.ID); slices.Contains(hs, "storage-3") || !slices.Contains(hs, "storage-6") {
		t.Fatalf("%s held by %v after the cancel, want it to stay on storage-6", moved.ID, hs)
	}
	if n := h.v.Nodes[h.v.NodeIndex["storage-3"]]; n.Shards < 4 || h.v.Candidates()[h.v.NodeIndex["storage-3"]].Leaving {
		t.Fatalf("storage-3 holds %d shards (want the 4 or 5 that did not move) or still refuses new ones", n.Shards)
	}
	for i := 0; i < 6; i++ {
		if hs := h.holderIDs(fmt.Sprintf("s%d", i)); len(hs) != 3 {
			t.Fatalf("s%d held by %v after the cancel settled", i, hs)
		}
	}
}
