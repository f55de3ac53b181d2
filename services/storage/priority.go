package storage

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rehome/rehome/shared/nice"
	"github.com/rehome/rehome/shared/shardapi"
	"golang.org/x/time/rate"
)

const (
	// repairChunk is the most a repair stream moves between two checks of
	// the priority gate (and the pacing bucket's burst).
	repairChunk = ioBufSize
	// DefaultRepairBusyWindow is how long after its last client transfer a
	// node still counts as serving clients.
	DefaultRepairBusyWindow = 500 * time.Millisecond
	// backgroundShare is the fraction of the repair floor that background
	// streams (rebalancing moves: nothing is at risk) get while the node
	// serves clients; idle, they run unpaced like repair.
	backgroundShare = 0.25
)

// priority serves a node's foreground shard transfers (GET and PUT of a
// shard without the repair class: clients' reads and writes) ahead of its
// repair streams (requests marked with shardapi.AsRepair: movers' reads,
// writes and checks): while the node is busy (a foreground transfer in
// flight or one ended within the busy window), repair streams are paced to a
// shared token bucket, before each chunk of at most repairChunk bytes, reads
// and writes each counted; with no client traffic repair runs unpaced. The
// bucket's rate adapts every paceTick to the clients' GET latency
// (paceController): cut while repair slows them down, raised while it does
// not, never below the floor. Background streams (rebalancing) are paced
// further while busy, to backgroundShare of the floor. (An earlier gate
// also held every repair chunk up to 20 ms while any client transfer was in
// flight: at a few hundred client reads per second that alone cut repair to
// an eighth of its rate.)
//
// Foreground requests never wait. A nil *priority lets everything through
// unpaced. Safe for concurrent use.
type priority struct {
	mu     sync.Mutex
	active int       // foreground transfers in flight
	last   time.Time // when a foreground transfer last began or ended

	window time.Duration
	lim    *rate.Limiter // nil: no pacing
	now    func() time.Time

	// bg paces background streams (rebalancing) further while busy, at
	// backgroundShare of the floor, after lim (nil with lim).
	bg *rate.Limiter

	// nice is the CPU priority (nice value) repair streams run at (0: the
	// process's own).
	nice int

	ctl      *paceController // sets lim's rate (nil with lim)
	paceFrom time.Time       // start of the current pacing window
	paceWin  paceWindow      // what the current window saw so far

	throttled prometheus.Counter
}

// newPriority returns the gate of a node pacing repair while busy at a rate
// that adapts to its clients' latency, never below floor bytes per second
// (0: never pace), busy for window after its last client transfer, running
// repair streams at nice level niceLevel (0: as the process), counting
// repair's waits in reg.
func newPriority(floor int64, window time.Duration, niceLevel int, reg prometheus.Registerer) *priority {
	p := &priority{window: window, now: time.Now, nice: niceLevel,
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_storage_repair_throttled_seconds_total",
			Help: "Time repair streams spent waiting behind client transfers (yielding or paced).",
		})}
	if floor > 0 {
		p.ctl = newPaceController(float64(floor))
		p.lim = rate.NewLimiter(rate.Limit(p.ctl.rate), repairChunk)
		p.bg = rate.NewLimiter(rate.Limit(float64(floor)*backgroundShare), repairChunk)
		p.paceWin.latencies = make([]time.Duration, 0, maxPaceSamples)
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
	p.active++
	p.last = p.now()
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.active--
		p.last = p.now()
	}
}

// observe records the latency of a client GET (to its first byte) for the
// pacing controller.
func (p *priority) observe(d time.Duration) {
	if p == nil || p.ctl == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.paceWin.latencies) < maxPaceSamples {
		p.paceWin.latencies = append(p.paceWin.latencies, d)
	}
	p.tickLocked()
}

// tickLocked ends the pacing window once it is paceTick old and has enough
// client reads to judge by (or none): the controller sets the bucket's rate
// from it. p.mu must be held.
func (p *priority) tickLocked() {
	now := p.now()
	if p.paceFrom.IsZero() {
		p.paceFrom = now
		return
	}
	if now.Sub(p.paceFrom) < paceTick || !p.paceWin.ready() {
		return
	}
	p.paceWin.span = now.Sub(p.paceFrom)
	p.lim.SetLimitAt(now, rate.Limit(p.ctl.next(p.paceWin)))
	p.paceFrom = now
	p.paceWin = paceWindow{latencies: p.paceWin.latencies[:0]}
}

// wait holds a repair stream before it moves n (≤ repairChunk) bytes: if the
// node is busy it takes n bytes from the pacing bucket, and a background
// stream (ctx marked shardapi.ClassBackground) from the background bucket
// too. It returns early with ctx's error.
func (p *priority) wait(ctx context.Context, n int) error {
	if p == nil || p.lim == nil {
		return nil
	}
	n = min(n, repairChunk)
	p.mu.Lock()
	p.paceWin.repair = true
	p.paceWin.moved += int64(n)
	p.tickLocked()
	p.mu.Unlock()
	if !p.busy() {
		return nil
	}
	start := p.now()
	defer func() { p.throttled.Add(p.now().Sub(start).Seconds()) }()
	if err := p.lim.WaitN(ctx, n); err != nil {
		return err
	}
	if shardapi.ClassOf(ctx) == shardapi.ClassBackground {
		return p.bg.WaitN(ctx, n)
	}
	return nil
}

// run runs the work of one repair stream, fn, at the gate's CPU priority
// (nice.Run): the kernel serves the node's clients first when both want a
// core. Blocking; returns fn's error.
func (p *priority) run(fn func() error) error {
	if p == nil {
		return fn()
	}
	return nice.Run(p.nice, fn)
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

// firstByte passes writes through to w and reports, once, how long after
// start the first one completed (a client GET's time to first byte).
type firstByte struct {
	w      io.Writer
	start  time.Time
	report func(time.Duration)
	done   bool
}

func (f *firstByte) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if !f.done {
		f.done = true
		f.report(time.Since(f.start))
	}
	return n, err
}
