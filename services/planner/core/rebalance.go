package core

import (
	"slices"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
)

// Rebalancing: when a node joins (a new identity, an empty disk) or a heal
// left the survivors uneven, the planner moves existing copies from the
// fullest nodes to the emptiest until every node's fill (the bytes the map
// places on it over its capacity) is within a band of the mean. A move is a
// drain of one copy: it queues in moveBucket (after every repair), a new
// copy is made on the chosen node and verified, then the old copy is
// trimmed; redundancy never drops and the rack rules hold. Moves are chosen
// only while no repair is queued, a few at a time, largest first among
// those that do not overshoot, so the bytes moved stay near the minimum
// that reaches the band.

// move is one copy being rebalanced: from the node it leaves to the node
// chosen for it.
type move struct {
	from, to NodeRef
	bytes    int64
}

// balanceNode is one node as the rebalancer sees it.
type balanceNode struct {
	r        NodeRef
	load     int64 // map bytes, as the moves under way will leave them
	capacity int64
}

func (b balanceNode) fill() float64 { return float64(b.load) / float64(b.capacity) }

// balanceNodes returns the nodes that take part: registered, up, not
// draining, not refusing writes, with a known capacity. A node's load is
// the map's bytes on it as the moves under way will leave them: a move's
// bytes count on its target before its copy lands there (after, the map
// counts them), and leave its source before the map stops listing it there.
func (v *View) balanceNodes() []balanceNode {
	adjust := map[NodeRef]int64{}
	for h, mv := range v.Moves {
		if !v.holds(h, mv.to) {
			adjust[mv.to] += mv.bytes
		}
		if v.holds(h, mv.from) {
			adjust[mv.from] -= mv.bytes
		}
	}
	var out []balanceNode
	for i := range v.Nodes {
		n := &v.Nodes[i]
		capacity := n.hbCapacity
		if capacity <= 0 {
			capacity = n.capacity
		}
		if !n.Registered || n.EffState() != model.StateUp || n.Draining || n.hbFull || n.hbReadOnly || capacity <= 0 || v.removed[n.ID] {
			continue
		}
		out = append(out, balanceNode{r: NodeRef(i), load: n.Bytes + adjust[NodeRef(i)], capacity: capacity})
	}
	return out
}

// meanFill is the capacity-weighted mean fill of nodes.
func meanFill(nodes []balanceNode) float64 {
	var load, capacity int64
	for _, b := range nodes {
		load += b.load
		capacity += b.capacity
	}
	if capacity == 0 {
		return 0
	}
	return float64(load) / float64(capacity)
}

// repairQueued reports whether any shard awaits a repair (lost ones aside).
func (v *View) repairQueued() bool {
	for b := 1; b < moveBucket; b++ {
		if len(v.buckets[b]) > 0 {
			return true
		}
	}
	return false
}

// forgetMoves drops the moves that are over (the old copy was trimmed, the
// shard left the map) or moot (a node left the balance, the shard lacks
// copies: repair decides now).
func (v *View) forgetMoves() {
	for h, mv := range v.Moves {
		done := !v.IDs.Valid(h) || !v.holds(h, mv.from)
		moot := !done && (v.Nodes[mv.from].EffState() != model.StateUp || v.Nodes[mv.to].EffState() != model.StateUp ||
			v.Nodes[mv.to].Draining || v.Record(h).bucket < moveBucket && v.Record(h).bucket != noBucket)
		if (done || moot) && v.Flights[h] == nil {
			v.dropMove(h)
		}
	}
}

// dropMove forgets h's move and re-queues it.
func (v *View) dropMove(h uint32) {
	if _, ok := v.Moves[h]; !ok {
		return
	}
	delete(v.Moves, h)
	if v.IDs.Valid(h) {
		v.refresh(h)
		v.refreshStripe(v.Group(h))
	}
}

// ClearMoves forgets every move not yet copying (rebalance paused).
func (v *View) ClearMoves() {
	for h := range v.Moves {
		if v.Flights[h] == nil {
			v.dropMove(h)
		}
	}
}

// ChooseMoves marks up to budget new moves, from the fullest nodes to the
// emptiest, while some node's fill is more than band from the mean, a copy
// may legally move between such nodes, and no repair is queued. It returns
// how many it marked. Each pair it tries costs a pass over the source's
// shards; it tries at most maxMoveSearches. Where the rack rules pin a
// rack's share (3 racks, RF 3: each rack holds a copy of everything), the
// band may be out of reach: it stops when no legal move helps.
func (v *View) ChooseMoves(band float64, budget int) int {
	v.fresh()
	v.forgetMoves()
	if budget <= 0 || v.repairQueued() {
		return 0
	}
	nodes := v.balanceNodes()
	if len(nodes) < 2 {
		return 0
	}
	mean := meanFill(nodes)
	marked, tries := 0, 0
	for marked < budget && tries < maxMoveSearches {
		slices.SortFunc(nodes, func(a, b balanceNode) int {
			if fa, fb := a.fill(), b.fill(); fa != fb {
				if fa > fb {
					return -1
				}
				return 1
			}
			return int(a.r) - int(b.r)
		})
		found := false
		// From the fullest node above the mean to the emptiest below it,
		// the first pair with one end out of the band that a copy may
		// move between (the rack rules may forbid some pairs).
	pairs:
		for i := 0; i < len(nodes) && nodes[i].fill() > mean; i++ {
			for j := len(nodes) - 1; j > i && nodes[j].fill() < mean; j-- {
				src, dst := &nodes[i], &nodes[j]
				if src.fill()-mean <= band && mean-dst.fill() <= band {
					continue
				}
				if tries++; tries > maxMoveSearches {
					break pairs
				}
				// need: what brings the end that is out of the band just
				// inside it (moving further only costs bytes); slack: the
				// most that keeps both ends within it.
				need := max(src.load-int64((mean+band)*float64(src.capacity)), int64((mean-band)*float64(dst.capacity))-dst.load)
				slack := min(int64((mean+band)*float64(dst.capacity))-dst.load, src.load-int64((mean-band)*float64(src.capacity)))
				h, size, ok := v.pickMove(src.r, dst.r, need, slack)
				if !ok {
					continue
				}
				v.Moves[h] = move{from: src.r, to: dst.r, bytes: size}
				src.load -= size
				dst.load += size
				v.refresh(h)
				marked++
				found = true
				break pairs
			}
		}
		if !found {
			break
		}
	}
	return marked
}

// maxMoveSearches bounds the node pairs chooseMoves searches (each a pass
// over the source node's shards) in one call.
const maxMoveSearches = 64

// pickMove finds a shard on from that may move to to: to does not hold it,
// and to's rack keeps the rack rule (a replicated shard: no other live copy
// there unless from shares it; a piece: the stripe stays within M pieces
// per rack); it is whole (no repair), not moving, copying or being
// trimmed. It prefers the largest no larger than need, then the smallest no
// larger than slack (the least overshoot that still gets inside the band).
func (v *View) pickMove(from, to NodeRef, need, slack int64) (uint32, int64, bool) {
	best, bestSize := uint32(0), int64(-1)
	over, overSize := uint32(0), int64(-1)
	toRack, fromRack := v.Nodes[to].Rack, v.Nodes[from].Rack
	for h := range v.shardsOn(from) {
		s := v.Record(h)
		if s.bucket != noBucket || v.Moves[h].bytes > 0 || v.Flights[h] != nil || v.Trims[h] != nil || v.holds(h, to) || v.IsMissing(h, from) {
			continue
		}
		if s.size > slack {
			continue
		}
		if !v.rackAllows(h, from, toRack, fromRack) {
			continue
		}
		if s.size <= need {
			if s.size > bestSize {
				best, bestSize = h, s.size
			}
		} else if overSize < 0 || s.size < overSize {
			over, overSize = h, s.size
		}
	}
	if bestSize > 0 {
		return best, bestSize, true
	}
	if overSize > 0 {
		return over, overSize, true
	}
	return 0, 0, false
}

// rackAllows reports whether h's copy on from may move to a node of toRack.
func (v *View) rackAllows(h uint32, from NodeRef, toRack, fromRack string) bool {
	if toRack == fromRack {
		return true
	}
	if g := v.Group(h); g != nil {
		return v.stripeRacks(g, h)[toRack]+1 <= g.m
	}
	for _, r := range v.holders(h) {
		if r != from && v.Nodes[r].Rack == toRack && v.Nodes[r].EffState().Live() {
			return false
		}
	}
	return true
}

// decideMove plans the copy of a rebalanced shard to the node chosen for
// it, from the least busy live holder; it waits while that node is busy or
// would overflow.
func (v *View) decideMove(h uint32, mv move, pc *planCtx) (Decision, bool) {
	if v.Flights[h] != nil || v.Trims[h] != nil {
		return Decision{}, false
	}
	r := v.Retries[h]
	if r != nil && pc.now.Before(r.notBefore) {
		return Decision{}, false
	}
	cands := pc.cands
	tg := cands[mv.to]
	s := v.Record(h)
	if tg.State != model.StateUp || tg.Full || tg.Leaving || tg.PendingTasks >= pc.maxIn ||
		(tg.CapacityBytes > 0 && tg.Load()+tg.OtherBytes+s.size > tg.CapacityBytes) {
		return Decision{}, false
	}
	var hs []int
	for _, x := range v.liveHolders(h, -1) {
		hs = append(hs, int(x))
	}
	id := v.IDs.String(h)
	src, err := placement.ChooseSource(hs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: placement.Salt(id), TargetRack: tg.Rack})
	if err != nil {
		return Decision{}, false
	}
	attempt, serial := v.nextTask(h)
	return Decision{Shard: h, ID: id, Sources: []NodeRef{NodeRef(src)}, Target: mv.to, Bytes: s.size,
		Attempt: attempt, Serial: serial, Incident: rebalanceIncident, Background: true}, true
}

// rebalanceIncident names the tasks of rebalancing moves.
const rebalanceIncident = "rebalance"

// BalanceStatus reports the fills (the map's bytes over capacity) against
// the band.
func (v *View) BalanceStatus(band float64) control.BalanceStatus {
	nodes := v.balanceNodes()
	for i := range nodes {
		nodes[i].load = v.Nodes[nodes[i].r].Bytes
	}
	mean := meanFill(nodes)
	st := control.BalanceStatus{Band: band, MeanFill: mean, MovesInFlight: len(v.Moves), Balanced: true, Nodes: []control.BalanceNode{}}
	for _, b := range nodes {
		n := &v.Nodes[b.r]
		f := b.fill()
		st.Nodes = append(st.Nodes, control.BalanceNode{ID: n.ID, Rack: n.Rack, Fill: f, Deviation: f - mean})
		if f-mean > band || mean-f > band {
			st.Balanced = false
		}
		st.MaxDeviation = max(st.MaxDeviation, f-mean, mean-f)
	}
	for _, mv := range v.Moves {
		st.BytesMoving += mv.bytes
	}
	slices.SortFunc(st.Nodes, func(a, b control.BalanceNode) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return st
}
