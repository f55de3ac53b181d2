package planner

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
)

func TestLeaseOneHolderTakeoverAndRelease(t *testing.T) {
	env := bustest.Start(t)
	ctx := context.Background()
	kv, err := env.JS.KeyValue(ctx, bus.BucketLease)
	if err != nil {
		t.Fatal(err)
	}
	const ttl = time.Second
	log := slog.New(slog.DiscardHandler)
	a := newLease(kv, "a", ttl, time.Now, log)
	b := newLease(kv, "b", ttl, time.Now, log)

	a.step(ctx)
	b.step(ctx)
	if !a.held(time.Now()) || b.held(time.Now()) {
		t.Fatal("want a holding the lease and b not")
	}
	// a renews: b never gets it.
	deadline := time.Now().Add(2 * ttl)
	for time.Now().Before(deadline) {
		a.step(ctx)
		b.step(ctx)
		if b.held(time.Now()) {
			t.Fatal("b took a lease a keeps renewing")
		}
		time.Sleep(ttl / 5) // the renewal period of the test, not a wait for a result
	}
	// a stops renewing (paused): b takes over after a's TTL, and a, waking
	// up, finds it lost on its next renewal.
	took := time.Now()
	bustest.Eventually(t, 10*time.Second, "b takes over", func() bool { b.step(ctx); return b.held(time.Now()) })
	if d := time.Since(took); d < ttl-ttl/3 {
		t.Fatalf("b took over %s after a's last renewal, before a's TTL", d)
	}
	if a.held(time.Now()) {
		t.Fatal("a still believes it holds the lease past its TTL")
	}
	a.step(ctx)
	if a.held(time.Now()) || a.term.Load() != 1 || b.term.Load() != 1 {
		t.Fatalf("a took the lease back from b (terms a=%d b=%d)", a.term.Load(), b.term.Load())
	}
	// b releases: a takes it at once.
	b.release()
	a.step(ctx)
	if !a.held(time.Now()) || a.term.Load() != 2 {
		t.Fatal("a did not take the released lease at once")
	}
}
