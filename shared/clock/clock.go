// Package clock is the seam between a service's loop and time: the loop
// asks a Source for its tickers, the wall clock in production, a Manual
// source in tests, where a tick happens only when the test fires it, so
// "nothing happens for N ticks" is exact rather than a wall-clock window.
package clock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Ticker delivers ticks on C until Stop.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Source makes the tickers of a service loop. Safe for concurrent use.
type Source interface {
	NewTicker(d time.Duration) Ticker
}

// Wall is the Source of real tickers (time.NewTicker).
var Wall Source = wall{}

type wall struct{}

func (wall) NewTicker(d time.Duration) Ticker { return wallTicker{time.NewTicker(d)} }

type wallTicker struct{ t *time.Ticker }

func (w wallTicker) C() <-chan time.Time { return w.t.C }
func (w wallTicker) Stop()               { w.t.Stop() }

// Manual is a Source whose tickers tick only when Fire says. Its zero
// value is not usable: make one with NewManual. Safe for concurrent use.
type Manual struct {
	mu      sync.Mutex
	tickers map[time.Duration]*manualTicker
	made    chan struct{} // closed and replaced whenever a ticker is made
}

// NewManual returns a Manual source with no ticker yet.
func NewManual() *Manual {
	return &Manual{tickers: map[time.Duration]*manualTicker{}, made: make(chan struct{})}
}

// NewTicker returns a ticker of period d that ticks on Fire(d, …). A later
// ticker of the same period replaces it.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	t := &manualTicker{c: make(chan time.Time), stopped: make(chan struct{})}
	m.mu.Lock()
	m.tickers[d] = t
	close(m.made)
	m.made = make(chan struct{})
	m.mu.Unlock()
	return t
}

// Fire delivers one tick at `at` to the ticker of period d, waiting until
// a ticker of that period exists and its loop has taken the tick: when Fire
// returns, the loop has received it (and, running one event at a time,
// finished every event before it). It fails when ctx ends first or the
// ticker is stopped.
func (m *Manual) Fire(ctx context.Context, d time.Duration, at time.Time) error {
	for {
		m.mu.Lock()
		t, made := m.tickers[d], m.made
		m.mu.Unlock()
		if t != nil {
			select {
			case t.c <- at:
				return nil
			case <-t.stopped:
				return fmt.Errorf("clock: the ticker of period %s was stopped", d)
			case <-ctx.Done():
				return fmt.Errorf("clock: tick of period %s not taken: %w", d, ctx.Err())
			}
		}
		select {
		case <-made:
		case <-ctx.Done():
			return fmt.Errorf("clock: no ticker of period %s: %w", d, ctx.Err())
		}
	}
}

type manualTicker struct {
	c       chan time.Time
	once    sync.Once
	stopped chan struct{}
}

func (t *manualTicker) C() <-chan time.Time { return t.c }
func (t *manualTicker) Stop()               { t.once.Do(func() { close(t.stopped) }) }
