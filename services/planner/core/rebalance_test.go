package core

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// minimumToBand is the least bytes any plan must move to bring every node
// of st within its band: the larger of what the nodes above the band must
// shed and what those below it must gain.
func minimumToBand(h *planHarness, band float64) int64 {
	nodes := h.v.balanceNodes()
	mean := meanFill(nodes)
	var shed, gain float64
	for _, b := range nodes {
		c := float64(b.capacity)
		shed += math.Max(0, float64(b.load)-(mean+band)*c)
		gain += math.Max(0, (mean-band)*c-float64(b.load))
	}
	return int64(math.Max(shed, gain))
}

// fillEvenly maps shards replicated shards of size bytes round the first
// nodes nodes (shard i on nodes i+at[0], i+at[1], i+at[2], modulo nodes),
// gives every node capacity bytes, and returns the shard ids.
func (h *planHarness) fillEvenly(shards int, size int64, nodes int, at [3]int, capacity int64) []string {
	var ids []string
	for i := 0; i < shards; i++ {
		id := fmt.Sprintf("s%03d", i)
		ids = append(ids, id)
		var on []string
		for _, k := range at {
			on = append(on, fmt.Sprintf("storage-%d", (i+k)%nodes+1))
		}
		h.put(id, size, on...)
	}
	for i := range h.v.Nodes {
		h.v.Nodes[i].capacity = capacity
	}
	return ids
}

// TestRebalanceAfterAddingANode: 6 nodes 60% full in 6 racks, storage-7
// joins empty in its own rack. The rebalancer moves copies onto it until
// every fill is within the band, moving at most 1.1 x the minimum bytes,
// with every shard at 3 live copies in 3 racks at every step; with many
// small shards and with a few 4 MiB ones.
func TestRebalanceAfterAddingANode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shards int
		size   int64
	}{{"fine", 300, 2000}, {"coarse", 29, 4 << 20}} {
		t.Run(tc.name, func(t *testing.T) { rebalanceAfterAdd(t, tc.shards, tc.size) })
	}
}

// rebalanceAfterAdd fills 6 nodes with shards copies of size bytes to 60%,
// adds storage-7 and rebalances.
func rebalanceAfterAdd(t *testing.T, shards int, size int64) {
	const band = 0.05
	h := newPlanHarness(t, 6, 6, Limits{PerNodeIn: 4, PerNodeOut: 4, MaxInFlight: 32})
	capacity := int64(shards)*size*3/6*10/6 + 1 // 60% full
	ids := h.fillEvenly(shards, size, 6, [3]int{0, 1, 3}, capacity)
	if st := h.v.BalanceStatus(band); !st.Balanced {
		t.Fatalf("unbalanced before the join: %+v", st)
	}
	if err := h.v.SetNode(model.Node{V: 1, ID: "storage-7", Rack: "rack-7", Addr: "127.0.0.1:9007", CapacityBytes: capacity}); err != nil {
		t.Fatal(err)
	}
	h.v.fresh()
	minimum := minimumToBand(h, band)
	if st := h.v.BalanceStatus(band); st.Balanced || minimum <= 0 {
		t.Fatalf("balanced with an empty node: %+v (minimum %d)", st, minimum)
	}
	h.rebalanceIntoBand(band, minimum, ids)
}

// rebalanceIntoBand plays the rebalancer's rounds (moves chosen, copies
// land, surplus copies are trimmed) until nothing is left to do, checking
// after every step that each of ids keeps 3 live copies in 3 racks and that
// no copy is a repair; it fails unless every node ends within band of the
// mean having moved at most 1.1 x minimum bytes, each shard held 3 times.
func (h *planHarness) rebalanceIntoBand(band float64, minimum int64, ids []string) {
	t := h.t
	t.Helper()
	var moved int64
	for round := 0; round < 500; round++ {
		h.v.ChooseMoves(band, 8-len(h.v.Moves))
		p := h.plan()
		if len(p.Copies) == 0 && len(p.Trims) == 0 && len(h.v.Moves) == 0 {
			break
		}
		for _, d := range p.Copies {
			if d.Incident != rebalanceIncident {
				t.Fatalf("copy %s under incident %s: nothing needs repair", d.ID, d.Incident)
			}
			if task := h.v.CopyTask(d, h.entry(d.ID, h.holderIDs(d.ID))); task.Class != event.ClassBackground {
				t.Fatalf("rebalancing task %s has class %q, want %q (paced hardest)", task.Task, task.Class, event.ClassBackground)
			}
			moved += d.Bytes
			h.land(d)
			h.checkWhole("landed "+d.ID, ids)
		}
		for _, tr := range p.Trims {
			h.trimmed(tr)
			h.checkWhole("trimmed "+tr.ID+" from "+h.name(tr.Node), ids)
		}
	}
	st := h.v.BalanceStatus(band)
	t.Logf("moved %d bytes, minimum %d (%.2fx); max deviation %.3f; fills %+v", moved, minimum, float64(moved)/float64(minimum), st.MaxDeviation, st.Nodes)
	if !st.Balanced || len(h.v.Moves) != 0 {
		t.Fatalf("not balanced at the end: %+v (moves pending %d)", st, len(h.v.Moves))
	}
	if float64(moved) > 1.1*float64(minimum) {
		t.Fatalf("moved %d bytes, %.2fx the minimum %d; want <= 1.1x", moved, float64(moved)/float64(minimum), minimum)
	}
	for _, id := range ids {
		if hs := h.holderIDs(id); len(hs) != 3 {
			t.Fatalf("%s held by %v at the end", id, hs)
		}
	}
}

// TestRebalanceEvensSurvivorsAfterANewNodeReplacesADeadOne: storage-3 of 7
// nodes in 7 racks dies and is healed onto the six survivors, which fill
// up; the operator removes it and storage-8 (a new identity, an empty disk)
// joins in its rack. The same rebalancer moves the survivors' extra copies
// onto storage-8 until every fill is within the band.
func TestRebalanceEvensSurvivorsAfterANewNodeReplacesADeadOne(t *testing.T) {
	const band, shards, size = 0.05, 350, 2000
	h := newPlanHarness(t, 7, 7, Limits{PerNodeIn: 4, PerNodeOut: 4, MaxInFlight: 32})
	capacity := int64(shards*size*3/7) * 2 // half full
	ids := h.fillEvenly(shards, size, 7, [3]int{0, 2, 4}, capacity)
	h.state("storage-3", model.StateDown)
	copies, _ := h.drainUntilDone(func(string) {})
	if len(copies) != shards*3/7 {
		t.Fatalf("healed %d copies, want storage-3's %d", len(copies), shards*3/7)
	}
	if err := h.v.Removable("storage-3"); err != nil {
		t.Fatalf("remove after the heal: %v", err)
	}
	h.v.Forget("storage-3")
	for _, d := range h.plan().Drops { // the map stops listing the removed node
		if err := h.Write(h.entry(d.ID, slices.DeleteFunc(h.holderIDs(d.ID), func(n string) bool { return n == "storage-3" }))); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.v.Nodes[h.v.NodeIndex["storage-3"]].Shards; n != 0 {
		t.Fatalf("the map still lists removed storage-3 for %d shards", n)
	}
	survivors := h.v.BalanceStatus(band)
	if !survivors.Balanced || survivors.MeanFill < 0.55 {
		t.Fatalf("survivors after the heal: %+v, want balanced near 7/6 of half full", survivors)
	}
	if err := h.v.SetNode(model.Node{V: 1, ID: "storage-8", Rack: "rack-3", Addr: "127.0.0.1:9008", CapacityBytes: capacity}); err != nil {
		t.Fatal(err)
	}
	h.state("storage-8", model.StateUp)
	h.v.fresh()
	minimum := minimumToBand(h, band)
	if st := h.v.BalanceStatus(band); st.Balanced || minimum <= 0 {
		t.Fatalf("balanced with an empty node: %+v (minimum %d)", st, minimum)
	}
	h.rebalanceIntoBand(band, minimum, ids)
	if fill := h.v.BalanceStatus(band); fill.MeanFill > 0.51 || fill.MeanFill < 0.49 {
		t.Fatalf("mean fill %.3f after storage-8 took its share, want back at 0.5", fill.MeanFill)
	}
}

// TestRebalanceYieldsToRepair: no move is chosen while a repair is queued,
// and a pause (clearMoves) forgets the moves not yet copying.
func TestRebalanceYieldsToRepair(t *testing.T) {
	h := newPlanHarness(t, 7, 7, wide)
	for i := 0; i < 30; i++ {
		h.put(fmt.Sprintf("s%02d", i), 2000, "storage-1", "storage-2", "storage-3")
	}
	for i := range h.v.Nodes {
		h.v.Nodes[i].capacity = 100_000
	}
	h.state("storage-1", model.StateDown)
	h.v.fresh()
	if n := h.v.ChooseMoves(0.05, 8); n != 0 {
		t.Fatalf("%d moves chosen while 30 shards await repair", n)
	}
	h.state("storage-1", model.StateUp)
	h.v.fresh()
	if n := h.v.ChooseMoves(0.05, 8); n == 0 {
		t.Fatal("no move chosen for an uneven cluster")
	}
	h.v.ClearMoves()
	if len(h.v.Moves) != 0 || h.v.Totals().moving != 0 {
		t.Fatalf("moves left after clearMoves: %d (queued %d)", len(h.v.Moves), h.v.Totals().moving)
	}
}
