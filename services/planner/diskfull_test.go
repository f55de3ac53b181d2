package planner_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// heartbeat publishes a heartbeat for node as a storage node would, full or
// not.
func (h *harness) heartbeat(node string, full, readOnly bool) {
	h.t.Helper()
	for _, nd := range h.nodes {
		if nd.ID != node {
			continue
		}
		hb := &event.Heartbeat{Node: nd.ID, Rack: nd.Rack, Addr: nd.Addr, BootID: "boot", CapacityBytes: nd.CapacityBytes,
			Full: full, ReadOnly: readOnly}
		if err := bus.Publish(h.ctx, h.env.JS, event.HeartbeatPrefix+nd.ID, hb, ""); err != nil {
			h.t.Fatal(err)
		}
		return
	}
	h.t.Fatalf("no node %s", node)
}

func nodeStatus(st control.ClusterStatus, id string) control.NodeStatus {
	for _, n := range st.Nodes {
		if n.ID == id {
			return n
		}
	}
	return control.NodeStatus{}
}

// TestFullTargetIsReplannedAndNoLongerChosen: a rebuild targets storage-4
// (the only node left in the dead node's rack); its disk fills. Its copies
// fail with 507 and it says so in its heartbeat: the planner re-plans each
// failed copy promptly onto another node, never sends it another copy while
// it is full, shows it full, and chooses it again once room comes back.
func TestFullTargetIsReplannedAndNoLongerChosen(t *testing.T) {
	h := newHarness(t, 6, 3) // rack-1: storage-1, storage-4
	cfg := fastConfig()
	cfg.PerNodeIn = 4
	h.startPlanner(cfg)
	for i := 0; i < 12; i++ {
		h.put(fmt.Sprintf("object-%02d", i), 1, 1000)
	}
	lost := 0
	for _, p := range h.placements() {
		if slices.Contains(p.Nodes, "storage-1") {
			lost++
		}
	}
	if lost < 2 {
		t.Fatalf("storage-1 holds %d shards; the test needs at least 2", lost)
	}

	// storage-4 refuses every copy, as a node whose disk filled does, and
	// its next heartbeat says it is full.
	var (
		mu        sync.Mutex
		failedAt  = map[string]time.Time{} // shard -> when its copy to storage-4 failed
		afterFull []string                 // tasks sent to storage-4 once it said it was full
		fullSent  bool
	)
	mv := &mover{answer: func(task event.Task) *event.Failed {
		if task.Target != "storage-4" {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if fullSent {
			afterFull = append(afterFull, task.Task)
		} else {
			h.heartbeat("storage-4", true, false)
			fullSent = true
		}
		failedAt[task.Shard] = time.Now()
		return &event.Failed{Task: task.Task, Shard: task.Shard, Kind: task.Kind, Target: task.Target, Attempt: task.Attempt, Final: true,
			Error: "target storage-4: storage answered 507: no space left for the shard"}
	}}
	h.runMover(mv)
	h.setStateSeen("storage-1", model.StateDown)
	st := h.waitHealthy()
	if n := nodeStatus(st, "storage-4"); !n.Full || n.ReadOnly {
		t.Fatalf("storage-4 in status: %+v, want full", n)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(failedAt) == 0 {
		t.Fatal("no copy was sent to storage-4: the test did not exercise a full target")
	}
	// Tasks the planner had issued before the full heartbeat reached it may
	// still have targeted storage-4; none issued later may.
	bustest.Eventually(t, deadline, "full heartbeat seen", func() bool { return nodeStatus(h.status(), "storage-4").Full })
	for shard, ts := range mv.copies() {
		last := ts[len(ts)-1]
		if last.Target == "storage-4" {
			t.Errorf("shard %s: last copy went to the full node: %+v", shard, ts)
		}
		for _, task := range ts {
			if task.Target == "storage-4" && task.Attempt != 1 {
				t.Errorf("shard %s: a re-plan chose the full node: %+v", shard, ts)
			}
		}
		if at, ok := failedAt[shard]; ok && len(ts) < 2 {
			t.Errorf("shard %s failed on storage-4 at %v but was not re-planned: %+v", shard, at, ts)
		}
	}
	t.Logf("%d copies refused by the full node, %d of them issued after it said so", len(failedAt), len(afterFull))

	// Room comes back: storage-4 is a target again. A new object needs it:
	// it is the only live node of rack-1, and put insists on three racks.
	h.heartbeat("storage-4", false, false)
	bustest.Eventually(t, deadline, "storage-4 accepts again", func() bool { return !nodeStatus(h.status(), "storage-4").Full })
	_, commit := h.put("after-room", 1, 1000)
	if !slices.Contains(commit.Nodes[commit.Manifest.Shards[0].ID], "storage-4") {
		t.Fatalf("new object placed on %v, want storage-4 among them", commit.Nodes)
	}
}
