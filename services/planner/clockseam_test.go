package planner_test

import (
	"context"
	"testing"
	"time"

	"github.com/rehome/rehome/services/planner"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/clock"
	"github.com/rehome/rehome/shared/model"
)

// TestManualTicksIssueNothingOnAHealthyMap drives the planner's loop with a
// manual ticker: on a healthy map, 20 planning ticks (each fired and taken)
// queue no task; once a holder is down, the next ticks do.
func TestManualTicksIssueNothingOnAHealthyMap(t *testing.T) {
	h := newHarness(t, 6, 3)
	ticks := clock.NewManual()
	cfg := planner.Config{Ticks: ticks, TickInterval: time.Second, ProgressInterval: time.Hour}
	svc, _ := h.startPlanner(cfg)
	h.put("obj", 4, 1024)
	queued := func() int { return len(h.queuedTasks()) }
	fire := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(h.ctx, deadline)
		defer cancel()
		if err := ticks.Fire(ctx, cfg.TickInterval, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if !svc.Acting() {
		t.Fatal("the planner answers but does not act")
	}
	for range 21 { // the 21st returns once the 20th round is done
		fire()
	}
	if n := queued(); n != 0 {
		t.Fatalf("%d tasks queued by 20 rounds over a healthy map", n)
	}
	var holder string
	for _, p := range h.placements() {
		holder = p.Nodes[0]
		break
	}
	h.setState(holder, model.StateDown)
	bustest.Eventually(t, deadline, "a repair task once a holder is down", func() bool {
		fire()
		return queued() > 0
	})
}
