package planner_test

import (
	"fmt"
	"testing"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// TestStatusAnswersWhileTheLockIsHeld holds the planner's lock (as a long
// verdict or round would) and checks that status, heal status, a node's heal
// status, drain status and rebalance status still answer, from the snapshot
// published after the last change, with the figures the view gives under
// the lock.
func TestStatusAnswersWhileTheLockIsHeld(t *testing.T) {
	h := newHarness(t, 6, 3)
	svc, _ := h.startPlanner(fastConfig())
	for i := range 12 {
		h.put(fmt.Sprintf("object-%02d", i), 2, 1000)
	}
	h.setState("storage-2", model.StateDown)
	bustest.Eventually(t, deadline, "the loss in status", func() bool { return h.status().UnderReplicated > 0 })

	view, progress, release := svc.HoldLock()
	defer release()
	st := h.status() // fails the test after 5 s without an answer
	if st.Shards != 24 || st.Objects != 12 || st.UnderReplicated != view.UnderReplicated ||
		st.BytesRemaining != view.BytesRemaining || st.Lost != view.Lost || st.InFlight != view.InFlight {
		t.Errorf("status while the lock is held: %d shards, %d objects, %d under-replicated, %d bytes remaining, %d lost, %d in flight; "+
			"the view says %d, %d, %d, %d, %d, %d", st.Shards, st.Objects, st.UnderReplicated, st.BytesRemaining, st.Lost, st.InFlight,
			view.Shards, view.Objects, view.UnderReplicated, view.BytesRemaining, view.Lost, view.InFlight)
	}
	if len(st.Nodes) != len(view.Nodes) {
		t.Fatalf("status lists %d nodes, the view %d", len(st.Nodes), len(view.Nodes))
	}
	for i, n := range st.Nodes {
		v := view.Nodes[i]
		if n.ID != v.ID || n.State != v.State || n.Shards != v.Shards || n.Bytes != v.Bytes || n.Rack != v.Rack {
			t.Errorf("node %d: status %+v, view %+v", i, n, v)
		}
	}
	p := h.heal()
	if p.UnderReplicated != progress.UnderReplicated || p.BytesRemaining != progress.BytesRemaining || p.Shards != progress.Shards {
		t.Errorf("heal status while the lock is held %+v, the view's progress %+v", p, progress)
	}
	var np event.Progress
	if err := h.call(event.CtlHealStatus, control.HealStatusRequest{Node: "storage-1"}, &np); err != nil || np.Node != "storage-1" {
		t.Errorf("a node's heal status while the lock is held: %+v, %v", np, err)
	}
	var drains control.DrainReply
	if err := h.call(control.CtlDrainStatus, struct{}{}, &drains); err != nil || len(drains.Drains) != 0 {
		t.Errorf("drain status while the lock is held: %+v, %v", drains, err)
	}
	if err := h.call(control.CtlDrainStatus, control.NodeRequest{Node: "storage-9"}, &drains); err == nil {
		t.Error("drain status of an unknown node answered without a refusal")
	}
	var bal control.BalanceStatus
	if err := h.call(control.CtlRebalanceStatus, struct{}{}, &bal); err != nil || len(bal.Nodes) == 0 {
		t.Errorf("rebalance status while the lock is held: %+v, %v", bal, err)
	}
}
