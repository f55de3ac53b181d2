package core

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// inv renders shards as an inventory page's entries, with the map's size
// and the test checksum.
func inv(v *View, ids ...string) []control.InventoryShard {
	out := make([]control.InventoryShard, len(ids))
	for i, id := range ids {
		h, _ := v.IDs.Lookup(id)
		sum := sha
		if g := v.Group(h); g != nil {
			sum = pieceSum(id)
		}
		out[i] = control.InventoryShard{ID: id, Size: v.Record(h).size, SHA256: sum}
	}
	return out
}

// check runs a whole inventory check of node against pages.
func check(v *View, node string, pages ...[]control.InventoryShard) CheckResult {
	c := v.StartCheck(v.NodeIndex[node])
	for _, p := range pages {
		v.CheckPage(c, p)
	}
	return v.EndCheck(c)
}

func idsOf(v *View, hs []uint32) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = v.IDs.String(h)
	}
	slices.Sort(out)
	return out
}

// lackOn marks node as lacking each of ids.
func (h *planHarness) lackOn(node string, ids ...string) {
	h.t.Helper()
	for _, id := range ids {
		sh, _ := h.v.IDs.Lookup(id)
		if !h.v.MarkMissing(sh, h.v.NodeIndex[node]) {
			h.t.Fatalf("%s: not marked lacking on %s", id, node)
		}
	}
}

// inPlace reports whether a decision writes only back onto holders lacking the shard.
func inPlace(d Decision) bool {
	if d.RB == nil {
		return d.inPlace
	}
	return !slices.Contains(d.RB.inPlace, false)
}

// landInPlace plays the mover's Done of an in-place decision.
func (h *planHarness) landInPlace(d Decision) {
	h.t.Helper()
	pieces, targets := []uint32{d.Shard}, []NodeRef{d.Target}
	if d.RB != nil {
		pieces, targets = d.RB.Pieces, d.RB.targets
	}
	task := h.v.TaskID(d)
	for i, p := range pieces {
		if !h.v.LandedInPlace(p, targets[i], task) {
			h.t.Fatalf("%s on %s: not a copy back in place", h.v.IDs.String(p), h.name(targets[i]))
		}
	}
}

func TestInventoryDiff(t *testing.T) {
	v := TestView(t, 6, 3)
	for i := 0; i < 8; i++ {
		Put(t, v, fmt.Sprintf("s%d", i), 100, "storage-1", "storage-2", "storage-3")
	}
	Put(t, v, "elsewhere", 100, "storage-4", "storage-5", "storage-6")
	pages := [][]control.InventoryShard{inv(v, "s0", "s1", "s2"), inv(v, "s3", "s4", "elsewhere")}
	pages[1] = append(pages[1], control.InventoryShard{ID: "not-in-map", Size: 5, SHA256: sha})
	pages[0][1].Size = 99                        // s1: wrong size
	pages[0][2].SHA256 = strings.Repeat("f", 64) // s2: wrong checksum
	res := check(v, "storage-1", pages...)
	if res.Checked != 8 {
		t.Fatalf("checked %d, want the 8 shards the map places on storage-1", res.Checked)
	}
	if got, want := idsOf(v, res.Missing), []string{"s1", "s2", "s5", "s6", "s7"}; !slices.Equal(got, want) {
		t.Fatalf("missing %v, want %v (absent, wrong size, wrong checksum)", got, want)
	}
	if tt := v.Totals(); tt.UnderReplicated != 0 {
		t.Fatal("a check changed the view")
	}
	if marked := v.ApplyCheck(v.NodeIndex["storage-1"], res); marked != 5 {
		t.Fatalf("marked %d", marked)
	}
	tt := v.Totals()
	if tt.UnderReplicated != 5 || tt.BytesRemaining != 500 {
		t.Fatalf("totals %+v: the 5 copies storage-1 lacks do not count", tt)
	}
	// A second check finds two of them back; one is gone from the map meanwhile.
	c := v.StartCheck(v.NodeIndex["storage-1"])
	v.CheckPage(c, inv(v, "s0", "s1", "s3", "s4", "s5", "s6"))
	Put(t, v, "s7", 100, "storage-2", "storage-3", "storage-4")  // re-homed: storage-1 no longer listed
	Put(t, v, "new", 100, "storage-1", "storage-2", "storage-3") // written during the check
	res = v.EndCheck(c)
	if got := idsOf(v, res.Missing); !slices.Equal(got, []string{"s2"}) {
		t.Fatalf("missing %v, want [s2]", got)
	}
	if got := idsOf(v, res.Present); !slices.Equal(got, []string{"s1", "s5", "s6"}) {
		t.Fatalf("back %v, want [s1 s5 s6]", got)
	}
	v.ApplyCheck(v.NodeIndex["storage-1"], res)
	if got := idsOf(v, v.MarksOn(v.NodeIndex["storage-1"])); !slices.Equal(got, []string{"s2"}) {
		t.Fatalf("marks %v, want [s2] (s7's went with the entry)", got)
	}
	if n := v.Nodes[v.NodeIndex["storage-1"]].Missing; n != 1 {
		t.Fatalf("node counter %d", n)
	}
}

func TestInventoryDiffPiecesAndCopiesInFlight(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	PutStripe(t, h.v, "obj", 0, 4, 2, 50, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.put("r", 10, "storage-1", "storage-2", "storage-3")
	h.lackOn("storage-1", "r")
	p := h.plan() // the copy of r back onto storage-1 is in flight
	if len(p.Copies) != 1 || !p.Copies[0].inPlace {
		t.Fatalf("planned %+v", p.Copies)
	}
	piece := pieceID("obj", 0, 0)
	wrong := inv(h.v, piece)
	wrong[0].SHA256 = pieceSum("other")
	res := check(h.v, "storage-1", wrong)
	if got := idsOf(h.v, res.Missing); !slices.Equal(got, []string{piece}) {
		t.Fatalf("missing %v: want the piece with the wrong checksum, not r (its copy back is in flight)", got)
	}
	if res = check(h.v, "storage-1", inv(h.v, piece)); len(res.Missing) != 0 {
		t.Fatalf("missing %v with a good piece", idsOf(h.v, res.Missing))
	}
}

// TestHealInPlaceTargetsOnlyTheNode: a node in maintenance lacks every
// shard the map lists on it; every repair goes back onto it, within its
// write cap, read from the others; the map does not change, and the node
// counts again once each copy lands.
func TestHealInPlaceTargetsOnlyTheNode(t *testing.T) {
	h := newPlanHarness(t, 6, 3, Limits{PerNodeIn: 2, PerNodeOut: 2, MaxInFlight: 64})
	var ids []string
	for i := 0; i < 9; i++ {
		id := fmt.Sprintf("s%d", i)
		ids = append(ids, id)
		h.put(id, 100, "storage-1", "storage-2", "storage-3")
	}
	PutStripe(t, h.v, "obj", 0, 4, 2, 50, nodeNames(1, 2, 3, 4, 5, 6)...)
	h.state("storage-1", model.StateMaintenance)
	h.lackOn("storage-1", append(ids, pieceID("obj", 0, 0))...)
	if tt := h.v.Totals(); tt.UnderReplicated != 10 || tt.StripesDegraded != 1 {
		t.Fatalf("totals %+v", tt)
	}
	for round := 0; round < 20 && h.v.Totals().UnderReplicated > 0; round++ {
		p := h.plan()
		if h.v.Nodes[h.v.NodeIndex["storage-1"]].inTasks > 2 {
			t.Fatalf("round %d: %d copies into storage-1, cap 2", round, h.v.Nodes[h.v.NodeIndex["storage-1"]].inTasks)
		}
		for _, d := range p.Copies {
			if h.name(d.Target) != "storage-1" || !inPlace(d) || slices.Contains(d.Sources, d.Target) || d.Incident != "heal-storage-1" {
				t.Fatalf("decision %s: target %s in place %v sources %v incident %s", d.ID, h.name(d.Target), inPlace(d), d.Sources, d.Incident)
			}
			if d.RB != nil {
				task := h.v.RebuildTask(d, h.v.TaskID(d))
				if err := task.Validate(); err != nil || task.Stripe[0].Node != "" || task.Rebuild[0].Node != "storage-1" {
					t.Fatalf("rebuild task %+v: %v", task, err)
				}
			}
			h.landInPlace(d)
		}
		if len(p.Trims) > 0 || len(p.Drops) > 0 {
			t.Fatalf("round %d trims %v drops %v", round, p.Trims, p.Drops)
		}
	}
	tt := h.v.Totals()
	if tt.UnderReplicated != 0 || tt.InFlight != 0 || len(h.v.lacks) != 0 {
		t.Fatalf("after the heal: totals %+v, %d marks", tt, len(h.v.lacks))
	}
	for _, id := range ids {
		if got := h.holderIDs(id); !slices.Equal(got, []string{"storage-1", "storage-2", "storage-3"}) {
			t.Fatalf("%s holders %v", id, got)
		}
	}
}

// TestHealInPlaceFallsBackWhenFullThenDrops: a node without room for its
// shard lets it be re-homed; once the shard is whole elsewhere the node is
// dropped from its entry rather than copied onto.
func TestHealInPlaceFallsBackWhenFullThenDrops(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("s", 100, "storage-1", "storage-2", "storage-3")
	h.v.Heartbeat("storage-1", 1000, 1000, Epoch) // full
	h.lackOn("storage-1", "s")
	p := h.plan()
	if len(p.Copies) != 1 || p.Copies[0].inPlace || h.name(p.Copies[0].Target) != "storage-4" {
		t.Fatalf("planned %+v: want a copy to storage-4 (rack-1), storage-1 being full", p.Copies)
	}
	if len(p.Drops) != 0 {
		t.Fatal("dropped before the shard was whole")
	}
	h.land(p.Copies[0])
	p = h.plan()
	if len(p.Copies) != 0 || len(p.Trims) != 0 || len(p.Drops) != 1 || h.name(p.Drops[0].Node) != "storage-1" {
		t.Fatalf("after the re-home: %+v: want storage-1 dropped, nothing trimmed", p)
	}
}

// TestDroppedVersusRebuilt: of the shards a returning node lacks, those
// re-homed while it was away drop it; the others are rebuilt onto it.
func TestDroppedVersusRebuilt(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("rehomed", 100, "storage-1", "storage-2", "storage-3", "storage-4")
	h.put("kept", 100, "storage-1", "storage-2", "storage-3")
	h.put("lost", 100, "storage-1")
	PutStripe(t, h.v, "obj", 0, 4, 2, 50, nodeNames(1, 2, 3, 4, 5, 6)...)
	putPiece(t, h.v, "obj", 0, 0, 4, 2, 50, "storage-1", "storage-6") // piece 0 rebuilt on storage-6 meanwhile
	PutStripe(t, h.v, "obj2", 0, 4, 2, 50, nodeNames(1, 2, 3, 4, 5, 6)...)
	r := h.v.NodeIndex["storage-1"]
	h.lackOn("storage-1", "rehomed", "kept", "lost", pieceID("obj", 0, 0), pieceID("obj2", 0, 0))
	rep := h.v.HealSummary(r, 6)
	if rep.Node != "storage-1" || rep.Checked != 6 || rep.Missing != 5 || rep.MissingBytes != 400 || rep.Dropped != 2 || rep.Rebuilding != 2 {
		t.Fatalf("summary %+v: want 5 missing, 2 dropped (rehomed, obj piece 0), 2 rebuilding (kept, obj2 piece 0), lost in neither", rep)
	}
	p := h.plan()
	var dropped []string
	for _, d := range p.Drops {
		dropped = append(dropped, d.ID)
		if d.Node != r {
			t.Fatalf("drop %+v", d)
		}
	}
	slices.Sort(dropped)
	if want := []string{pieceID("obj", 0, 0), "rehomed"}; !slices.Equal(dropped, want) {
		t.Fatalf("dropped %v, want %v", dropped, want)
	}
	var rebuilt []string
	for _, d := range p.Copies {
		rebuilt = append(rebuilt, d.ID)
		if d.Target != r || !inPlace(d) {
			t.Fatalf("decision %+v", d)
		}
	}
	slices.Sort(rebuilt)
	if want := []string{"kept", pieceID("obj2", 0, 0)}; !slices.Equal(rebuilt, want) {
		t.Fatalf("rebuilt %v, want %v", rebuilt, want)
	}
	// Dropping it from the entry forgets the mark.
	sh, _ := h.v.IDs.Lookup("rehomed")
	h.put("rehomed", 100, "storage-2", "storage-3", "storage-4")
	if h.v.IsMissing(sh, r) || h.v.Nodes[r].Missing != 4 {
		t.Fatalf("mark kept after the drop (node counter %d)", h.v.Nodes[r].Missing)
	}
}

// TestHealInPlaceWaitsForABusyOrSuspectNode: an in-place target at its
// write cap, or suspect, makes the shard wait instead of re-homing it.
func TestHealInPlaceWaitsForABusyOrSuspectNode(t *testing.T) {
	h := newPlanHarness(t, 6, 3, Limits{PerNodeIn: 1, PerNodeOut: 10, MaxInFlight: 64})
	h.put("a", 10, "storage-1", "storage-2", "storage-3")
	h.put("b", 10, "storage-1", "storage-2", "storage-3")
	h.lackOn("storage-1", "a", "b")
	if p := h.plan(); len(p.Copies) != 1 || !p.Copies[0].inPlace {
		t.Fatalf("planned %+v: want one copy back onto storage-1 (its write cap)", p.Copies)
	}
	if p := h.plan(); len(p.Copies) != 0 {
		t.Fatalf("planned %+v while storage-1 is busy: b must wait for it", p.Copies)
	}
	h2 := newPlanHarness(t, 6, 3, wide)
	h2.put("a", 10, "storage-1", "storage-2", "storage-3")
	h2.lackOn("storage-1", "a")
	h2.state("storage-1", model.StateSuspect)
	if p := h2.plan(); len(p.Copies) != 0 {
		t.Fatalf("planned %+v while storage-1 is suspect", p.Copies)
	}
	h2.state("storage-1", model.StateDown) // gone: re-home as usual
	if p := h2.plan(); len(p.Copies) != 1 || p.Copies[0].inPlace || h2.name(p.Copies[0].Target) != "storage-4" {
		t.Fatalf("planned %+v: want a re-home to storage-4", p.Copies)
	}
}

// TestHealInPlaceFailingNodeIsReHomed: copies back onto a node that keep
// failing go elsewhere from relaxAfterAttempt on.
func TestHealInPlaceFailingNodeIsReHomed(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("a", 10, "storage-1", "storage-2", "storage-3")
	h.lackOn("storage-1", "a")
	for attempt := 1; attempt < relaxAfterAttempt; attempt++ {
		p := h.plan()
		if len(p.Copies) != 1 || !p.Copies[0].inPlace {
			t.Fatalf("attempt %d: %+v", attempt, p.Copies)
		}
		h.fail(p.Copies[0])
		h.advance(time.Minute)
	}
	p := h.plan()
	if len(p.Copies) != 1 || p.Copies[0].inPlace || h.name(p.Copies[0].Target) == "storage-1" {
		t.Fatalf("attempt %d: %+v: want a re-home", relaxAfterAttempt, p.Copies)
	}
}

func TestPauseHoldsEverything(t *testing.T) {
	lim := wide
	lim.Paused = true
	h := newPlanHarness(t, 6, 3, lim)
	h.put("under", 10, "storage-1", "storage-2", "storage-3")
	h.put("surplus", 10, "storage-1", "storage-2", "storage-3", "storage-4")
	h.put("drop", 10, "storage-2", "storage-3", "storage-4", "storage-5")
	h.state("storage-1", model.StateDown)
	h.lackOn("storage-5", "drop")
	h.state("storage-1", model.StateUp)
	h.state("storage-6", model.StateDown)
	h.put("under2", 10, "storage-6", "storage-2", "storage-3")
	if p := h.plan(); len(p.Copies)+len(p.Trims)+len(p.Drops) != 0 {
		t.Fatalf("paused, yet planned %+v", p)
	}
	h.lim.Paused = false
	if p := h.plan(); len(p.Copies) == 0 || len(p.Trims) == 0 || len(p.Drops) == 0 {
		t.Fatalf("resumed: %+v: want copies, trims and drops", p)
	}
}

// TestReturnIsCheckedBeforeTrims: a node back from down, or booted anew
// while live, awaits an inventory check; no copy it holds is trimmed until
// then. Failed checks back off, then give up.
func TestReturnIsCheckedBeforeTrims(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.v.pol.AutoHeal = true
	h.put("s", 10, "storage-1", "storage-2", "storage-3", "storage-4")
	h.state("storage-1", model.StateDown)
	h.state("storage-1", model.StateUp)
	r := h.v.NodeIndex["storage-1"]
	if !h.v.Nodes[r].NeedReconcile {
		t.Fatal("no check asked on return")
	}
	if p := h.plan(); len(p.Trims) != 0 {
		t.Fatalf("trimmed %+v before the check", p.Trims)
	}
	due := h.v.ReconcilesDue(h.Now, 2)
	if len(due) != 1 || due[0] != r || len(h.v.ReconcilesDue(h.Now, 2)) != 0 {
		t.Fatalf("due %v", due)
	}
	if p := h.plan(); len(p.Trims) != 0 {
		t.Fatal("trimmed during the check")
	}
	gen := h.v.Nodes[r].ReconcileGen
	for try := 1; try < maxReconcileTries; try++ {
		if h.v.ReconcileDone(r, gen, false, h.Now) {
			t.Fatalf("gave up after %d tries", try)
		}
		if len(h.v.ReconcilesDue(h.Now, 2)) != 0 {
			t.Fatal("retried without a backoff")
		}
		h.advance(time.Minute)
		if len(h.v.ReconcilesDue(h.Now, 2)) != 1 {
			t.Fatal("not retried after the backoff")
		}
	}
	if !h.v.ReconcileDone(r, gen, false, h.Now) || h.v.Nodes[r].NeedReconcile {
		t.Fatal("not given up")
	}
	if p := h.plan(); len(p.Trims) != 1 {
		t.Fatalf("trims %+v after the check", p.Trims)
	}

	// A new boot id while in maintenance asks for a check; the first one seen does not.
	h.state("storage-5", model.StateMaintenance)
	h.v.BootSeen("storage-5", "b1")
	if h.v.Nodes[h.v.NodeIndex["storage-5"]].NeedReconcile {
		t.Fatal("first boot id seen asked for a check")
	}
	if !h.v.BootSeen("storage-5", "b2") || !h.v.Nodes[h.v.NodeIndex["storage-5"]].NeedReconcile {
		t.Fatal("new boot id did not ask for a check")
	}
	// Without autoHeal nothing is asked.
	h.v.pol.AutoHeal = false
	if h.v.BootSeen("storage-6", "x") || h.v.BootSeen("storage-6", "y") {
		t.Fatal("asked without autoHeal")
	}
}

// TestSeededCopyBackIsNotLandedByTheMap: a copy onto a node the entry lists
// already (read back from the work queue after a takeover) lands on its
// result, not on the next map update.
func TestSeededCopyBackIsNotLandedByTheMap(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "s", 10, "storage-1", "storage-2", "storage-3")
	task := event.Task{Task: "s-storage-1-1", Shard: "s", Kind: event.KindCopy, Sources: []string{"storage-2"},
		Target: "storage-1", Bytes: 10, SHA256: sha, Attempt: 1}
	if !v.SeedFlight(task, 7, Epoch.Add(time.Minute)) {
		t.Fatal("not seeded")
	}
	h, _ := v.IDs.Lookup("s")
	Put(t, v, "s", 10, "storage-1", "storage-2", "storage-3")
	if f := v.Flights[h]; f == nil || !f.inPlace {
		t.Fatal("the map update ended a copy back in place")
	}
	if !v.LandedInPlace(h, v.NodeIndex["storage-1"], "s-storage-1-1") || v.Flights[h] != nil {
		t.Fatal("its result did not land it")
	}
	if v.LandedInPlace(h, v.NodeIndex["storage-2"], "other") {
		t.Fatal("an ordinary result landed in place")
	}
}

// TestProgressNarrowedToANode compares the narrowed numbers with the marks.
func TestProgressNarrowedToANode(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("a", 100, "storage-1", "storage-2", "storage-3")
	h.put("b", 200, "storage-1", "storage-2", "storage-3")
	h.put("c", 300, "storage-1", "storage-4")
	h.put("gone", 400, "storage-1")
	h.put("other", 500, "storage-2", "storage-3", "storage-5")
	PutStripe(t, h.v, "obj", 0, 2, 1, 50, nodeNames(1, 2, 3)...)
	h.lackOn("storage-1", "a", "b", "c", "gone", pieceID("obj", 0, 0))
	h.lackOn("storage-2", "other")
	r := h.v.NodeIndex["storage-1"]
	p := h.v.NodeProgress(r, h.Now, time.Minute)
	// c has one copy left; the stripe has exactly K live pieces.
	if p.Node != "storage-1" || p.UnderReplicated != 4 || p.Lost != 1 || p.BytesRemaining != 650 ||
		p.SingleCopy != 2 || p.InFlight != 0 || p.Shards != 5 || p.ETASeconds != -1 || p.SingleCopyETASeconds != -1 {
		t.Fatalf("narrowed %+v", p)
	}
	g := h.v.Progress(h.Now, time.Minute)
	if g.SingleCopy != 2 || g.UnderReplicated != 5 || g.Lost != 1 {
		t.Fatalf("global %+v: single-copy c and the stripe; a, b, c, piece, other under-replicated", g)
	}
	h.plan()
	if p := h.v.NodeProgress(r, h.Now, time.Minute); p.InFlight != 4 {
		t.Fatalf("in flight %d, want 4 copies back onto storage-1", p.InFlight)
	}
	h.v.VerifiedCopy(100, h.Now)
	h.advance(time.Second)
	if p := h.v.NodeProgress(r, h.Now, time.Minute); p.RateBytesPerSec <= 0 || p.ETASeconds <= 0 || p.SingleCopyETASeconds <= 0 {
		t.Fatalf("with a rate: %+v", p)
	}
}

func TestHealPlanMoves(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("a", 100, "storage-1", "storage-2", "storage-3")
	h.put("rehomed", 100, "storage-1", "storage-2", "storage-3", "storage-4")
	h.put("lost", 100, "storage-1")
	PutStripe(t, h.v, "obj", 0, 4, 2, 50, nodeNames(1, 2, 3, 4, 5, 6)...)
	var hs []uint32
	for _, id := range []string{"a", "rehomed", "lost", pieceID("obj", 0, 0)} {
		sh, _ := h.v.IDs.Lookup(id)
		hs = append(hs, sh)
	}
	before := h.v.Totals()
	plan := h.v.HealPlan(h.v.NodeIndex["storage-1"], hs, wide)
	if plan.Shards != 2 || plan.Bytes != 150 || len(plan.Moves) != 2 {
		t.Fatalf("plan %+v: want a (copy) and the piece (rebuild)", plan)
	}
	a, pc := plan.Moves[0], plan.Moves[1]
	if a.Shard != "a" || a.Kind != event.KindCopy || a.Target != "storage-1" || a.TargetRack != "rack-1" ||
		(a.Source != "storage-2" && a.Source != "storage-3") || a.SourceRack == "" {
		t.Fatalf("move %+v", a)
	}
	if pc.Kind != event.KindRebuild || pc.Target != "storage-1" || pc.Source == "storage-1" || pc.Bytes != 50 {
		t.Fatalf("move %+v", pc)
	}
	if tt := h.v.Totals(); tt != before || len(h.v.lacks) != 0 {
		t.Fatal("a plan changed the view")
	}
}

func TestEstimate(t *testing.T) {
	cases := []struct {
		bytes    int64
		rate     float64
		in       int
		capBytes int64
		secs     float64
		says     string
	}{
		{0, 0, 2, 0, 0, "nothing"},
		{400e6, 100e6, 2, 0, 4, "verified"},
		{400e6, 0, 2, 0, 1, "2 copies at a time into storage-1"},
		{400e6, 0, 2, 100e6, 4, "byte cap"},
	}
	for _, c := range cases {
		secs, says := Estimate(c.bytes, c.rate, c.in, c.capBytes, "storage-1")
		if secs != c.secs || !strings.Contains(says, c.says) {
			t.Errorf("estimate(%d, %v, %d, %d) = %v %q, want %v and %q", c.bytes, c.rate, c.in, c.capBytes, secs, says, c.secs, c.says)
		}
	}
}

// TestFailedCopyBackLeavesTheNodeLacking: a copy back in place known only
// from the work queue (after a takeover) that fails marks its target as
// lacking the shard, so it is planned again.
func TestFailedCopyBackLeavesTheNodeLacking(t *testing.T) {
	v := TestView(t, 6, 3)
	Put(t, v, "s", 10, "storage-1", "storage-2", "storage-3")
	task := event.Task{Task: "s-storage-1-1", Shard: "s", Kind: event.KindCopy, Sources: []string{"storage-2"},
		Target: "storage-1", Bytes: 10, SHA256: sha, Attempt: 1}
	if !v.SeedFlight(task, 7, Epoch.Add(time.Minute)) {
		t.Fatal("not seeded")
	}
	h, _ := v.IDs.Lookup("s")
	if v.Totals().UnderReplicated != 0 {
		t.Fatal("under-replicated before the failure")
	}
	v.FailFlight(h, v.Flights[h], "disk on fire", Epoch, blameTarget)
	if !v.IsMissing(h, v.NodeIndex["storage-1"]) || v.Totals().UnderReplicated != 1 || v.Flights[h] != nil {
		t.Fatalf("after the failure: marked %v, totals %+v", v.IsMissing(h, v.NodeIndex["storage-1"]), v.Totals())
	}
}
