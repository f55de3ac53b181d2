package core

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// rackOf is the rack AddNodes deals storage-i on, with racks racks.
func rackOf(node string, racks int) string {
	var i int
	fmt.Sscanf(node, "storage-%d", &i)
	return fmt.Sprintf("rack-%d", (i-1)%racks+1)
}

// quiet reports what a Step did, or "" when it did nothing.
func quiet(e Effects) string {
	if len(e.Tasks)+len(e.Writes)+len(e.Lost)+len(e.GaveUp)+len(e.TimedOut) == 0 {
		return ""
	}
	return fmt.Sprintf("%d tasks, %d writes, %d lost, %d gave up, %d timed out",
		len(e.Tasks), len(e.Writes), len(e.Lost), len(e.GaveUp), len(e.TimedOut))
}

// TestStepHealsANodeLossThroughTheMap: a down verdict makes one Step queue
// one copy per shard the node held, each carrying the entry's checksum and
// writing onto a rack without a live copy; the movers' Done adds each
// target to the map; then nothing more happens for many rounds.
func TestStepHealsANodeLossThroughTheMap(t *testing.T) {
	h := newPlanHarness(t, 9, 3, wide)
	for i := range 30 {
		a := i % 3
		h.put(fmt.Sprintf("s%02d", i), 100, fmt.Sprintf("storage-%d", 1+a*3), fmt.Sprintf("storage-%d", 2+a*3), fmt.Sprintf("storage-%d", 3+((a+1)%3)*3))
	}
	h.put("sum-check", 100, "storage-1", "storage-5", "storage-9")
	if e := h.Step(); quiet(e) != "" {
		t.Fatalf("a healthy map stepped: %s", quiet(e))
	}
	h.state("storage-1", model.StateDown)
	e := h.Step()
	want := 0
	for i := range 31 {
		id := fmt.Sprintf("s%02d", i)
		if i == 30 {
			id = "sum-check"
		}
		if slices.Contains(h.Holders(id), "storage-1") {
			want++
		}
	}
	if len(e.Tasks) != want {
		t.Fatalf("%d tasks after storage-1 went down, want one per shard it held (%d)", len(e.Tasks), want)
	}
	for _, task := range e.Tasks {
		entry, _ := h.Entry(task.Shard)
		if task.Kind != event.KindCopy || task.SHA256 != entry.SHA256 || task.Bytes != entry.Size {
			t.Fatalf("task %+v does not carry its entry's checksum and size", task)
		}
		if slices.Contains(entry.Nodes, task.Target) || task.Sources[0] == "storage-1" {
			t.Fatalf("task %s copies from %v onto %s, entry %v", task.Task, task.Sources, task.Target, entry.Nodes)
		}
		for _, n := range entry.Nodes {
			if n != "storage-1" && rackOf(n, 3) == rackOf(task.Target, 3) {
				t.Fatalf("task %s writes onto %s, a rack that holds a live copy (%s)", task.Task, task.Target, n)
			}
		}
		if !h.Queued(task.Task) {
			t.Fatalf("task %s not queued", task.Task)
		}
	}
	for _, task := range e.Tasks {
		if err := h.Done(task); err != nil {
			t.Fatal(err)
		}
		if got := h.Holders(task.Shard); !slices.Contains(got, task.Target) || len(got) != 4 {
			t.Fatalf("after Done the map lists %v for %s, want the old holders and %s", got, task.Shard, task.Target)
		}
	}
	if tot := h.v.Totals(); tot.UnderReplicated != 0 || tot.InFlight != 0 {
		t.Fatalf("after every copy landed: %+v", tot)
	}
	for i := range 20 {
		h.Advance(time.Minute)
		if e := h.Step(); quiet(e) != "" {
			t.Fatalf("round %d after the heal: %s", i, quiet(e))
		}
	}
}

// TestStepExtendsQueuedTasksAndRetriesTakenOnes: a task past its deadline
// that still waits in the queue gets more time; one a mover took and never
// answered times out and is re-planned as attempt 2 under a new id.
func TestStepExtendsQueuedTasksAndRetriesTakenOnes(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.TaskTimeout = time.Minute
	h.put("s", 100, "storage-1", "storage-2", "storage-3")
	h.state("storage-1", model.StateDown)
	first := h.Step().Tasks
	if len(first) != 1 {
		t.Fatalf("%d tasks, want 1", len(first))
	}
	h.Advance(2 * time.Minute)
	if e := h.Step(); len(e.TimedOut) != 0 || len(e.Tasks) != 0 {
		t.Fatalf("a queued task past its deadline: timed out %v, new tasks %d; want it extended", e.TimedOut, len(e.Tasks))
	}
	h.Take(first[0].Task)
	h.Advance(2 * time.Minute)
	e := h.Step()
	if !slices.Equal(e.TimedOut, []string{first[0].Task}) {
		t.Fatalf("timed out %v, want %s", e.TimedOut, first[0].Task)
	}
	h.Advance(5 * time.Second) // the backoff before attempt 2
	again := h.Step().Tasks
	if len(again) != 1 || again[0].Attempt != 2 || again[0].Task == first[0].Task {
		t.Fatalf("re-planned %+v, want attempt 2 under a new id", again)
	}
}

// TestStepTrimsThroughTheMapThenDeletes: a holder back after its shards were
// copied elsewhere leaves surplus copies: a Step writes each entry without
// one holder (never below three up copies) and queues the delete task on
// that holder; its Done ends the trim.
func TestStepTrimsThroughTheMapThenDeletes(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("s", 100, "storage-1", "storage-2", "storage-3")
	h.state("storage-1", model.StateDown)
	for _, task := range h.Step().Tasks {
		if err := h.Done(task); err != nil {
			t.Fatal(err)
		}
	}
	h.state("storage-1", model.StateUp)
	e := h.Step()
	if len(e.Writes) != 1 || len(e.Tasks) != 1 || e.Tasks[0].Kind != event.KindDelete {
		t.Fatalf("trim round: writes %v, tasks %+v; want one entry written and one delete task", e.Writes, e.Tasks)
	}
	del := e.Tasks[0]
	if got := h.Holders("s"); len(got) != 3 || slices.Contains(got, del.Target) {
		t.Fatalf("after the trim the map lists %v; want 3 holders without %s", got, del.Target)
	}
	if h.v.Totals().InFlight != 1 {
		t.Fatal("the trim is not in flight until its delete is done")
	}
	if err := h.Done(del); err != nil {
		t.Fatal(err)
	}
	if tot := h.v.Totals(); tot.InFlight != 0 || tot.Surplus != 0 || tot.UnderReplicated != 0 {
		t.Fatalf("after the delete: %+v", tot)
	}
}

// TestStepAnnouncesALossOnce: a shard whose holders all went down is
// announced lost once, not every round; recovered and lost again, it is
// announced again.
func TestStepAnnouncesALossOnce(t *testing.T) {
	h := newPlanHarness(t, 6, 3, wide)
	h.put("s", 100, "storage-1", "storage-2", "storage-3")
	for _, n := range []string{"storage-1", "storage-2", "storage-3"} {
		h.state(n, model.StateDown)
	}
	if e := h.Step(); len(e.Lost) != 1 || e.Lost[0].Shard != "s" || e.Lost[0].Key != "k-s" {
		t.Fatalf("lost %+v, want s announced", e.Lost)
	}
	for range 3 {
		h.Advance(time.Second)
		if e := h.Step(); len(e.Lost) != 0 {
			t.Fatalf("announced again: %+v", e.Lost)
		}
	}
	h.state("storage-2", model.StateUp)
	h.Step()
	h.state("storage-2", model.StateDown)
	if e := h.Step(); len(e.Lost) != 1 {
		t.Fatalf("lost anew: %+v, want announced again", e.Lost)
	}
}
