package planner_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
	"github.com/rehome/rehome/shared/model"
)

// queuedTasks reads every task message still in the work-queue stream.
func (h *harness) queuedTasks() []event.Task {
	h.t.Helper()
	st, err := h.env.JS.Stream(h.ctx, bus.StreamTasks)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []event.Task
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(h.ctx, seq)
		if err != nil {
			continue
		}
		var t event.Task
		if event.Decode(m.Data, &t) == nil {
			out = append(out, t)
		}
	}
	return out
}

// TestWellFormedButWrongEventsAreRejected: results, corrupt reports,
// heartbeats and verdicts that decode but name a node or shard the planner
// does not know (or break their contract) are counted by reason and change
// nothing: not the map, not the nodes, not the work queue. A real node loss
// afterwards still heals.
func TestWellFormedButWrongEventsAreRejected(t *testing.T) {
	h := newHarness(t, 6, 3)
	svc, _ := h.startPlanner(fastConfig())
	m, _ := h.put("real", 2, 1000)
	known := m.Shards[0].ID
	before := h.placements()

	publish := func(subject string, p event.Payload) {
		t.Helper()
		if err := bus.Publish(h.ctx, h.env.JS, subject, p, ""); err != nil {
			t.Fatal(err)
		}
	}
	publish(event.DonePrefix+"storage-1", &event.Done{Task: "t-forged-1", Shard: "nobody-s0", Kind: event.KindCopy, Target: "storage-1", Bytes: 1})
	publish(event.DonePrefix+"storage-99", &event.Done{Task: "t-forged-2", Shard: known, Kind: event.KindCopy, Target: "storage-99", Bytes: 1000})
	if _, err := h.env.JS.Publish(h.ctx, event.DonePrefix+"storage-1",
		[]byte(`{"v":1,"task":"t-forged-3","shard":"`+known+`","kind":"copy","target":"storage-1","bytes":-1000}`)); err != nil {
		t.Fatal(err)
	}
	publish(event.FailedPrefix+"storage-2", &event.Failed{Task: "t-forged-4", Shard: "nobody-s1", Kind: event.KindCopy, Target: "storage-2", Final: true, Error: "x"})
	publish(event.FailedPrefix+"storage-77", &event.Failed{Task: "t-forged-5", Shard: known, Kind: event.KindCopy, Target: "storage-77", Final: true, Error: "x"})
	publish(event.CorruptPrefix+"storage-1", &event.Corrupt{Node: "storage-1", Shard: "nobody-s2", Reason: "x", Found: "scrub"})
	publish(event.CorruptPrefix+"storage-88", &event.Corrupt{Node: "storage-88", Shard: known, Reason: "x", Found: "scrub"})
	publish(event.CorruptPrefix+"storage-1", &event.Corrupt{Node: "storage-2", Shard: known, Reason: "x", Found: "scrub"})
	hb, _ := event.Encode(&event.Heartbeat{Node: "storage-42", Rack: "rack-1", Addr: "127.0.0.1:1", BootID: "b", CapacityBytes: 1 << 30})
	if err := h.env.NC.Publish(event.HeartbeatPrefix+"storage-42", hb); err != nil {
		t.Fatal(err)
	}
	h.setState("storage-66", model.StateDown)

	reg := svc.Registry()
	want := []struct {
		subject, reason string
		n               float64
	}{
		{"rehome.repair.done", event.ReasonUnknownShard, 1},
		{"rehome.repair.done", event.ReasonUnknownNode, 1},
		{"rehome.repair.done", event.ReasonInvalid, 1},
		{"rehome.repair.failed", event.ReasonUnknownShard, 1},
		{"rehome.repair.failed", event.ReasonUnknownNode, 1},
		{"rehome.shard.corrupt", event.ReasonUnknownShard, 1},
		{"rehome.shard.corrupt", event.ReasonUnknownNode, 1},
		{"rehome.shard.corrupt", event.ReasonSubjectMismatch, 1},
		{"rehome.heartbeat", event.ReasonUnknownNode, 1},
		{bus.BucketLiveness, event.ReasonUnknownNode, 1},
	}
	bustest.Eventually(t, deadline, "every wrong event counted by reason", func() bool {
		for _, w := range want {
			if metricstest.Value(t, reg, "rehome_planner_malformed_events_total", "subject", w.subject, "reason", w.reason) != w.n {
				return false
			}
		}
		return true
	})
	for _, w := range want {
		if got := metricstest.Value(t, reg, "rehome_planner_malformed_events_total", "subject", w.subject, "reason", w.reason); got != w.n {
			t.Errorf("%s rejected as %s: %v, want %v", w.subject, w.reason, got, w.n)
		}
	}
	if got := metricstest.Value(t, reg, "rehome_planner_task_failures_total"); got != 0 {
		t.Errorf("forged failures counted as task failures: %v", got)
	}
	if after := h.placements(); !reflect.DeepEqual(after, before) {
		t.Fatalf("the map changed:\nbefore %v\nafter  %v", before, after)
	}
	st := h.status()
	if len(st.Nodes) != 6 || st.UnderReplicated != 0 || st.InFlight != 0 {
		t.Fatalf("status after the wrong events: %+v", st)
	}
	if q := h.queuedTasks(); len(q) != 0 {
		t.Fatalf("the wrong events queued tasks: %+v", q)
	}

	// Still working: a real loss is healed.
	h.placementsBefore = map[string][]string{}
	for id, p := range before {
		h.placementsBefore[id] = p.Nodes
	}
	h.setStateSeen("storage-1", model.StateDown)
	h.runMover(&mover{})
	h.waitHealthy()
	h.checkHealed("storage-1")
}

// TestCopyOfADeletedObjectIsDeleted: a copy in flight when its object is
// deleted is expected: its done report is accepted and the copy scheduled
// for deletion; a done report for that shard from any other task is refused.
func TestCopyOfADeletedObjectIsDeleted(t *testing.T) {
	h := newHarness(t, 6, 3)
	svc, _ := h.startPlanner(fastConfig())
	m, _ := h.put("doomed", 1, 1000)
	shard := m.Shards[0].ID
	holder := h.placements()[shard].Nodes[0]
	h.setStateSeen(holder, model.StateDown) // no mover runs: the copy stays queued
	var copyTask event.Task
	bustest.Eventually(t, deadline, "a copy queued", func() bool {
		for _, tk := range h.queuedTasks() {
			if tk.Kind == event.KindCopy && tk.Shard == shard {
				copyTask = tk
				return true
			}
		}
		return false
	})
	if err := h.call(event.CtlDelete, control.DeleteRequest{Key: "doomed"}, nil); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, deadline, "the object's entries gone", func() bool { return len(h.placements()) == 0 })

	forged := &event.Done{Task: "t-other", Shard: shard, Kind: event.KindCopy, Target: copyTask.Target, Bytes: 1000}
	done := &event.Done{Task: copyTask.Task, Shard: shard, Kind: event.KindCopy, Target: copyTask.Target, Bytes: 1000}
	for _, d := range []*event.Done{forged, done} {
		if err := bus.Publish(h.ctx, h.env.JS, event.DonePrefix+d.Target, d, ""); err != nil {
			t.Fatal(err)
		}
	}
	orphan := fmt.Sprintf("delete-%s-%s", shard, copyTask.Target)
	bustest.Eventually(t, deadline, "the orphaned copy scheduled for deletion", func() bool {
		for _, tk := range h.queuedTasks() {
			if tk.Task == orphan && tk.Kind == event.KindDelete && tk.Target == copyTask.Target {
				return true
			}
		}
		return false
	})
	bustest.Eventually(t, deadline, "the forged report refused", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_planner_malformed_events_total", "subject", "rehome.repair.done", "reason", event.ReasonUnknownShard) == 1
	})
}
