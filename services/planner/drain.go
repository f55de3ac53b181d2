package planner

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
)

// Draining: an operator takes a live node out on purpose. Its copies keep
// counting (it still serves, and is a source), but a shard whose copies
// would fall below its layout without the draining node's queues in
// moveBucket, after every repair: a new copy is made elsewhere (the
// draining node is never a target, and its rack is free for the new copy),
// verified, and only then is the draining copy trimmed as surplus
// (placement prefers a Leaving holder). Redundancy never drops below target
// on the way. A drained node holds nothing and accepts nothing.

// drainState is what the planner keeps of one node's drain.
type drainState struct {
	since       time.Time // when the drain was asked for
	by          string
	startShards int   // the node's map entries then
	startBytes  int64 // and their bytes
	announced   bool  // rehome.node.drained was published
}

// leavingCount returns how many live holders of h are leaving it: being
// drained, or the holder a rebalancing move takes it from (a holder whose
// disk lacks h counts for nothing).
func (v *view) leavingCount(h uint32) int {
	n := 0
	mv, moving := v.moves[h]
	for _, r := range v.holders(h) {
		if nd := &v.nodes[r]; (nd.draining || moving && r == mv.from) && nd.effState().Live() && !v.isMissing(h, r) {
			n++
		}
	}
	return n
}

// setDrain starts (on) or ends node id's drain; it reports whether anything
// changed. An unknown id is refused.
func (v *view) setDrain(id string, on bool, d drainState) (bool, error) {
	r, ok := v.nodeIdx[id]
	if !ok {
		return false, fmt.Errorf("%w: node %s", errUnknownNode, id)
	}
	n := &v.nodes[r]
	if n.draining == on {
		return false, nil
	}
	n.draining = on
	if on {
		v.draining++
		d.startShards, d.startBytes = n.shards, n.bytes
		n.drain = d
	} else {
		v.draining--
		n.drain = drainState{}
	}
	v.needRescan = true
	return true, nil
}

// errUnknownNode refuses an operator request naming no known node.
var errUnknownNode = errors.New("unknown node")

// drainable says why node id cannot be drained now, or nil: it must be
// registered and up; the other up nodes that accept shards must be enough
// for every layout it holds (and span enough racks to keep the rack rule
// where the cluster has the racks now), and have room for its bytes.
func (v *view) drainable(id string, maxFill float64) error {
	r, ok := v.nodeIdx[id]
	if !ok || !v.nodes[r].registered {
		return fmt.Errorf("%w: node %s is not registered", errUnknownNode, id)
	}
	n := &v.nodes[r]
	if st := n.effState(); st != model.StateUp {
		return fmt.Errorf("node %s is %s: only an up node can be drained (a dead node's shards are re-homed by repair)", id, st)
	}
	if n.shards == 0 {
		return nil
	}
	need := 1 // the most nodes one shard of its needs: copies, or a stripe's width
	for h := range v.shardsOn(r) {
		l := v.layouts[v.rec(h).layout]
		if l.Erasure() {
			need = max(need, l.K+l.M)
		} else {
			need = max(need, l.Copies())
		}
	}
	cands := v.candidates()
	racksNow, racksLeft := map[string]bool{}, map[string]bool{}
	eligible := 0
	var room int64
	for i, c := range cands {
		if c.State != model.StateUp || !v.nodes[i].registered {
			continue
		}
		racksNow[c.Rack] = true
		if i == int(r) || c.Full || c.Leaving {
			continue
		}
		eligible++
		racksLeft[c.Rack] = true
		limit := c.CapacityBytes
		if maxFill > 0 && maxFill < 1 {
			limit = int64(maxFill * float64(c.CapacityBytes))
		}
		room += max(limit-c.Load()-c.OtherBytes, 0)
	}
	switch {
	case eligible < need:
		return fmt.Errorf("cannot drain %s: its shards need %d nodes and only %d other up nodes take new shards", id, need, eligible)
	case len(racksLeft) < min(need, len(racksNow)):
		return fmt.Errorf("cannot drain %s: too few racks: its shards need %d racks and the other nodes span %d (%d with it)", id, min(need, len(racksNow)), len(racksLeft), len(racksNow))
	case room < n.bytes:
		return fmt.Errorf("cannot drain %s: too little space: it holds %d bytes and the other nodes have room for %d", id, n.bytes, room)
	}
	return nil
}

// shardsOn yields the handles of the shards whose entry lists node r.
// O(shards): it walks the whole map.
func (v *view) shardsOn(r nodeRef) func(func(uint32) bool) {
	return func(yield func(uint32) bool) {
		limit := v.ids.Limit()
		for h := uint32(0); h < limit; h++ {
			if v.ids.Valid(h) && v.holds(h, r) && !yield(h) {
				return
			}
		}
	}
}

// drainStatus reports the drains under way (node "" all of them, else that
// node's, which must be draining).
func (v *view) drainStatus(node string, now time.Time) ([]control.DrainStatus, error) {
	var out []control.DrainStatus
	for i := range v.nodes {
		n := &v.nodes[i]
		if !n.draining || (node != "" && n.id != node) {
			continue
		}
		out = append(out, v.drainOf(n, now))
	}
	if node != "" && len(out) == 0 {
		if _, ok := v.nodeIdx[node]; !ok {
			return nil, fmt.Errorf("%w: node %s", errUnknownNode, node)
		}
		return nil, fmt.Errorf("node %s is not being drained", node)
	}
	slices.SortFunc(out, func(a, b control.DrainStatus) int {
		if a.Node < b.Node {
			return -1
		}
		return 1
	})
	return out, nil
}

// drainOf is one node's drain progress: what is left on it, and the rate
// and ETA from what left since the drain began.
func (v *view) drainOf(n *node, now time.Time) control.DrainStatus {
	d := control.DrainStatus{
		Node: n.id, State: string(n.effState()), Since: n.drain.since, By: n.drain.by,
		ShardsRemaining: n.shards, BytesRemaining: n.bytes,
		ShardsMoved: max(n.drain.startShards-n.shards, 0), BytesMoved: max(n.drain.startBytes-n.bytes, 0),
		Drained: n.shards == 0 && n.effState().Live(), ETASeconds: -1,
	}
	if el := now.Sub(n.drain.since).Seconds(); el > 0 && d.BytesMoved > 0 {
		d.RateBytesPerSec = float64(d.BytesMoved) / el
		d.ETASeconds = float64(d.BytesRemaining) / d.RateBytesPerSec
	}
	if d.Drained {
		d.ETASeconds = 0
	}
	return d
}

// decidePieceMove plans the move of an erasure-coded piece whose live
// holders are all draining: a copy from one of them to a node the stripe's
// rack rule allows (ChooseRebuildTargets with one piece to place).
func (v *view) decidePieceMove(h uint32, pc *planCtx) (decision, bool) {
	g := v.group(h)
	if g == nil || g.rb != nil || pc.planned[g] || v.flights[h] != nil || v.trims[h] != nil {
		return decision{}, false
	}
	r := v.retries[h]
	if r != nil && pc.now.Before(r.notBefore) {
		return decision{}, false
	}
	cands := pc.cands
	var srcs []int
	for _, x := range v.liveHolders(h, -1) {
		srcs = append(srcs, int(x))
	}
	id := v.ids.String(h)
	salt := placement.Salt(id)
	src, err := placement.ChooseSource(srcs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt})
	if err != nil {
		return decision{}, false
	}
	var holders []int
	for _, p := range g.pieces {
		for _, x := range v.holders(p) {
			holders = append(holders, int(x))
		}
		if tf := v.trims[p]; tf != nil {
			holders = append(holders, int(tf.node))
		}
	}
	s := v.rec(h)
	opt := placement.RebuildOptions{M: g.m, Size: s.size, MaxTasks: pc.maxIn, MaxFill: pc.lim.maxFill, Salt: salt}
	if r != nil {
		for _, a := range r.avoid {
			opt.Exclude = append(opt.Exclude, int(a))
		}
	}
	tgs, err := placement.ChooseRebuildTargets(1, holders, v.stripeRacks(g, h), cands, opt)
	if err != nil || tgs[0].Index < 0 {
		return decision{}, false
	}
	attempt, serial := v.nextTask(h)
	return decision{
		shard: h, id: id,
		sources:  []nodeRef{nodeRef(src)},
		target:   nodeRef(tgs[0].Index),
		bytes:    s.size,
		attempt:  attempt,
		serial:   serial,
		incident: v.drainIncident(h),
		relaxed:  tgs[0].RackRelaxed,
	}, true
}

// drainIncident names the work of moving h off a draining node:
// "drain-<node>", the first draining holder.
func (v *view) drainIncident(h uint32) string {
	for _, r := range v.holders(h) {
		if v.nodes[r].draining {
			return drainIncidentPrefix + v.nodes[r].id
		}
	}
	return incidentNone
}

// drainIncidentPrefix starts the incident of a drain's moves.
const drainIncidentPrefix = "drain-"

// staying returns the holders of h in hs (nodeRefs as ints) that are not
// leaving it (drained, or moved by the rebalancer), in a new slice.
func (v *view) staying(h uint32, hs []int) []int {
	mv, moving := v.moves[h]
	out := make([]int, 0, len(hs))
	for _, x := range hs {
		if !v.nodes[x].draining && !(moving && nodeRef(x) == mv.from) {
			out = append(out, x)
		}
	}
	return out
}

// removable says why node id cannot be forgotten now, or nil: it must be
// drained, or down with no map entry naming it any more.
func (v *view) removable(id string) error {
	r, ok := v.nodeIdx[id]
	if !ok || v.removed[id] {
		return fmt.Errorf("%w: node %s", errUnknownNode, id)
	}
	n := &v.nodes[r]
	live := n.effState().Live()
	switch {
	case n.shards == 0 && (n.draining || !live):
		return nil
	case n.draining:
		return fmt.Errorf("node %s is still draining: %d shards (%d bytes) are left on it (rehome node drain status %s)", id, n.shards, n.bytes, id)
	case live:
		return fmt.Errorf("node %s is %s and holds %d shards: drain it first (rehome node drain %s)", id, n.effState(), n.shards, id)
	}
	return fmt.Errorf("node %s is down and the map still lists it for %d shards: wait until repair re-homes them (rehome heal status)", id, n.shards)
}

// forget drops node id for good (rehome node remove): its registration and
// drain end, and a registration under its id is ignored from now on.
func (v *view) forget(id string) {
	if v.removed == nil {
		v.removed = map[string]bool{}
	}
	v.removed[id] = true
	v.removeNode(id)
	_, _ = v.setDrain(id, false, drainState{})
}

// unforget lets node id register again (its removed record was deleted).
func (v *view) unforget(id string) { delete(v.removed, id) }
