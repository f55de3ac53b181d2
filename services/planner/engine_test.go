package planner_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
	"github.com/rehome/rehome/shared/model"
)

// controlSubscribers returns the client ids subscribed to a control subject.
func (h *harness) controlSubscribers(subject string) []uint64 {
	h.t.Helper()
	sz, err := h.env.Server.Subsz(&server.SubszOptions{Subscriptions: true, Test: subject, Limit: 1024})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []uint64
	for _, s := range sz.Subs {
		out = append(out, s.Cid)
	}
	return out
}

func clientID(t *testing.T, nc *nats.Conn) uint64 {
	t.Helper()
	id, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// checkNoDuplicateTasks asserts no shard got two copy tasks for the same
// target and attempt, nor one task id twice.
func checkNoDuplicateTasks(t *testing.T, mv *mover) {
	t.Helper()
	for shard, ts := range mv.copies() {
		seen := map[string]bool{}
		ids := map[string]bool{}
		for _, task := range ts {
			k := fmt.Sprintf("%s/%d", task.Target, task.Attempt)
			if seen[k] || ids[task.Task] {
				t.Errorf("shard %s got two copy tasks for target/attempt %s: %+v", shard, k, ts)
			}
			seen[k], ids[task.Task] = true, true
		}
	}
}

// haScenario writes objects, takes storage-1 down and lets a slow mover
// repair with two planners running; kill stops the acting one once a few
// copies landed. It checks the takeover, the repair and the control calls.
func haScenario(t *testing.T, kill func(*runningPlanner), takeoverWithin time.Duration) {
	h := newHarness(t, 6, 3)
	cfg := fastConfig()
	cfg.ID = "planner-a"
	a := h.runPlanner(cfg)
	bustest.Eventually(t, deadline, "planner-a acts", a.svc.Acting)
	cfg.ID = "planner-b"
	b := h.runPlanner(cfg)
	for i := 0; i < 24; i++ {
		h.put(fmt.Sprintf("ha-%02d", i), 1, 1000)
	}
	// Only the acting planner serves the control subjects.
	aid, bid := clientID(t, a.nc), clientID(t, b.nc)
	for _, subj := range []string{event.CtlStatus, event.CtlAllocate, event.CtlCommit, event.CtlDelete, event.CtlHealStatus} {
		if subs := h.controlSubscribers(subj); len(subs) != 1 || subs[0] != aid {
			t.Fatalf("%s subscribed by clients %v, want only the acting planner %d", subj, subs, aid)
		}
	}
	if b.svc.Acting() || metricstest.Value(t, b.svc.Registry(), "rehome_planner_acting") != 0 ||
		metricstest.Value(t, a.svc.Registry(), "rehome_planner_acting") != 1 {
		t.Fatal("acting gauges: want planner-a 1, planner-b 0")
	}
	h.placementsBefore = map[string][]string{}
	lost := 0
	for id, p := range h.placements() {
		h.placementsBefore[id] = p.Nodes
		if slices.Contains(p.Nodes, "storage-1") {
			lost++
		}
	}
	// Control calls, all along.
	var (
		mu       sync.Mutex
		lastFail time.Time
		lastOK   time.Time
	)
	stopCalls := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stopCalls:
				return
			case <-time.After(25 * time.Millisecond):
			}
			// A short timeout: a call to the dead planner must not hide
			// the calls after the takeover.
			ctx, cancel := context.WithTimeout(h.ctx, time.Second)
			var st control.ClusterStatus
			err := bus.Call(ctx, h.env.NC, event.CtlStatus, struct{}{}, &st)
			cancel()
			mu.Lock()
			if err != nil {
				lastFail = time.Now()
			} else {
				lastOK = time.Now()
			}
			mu.Unlock()
		}
	})
	defer func() { close(stopCalls); wg.Wait() }()

	mv := &mover{work: 60 * time.Millisecond}
	h.runMover(mv)
	h.setState("storage-1", model.StateDown)
	// storage-4 is the only target left in rack-1: PerNodeIn (2) copies at a time.
	if lost < 8 {
		t.Fatalf("only %d shards on storage-1", lost)
	}
	bustest.Eventually(t, deadline, "a few copies made", func() bool { return len(mv.copies()) >= 3 })
	if n := len(mv.copies()); n > lost-3 {
		t.Fatalf("%d of %d copies made before the kill: not mid-repair", n, lost)
	}
	killed := time.Now()
	kill(a)
	bustest.Eventually(t, takeoverWithin, "planner-b takes over", b.svc.Acting)
	took := time.Since(killed)
	bustest.Eventually(t, deadline, "only planner-b serves the control subjects", func() bool {
		subs := h.controlSubscribers(event.CtlStatus)
		return len(subs) == 1 && subs[0] == bid
	})
	h.waitHealthy()
	h.checkHealed("storage-1")
	checkNoDuplicateTasks(t, mv)
	if got := len(mv.copies()); got != lost {
		t.Errorf("%d shards copied, want %d", got, lost)
	}
	// A status call answered after the takeover (the cluster is healthy
	// by now, so calls went on for a while after it).
	bustest.Eventually(t, deadline, "a control call answered after the takeover", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return lastOK.After(killed.Add(took))
	})
	mu.Lock()
	defer mu.Unlock()
	if lastFail.After(killed.Add(took + time.Second)) {
		t.Fatalf("a control call failed %s after the takeover", lastFail.Sub(killed.Add(took)))
	}
	t.Logf("takeover after %s", took)
}

// TestHATakeoverAfterCleanStop: the acting planner is stopped mid-repair;
// it finishes the results it received and gives the lease back, and the
// standby takes over at once.
func TestHATakeoverAfterCleanStop(t *testing.T) {
	haScenario(t, func(rp *runningPlanner) { rp.stop() }, fastConfig().LeaseTTL+3*time.Second)
}

// TestHATakeoverAfterCrash: the acting planner's connection is cut mid-repair
// (no release, results left unacknowledged); the standby takes the lease
// once it went a TTL without renewal, and plans only after the results the
// dead planner held came back to it, so nothing is copied twice.
func TestHATakeoverAfterCrash(t *testing.T) {
	haScenario(t, func(rp *runningPlanner) { rp.crash() }, fastConfig().LeaseTTL+4*time.Second)
}

// TestResultsTriggerPlanning: with a tick that never comes, each verified
// copy frees a slot and the next copy is planned at once.
func TestResultsTriggerPlanning(t *testing.T) {
	h := newHarness(t, 6, 3)
	cfg := fastConfig()
	cfg.TickInterval = time.Hour
	cfg.PerNodeIn = 1
	h.startPlanner(cfg)
	for i := 0; i < 12; i++ {
		h.put(fmt.Sprintf("o%02d", i), 1, 100)
	}
	h.placementsBefore = map[string][]string{}
	for id, p := range h.placements() {
		h.placementsBefore[id] = p.Nodes
	}
	mv := &mover{}
	h.runMover(mv)
	h.setStateSeen("storage-1", model.StateDown) // storage-4 takes them one at a time
	h.waitHealthy()
	h.checkHealed("storage-1")
}

// TestRepairParkedAfterMaxAttempts: a shard whose copies keep failing is
// reported once per round on rehome.repair.failed (final, with RetryAt),
// parked, and tried again from attempt 1 with fresh task ids; it heals when
// copies succeed again.
func TestRepairParkedAfterMaxAttempts(t *testing.T) {
	h := newHarness(t, 6, 3)
	cfg := fastConfig()
	cfg.MaxAttempts = 2
	cfg.RetryLater = 500 * time.Millisecond
	svc, _ := h.startPlanner(cfg)
	m, _ := h.put("doomed", 1, 100)
	var reports []event.Failed
	var mu sync.Mutex
	sub, err := h.env.NC.Subscribe(event.FailedPrefix+"*", func(msg *nats.Msg) {
		var f event.Failed
		if event.Decode(msg.Data, &f) == nil && !f.RetryAt.IsZero() {
			mu.Lock()
			reports = append(reports, f)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	var failing atomic.Bool
	failing.Store(true)
	mv := &mover{answer: func(task event.Task) *event.Failed {
		if !failing.Load() {
			return nil
		}
		return &event.Failed{Task: task.Task, Shard: task.Shard, Kind: task.Kind, Target: task.Target,
			Error: "target disk on fire", Attempt: 1, Final: true}
	}}
	h.runMover(mv)
	h.setState(h.placements()[m.Shards[0].ID].Nodes[0], model.StateDown)
	bustest.Eventually(t, deadline, "two rounds of attempts", func() bool {
		ts := mv.copies()[m.Shards[0].ID]
		return len(ts) >= 4
	})
	failing.Store(false)
	h.waitHealthy()
	ts := mv.copies()[m.Shards[0].ID]
	ids := map[string]bool{}
	for i, task := range ts {
		if want := i%2 + 1; task.Attempt != want || ids[task.Task] {
			t.Fatalf("task %d %s attempt %d (want %d), ids so far %v", i, task.Task, task.Attempt, want, ids)
		}
		ids[task.Task] = true
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) < 2 {
		t.Fatalf("%d final reports from the planner, want one per parked round (>= 2)", len(reports))
	}
	if r := reports[0]; r.Shard != m.Shards[0].ID || !r.Final || r.Attempt != 2 || r.Kind != event.KindCopy {
		t.Fatalf("report %+v", r)
	}
	if v := metricstest.Value(t, svc.Registry(), "rehome_planner_repairs_parked_total"); v < 2 {
		t.Fatalf("parked counter %v", v)
	}
}

// TestSurplusTrimmedAfterNodeReturns: a node comes back after its shards
// were re-homed; every shard with four up copies loses exactly one (the map
// first, then a delete task to that node), and ends with three in three racks.
func TestSurplusTrimmedAfterNodeReturns(t *testing.T) {
	h := newHarness(t, 6, 3)
	svc, _ := h.startPlanner(fastConfig())
	for i := 0; i < 20; i++ {
		h.put(fmt.Sprintf("t%02d", i), 1, 100)
	}
	mv := &mover{}
	h.runMover(mv)
	h.setStateSeen("storage-2", model.StateDown)
	h.waitHealthy()
	h.setStateSeen("storage-2", model.StateUp)
	bustest.Eventually(t, deadline, "surplus trimmed", func() bool {
		for _, p := range h.placements() {
			if len(p.Nodes) != 3 {
				return false
			}
		}
		return h.status().InFlight == 0
	})
	h.checkHealed()
	trims := 0
	deleted := map[string]bool{}
	for _, d := range mv.deletes() {
		if d.Task[:5] != "trim-" {
			continue
		}
		trims++
		if deleted[d.Shard] {
			t.Errorf("shard %s trimmed twice", d.Shard)
		}
		deleted[d.Shard] = true
		if slices.Contains(h.placements()[d.Shard].Nodes, d.Target) {
			t.Errorf("delete task to %s for %s, which the map still lists", d.Target, d.Shard)
		}
	}
	if trims == 0 || trims != int(metricstest.Value(t, svc.Registry(), "rehome_planner_trims_total")) {
		t.Fatalf("%d trim tasks, metric %v", trims, metricstest.Value(t, svc.Registry(), "rehome_planner_trims_total"))
	}
	bustest.Consistently(t, 300*time.Millisecond, "nothing more to trim", func() bool {
		return len(mv.deletes()) == trims && h.status().InFlight == 0
	})
}

// TestMapChangesOnlyAfterVerifiedCopy: while the copy runs the entry keeps
// its holders; the verified copy adds the target and keeps the down holder.
func TestMapChangesOnlyAfterVerifiedCopy(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	m, _ := h.put("careful", 1, 100)
	id := m.Shards[0].ID
	before := h.placements()[id].Nodes
	release := make(chan struct{})
	var once sync.Once
	mv := &mover{answer: func(event.Task) *event.Failed { <-release; return nil }}
	h.runMover(mv)
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // runs before the mover's stop
	h.setState(before[0], model.StateDown)
	bustest.Eventually(t, deadline, "copy task taken", func() bool { return len(mv.copies()[id]) == 1 })
	bustest.Consistently(t, 300*time.Millisecond, "map unchanged while the copy runs", func() bool {
		return slices.Equal(h.placements()[id].Nodes, before)
	})
	once.Do(func() { close(release) })
	h.waitHealthy()
	after := h.placements()[id].Nodes
	target := mv.copies()[id][0].Target
	if !slices.Equal(after, append(slices.Clone(before), target)) {
		t.Fatalf("map after the copy %v, want %v + %s", after, before, target)
	}
}
