package core

import (
	"fmt"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// NodeRef is a node's small-integer identity inside the view.
type NodeRef = uint16

// node is everything the planner knows about one node id: its registration,
// the detector's verdict, its last heartbeat, and counters derived from the map
// and from work in flight.
type node struct {
	ID          string
	Registered  bool
	Rack, Addr  string
	capacity    int64
	state       model.State // "" = no liveness record (up when registered)
	Since       time.Time
	flaps       int    // from the liveness record, for status
	graceMS     int64  // from the liveness record, for status
	TraceParent string // the down verdict's span: the incident's trace

	hbUsed, hbCapacity int64
	HeartbeatAt        time.Time
	// hbFull and hbReadOnly: its last heartbeat says it refuses new shards
	// (disk full, or read-only); it is no target until a heartbeat says otherwise.
	hbFull, hbReadOnly bool

	Shards int   // map entries naming the node
	Bytes  int64 // their bytes

	inTasks, outTasks int   // copies writing to / reading from the node
	trimTasks         int   // surplus copies being deleted from it (see TrimsPerNode)
	inBytes           int64 // bytes of the copies writing to it
	allocBytes        int64 // bytes allocated to it and not yet committed

	returning bool // it was down and came back (cleared when it goes down again)
	// Draining: an operator asked for every copy on it to move elsewhere
	// (see drain.go); drain holds when and from what.
	Draining bool
	Drain    DrainState
	SweepDue bool // its disk is to be swept for orphaned copies (see orphans.go)

	BootID  string // the boot id of its registration or last heartbeat ("" unknown)
	Missing int    // shards whose entry lists the node while its disk lacks them

	// NeedReconcile asks for its inventory to be checked against the map
	// (a new boot, a return from down, a takeover); reconciling is set while
	// a check runs. Trims of shards it holds wait for both to clear.
	NeedReconcile  bool
	Reconciling    bool
	ReconcileGen   int       // bumped by every request, so a check cannot clear a newer one
	reconcileAt    time.Time // not before (backoff after a failed check)
	reconcileTries int
}

// EffState is the state the planner acts on: an unregistered node is down,
// a registered one without a verdict is up.
func (n *node) EffState() model.State {
	switch {
	case !n.Registered:
		return model.StateDown
	case n.state == "":
		return model.StateUp
	}
	return n.state
}

// Ref returns the nodeRef of id, creating an unregistered node if needed.
func (v *View) Ref(id string) (NodeRef, error) {
	if r, ok := v.NodeIndex[id]; ok {
		return r, nil
	}
	if len(v.Nodes) >= maxNodes {
		return 0, fmt.Errorf("%w nodes (%d)", errTooMany, maxNodes)
	}
	r := NodeRef(len(v.Nodes))
	v.Nodes = append(v.Nodes, node{ID: id})
	v.NodeIndex[id] = r
	return r, nil
}

// SetNode records a node registration.
func (v *View) SetNode(n model.Node) error {
	if v.removed[n.ID] {
		return nil // forgotten: its registration counts for nothing
	}
	r, err := v.Ref(n.ID)
	if err != nil {
		return err
	}
	nd := &v.Nodes[r]
	registered := nd.Registered
	if !registered && !v.Loading && nd.Shards > 0 {
		v.WantReconcile(r) // registered again while the map lists it
	}
	nd.Registered, nd.Rack, nd.Addr, nd.capacity = true, n.Rack, n.Addr, n.CapacityBytes
	if !registered {
		v.refreshNode(r)
	}
	v.noteBoot(r, n.BootID)
	return nil
}

// noteBoot records the boot id a node reports; a new one while the node is
// live (back inside the grace, or in maintenance) asks for its inventory to
// be checked: its disk may be empty or partial. It reports whether it asked.
func (v *View) noteBoot(r NodeRef, boot string) bool {
	nd := &v.Nodes[r]
	if boot == "" || boot == nd.BootID {
		return false
	}
	asked := false
	if nd.BootID != "" && nd.EffState().Live() && v.pol.AutoHeal {
		v.WantReconcile(r)
		asked = true
	}
	nd.BootID = boot
	return asked
}

// noteTransition records a change of a node's effective state from before:
// coming back from down (returning; its inventory is checked before its
// copies can be trimmed against) or going down.
func (v *View) noteTransition(r NodeRef, before model.State) {
	n := &v.Nodes[r]
	after := n.EffState()
	switch {
	case !after.Live():
		n.returning = false
	case !before.Live():
		n.returning = true
		n.SweepDue = true
		v.WantReconcile(r)
	}
}

// WantReconcile asks for node r's inventory to be checked (with autoHeal).
func (v *View) WantReconcile(r NodeRef) {
	if !v.pol.AutoHeal {
		return
	}
	n := &v.Nodes[r]
	n.NeedReconcile = true
	n.ReconcileGen++
	n.reconcileTries = 0
	n.reconcileAt = time.Time{}
}

// RemoveNode forgets a registration (the node's copies stop counting).
func (v *View) RemoveNode(id string) {
	if r, ok := v.NodeIndex[id]; ok && v.Nodes[r].Registered {
		v.Nodes[r].Registered = false
		v.Nodes[r].returning = false
		v.refreshNode(r)
	}
}

// SetLiveness records a detector verdict; it reports whether the node's
// effective state changed.
func (v *View) SetLiveness(l model.Liveness) (bool, error) {
	r, err := v.Ref(l.Node)
	if err != nil {
		return false, err
	}
	nd := &v.Nodes[r]
	before := nd.EffState()
	nd.state, nd.Since = l.State, l.Since
	nd.flaps, nd.graceMS, nd.TraceParent = l.Flaps, l.GraceMS, l.TraceParent
	changed := before != nd.EffState()
	if changed {
		v.noteTransition(r, before)
		v.refreshNode(r)
		if nd.EffState() == model.StateDown {
			v.abandonFlightsTo(r)
		}
	}
	return changed, nil
}

// ClearLiveness drops a verdict (the node counts as up again if registered).
func (v *View) ClearLiveness(id string) bool {
	r, ok := v.NodeIndex[id]
	if !ok {
		return false
	}
	nd := &v.Nodes[r]
	before := nd.EffState()
	nd.state, nd.Since = "", time.Time{}
	nd.flaps, nd.graceMS, nd.TraceParent = 0, 0, ""
	changed := before != nd.EffState()
	if changed {
		v.noteTransition(r, before)
		v.refreshNode(r)
	}
	return changed
}

// Heartbeat records a node's reported usage. Heartbeats of ids the view has
// never seen are ignored (the registration comes first).
func (v *View) Heartbeat(id string, used, capacity int64, now time.Time) {
	if r, ok := v.NodeIndex[id]; ok {
		nd := &v.Nodes[r]
		nd.hbUsed, nd.hbCapacity, nd.HeartbeatAt = used, capacity, now
	}
}

// DiskCondition records whether a node's heartbeat says it refuses new
// shards (disk full or read-only), for ids the view knows. It reports
// whether the node accepts them again after refusing (room came back: plan).
func (v *View) DiskCondition(id string, full, readOnly bool) (accepts bool) {
	r, ok := v.NodeIndex[id]
	if !ok {
		return false
	}
	nd := &v.Nodes[r]
	was := nd.hbFull || nd.hbReadOnly
	nd.hbFull, nd.hbReadOnly = full, readOnly
	return was && !full && !readOnly
}

// BootSeen records the boot id a node's heartbeat carries (see noteBoot).
func (v *View) BootSeen(id, boot string) bool {
	if r, ok := v.NodeIndex[id]; ok {
		return v.noteBoot(r, boot)
	}
	return false
}

// Live reports whether node r counts as live (up, suspect or in maintenance).
func (v *View) Live(r NodeRef) bool { return v.Nodes[r].EffState().Live() }
