package core

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

// DrainState is what the planner keeps of one node's drain.
type DrainState struct {
	Since       time.Time // when the drain was asked for
	By          string
	StartShards int   // the node's map entries then
	StartBytes  int64 // and their bytes
	Announced   bool  // rehome.node.drained was published
}

// leavingCount returns how many live holders of h are leaving it: being
// drained, or the holder a rebalancing move takes it from (a holder whose
// disk lacks h counts for nothing).
func (v *View) leavingCount(h uint32) int {
	n := 0
	mv, moving := v.Moves[h]
	for _, r := range v.holders(h) {
		if nd := &v.Nodes[r]; (nd.Draining || moving && r == mv.from) && nd.EffState().Live() && !v.IsMissing(h, r) {
			n++
		}
	}
	return n
}

// SetDrain starts (on) or ends node id's drain; it reports whether anything
// changed. An unknown id is refused.
func (v *View) SetDrain(id string, on bool, d DrainState) (bool, error) {
	r, ok := v.NodeIndex[id]
	if !ok {
		return false, fmt.Errorf("%w: node %s", ErrUnknownNode, id)
	}
	n := &v.Nodes[r]
	if n.Draining == on {
		return false, nil
	}
	n.Draining = on
	if on {
		v.draining++
		d.StartShards, d.StartBytes = n.Shards, n.Bytes
		n.Drain = d
	} else {
		v.draining--
		n.Drain = DrainState{}
	}
	v.refreshNode(r)
	return true, nil
}

// ErrUnknownNode refuses an operator request naming no known node.
var ErrUnknownNode = errors.New("unknown node")

// Drainable says why node id cannot be drained now, or nil: it must be
// registered and up; the other up nodes that accept shards must be enough
// for every layout it holds (and span enough racks to keep the rack rule
// where the cluster has the racks now), and have room for its bytes.
func (v *View) Drainable(id string, maxFill float64) error {
	r, ok := v.NodeIndex[id]
	if !ok || !v.Nodes[r].Registered {
		return fmt.Errorf("%w: node %s is not registered", ErrUnknownNode, id)
	}
	n := &v.Nodes[r]
	if st := n.EffState(); st != model.StateUp {
		return fmt.Errorf("node %s is %s: only an up node can be drained (a dead node's shards are re-homed by repair)", id, st)
	}
	if n.Shards == 0 {
		return nil
	}
	need := 1 // the most nodes one shard of its needs: copies, or a stripe's width
	for h := range v.shardsOn(r) {
		l := v.layouts[v.Record(h).layout]
		if l.Erasure() {
			need = max(need, l.K+l.M)
		} else {
			need = max(need, l.Copies())
		}
	}
	cands := v.Candidates()
	racksNow, racksLeft := map[string]bool{}, map[string]bool{}
	eligible := 0
	var room int64
	for i, c := range cands {
		if c.State != model.StateUp || !v.Nodes[i].Registered {
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
	case room < n.Bytes:
		return fmt.Errorf("cannot drain %s: too little space: it holds %d bytes and the other nodes have room for %d", id, n.Bytes, room)
	}
	return nil
}

// DrainStatus reports the drains under way (node "" all of them, else that
// node's, which must be draining).
func (v *View) DrainStatus(node string, now time.Time) ([]control.DrainStatus, error) {
	var out []control.DrainStatus
	for i := range v.Nodes {
		n := &v.Nodes[i]
		if !n.Draining || (node != "" && n.ID != node) {
			continue
		}
		out = append(out, v.drainOf(n, now))
	}
	if node != "" && len(out) == 0 {
		if _, ok := v.NodeIndex[node]; !ok {
			return nil, fmt.Errorf("%w: node %s", ErrUnknownNode, node)
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
func (v *View) drainOf(n *node, now time.Time) control.DrainStatus {
	d := control.DrainStatus{
		Node: n.ID, State: string(n.EffState()), Since: n.Drain.Since, By: n.Drain.By,
		ShardsRemaining: n.Shards, BytesRemaining: n.Bytes,
		ShardsMoved: max(n.Drain.StartShards-n.Shards, 0), BytesMoved: max(n.Drain.StartBytes-n.Bytes, 0),
		Drained: n.Shards == 0 && n.EffState().Live(), ETASeconds: -1,
	}
	if el := now.Sub(n.Drain.Since).Seconds(); el > 0 && d.BytesMoved > 0 {
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
func (v *View) decidePieceMove(h uint32, pc *planCtx) (Decision, bool) {
	g := v.Group(h)
	if g == nil || g.RB != nil || pc.planned[g] || v.Flights[h] != nil || v.Trims[h] != nil {
		return Decision{}, false
	}
	r := v.Retries[h]
	if r != nil && pc.now.Before(r.notBefore) {
		return Decision{}, false
	}
	cands := pc.cands
	var srcs []int
	for _, x := range v.liveHolders(h, -1) {
		srcs = append(srcs, int(x))
	}
	id := v.IDs.String(h)
	salt := placement.Salt(id)
	src, err := placement.ChooseSource(srcs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt})
	if err != nil {
		return Decision{}, false
	}
	var holders []int
	for _, p := range g.pieces {
		for _, x := range v.holders(p) {
			holders = append(holders, int(x))
		}
		if tf := v.Trims[p]; tf != nil {
			holders = append(holders, int(tf.Node))
		}
	}
	s := v.Record(h)
	opt := placement.RebuildOptions{M: g.m, Size: s.size, MaxTasks: pc.maxIn, MaxFill: pc.lim.MaxFill, Salt: salt}
	if r != nil {
		for _, a := range r.avoid {
			opt.Exclude = append(opt.Exclude, int(a))
		}
	}
	tgs, err := placement.ChooseRebuildTargets(1, holders, v.stripeRacks(g, h), cands, opt)
	if err != nil || tgs[0].Index < 0 {
		return Decision{}, false
	}
	attempt, serial := v.nextTask(h)
	return Decision{
		Shard: h, ID: id,
		Sources:  []NodeRef{NodeRef(src)},
		Target:   NodeRef(tgs[0].Index),
		Bytes:    s.size,
		Attempt:  attempt,
		Serial:   serial,
		Incident: v.drainIncident(h),
		Relaxed:  tgs[0].RackRelaxed,
	}, true
}

// drainIncident names the work of moving h off a draining node:
// "drain-<node>", the first draining holder.
func (v *View) drainIncident(h uint32) string {
	for _, r := range v.holders(h) {
		if v.Nodes[r].Draining {
			return drainIncidentPrefix + v.Nodes[r].ID
		}
	}
	return incidentNone
}

// drainIncidentPrefix starts the incident of a drain's moves.
const drainIncidentPrefix = "drain-"

// staying returns the holders of h in hs (nodeRefs as ints) that are not
// leaving it (drained, or moved by the rebalancer), in a new slice.
func (v *View) staying(h uint32, hs []int) []int {
	mv, moving := v.Moves[h]
	out := make([]int, 0, len(hs))
	for _, x := range hs {
		if !v.Nodes[x].Draining && !(moving && NodeRef(x) == mv.from) {
			out = append(out, x)
		}
	}
	return out
}

// Removable says why node id cannot be forgotten now, or nil: it must be
// drained, or down with every shard the map lists on it whole without it
// (re-homed by repair; Forget then drops it from those entries).
func (v *View) Removable(id string) error {
	r, ok := v.NodeIndex[id]
	if !ok || v.removed[id] {
		return fmt.Errorf("%w: node %s", ErrUnknownNode, id)
	}
	n := &v.Nodes[r]
	live := n.EffState().Live()
	switch {
	case n.Shards == 0 && (n.Draining || !live):
		return nil
	case !live && v.rehomed(r):
		return nil // the map still lists it, as a holder every shard can do without
	case n.Draining:
		return fmt.Errorf("node %s is still draining: %d shards (%d bytes) are left on it (rehome node drain status %s)", id, n.Shards, n.Bytes, id)
	case live:
		return fmt.Errorf("node %s is %s and holds %d shards: drain it first (rehome node drain %s)", id, n.EffState(), n.Shards, id)
	}
	return fmt.Errorf("node %s is down and the map still lists it for %d shards, not all re-homed yet: wait until repair re-homes them (rehome heal status)", id, n.Shards)
}

// rehomed reports whether every shard listing node r is whole without it.
func (v *View) rehomed(r NodeRef) bool {
	for h := range v.shardsOn(r) {
		if !v.whole(h) {
			return false
		}
	}
	return true
}

// markRemoved marks every shard whose entry lists the removed node r as
// lacking its copy there, so rounds drop r from those entries.
func (v *View) markRemoved(r NodeRef) {
	var hs []uint32
	for h := range v.shardsOn(r) {
		hs = append(hs, h)
	}
	for _, h := range hs {
		v.MarkMissing(h, r)
	}
}

// Forget drops node id for good (rehome node remove): its registration and
// drain end, a registration under its id is ignored from now on, and the
// entries that still list it (a dead node's, re-homed) lose it in the next
// rounds' drops.
func (v *View) Forget(id string) {
	if v.removed == nil {
		v.removed = map[string]bool{}
	}
	v.removed[id] = true
	v.RemoveNode(id)
	if r, ok := v.NodeIndex[id]; ok {
		v.markRemoved(r)
	}
	_, _ = v.SetDrain(id, false, DrainState{})
}

// Unforget lets node id register again (its removed record was deleted).
func (v *View) Unforget(id string) { delete(v.removed, id) }
