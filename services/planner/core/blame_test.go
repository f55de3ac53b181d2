package core

import (
	"slices"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// TestFailedSideDecidesWhatTheRetryAvoids: on 6 nodes in 3 racks a shard on
// storage-1..3 loses storage-3; storage-6 is the only node of the free rack.
// Copies to it that fail for want of a source (both sources unreadable)
// are retried on storage-6, never placing two copies in one rack, and the
// next attempt reads another source first. Copies that fail on the target
// (or whose report does not say: an older mover) still give up the rack
// rule from relaxAfterAttempt on, as before.
func TestFailedSideDecidesWhatTheRetryAvoids(t *testing.T) {
	cases := []struct {
		name      string
		side      string
		fails     int
		relaxedAt int // attempt whose copy leaves rack-3 (0: none may)
	}{
		{"source side never relaxes", event.SideSource, 4, 0},
		{"target side relaxes", event.SideTarget, relaxAfterAttempt, relaxAfterAttempt},
		{"unknown side relaxes as the target's", "", relaxAfterAttempt, relaxAfterAttempt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newPlanHarness(t, 6, 3, wide)
			h.put("a", 10, "storage-1", "storage-2", "storage-3")
			h.state("storage-3", model.StateDown)
			var firstSources []string
			for attempt := 1; attempt <= c.fails; attempt++ {
				e := h.Step()
				if len(e.Tasks) != 1 {
					t.Fatalf("attempt %d: tasks %+v, want one copy", attempt, e.Tasks)
				}
				task := e.Tasks[0]
				if task.Attempt != attempt {
					t.Fatalf("task %s is attempt %d, want %d", task.Task, task.Attempt, attempt)
				}
				relaxed := task.Target != "storage-6"
				if want := c.relaxedAt != 0 && attempt >= c.relaxedAt; relaxed != want {
					t.Fatalf("attempt %d went to %s: want rack-3's storage-6 unless relaxing (from attempt %d)",
						attempt, task.Target, c.relaxedAt)
				}
				if relaxed {
					if !slices.Contains([]string{"storage-4", "storage-5"}, task.Target) || !e.Plan.Copies[0].Relaxed {
						t.Fatalf("attempt %d: relaxed copy to %s (relaxed=%v)", attempt, task.Target, e.Plan.Copies[0].Relaxed)
					}
					break
				}
				if c.side == event.SideSource && attempt > 1 && task.Sources[0] == firstSources[len(firstSources)-1] {
					t.Fatalf("attempt %d reads %s first again after it failed as the source", attempt, task.Sources[0])
				}
				firstSources = append(firstSources, task.Sources[0])
				if out := h.FailSide(task, true, c.side, "no luck"); !out.Ended || out.GaveUp != nil {
					t.Fatalf("attempt %d: failure outcome %+v", attempt, out)
				}
				h.Advance(time.Minute)
			}
			if c.relaxedAt != 0 {
				return
			}
			// The next attempt succeeds: the live copies are on three racks.
			e := h.Step()
			if len(e.Tasks) != 1 || e.Tasks[0].Target != "storage-6" {
				t.Fatalf("after %d source failures: tasks %+v, want a copy to storage-6", c.fails, e.Tasks)
			}
			if err := h.Done(e.Tasks[0]); err != nil {
				t.Fatal(err)
			}
			rackOf := map[string]string{"storage-1": "rack-1", "storage-4": "rack-1", "storage-2": "rack-2",
				"storage-5": "rack-2", "storage-6": "rack-3"}
			racks := map[string]bool{}
			for _, n := range h.Holders("a") {
				if n != "storage-3" { // down
					racks[rackOf[n]] = true
				}
			}
			if len(racks) != 3 {
				t.Fatalf("live holders %v span %d racks, want 3", h.Holders("a"), len(racks))
			}
		})
	}
}
