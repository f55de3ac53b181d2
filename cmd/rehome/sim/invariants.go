package sim

import (
	"fmt"
	"slices"

	"github.com/rehome/rehome/services/planner/core"
	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// The invariants (SPEC §10), checked as the run goes:
//   - nothing is lost unless more copies failed at once than RF-1, or more
//     pieces of a K+M stripe than M (checkLoss, on every copy a fault or a
//     delete takes);
//   - never two copies in one rack, nor more than M pieces of a stripe,
//     where racks allow (checkStep, on every copy and rebuild the planner
//     decides);
//   - the map lists only verified copies (checkListed, on every map write
//     and landed copy; checkMap at the end);
//   - nothing is trimmed below target (checkStep on map writes,
//     checkDelete on every delete a mover carries out);
//   - once faults stop, healthy within Config.Bound (loop).

// relaxAfter is the attempt, not counting those that failed for want of a
// source, from which the planner core may give up the rack rule to avoid
// targets that failed (core's relaxAfterAttempt).
const relaxAfter = 3

// faulted records that a fault took a copy of shard s (a piece of its
// stripe).
func (r *run) faulted(s int32) {
	r.w.shards[r.unit(s)].faults++
	r.checkLoss(s)
}

// unit returns the record that keeps shard s's loss account: s itself, or
// the first piece of its stripe.
func (r *run) unit(s int32) int32 { return s - s%int32(r.width) }

// tolerates is how many copies (pieces of a stripe) may fail at once
// without loss.
func (r *run) tolerates() int {
	if r.lay.Erasure() {
		return r.lay.M
	}
	return RF - 1
}

// unitIntact counts, for the shard or stripe whose account is u, what
// survives intact and listed (running, when up is set): copies of a
// replicated shard, or pieces of a stripe with such a copy; want is its
// full redundancy (RF, or K+M) and need the least that keeps it readable
// (1, or K).
func (r *run) unitIntact(u int32, up bool) (have, want, need int) {
	if !r.lay.Erasure() {
		return r.listedIntact(u, up), RF, 1
	}
	for p := u; p < u+int32(r.width); p++ {
		if r.listedIntact(p, up) > 0 {
			have++
		}
	}
	return have, r.width, r.lay.K
}

// maybeWhole starts shard s's fault count afresh once its shard or stripe
// has its full redundancy listed intact on running nodes again and no node
// the map lists for it still holds a rotten copy: rot nobody found yet is
// damage the repair did not undo (a returning node's rotten copy may be the
// one a trim keeps).
func (r *run) maybeWhole(s int32) {
	u := r.unit(s)
	if have, want, _ := r.unitIntact(u, true); have < want {
		return
	}
	for p := u; p < u+int32(r.width); p++ {
		sh := r.w.shards[p]
		e, _ := r.pl.entry(sh.id)
		for _, id := range e.Nodes {
			if i := r.w.nodeIndex(id); i >= 0 && !r.w.nodes[i].destroyed {
				if c, ok := sh.copyOf(i); ok && c.state == rotten {
					return
				}
			}
		}
	}
	r.w.shards[u].faults = 0
}

// listedIntact counts the nodes the map lists for shard s whose disk holds
// an intact copy and survives (running, when up is set).
func (r *run) listedIntact(s int32, up bool) int {
	sh := r.w.shards[s]
	e, ok := r.pl.entry(sh.id)
	if !ok {
		return 0
	}
	n := 0
	for _, id := range e.Nodes {
		i := r.w.nodeIndex(id)
		if i < 0 || r.w.nodes[i].destroyed || up && !r.w.nodes[i].up {
			continue
		}
		if c, ok := sh.copyOf(i); ok && c.state == intact {
			n++
		}
	}
	return n
}

// checkLoss notes shard s (its stripe) lost when no listed node keeps an
// intact copy (fewer than K pieces have one): excused after more faults
// than it tolerates took its copies (pieces) since it was last whole, a
// violation otherwise.
func (r *run) checkLoss(s int32) {
	u := r.unit(s)
	sh := r.w.shards[u]
	if sh.lost {
		return
	}
	if have, _, need := r.unitIntact(u, false); have >= need {
		return
	}
	sh.lost = true
	if sh.faults > r.tolerates() {
		r.res.Lost++
		r.tracef("lost %s to %d faults", sh.id, sh.faults)
		return
	}
	what := "shard " + sh.id
	if r.lay.Erasure() {
		what = "stripe of " + sh.id
	}
	r.violate("%s lost after only %d of its copies failed (%s tolerates %d)", what, sh.faults, r.lay, r.tolerates())
}

// checkListed breaks when the map lists shard s on a node whose disk never
// got a verified copy of it.
func (r *run) checkListed(s int32) {
	sh := r.w.shards[s]
	e, ok := r.pl.entry(sh.id)
	if !ok {
		return
	}
	for _, id := range e.Nodes {
		i := r.w.nodeIndex(id)
		c, has := sh.copyOf(i)
		switch {
		case i < 0:
			r.violate("map lists %s on unknown node %s", sh.id, id)
		case !has:
			r.violate("map lists %s on %s, whose disk never got it", sh.id, id)
		case c.state == unverified:
			r.violate("map lists %s on %s, whose copy was never verified", sh.id, id)
		}
	}
}

// checkMap runs checkListed over the whole map.
func (r *run) checkMap() {
	for s := range r.w.shards {
		r.checkListed(int32(s))
	}
}

// checkDelete breaks when a mover is about to delete a copy of shard s
// from node i that the map still lists (a trim writes the map first).
func (r *run) checkDelete(s, i int32) {
	e, _ := r.pl.entry(r.w.shards[s].id)
	for _, id := range e.Nodes {
		if id == r.w.nodes[i].id {
			r.violate("delete of %s from %s, which the map still lists", e.Shard, id)
		}
	}
}

// checkStep checks one planning round's decisions and map writes.
func (r *run) checkStep(e core.Effects) {
	for _, p := range e.Writes {
		s := r.w.index[p.Shard]
		r.checkListed(s)
		if live := r.plannerLive(p); live < r.lay.Copies() && len(r.w.shards[s].copies) > 0 {
			r.violate("map write leaves %s with %d live copies listed (target %d): %v", p.Shard, live, r.lay.Copies(), p.Nodes)
		}
		r.checkLoss(s)
	}
	if len(e.Plan.Copies) == 0 {
		return
	}
	cands := r.pl.candidates()
	if r.lay.Erasure() {
		r.checkStripes(e, cands)
		return
	}
	for _, d := range e.Plan.Copies {
		if d.RB != nil {
			continue
		}
		if d.Attempt == 1 { // a new retry round
			delete(r.srcFails, d.ID)
		}
		p, ok := r.pl.entry(d.ID)
		if !ok {
			continue
		}
		target := int(d.Target)
		if d.Relaxed && d.Attempt-r.srcFails[d.ID] >= relaxAfter {
			// The planner's retry policy: a target that keeps failing is
			// avoided from the third attempt on, even at the rack rule's
			// cost; attempts no source could serve do not count.
			r.tracef("rack rule relaxed for %s after %d attempts (%d for want of a source)", d.ID, d.Attempt-1, r.srcFails[d.ID])
			continue
		}
		if holds(p, cands[target].ID) {
			// A copy back onto a listed holder whose disk lacks it restores
			// a listed copy: it adds no placement (a returned node's surplus
			// is trimmed later).
			continue
		}
		racks := map[int]bool{}
		for _, id := range p.Nodes {
			i := int(r.w.nodeIndex(id))
			if i < 0 || i == target || !cands[i].State.Live() || cands[i].Leaving {
				continue
			}
			// A holder the planner knows lacks its copy (wiped, quarantined)
			// holds no copy in its rack.
			if !r.pl.lacks(d.ID, cands[i].ID) {
				racks[r.rackOf[i]] = true
			}
		}
		if !racks[r.rackOf[target]] {
			continue
		}
		// Two copies in one rack: fine only if no rack without a copy had a
		// node able to take it (one whose copy is being trimmed cannot: the
		// planner re-makes nothing there until the delete is done).
		for i, c := range cands {
			if c.State == model.StateUp && !c.Full && !c.Leaving && !racks[r.rackOf[i]] && !holds(p, c.ID) && !r.pl.trimming(d.ID, c.ID) {
				r.violate("copy of %s to %s puts two copies in %s while %s (%s) could take it",
					d.ID, cands[target].ID, r.w.nodes[target].rack, c.ID, r.w.nodes[i].rack)
				break
			}
		}
	}
}

// checkStripes checks a round's rebuilds and piece copies of K+M stripes:
// no target puts more than M pieces of its stripe in one rack while a node
// in a rack with fewer could take the piece. Pieces rebuilt in place (onto
// a listed holder whose disk lacks them) add no placement, and relaxed
// targets from the third attempt not lost for want of a source are the
// planner's retry policy, as for copies.
func (r *run) checkStripes(e core.Effects, cands []placement.Candidate) {
	for _, d := range e.Plan.Copies {
		if d.Attempt == 1 {
			delete(r.srcFails, d.ID)
		}
	}
	for _, t := range e.Tasks {
		var pieces, targets []string
		switch t.Kind {
		case event.KindRebuild:
			for _, p := range t.Rebuild {
				pieces, targets = append(pieces, p.Shard), append(targets, p.Node)
			}
		case event.KindCopy:
			pieces, targets = []string{t.Shard}, []string{t.Target}
		default:
			continue
		}
		if t.RackRelaxed && t.Attempt-r.srcFails[t.Shard] >= relaxAfter {
			r.tracef("rack rule relaxed for %s after %d attempts (%d for want of a source)", t.Shard, t.Attempt-1, r.srcFails[t.Shard])
			continue
		}
		r.checkStripeRacks(pieces, targets, cands)
	}
}

// checkStripeRacks checks the targets of pieces of one stripe (see
// checkStripes). A rack's pieces are those with a live holder there that
// has its copy, a draining holder included (its piece is still there, as
// the planner counts it). Racks allow M per rack when the racks' room —
// each rack's live holders and eligible nodes, at most M per rack — adds
// up to the stripe's K+M pieces.
func (r *run) checkStripeRacks(pieces, targets []string, cands []placement.Candidate) {
	u := r.unit(r.w.index[pieces[0]])
	inRack := map[int]int{}
	named := map[string]bool{} // every node any piece's entry names: never a target
	usable := map[int]int{}    // per rack: live holders and eligible nodes
	for p := u; p < u+int32(r.width); p++ {
		id := r.w.shards[p].id
		e, _ := r.pl.entry(id)
		racks := map[int]bool{}
		for _, n := range e.Nodes {
			i := int(r.w.nodeIndex(n))
			if i < 0 || named[n] {
				continue
			}
			named[n] = true
			if cands[i].State.Live() {
				usable[r.rackOf[i]]++
			}
			if slices.Contains(pieces, id) || !cands[i].State.Live() || r.pl.lacks(id, n) {
				continue
			}
			racks[r.rackOf[i]] = true
		}
		for k := range racks {
			inRack[k]++
		}
	}
	// A node with a copy record of a piece (a holder the round's drops
	// took off the map after the round decided counts, as it did then).
	for p := u; p < u+int32(r.width); p++ {
		for _, c := range r.w.shards[p].copies {
			named[r.w.nodes[c.node].id] = true
		}
	}
	eligible := func(c placement.Candidate) bool {
		return c.State == model.StateUp && !c.Full && !c.Leaving && !named[c.ID]
	}
	for i, c := range cands {
		if eligible(c) {
			usable[r.rackOf[i]]++
		}
	}
	room := 0
	for _, n := range usable {
		room += min(n, r.lay.M)
	}
	if room < r.width {
		return // racks do not allow M per rack
	}
	for k, id := range pieces {
		e, _ := r.pl.entry(id)
		tg := int(r.w.nodeIndex(targets[k]))
		if tg < 0 || holds(e, targets[k]) {
			continue // in place: no new placement
		}
		if inRack[r.rackOf[tg]] >= r.lay.M {
			for i, c := range cands {
				if eligible(c) && inRack[r.rackOf[i]] < r.lay.M && !slices.Contains(targets, c.ID) {
					r.violate("piece %s to %s puts %d pieces of its stripe in %s while %s (%s) could take it",
						id, targets[k], inRack[r.rackOf[tg]]+1, r.w.nodes[tg].rack, c.ID, r.w.nodes[i].rack)
					return
				}
			}
		}
		inRack[r.rackOf[tg]]++
	}
}

func holds(p model.Placement, id string) bool {
	for _, n := range p.Nodes {
		if n == id {
			return true
		}
	}
	return false
}

// plannerLive counts the holders of p the planner counts live.
func (r *run) plannerLive(p model.Placement) int {
	n := 0
	for _, id := range p.Nodes {
		if r.pl.live(id) {
			n++
		}
	}
	return n
}

// healthy reports whether every shard not excusably lost has RF intact
// copies listed on running nodes.
func (r *run) healthy() bool { return r.unhealthy() == "" }

// unhealthy describes the first shard short of copies ("" if none).
func (r *run) unhealthy() string {
	short, first := 0, ""
	want := r.lay.Copies()
	for s, sh := range r.w.shards {
		if r.w.shards[r.unit(int32(s))].lost {
			continue
		}
		if n := r.listedIntact(int32(s), true); n < want {
			if short == 0 {
				e, _ := r.pl.entry(sh.id)
				first = fmt.Sprintf("%s has %d of %d (map: %v)", sh.id, n, want, e.Nodes)
			}
			short++
		}
	}
	if short == 0 {
		return ""
	}
	return fmt.Sprintf("%d shards short, e.g. %s", short, first)
}

// fewest returns the fewest intact copies listed on running nodes of any
// shard not lost; for a K+M layout, RF less the most pieces any stripe not
// lost lacks (at least 0).
func (r *run) fewest() int {
	k := RF
	for u := int32(0); u < int32(len(r.w.shards)); u += int32(r.width) {
		if r.w.shards[u].lost {
			continue
		}
		have, want, _ := r.unitIntact(u, true)
		k = min(k, max(RF-(want-have), 0))
	}
	return k
}
