package storage

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

const (
	// repairChunk is the most a repair stream moves between two checks of
	// the priority gate (and the pacing bucket's burst).
	repairChunk = ioBufSize
	// maxYield bounds how long a repair stream waits for the node's
	// foreground transfers to end before it moves one more chunk anyway, so
	// a steady stream of client requests slows repair down but never stops it.
	maxYield = 20 * time.Millisecond
	// DefaultRepairBusyWindow is how long after its last client transfer a
	// node still counts as serving clients.
	DefaultRepairBusyWindow = 500 * time.Millisecond
)

// priority serves a node's foreground shard transfers (GET and PUT of a
// shard without the repair class: clients' reads and writes) ahead of its
// repair streams (requests marked with shardapi.AsRepair: movers' reads,
// writes and checks):
//
//   - while a foreground transfer is in flight, a repair stream yields before
//     each chunk (at most repairChunk bytes) until none is, for up to
//     maxYield per chunk;
//   - while the node is busy (a foreground transfer in flight or one ended
//     within the busy window), repair streams are paced to a shared token
//     bucket of pace bytes per second, reads and writes each counted; with
//     no client traffic repair runs unpaced.
//
// Foreground requests never wait. A nil *priority lets everything through
// unpaced. Safe for concurrent use.
type priority struct {
	mu     sync.Mutex
	active int           // foreground transfers in flight
	idle   chan struct{} // closed when active drops to 0 (nil while 0)
	last   time.Time     // when a foreground transfer last began or ended

	window time.Duration
	lim    *rate.Limiter // nil: no pacing
	now    func() time.Time

	throttled prometheus.Counter
}

// newPriority returns the gate of a node pacing repair to pace bytes per
// second while busy (0: only yield, never pace), busy for window after its
// last client transfer, counting repair's waits in reg.
func newPriority(pace int64, window time.Duration, reg prometheus.Registerer) *priority {
	p := &priority{window: window, now: time.Now,
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_storage_repair_throttled_seconds_total",
			Help: "Time repair streams spent waiting behind client transfers (yielding or paced).",
		})}
	if pace > 0 {
		p.lim = rate.NewLimiter(rate.Limit(pace), repairChunk)
	}
	if reg != nil {
		reg.MustRegister(p.throttled)
	}
	return p
}

// serve marks a foreground transfer in flight until the returned func is called.
func (p *priority) serve() (done func()) {
	if p == nil {
		return func() {}
	}
	p.mu.Lock()
	if p.active == 0 {
		p.idle = make(chan struct{})
	}
	p.active++
	p.last = p.now()
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.active--
		p.last = p.now()
		if p.active == 0 {
			close(p.idle)
			p.idle = nil
		}
	}
}

// wait holds a repair stream before it moves n (≤ repairChunk) bytes: it
// yields to foreground transfers in flight, then takes n bytes from the
// pacing bucket if the node is busy. It returns early with ctx's error.
func (p *priority) wait(ctx context.Context, n int) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	start := p.now()
	waited := false
	defer func() {
		if waited {
			p.throttled.Add(p.now().Sub(start).Seconds())
		}
	}()
	if idle != nil {
		waited = true
		t := time.NewTimer(maxYield)
		defer t.Stop()
		select {
		case <-idle:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if p.lim == nil || !p.busy() {
		return nil
	}
	waited = true
	return p.lim.WaitN(ctx, min(n, repairChunk))
}

// busy reports whether a foreground transfer is in flight or ended within the window.
func (p *priority) busy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.active > 0 || (!p.last.IsZero() && p.now().Sub(p.last) < p.window)
}

// repairReader returns r read through the gate: each Read moves at most
// repairChunk bytes, after wait.
func (p *priority) repairReader(ctx context.Context, r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	return &gatedReader{ctx: ctx, r: r, p: p}
}

type gatedReader struct {
	ctx context.Context
	r   io.Reader
	p   *priority
}

func (g *gatedReader) Read(b []byte) (int, error) {
	if len(b) > repairChunk {
		b = b[:repairChunk]
	}
	if err := g.p.wait(g.ctx, len(b)); err != nil {
		return 0, err
	}
	return g.r.Read(b)
}
