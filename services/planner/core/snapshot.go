package core

import (
	"fmt"
	"time"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
)

// Snapshot is what the read-only calls answer (cluster status, heal status,
// a node's heal status, drain status, rebalance status), computed from the
// view at one moment. It is immutable once made: the adapter publishes one
// after each round and each verdict, and answers status calls from the
// latest without taking the view's lock, so a call never waits behind a
// verdict or a round. Risk, a pass over the whole map, is not in it.
type Snapshot struct {
	// At is the time the snapshot was made (the progress figures' now).
	At       time.Time
	Status   control.ClusterStatus
	Progress event.Progress
	Drains   []control.DrainStatus // nodes being drained, by id
	Balance  control.BalanceStatus

	nodes map[string]nodeSnap // every node the view indexes
}

// nodeSnap is one node's part of a snapshot.
type nodeSnap struct {
	progress event.Progress
	// heal: the node may have its heal status asked (registered, or
	// still named by the map).
	heal bool
}

// Snapshot makes a snapshot of the view at now; stallAfter is the stall
// threshold of progress and band the rebalancer's fill band. O(nodes +
// shards some node lacks + tasks in flight + single-copy shards).
func (v *View) Snapshot(now time.Time, stallAfter time.Duration, band float64) *Snapshot {
	p := v.Progress(now, stallAfter)
	s := &Snapshot{At: now, Status: v.ClusterStatus(), Progress: p, Balance: v.BalanceStatus(band),
		nodes: make(map[string]nodeSnap, len(v.NodeIndex))}
	s.Drains, _ = v.DrainStatus("", now)
	if s.Drains == nil {
		s.Drains = []control.DrainStatus{}
	}
	marks := map[NodeRef][]uint32{}
	for h, ms := range v.lacks {
		for _, r := range ms {
			marks[r] = append(marks[r], h)
		}
	}
	inFlight := map[NodeRef]int{}
	for _, f := range v.Flights {
		inFlight[f.target]++
	}
	for id, r := range v.NodeIndex {
		n := &v.Nodes[r]
		s.nodes[id] = nodeSnap{progress: v.nodeProgress(r, p, marks[r], inFlight[r]), heal: n.Registered || n.Shards > 0}
	}
	return s
}

// NodeProgress is node id's in-place heal progress as View.NodeProgress
// says it; ok is false for a node neither registered nor named by the map.
func (s *Snapshot) NodeProgress(id string) (p event.Progress, ok bool) {
	n, known := s.nodes[id]
	if !known || !n.heal {
		return event.Progress{}, false
	}
	return n.progress, true
}

// DrainStatus is View.DrainStatus from the snapshot: every drain for "",
// else node's, with the same refusals (an unknown node wraps
// ErrUnknownNode).
func (s *Snapshot) DrainStatus(node string) ([]control.DrainStatus, error) {
	if node == "" {
		return s.Drains, nil
	}
	for _, d := range s.Drains {
		if d.Node == node {
			return []control.DrainStatus{d}, nil
		}
	}
	if _, ok := s.nodes[node]; !ok {
		return nil, fmt.Errorf("%w: node %s", ErrUnknownNode, node)
	}
	return nil, fmt.Errorf("node %s is not being drained", node)
}
