package sim

import (
	"fmt"

	"github.com/rehome/rehome/services/planner/core"
	"github.com/rehome/rehome/shared/model"
)

// The invariants (SPEC §10), checked as the run goes:
//   - nothing is lost unless more copies failed at once than RF-1
//     (checkLoss, on every copy a fault or a delete takes);
//   - never two copies in one rack where racks allow (checkStep, on every
//     copy the planner decides);
//   - the map lists only verified copies (checkListed, on every map write
//     and landed copy; checkMap at the end);
//   - nothing is trimmed below target (checkStep on map writes,
//     checkDelete on every delete a mover carries out);
//   - once faults stop, healthy within Config.Bound (loop).

// relaxAfter is the attempt, not counting those that failed for want of a
// source, from which the planner core may give up the rack rule to avoid
// targets that failed (core's relaxAfterAttempt).
const relaxAfter = 3

// faulted records that a fault took a copy of shard s.
func (r *run) faulted(s int32) {
	r.w.shards[s].faults++
	r.checkLoss(s)
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

// checkLoss notes shard s lost when no listed node keeps an intact copy:
// excused after RF faults took its copies since it was last whole, a
// violation otherwise.
func (r *run) checkLoss(s int32) {
	sh := r.w.shards[s]
	if sh.lost || r.listedIntact(s, false) > 0 {
		return
	}
	sh.lost = true
	if sh.faults >= RF {
		r.res.Lost++
		r.tracef("lost %s to %d faults", sh.id, sh.faults)
		return
	}
	r.violate("shard %s lost after only %d of its copies failed (RF %d tolerates %d)", sh.id, sh.faults, RF, RF-1)
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
		if live := r.plannerLive(p); live < RF && len(r.w.shards[s].copies) > 0 {
			r.violate("map write leaves %s with %d live copies listed (target %d): %v", p.Shard, live, RF, p.Nodes)
		}
		r.checkLoss(s)
	}
	if len(e.Plan.Copies) == 0 {
		return
	}
	cands := r.pl.candidates()
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
		// node able to take it.
		for i, c := range cands {
			if c.State == model.StateUp && !c.Full && !c.Leaving && !racks[r.rackOf[i]] && !holds(p, c.ID) {
				r.violate("copy of %s to %s puts two copies in %s while %s (%s) could take it",
					d.ID, cands[target].ID, r.w.nodes[target].rack, c.ID, r.w.nodes[i].rack)
				break
			}
		}
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
	for s, sh := range r.w.shards {
		if sh.lost {
			continue
		}
		if n := r.listedIntact(int32(s), true); n < RF {
			if short == 0 {
				e, _ := r.pl.entry(sh.id)
				first = fmt.Sprintf("%s has %d of %d (map: %v)", sh.id, n, RF, e.Nodes)
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
// shard not lost.
func (r *run) fewest() int {
	k := RF
	for s, sh := range r.w.shards {
		if !sh.lost {
			k = min(k, r.listedIntact(int32(s), true))
		}
	}
	return k
}
