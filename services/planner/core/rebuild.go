package core

import (
	"cmp"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// rebuildPlan is the erasure-coded part of a decision: one task that reads K
// pieces of a stripe and reconstructs all its missing pieces in one pass.
type rebuildPlan struct {
	Group   *StripeGroup
	Pieces  []uint32  // the pieces to rebuild, in index order (pieces[0] is decision.shard)
	targets []NodeRef // their targets (targets[0] is decision.target)
	reads   []NodeRef // the holders read, one per piece read (K): decision.sources starts with them
	holder  []int     // per stripe index: the live holder the task names (-1: missing)
	size    int64     // one piece's size
	inPlace []bool    // per piece: its target is a holder whose disk lacks it
}

// readChoice is a live piece that could be read, with its best holder.
type readChoice struct {
	index  int
	holder NodeRef
	notUp  bool
	hash   uint64
}

// decideRebuild plans the rebuild of the stripe of missing piece h, if it
// can run now: every piece of the stripe is in the map, no rebuild of the
// stripe is in flight or planned this round, no missing piece backs off,
// K pieces can be read from holders below their out cap (up holders first,
// the least busy first), and every missing piece gets a target or has none
// at all (it is left for later; the others go now). A piece whose listed
// holder lacks it goes back onto that holder (inPlaceTarget); the others get
// new homes (placement.ChooseRebuildTargets: no node holding any piece of
// the stripe, at most M pieces per rack where racks allow, least loaded).
// It does not change the view.
func (v *View) decideRebuild(h uint32, pc *planCtx) (Decision, bool) {
	g := v.Group(h)
	if g == nil || g.RB != nil || pc.planned[g] || g.present != g.k+g.m {
		return Decision{}, false
	}
	cands := pc.cands
	var (
		missing []uint32
		live    []readChoice
		attempt = 1
		blamed  = 1 // attempt, not counting failures for want of a source
		serial  int
		avoid   []int
	)
	for idx, p := range g.pieces {
		if v.Flights[p] != nil {
			return Decision{}, false
		}
		trimmed := -1
		if tf := v.Trims[p]; tf != nil {
			trimmed = int(tf.Node)
		}
		hs := v.liveHolders(p, trimmed)
		if len(hs) == 0 {
			if v.liveCount(p) > 0 {
				return Decision{}, false // its only other live copy is being deleted: wait
			}
			missing = append(missing, p)
			if r := v.Retries[p]; r != nil {
				if pc.now.Before(r.notBefore) {
					return Decision{}, false
				}
				attempt = max(attempt, r.Attempt)
				blamed = max(blamed, r.blamed())
				serial = max(serial, r.serial)
				for _, a := range r.avoid {
					if !slices.Contains(avoid, int(a)) {
						avoid = append(avoid, int(a))
					}
				}
			}
			continue
		}
		best := readChoice{index: idx, holder: hs[0], notUp: cands[hs[0]].State != model.StateUp}
		best.hash = placement.Salt(v.Nodes[best.holder].ID)
		for _, x := range hs[1:] {
			c := readChoice{index: idx, holder: x, notUp: cands[x].State != model.StateUp, hash: placement.Salt(v.Nodes[x].ID)}
			if readLess(c, best, cands) {
				best = c
			}
		}
		live = append(live, best)
	}
	if len(missing) == 0 || len(live) < g.k {
		return Decision{}, false
	}
	// The reads: K pieces, up holders first, least busy first.
	slices.SortStableFunc(live, func(a, b readChoice) int {
		if readLess(a, b, cands) {
			return -1
		}
		if readLess(b, a, cands) {
			return 1
		}
		return 0
	})
	var reads []NodeRef
	extra := map[NodeRef]int{}
	holder := make([]int, len(g.pieces))
	for i := range holder {
		holder[i] = -1
	}
	for _, c := range live {
		holder[c.index] = int(c.holder)
		if len(reads) == g.k || cands[c.holder].Reads+extra[c.holder] >= pc.maxOut {
			continue
		}
		extra[c.holder]++
		reads = append(reads, c.holder)
	}
	if len(reads) < g.k {
		return Decision{}, false // sources busy
	}
	// The targets.
	var holders []int
	for _, p := range g.pieces {
		for _, r := range v.holders(p) {
			holders = append(holders, int(r))
		}
		if tf := v.Trims[p]; tf != nil {
			holders = append(holders, int(tf.Node))
		}
	}
	size := v.Record(missing[0]).size
	racks := v.stripeRacks(g, noPiece)
	// Pieces back onto the holders lacking them first.
	tgs := make([]placement.Target, len(missing))
	inPlace := make([]bool, len(missing))
	var fresh []int // indexes into missing of the pieces needing a new home
	for i, p := range missing {
		x, ans := v.inPlaceTarget(p, size, pc)
		switch {
		case ans == inPlaceWait:
			return Decision{}, false
		case ans == inPlaceGo && !slices.ContainsFunc(tgs[:i], func(t placement.Target) bool { return t.Index == int(x) }):
			tgs[i], inPlace[i] = placement.Target{Index: int(x)}, true
			racks[cands[x].Rack]++
		default:
			tgs[i] = placement.Target{Index: -1}
			fresh = append(fresh, i)
		}
	}
	if len(fresh) > 0 {
		firstID := v.IDs.String(missing[fresh[0]])
		opt := placement.RebuildOptions{M: g.m, Size: size, MaxTasks: pc.maxIn, MaxFill: pc.lim.MaxFill,
			Salt: placement.Salt(firstID), Exclude: avoid, FillBand: repairFillBand}
		ftgs, err := placement.ChooseRebuildTargets(len(fresh), holders, racks, cands, opt)
		if len(avoid) > 0 && (err != nil || found(ftgs) < len(fresh) || (relaxed(ftgs) && blamed < relaxAfterAttempt)) {
			// Avoiding the failed targets leaves a piece without one or breaks
			// the rack rule: retry them, until relaxAfterAttempt failures.
			opt.Exclude = nil
			tgs2, err2 := placement.ChooseRebuildTargets(len(fresh), holders, racks, cands, opt)
			switch {
			case err2 == nil && (err != nil || found(tgs2) > found(ftgs) || (found(tgs2) == found(ftgs) && relaxed(ftgs) && !relaxed(tgs2))):
				ftgs, err = tgs2, nil
			case err == nil && relaxed(ftgs) && blamed < relaxAfterAttempt && errors.Is(err2, placement.ErrBusy):
				return Decision{}, false // the rack-keeping target is busy: wait for it
			}
		}
		switch {
		case err == nil:
			for k, i := range fresh {
				tgs[i] = ftgs[k]
			}
		case errors.Is(err, placement.ErrBusy) || len(fresh) == len(missing):
			return Decision{}, false
		}
		// Otherwise no node can take the others: the in-place pieces go alone.
	}
	rp := &rebuildPlan{Group: g, reads: reads, holder: holder, size: size}
	anyRelaxed := false
	for i, tg := range tgs {
		if tg.Index < 0 {
			continue
		}
		rp.Pieces = append(rp.Pieces, missing[i])
		rp.targets = append(rp.targets, NodeRef(tg.Index))
		rp.inPlace = append(rp.inPlace, inPlace[i])
		anyRelaxed = anyRelaxed || tg.RackRelaxed
	}
	// Sources: the reads first, then every other live holder, up ones and
	// the least busy first, as fallbacks.
	sources := make([]NodeRef, 0, len(live))
	for _, r := range reads {
		if !slices.Contains(sources, r) {
			sources = append(sources, r)
		}
	}
	var others []NodeRef
	for _, p := range g.pieces {
		for _, r := range v.liveHolders(p, -1) {
			if !slices.Contains(sources, r) && !slices.Contains(others, r) {
				if tf := v.Trims[p]; tf == nil || tf.Node != r {
					others = append(others, r)
				}
			}
		}
	}
	slices.SortStableFunc(others, func(a, b NodeRef) int {
		ua, ub := cands[a].State == model.StateUp, cands[b].State == model.StateUp
		if ua != ub {
			if ua {
				return -1
			}
			return 1
		}
		return cmp.Compare(cands[a].Reads, cands[b].Reads)
	})
	incident := incidentNone
	for _, p := range rp.Pieces {
		if inc := v.incident(p); inc != incidentNone {
			incident = inc
			break
		}
	}
	for i, in := range rp.inPlace {
		if in && incident == incidentNone {
			incident = healIncidentPrefix + v.Nodes[rp.targets[i]].ID
		}
	}
	return Decision{
		Shard:    rp.Pieces[0],
		ID:       v.IDs.String(rp.Pieces[0]),
		Sources:  append(sources, others...),
		Target:   rp.targets[0],
		Bytes:    int64(g.k) * size,
		Attempt:  attempt,
		Serial:   serial + 1,
		Incident: incident,
		Relaxed:  anyRelaxed,
		RB:       rp,
	}, true
}

// readLess orders read choices: up holders first, then fewest reads, then
// fewest writes, then by hash.
func readLess(a, b readChoice, cands []placement.Candidate) bool {
	if a.notUp != b.notUp {
		return !a.notUp
	}
	ca, cb := &cands[a.holder], &cands[b.holder]
	if ca.Reads != cb.Reads {
		return ca.Reads < cb.Reads
	}
	if ca.PendingTasks != cb.PendingTasks {
		return ca.PendingTasks < cb.PendingTasks
	}
	return a.hash < b.hash
}

func found(tgs []placement.Target) int {
	n := 0
	for _, t := range tgs {
		if t.Index >= 0 {
			n++
		}
	}
	return n
}

func relaxed(tgs []placement.Target) bool {
	for _, t := range tgs {
		if t.Index >= 0 && t.RackRelaxed {
			return true
		}
	}
	return false
}

// reserveRebuild records a rebuild decision as in flight.
func (v *View) reserveRebuild(d Decision, now time.Time, timeout time.Duration) {
	rp := d.RB
	rb := &rebuildFlight{Task: v.TaskID(d), serial: d.Serial, group: rp.Group, pieces: rp.Pieces, reads: rp.reads}
	for i, p := range rp.Pieces {
		v.startFlight(p, &Flight{Task: rb.Task, target: rp.targets[i], bytes: rp.size, attempt: d.Attempt,
			serial: d.Serial, Deadline: now.Add(timeout), incident: d.Incident, RB: rb, inPlace: rp.inPlace[i]})
	}
}

// RebuildTask renders a reserved rebuild decision as the task a mover runs.
func (v *View) RebuildTask(d Decision, taskID string) *event.Task {
	rp, g := d.RB, d.RB.Group
	t := &event.Task{
		Task: taskID, Incident: d.Incident, Kind: event.KindRebuild, Attempt: d.Attempt, RackRelaxed: d.Relaxed,
		K: g.k, M: g.m, Stripe: make([]event.Piece, len(g.pieces)),
	}
	for i, p := range g.pieces {
		piece := event.Piece{Index: i, SHA256: hex.EncodeToString(g.sums[i][:])}
		if p != noPiece {
			piece.Shard, piece.Size = v.IDs.String(p), v.Record(p).size
		}
		if rp.holder[i] >= 0 {
			piece.Node = v.Nodes[rp.holder[i]].ID
		}
		t.Stripe[i] = piece
	}
	for i, p := range rp.Pieces {
		piece := t.Stripe[v.Record(p).index]
		piece.Node = v.Nodes[rp.targets[i]].ID
		t.Rebuild = append(t.Rebuild, piece)
	}
	for _, r := range d.Sources {
		t.Sources = append(t.Sources, v.Nodes[r].ID)
	}
	first := t.Rebuild[0]
	t.Shard, t.Target, t.Bytes, t.SHA256 = first.Shard, first.Node, first.Size, first.SHA256
	return t
}

// seedRebuild records a queued rebuild task as in flight (see seedFlight):
// its pieces, their targets and, as its reads, the first K sources.
func (v *View) seedRebuild(t event.Task, seq uint64, deadline time.Time) bool {
	if len(t.Rebuild) == 0 {
		return false
	}
	var pieces []uint32
	var targets []NodeRef
	var g *StripeGroup
	for _, pc := range t.Rebuild {
		h, ok := v.IDs.Lookup(pc.Shard)
		if !ok {
			continue
		}
		pg := v.Group(h)
		if pg == nil || (g != nil && pg != g) {
			return false
		}
		tg, err := v.Ref(pc.Node)
		if err != nil {
			return false
		}
		g = pg
		pieces = append(pieces, h)
		targets = append(targets, tg)
	}
	if g == nil {
		return false
	}
	serial := taskSerial(t.Task, max(t.Attempt, 1))
	if g.RB != nil {
		if g.RB.serial >= serial {
			return false
		}
		for _, p := range v.OpenPieces(g.RB) {
			v.EndFlight(p)
		}
	}
	var reads []NodeRef
	for _, s := range t.Sources[:min(len(t.Sources), t.K)] {
		r, err := v.Ref(s)
		if err != nil {
			return false
		}
		reads = append(reads, r)
	}
	rb := &rebuildFlight{Task: t.Task, serial: serial, group: g, pieces: pieces, reads: reads}
	for i, p := range pieces {
		r := v.retryOf(p)
		r.serial = max(r.serial, serial)
		r.Attempt = max(t.Attempt, 1)
		if r.expires.IsZero() {
			r.expires = deadline
		}
		v.startFlight(p, &Flight{Task: t.Task, target: targets[i], bytes: v.Record(p).size, attempt: max(t.Attempt, 1),
			serial: serial, Deadline: deadline, Seq: seq, incident: t.Incident, RB: rb, inPlace: v.holds(p, targets[i])})
	}
	return true
}

// failedRebuild records a failed attempt of rebuild rb (see failed): every
// piece still open leaves flight and backs off, held against b.
// gaveUp reports that the attempt was the last of its round.
func (v *View) failedRebuild(rb *rebuildFlight, now time.Time, b blame) (gaveUp bool) {
	for _, p := range v.OpenPieces(rb) {
		f := v.Flights[p]
		v.EndFlight(p)
		if v.failed(p, f.source, f.target, f.attempt, f.serial, now, b) {
			gaveUp = true
		}
	}
	return gaveUp
}
