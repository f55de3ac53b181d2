package detector_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/rehome/rehome/services/detector"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/clock"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// TestManualTicksJudgeExactlyAtTheDeadline drives a detector's loop with a
// manual ticker and a test clock: a node heard at T (its heartbeat stamped with the test clock) stays up through 20
// ticks just before T+SuspectAfter, and is suspect at the first tick past
// it. No wall-clock window: each tick is fired and taken.
func TestManualTicksJudgeExactlyAtTheDeadline(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	t0 := time.Now().UTC().Truncate(time.Second)
	var mu sync.Mutex
	now := t0
	setNow := func(at time.Time) { mu.Lock(); now = at; mu.Unlock() }
	ticks := clock.NewManual()
	cfg := detector.DefaultConfig()
	cfg.SuspectAfter, cfg.Grace, cfg.StartupHold = 3*time.Second, 10*time.Second, time.Second
	cfg.Ticks = ticks
	cfg.MaxClockSkew = time.Hour // trust the heartbeats' stamps, however late they arrive
	svc, err := detector.New(cfg, env.NC, env.JS, slog.New(slog.DiscardHandler), func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	fire := func() {
		t.Helper()
		fctx, fcancel := context.WithTimeout(context.Background(), wait)
		defer fcancel()
		if err := ticks.Fire(fctx, cfg.Tick, now); err != nil {
			t.Fatal(err)
		}
	}
	setNow(t0.Add(2 * time.Second)) // past the startup hold
	data, err := event.Encode(&event.Heartbeat{Node: "storage-1", Rack: "rack-1", Addr: "127.0.0.1:1", BootID: "b",
		CapacityBytes: 1 << 30, Header: event.Header{TS: t0.Add(2 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, wait, "storage-1 announced up", func() bool {
		_ = env.NC.Publish(event.HeartbeatPrefix+"storage-1", data)
		fire()
		return stateOf(t, kv, "storage-1") == model.StateUp
	})
	setNow(t0.Add(5*time.Second - time.Millisecond)) // heard at t0+2s
	for range 21 {                                   // the 21st returns once the 20th is done
		fire()
	}
	if st := stateOf(t, kv, "storage-1"); st != model.StateUp {
		t.Fatalf("within SuspectAfter of its last heartbeat storage-1 is %s", st)
	}
	setNow(t0.Add(5*time.Second + time.Millisecond))
	fire()
	fire()
	if st := stateOf(t, kv, "storage-1"); st != model.StateSuspect {
		t.Fatalf("the first tick past SuspectAfter left storage-1 %s, want suspect", st)
	}
}
