package storage

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/rehome/rehome/services/storage/disk"
)

// scrubPage is how many shard ids the scrubber takes from the index at a time.
const scrubPage = 1024

// verifier is what the scrubber needs of the store: satisfied by *disk.Store.
type verifier interface {
	Page(after string, limit int) ([]disk.Info, bool)
	Verify(id string, pace func(n int) error) (int64, error)
}

// scrubber re-verifies every stored shard in the background, one pass per
// period, reading at most rate bytes per second. Damage is quarantined and
// reported by the store itself (disk.FoundScrub); the scrubber only walks and
// paces.
type scrubber struct {
	store   verifier
	limiter *rate.Limiter // nil: scrub off
	delay   time.Duration
	every   time.Duration
	now     func() time.Time
	log     *slog.Logger
	kick    chan struct{}

	bytes  prometheus.Counter
	passes prometheus.Counter
	errors prometheus.Counter
}

// newScrubber returns a scrubber reading at most bytesPerSec (0: off),
// registering its metrics on reg (also when off, so they read 0).
func newScrubber(store verifier, bytesPerSec int64, delay, every time.Duration, now func() time.Time,
	log *slog.Logger, reg prometheus.Registerer) *scrubber {
	sc := &scrubber{
		store: store, delay: delay, every: every, now: now, log: log,
		kick: make(chan struct{}, 1),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_storage_scrubbed_bytes_total",
			Help: "Shard bytes re-read and verified by the background scrub.",
		}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_storage_scrub_passes_total",
			Help: "Completed scrub passes over every stored shard.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_storage_scrub_errors_total",
			Help: "Shards the scrub could not read for reasons other than damage (I/O errors); retried next pass.",
		}),
	}
	if bytesPerSec > 0 {
		sc.limiter = rate.NewLimiter(rate.Limit(bytesPerSec), scrubBurst(bytesPerSec))
	}
	reg.MustRegister(sc.bytes, sc.passes, sc.errors)
	return sc
}

// scrubBurst is the token bucket's depth: about 100 ms of reading, and never
// less than one chunk (the most Verify asks for at once).
func scrubBurst(bytesPerSec int64) int {
	return int(max(disk.VerifyChunk, min(bytesPerSec/10, 1<<30)))
}

// enabled reports whether the scrub runs at all.
func (sc *scrubber) enabled() bool { return sc.limiter != nil }

// trigger asks for a pass as soon as possible: at once when idle, right after the
// running pass otherwise. It never blocks; requests coalesce.
func (sc *scrubber) trigger() {
	select {
	case sc.kick <- struct{}{}:
	default:
	}
}

// scrubDue is when the next pass should begin: delay after start while no
// pass has begun yet, then every after the last one began (possibly in the past,
// when that pass took longer than every: the next one then begins at once).
func scrubDue(start, lastBegan time.Time, delay, every time.Duration) time.Time {
	if lastBegan.IsZero() {
		return start.Add(delay)
	}
	return lastBegan.Add(every)
}

// run schedules passes from start until ctx ends; it blocks until then. It
// returns at once when the scrub is off.
func (sc *scrubber) run(ctx context.Context, start time.Time) {
	if !sc.enabled() {
		return
	}
	var lastBegan time.Time
	for {
		wait := scrubDue(start, lastBegan, sc.delay, sc.every).Sub(sc.now())
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-sc.kick:
			timer.Stop()
		}
		select { // a request made before this pass began is served by it
		case <-sc.kick:
		default:
		}
		lastBegan = sc.now()
		n, bad, err := sc.pass(ctx)
		if err != nil {
			return
		}
		sc.passes.Inc()
		sc.log.Info("scrub pass complete", "shards", n, "unreadable", bad,
			"duration", sc.now().Sub(lastBegan).Round(time.Millisecond))
	}
}

// pass verifies every shard indexed when it reaches it, in id order, at the
// limiter's pace. Shards deleted meanwhile are skipped; shards written
// meanwhile are verified if their id is still ahead. It returns the shards
// verified and those it could not read, or ctx's error if ctx ended first.
func (sc *scrubber) pass(ctx context.Context) (verified, unreadable int, err error) {
	pace := func(n int) error {
		if err := sc.limiter.WaitN(ctx, n); err != nil {
			return err
		}
		sc.bytes.Add(float64(n))
		return nil
	}
	after := ""
	for {
		page, more := sc.store.Page(after, scrubPage)
		for _, info := range page {
			_, err := sc.store.Verify(info.ID, pace)
			switch {
			case ctx.Err() != nil:
				return verified, unreadable, ctx.Err()
			case err == nil, errors.Is(err, disk.ErrCorrupt):
				verified++ // damage is quarantined and reported by the store
			case errors.Is(err, disk.ErrNotFound):
			default:
				unreadable++
				sc.errors.Inc()
				sc.log.Warn("scrub could not read shard", "shard", info.ID, "err", err)
			}
		}
		if !more {
			return verified, unreadable, nil
		}
		after = page[len(page)-1].ID
	}
}
