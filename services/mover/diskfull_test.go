package mover_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/services/storage"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/metricstest"
)

// TestFullTargetFailsTheTaskOnceWithoutDeadLetter: a copy onto a node whose
// disk is full (507) is given up at once with one final Failed naming the
// reason: not retried on that target, not dead-lettered, nothing left on it.
func TestFullTargetFailsTheTaskOnceWithoutDeadLetter(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storageWith("storage-full", func(cfg *storage.Config) { cfg.CapacityBytes = 10_000 })
	data := randomBytes(t, 50_000)
	c.put("storage-a", "shard-1", data)
	dead := c.watchDead()
	m := c.mover(mover.Config{ID: "m1", MaxDeliver: 5, BackoffMin: 50 * time.Millisecond})

	c.publish(copyTask("task-1", "shard-1", data, "storage-full", "storage-a"))
	bustest.Eventually(t, timeout, "final failure", func() bool { return len(c.failedFor("task-1")) > 0 })
	c.waitQueueEmpty()
	// Give a wrong retry or dead letter the time to show up.
	bustest.Consistently(t, 500*time.Millisecond, "one report, no dead letter", func() bool {
		return len(c.failedFor("task-1")) == 1 && dead.count() == 0
	})
	f := c.failedFor("task-1")[0]
	if !f.Final || f.Attempt != 1 || f.Target != "storage-full" || !strings.Contains(f.Error, "507") ||
		!strings.Contains(f.Error, "no space left") {
		t.Fatalf("failed event %+v: want final, attempt 1, naming the full target", f)
	}
	if got := c.read("storage-full", "shard-1"); got != nil {
		t.Fatalf("full target holds %d bytes of the shard", len(got))
	}
	reg := m.Registry()
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "copy", "result", mover.ResultFailed); got != 1 {
		t.Fatalf("failed tasks = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "copy", "result", mover.ResultRetry); got != 0 {
		t.Fatalf("retried tasks = %v, want 0", got)
	}
}
