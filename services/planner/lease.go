package planner

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/model"
)

// Lease is the planner lease record, under key bus.LeasePlanner in bucket
// bus.BucketLease: which planner acts, since when, and how long its lease
// lasts without renewal.
type Lease struct {
	V      int       `json:"v"`
	Holder string    `json:"holder"`
	Since  time.Time `json:"since"`
	TTLMS  int64     `json:"ttl_ms"`
}

// lease takes, renews and gives back the planner lease. The holder renews it
// with a compare-and-set (Update at its revision) every ttl/3; it counts as
// held until ttl after the start of the last successful renewal, and is lost
// at once when a renewal finds another revision. A standby takes it with
// Create when the key is gone (released, or expired by the bucket's TTL), or
// with a compare-and-set at the revision it has seen unchanged for the
// holder's own ttl (the holder stopped renewing: by then it has stopped
// acting). Its methods are safe for concurrent use.
type lease struct {
	kv  jetstream.KeyValue
	id  string
	ttl time.Duration
	now func() time.Time
	log *slog.Logger

	mu    sync.Mutex // serialises bus operations and the fields below
	rev   uint64     // revision of our record while held
	since time.Time
	// seen* is what a standby observed of another holder's record.
	seenRev uint64
	seenAt  time.Time
	seenTTL time.Duration

	until atomic.Pointer[time.Time] // held until then (nil: not held)
	lost  atomic.Pointer[string]    // why it was last lost
	term  atomic.Uint64             // counts the times the lease was taken
}

// lostReason says why the lease was last lost ("" if never).
func (l *lease) lostReason() string {
	if r := l.lost.Load(); r != nil {
		return *r
	}
	return ""
}

func (l *lease) loseBecause(why string) {
	l.until.Store(nil)
	l.lost.Store(&why)
}

func newLease(kv jetstream.KeyValue, id string, ttl time.Duration, now func() time.Time, log *slog.Logger) *lease {
	return &lease{kv: kv, id: id, ttl: ttl, now: now, log: log}
}

// held reports whether the lease is ours at now.
func (l *lease) held(now time.Time) bool {
	u := l.until.Load()
	return u != nil && now.Before(*u)
}

// run renews or tries to take the lease until ctx ends, signalling changed
// (non-blocking) whenever it is taken or lost. It blocks.
func (l *lease) run(ctx context.Context, changed chan<- struct{}) {
	was := false
	for {
		l.step(ctx)
		is := l.held(l.now())
		if is != was {
			was = is
			select {
			case changed <- struct{}{}:
			default:
			}
		}
		wait := l.ttl / 5
		if is {
			wait = l.ttl / 3
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// record encodes our lease record.
func (l *lease) record() []byte {
	b, _ := json.Marshal(Lease{V: model.Version, Holder: l.id, Since: l.since.UTC(), TTLMS: l.ttl.Milliseconds()})
	return b
}

// step renews the lease when held, or tries to take it.
func (l *lease) step(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	start := l.now()
	if l.held(start) {
		rev, err := l.kv.Update(ctx, bus.LeasePlanner, l.record(), l.rev)
		switch {
		case err == nil:
			l.rev = rev
			l.hold(start)
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists),
			errors.Is(err, jetstream.ErrKeyNotFound):
			l.loseBecause("taken over or expired: " + err.Error())
		default:
			if !l.held(l.now()) {
				l.loseBecause("not renewed within its TTL: " + err.Error())
			}
		}
		return
	}
	l.until.Store(nil)
	e, err := l.kv.Get(ctx, bus.LeasePlanner)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		l.since = start
		rev, err := l.kv.Create(ctx, bus.LeasePlanner, l.record())
		if err == nil {
			l.rev = rev
			l.hold(start)
		}
	case err != nil:
		return
	default:
		var rec Lease
		ttl := l.ttl
		if json.Unmarshal(e.Value(), &rec) == nil && rec.TTLMS > 0 {
			ttl = time.Duration(rec.TTLMS) * time.Millisecond
		}
		if rec.Holder != l.id && e.Revision() != l.seenRev {
			l.seenRev, l.seenAt, l.seenTTL = e.Revision(), start, ttl
			return
		}
		// Ours from an earlier life, or not renewed for its TTL: take it over
		// at exactly that revision.
		if rec.Holder != l.id && start.Sub(l.seenAt) < l.seenTTL {
			return
		}
		l.since = start
		rev, err := l.kv.Update(ctx, bus.LeasePlanner, l.record(), e.Revision())
		if err == nil {
			l.rev = rev
			l.hold(start)
			if rec.Holder != l.id {
				l.log.Debug("took over the planner lease", "id", l.id, "from", rec.Holder, "silent", start.Sub(l.seenAt))
			}
		}
	}
}

// hold records the lease held until from + ttl; taking it (not held
// before) starts a new term.
func (l *lease) hold(from time.Time) {
	if !l.held(from) {
		l.term.Add(1)
	}
	u := from.Add(l.ttl)
	l.until.Store(&u)
}

// drop gives the lease back (deletes our record) and stops holding it.
func (l *lease) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked()
}

// release gives the lease back if held, so a standby takes over at once.
func (l *lease) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held(l.now()) && l.releaseLocked() {
		l.log.Info("released the planner lease", "id", l.id)
	}
}

// releaseLocked deletes our record if held; it reports whether it did.
func (l *lease) releaseLocked() bool {
	held := l.held(l.now())
	l.until.Store(nil)
	if !held || l.rev == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := l.kv.Delete(ctx, bus.LeasePlanner, jetstream.LastRevision(l.rev))
	l.rev = 0
	if err != nil {
		l.log.Warn("could not release the planner lease: it expires on its own", "err", err)
		return false
	}
	return true
}
