package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/rehome/rehome/services/planner/core"
	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// planner is the sim's one adapter onto the planner core: every call the
// simulator makes into services/planner/core goes through it, so a change
// of the core's API costs one file. It drives a core.Harness the way the
// planner service drives its view over the bus.
type planner struct {
	h      *core.Harness
	pol    core.Policy
	lim    core.Limits
	nodes  []model.Node
	paused bool
}

// newPlanner returns a planner at now knowing nodes, with the throttles lim
// and tasks timing out after timeout.
// Under copysets, repairs keep copysets together (core.Policy.Copysets).
func newPlanner(now time.Time, nodes []model.Node, lim core.Limits, timeout time.Duration, copysets bool) (*planner, error) {
	pol := core.Policy{MaxAttempts: 5, RetryLater: time.Minute, AutoHeal: true, Copysets: copysets}
	p := &planner{pol: pol, lim: lim, nodes: nodes}
	p.h = core.NewHarness(now, pol, lim)
	p.h.TaskTimeout = timeout
	for _, n := range nodes {
		if err := p.h.View.SetNode(n); err != nil {
			return nil, fmt.Errorf("sim: register %s: %w", n.ID, err)
		}
	}
	return p, nil
}

// setNow moves the planner's clock to now.
func (p *planner) setNow(now time.Time) { p.h.Now = now }

// load writes the initial map entries, n of them, entry(i) the i-th (the
// placement watch's first pass), and builds the repair queue.
func (p *planner) load(n int, entry func(i int) model.Placement) error {
	p.h.View.Loading = true
	for i := range n {
		e := entry(i)
		if err := p.h.Write(e); err != nil {
			return fmt.Errorf("sim: load %s: %w", e.Shard, err)
		}
	}
	p.h.View.Loading = false
	p.h.View.Rescan()
	return nil
}

// candidates renders the planner's picture of the nodes for the placement
// functions.
func (p *planner) candidates() []placement.Candidate { return p.h.View.Candidates() }

// heartbeat feeds one node's heartbeat as the service's handler does.
func (p *planner) heartbeat(id, boot string, used, capacity int64, full bool) (reconcile bool) {
	v := p.h.View
	v.Heartbeat(id, used, capacity, p.h.Now)
	v.DiskCondition(id, full, false)
	return v.BootSeen(id, boot)
}

// verdict feeds a detector verdict.
func (p *planner) verdict(node string, st model.State) error { return p.h.SetLiveness(node, st) }

// reconcile runs the inventory checks that are due: inv lists a node's
// disk (ok false: the node does not answer now).
func (p *planner) reconcile(inv func(node string) (boot string, shards []control.InventoryShard, ok bool)) {
	v := p.h.View
	for _, r := range v.ReconcilesDue(p.h.Now, 4) {
		id, gen := v.Nodes[r].ID, v.Nodes[r].ReconcileGen
		c := v.StartCheck(r)
		boot, shards, ok := inv(id)
		if ok {
			v.CheckPage(c, shards)
			res := v.EndCheck(c)
			// EndCheck walks a map: sort so no iteration order leaks.
			slices.Sort(res.Missing)
			slices.Sort(res.Present)
			v.ApplyCheck(r, res)
			v.Nodes[r].BootID = boot
			v.Reconciled(r, gen)
		}
		v.ReconcileDone(r, gen, ok, p.h.Now)
	}
}

// corrupt feeds a node's report that its copy of shard failed its checksum.
func (p *planner) corrupt(shard, node string) {
	v := p.h.View
	h, ok := v.IDs.Lookup(shard)
	r, known := v.NodeIndex[node]
	if ok && known {
		v.MarkMissing(h, r)
	}
}

// drain starts draining node id.
func (p *planner) drain(id string) error {
	_, err := p.h.View.SetDrain(id, true, core.DrainState{Since: p.h.Now, By: "sim"})
	return err
}

// pause holds (on) or releases every new task and map change.
func (p *planner) pause(on bool) { p.paused = on }

// step runs one planning round.
func (p *planner) step() core.Effects {
	p.h.Limits = p.lim
	p.h.Limits.Paused = p.paused
	return p.h.Step()
}

func (p *planner) take(id string)                    { p.h.Take(id) }
func (p *planner) done(t event.Task) error           { return p.h.Done(t) }
func (p *planner) fail(t event.Task, side, c string) { p.h.FailSide(t, true, side, c) }

// entry returns the map's entry for shard id.
func (p *planner) entry(id string) (model.Placement, bool) { return p.h.Entry(id) }

// live reports whether the planner counts node id live.
func (p *planner) live(id string) bool {
	r, ok := p.h.View.NodeIndex[id]
	return ok && p.h.View.Live(r)
}

// lacks reports whether the planner knows node's disk lacks shard (an
// inventory check or a corrupt report found it).
func (p *planner) lacks(shard, node string) bool {
	v := p.h.View
	h, ok := v.IDs.Lookup(shard)
	r, known := v.NodeIndex[node]
	return ok && known && v.IsMissing(h, r)
}

// trimming reports whether the planner is trimming shard's copy from node
// (its delete task not done yet): it neither reads nor re-makes the shard
// there meanwhile.
func (p *planner) trimming(shard, node string) bool {
	v := p.h.View
	h, ok := v.IDs.Lookup(shard)
	r, known := v.NodeIndex[node]
	t := v.Trims[h]
	return ok && known && t != nil && t.Node == r
}

// failover replaces the acting planner by a fresh one that loads the map
// (ids, in order) and the detector's verdicts, as a standby taking over
// does; tasks already queued stay with the movers and report to it.
func (p *planner) failover(ids []string, verdicts map[string]model.State) error {
	q, err := newPlanner(p.h.Now, p.nodes, p.lim, p.h.TaskTimeout, p.pol.Copysets)
	if err != nil {
		return err
	}
	var entries []model.Placement
	for _, id := range ids {
		if e, ok := p.h.Entry(id); ok {
			entries = append(entries, e)
		}
	}
	names := make([]string, 0, len(verdicts))
	for n := range verdicts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := q.verdict(n, verdicts[n]); err != nil {
			return err
		}
	}
	if err := q.load(len(entries), func(i int) model.Placement { return entries[i] }); err != nil {
		return err
	}
	// As the service's startActing: copies the old planner found lacking
	// were known to it alone, so every live node holding shards is checked.
	for i := range q.h.View.Nodes {
		if n := &q.h.View.Nodes[i]; n.Registered && n.Shards > 0 && n.EffState().Live() {
			q.h.View.WantReconcile(core.NodeRef(i))
		}
	}
	q.paused = p.paused
	*p = *q
	return nil
}
