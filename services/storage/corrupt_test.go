package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// flakyBus records publish attempts and fails while down is set; with hang
// set it blocks until the attempt's context ends.
type flakyBus struct {
	mu       sync.Mutex
	down     bool
	hang     bool
	attempts []string // msg ids, in order
	done     []event.Corrupt
	subjects []string
}

func (b *flakyBus) publish(ctx context.Context, subject string, p event.Payload, msgID string) error {
	b.mu.Lock()
	b.attempts = append(b.attempts, msgID)
	down, hang := b.down, b.hang
	b.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if down {
		return errors.New("nats: no servers available")
	}
	b.mu.Lock()
	b.done = append(b.done, *p.(*event.Corrupt))
	b.subjects = append(b.subjects, subject)
	b.mu.Unlock()
	return nil
}

func (b *flakyBus) set(down, hang bool) {
	b.mu.Lock()
	b.down, b.hang = down, hang
	b.mu.Unlock()
}

func (b *flakyBus) published() []event.Corrupt {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.done)
}

func newTestReporter(t *testing.T, b *flakyBus, max int) (*reporter, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	r := newReporter("storage-9", "boot-1", max, b.publish, time.Now, testLogger(t), reg)
	r.minBackoff, r.maxBackoff = 5*time.Millisecond, 40*time.Millisecond
	return r, reg
}

func runReporter(r *reporter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func TestReporterRetriesInOrderUnderTheSameDedupID(t *testing.T) {
	b := &flakyBus{down: true}
	r, reg := newTestReporter(t, b, 100)
	stop := runReporter(r)
	defer stop()
	for i := range 3 {
		r.report(disk.Quarantine{ID: fmt.Sprintf("s%d", i), Found: disk.FoundRead, Reason: "sha256 mismatch"})
	}
	bustest.Eventually(t, 10*time.Second, "several failed attempts", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.attempts) >= 4
	})
	if got := b.published(); len(got) != 0 {
		t.Fatalf("published while the bus was down: %+v", got)
	}
	b.set(false, false)
	bustest.Eventually(t, 10*time.Second, "reports published once the bus is back", func() bool {
		return len(b.published()) == 3
	})
	got := b.published()
	for i, e := range got {
		if e.Shard != fmt.Sprintf("s%d", i) || e.Node != "storage-9" || e.Found != "read" || e.TS.IsZero() {
			t.Fatalf("report %d = %+v", i, e)
		}
	}
	if b.subjects[0] != event.CorruptPrefix+"storage-9" {
		t.Fatalf("published on %q", b.subjects[0])
	}
	b.mu.Lock()
	ids := slices.Compact(slices.Clone(b.attempts))
	b.mu.Unlock()
	if len(ids) != 3 {
		t.Fatalf("attempts used %d distinct msg ids for 3 reports: %v", len(ids), ids)
	}
	for _, id := range ids {
		if !strings.HasPrefix(id, "corrupt-storage-9-s") || !strings.Contains(id, "-boot-1-") {
			t.Fatalf("msg id %q does not name node, shard and boot", id)
		}
	}
	// The same shard damaged again later is a new report (a new id), not a duplicate.
	r.report(disk.Quarantine{ID: "s0", Found: disk.FoundScrub, Reason: "again"})
	bustest.Eventually(t, 10*time.Second, "second report of s0", func() bool { return len(b.published()) == 4 })
	b.mu.Lock()
	last := b.attempts[len(b.attempts)-1]
	b.mu.Unlock()
	if last == ids[0] {
		t.Fatalf("second damage of s0 reused msg id %q", last)
	}
	if v := metricstest.Value(t, reg, "rehome_storage_corrupt_shards_total", "found", "read"); v != 3 {
		t.Fatalf("found=read counter = %v", v)
	}
	if v := metricstest.Value(t, reg, "rehome_storage_corrupt_reports_total", "result", "published"); v != 4 {
		t.Fatalf("published counter = %v", v)
	}
}

func TestReporterNeverBlocksAndBoundsItsQueue(t *testing.T) {
	b := &flakyBus{hang: true}
	r, reg := newTestReporter(t, b, 5)
	stop := runReporter(r)
	start := time.Now()
	for i := range 1000 {
		r.report(disk.Quarantine{ID: fmt.Sprintf("q%d", i), Found: disk.FoundScrub, Reason: strings.Repeat("x", 1000)})
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("1000 reports against a hung bus took %s", d)
	}
	if q := r.queued(); q != 5 {
		t.Fatalf("queue holds %d, want the bound 5", q)
	}
	if v := metricstest.Value(t, reg, "rehome_storage_corrupt_reports_total", "result", "dropped"); v != 995 {
		t.Fatalf("dropped counter = %v, want 995", v)
	}
	if v := metricstest.Value(t, reg, "rehome_storage_corrupt_shards_total", "found", "scrub"); v != 1000 {
		t.Fatalf("found=scrub counter = %v: every damage counts, reported or not", v)
	}
	// Stopping makes one bounded attempt, then drops what is left.
	stopped := time.Now()
	stop()
	if d := time.Since(stopped); d > publishTimeout+flushTimeout+5*time.Second {
		t.Fatalf("stop took %s", d)
	}
	if v := metricstest.Value(t, reg, "rehome_storage_corrupt_reports_total", "result", "dropped"); v != 1000 {
		t.Fatalf("dropped counter after stop = %v, want 1000", v)
	}
}

func TestReporterFlushesOnStop(t *testing.T) {
	b := &flakyBus{}
	r, _ := newTestReporter(t, b, 10)
	// Reports made before run (found while opening the store) and right
	// before stopping are published.
	r.report(disk.Quarantine{ID: "early", Found: disk.FoundOpen, Reason: "bad header"})
	stop := runReporter(r)
	r.report(disk.Quarantine{ID: "late", Found: disk.FoundRead, Reason: "x"})
	stop()
	got := b.published()
	if len(got) != 2 || got[0].Shard != "early" || got[0].Found != "open" || got[1].Shard != "late" {
		t.Fatalf("published %+v", got)
	}
	if len(got[0].Reason) == 0 || len(got[0].Reason) > maxReason {
		t.Fatalf("reason %q", got[0].Reason)
	}
}
