package mover_test

import (
	"bytes"
	"testing"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// TestWellFormedButWrongTasksAreRejected: tasks that decode but break their
// contract (negative bytes, no sources, a checksum that is not hex, queued
// for another node than their target) are dead-lettered and counted by
// reason, never run and never reported done or failed; a valid task queued
// after them still runs.
func TestWellFormedButWrongTasksAreRejected(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	data := randomBytes(t, 10_000)
	c.put("storage-a", "shard-1", data)
	dead := c.watchDead()
	m := c.mover(mover.Config{ID: "m1"})

	wrong := map[string]func(*event.Task){
		"negative-bytes":   func(t *event.Task) { t.Bytes = -1 },
		"no-sources":       func(t *event.Task) { t.Sources = nil },
		"negative-attempt": func(t *event.Task) { t.Attempt = -2 },
		"sha-not-hex":      func(t *event.Task) { t.SHA256 = "zz" + t.SHA256[2:] },
		"target-elsewhere": func(t *event.Task) { t.Target = "storage-a" },
	}
	for id, edit := range wrong {
		tk := copyTask(id, "shard-1", data, "storage-b", "storage-a")
		edit(tk)
		b, err := event.Encode(tk)
		if err != nil {
			t.Fatal(err)
		}
		c.publishRaw(event.TaskPrefix+"storage-b", b)
	}
	c.publish(copyTask("task-ok", "shard-1", data, "storage-b", "storage-a"))

	bustest.Eventually(t, timeout, "valid task done after the wrong ones", func() bool { return len(c.doneFor("task-ok")) == 1 })
	bustest.Eventually(t, timeout, "every wrong task dead-lettered", func() bool { return dead.count() == len(wrong) })
	c.waitQueueEmpty()
	reg := m.Registry()
	for reason, want := range map[string]float64{event.ReasonInvalid: 4, event.ReasonSubjectMismatch: 1, event.ReasonMalformed: 0} {
		if got := metricstest.Value(t, reg, "rehome_mover_malformed_events_total", "subject", "task", "reason", reason); got != want {
			t.Errorf("tasks rejected as %s: %v, want %v", reason, got, want)
		}
	}
	for id := range wrong {
		if len(c.doneFor(id)) != 0 || len(c.failedFor(id)) != 0 {
			t.Errorf("task %s was reported done or failed", id)
		}
	}
	if !bytes.Equal(c.read("storage-b", "shard-1"), data) {
		t.Fatal("valid task did not copy")
	}
}
