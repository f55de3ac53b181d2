// Package planner is rehome's planner: the single writer of the placement map
// and of object manifests, and the brain of repair. It is level-triggered:
// the repair queue is derived from the placement map and node liveness every
// time they change, so a lost event, a crash or a restart loses no work.
//
// It watches the nodes, liveness and placement buckets, the heal switch and
// the heartbeats, answers the control calls (allocate, commit, delete,
// status with the what-if risk, heal status, heal of a node, heal plan),
// issues copy tasks (replicated shards) and rebuild tasks (erasure-coded
// stripes: one task reconstructs all the missing pieces of a stripe from K
// survivors) on the work queue, most-at-risk first on one scale (copies or
// pieces beyond the minimum) within per-node, global and byte throttles,
// records verified copies and pieces from mover results, re-plans failures
// with backoff, trims surplus copies, and reports progress. It heals nodes in
// place: a node's inventory (read over the bus) or its corrupt reports show
// copies the map lists and its disk lacks; those are rebuilt onto that node
// itself, or dropped from the map when already whole elsewhere (inplace.go).
// It deletes orphaned copies: shards on a node's disk the map does not know,
// older than a grace, unless too much of the node looks orphaned (orphans.go).
// Several planners may run: one acts (a lease in JetStream KV), the others
// keep their view warm and take over when it stops renewing the lease.
package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"go.opentelemetry.io/otel/trace"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rehome/rehome/shared/telemetry"

	"golang.org/x/time/rate"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/clock"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/listing"
	"github.com/rehome/rehome/shared/model"
)

// Config tunes the planner. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// ID names this planner in the lease (default hostname-pid). Planners
	// sharing a bus must have distinct ids.
	ID string
	// TracerProvider makes the plan and commit spans (nil: the global one).
	TracerProvider trace.TracerProvider
	// LeaseTTL is how long the planner lease lasts without renewal (default
	// and maximum bus.LeaseTTL); it is renewed every LeaseTTL/3. A standby
	// takes over at most about LeaseTTL after the acting planner stopped
	// renewing (at once when it shut down cleanly).
	LeaseTTL time.Duration
	// Ticks makes the tickers of the service loop (planning, progress); nil
	// is the wall clock. Tests pass a clock.Manual to fire ticks one by one.
	Ticks clock.Source
	// TickInterval is how often the repair queue is planned (default 250 ms);
	// a liveness change or a task result plans at once (after PlanDebounce).
	TickInterval time.Duration
	// PlanDebounce gathers the triggers of an immediate planning round (task
	// results, liveness changes) for this long (default 20 ms).
	PlanDebounce time.Duration
	// PerNodeIn bounds copies writing to one node at once (default 2).
	PerNodeIn int
	// PerNodeOut bounds copies reading from one node at once (default 2); a
	// surplus trim deleting from a node takes one of these slots too. A shard
	// with a single live copy may exceed PerNodeIn and PerNodeOut by one.
	PerNodeOut int
	// MaxInFlight bounds copies and trims in flight cluster-wide (default 64).
	MaxInFlight int
	// Batch is the most shards (core.BatchShardMax bytes or less, at most
	// core.BatchBytesMax in all) of one source -> target pair one copy task
	// carries (default 8; 1: one shard per task). A batch takes one slot of PerNodeIn, PerNodeOut and
	// MaxInFlight; MaxBytesPerSec counts each shard's bytes.
	Batch int
	// MaxBytesPerSec caps the bytes of copies admitted per second
	// cluster-wide (default 0: no cap). A shard larger than one second's
	// worth is admitted whole once the cap allows.
	MaxBytesPerSec int64
	// MaxFill skips repair targets whose disk (heartbeat used bytes, or the
	// map's if larger, plus copies in flight and this shard) would exceed
	// this share of capacity (default 0.9; 1 = up to the capacity).
	MaxFill float64
	// BalanceBand is how far (a share of capacity: 0.05 is 5 percentage
	// points) a node's fill may stray from the mean before the rebalancer
	// moves copies (default 0.05; 0 turns rebalancing off).
	BalanceBand float64
	// Placement is how new replicated shards are placed: PlacementRandom
	// (default: the least filled nodes, a per-shard hash breaking ties, so
	// nearly every group of nodes shares some shard) or PlacementCopyset
	// (copysets: a few fixed groups of RF nodes, one rack each, and repairs
	// kept inside them; see placement.Copysets). Erasure-coded stripes are
	// placed the same way under both.
	Placement string
	// ScatterWidth is, under copyset placement, about how many other nodes
	// share shards with any one node (default 10): lower loses data less
	// often when many nodes fail at once and restores a node more slowly.
	ScatterWidth int
	// MaxAttempts is how many failed attempts a shard's repair gets before
	// it is reported on rehome.repair.failed (final) and parked (default 5).
	MaxAttempts int
	// RetryLater is how long a parked shard waits before a new round of
	// attempts starts at attempt 1 (default 1 min). Nothing is ever dropped.
	RetryLater time.Duration
	// TaskTimeout is how long a task may go without a result before it is
	// re-planned, unless it still waits in the work queue (default 2 min).
	TaskTimeout time.Duration
	// StallAfter reports a stall when work remains and nothing was verified
	// for this long (default 60 s).
	StallAfter time.Duration
	// ProgressInterval is the period of rehome.heal.progress (default 1 s).
	ProgressInterval time.Duration
	// AllocationTTL is how long allocated bytes count as pending on their
	// nodes when no commit comes (default 60 s).
	AllocationTTL time.Duration
	// MaxAllocateShards bounds the shards of one allocate call (default 100000).
	MaxAllocateShards int
	// AutoHeal checks a node's inventory against the map, and rebuilds in
	// place what it lacks, when a node the map lists boots anew while live
	// (in maintenance, or back inside the grace), when a down node comes
	// back (before any of its copies is trimmed against), and when this
	// planner starts acting. DefaultConfig sets it; a zero Config leaves it
	// off (then only `rehome heal --node` checks).
	AutoHeal bool
	// OrphanScan is how often the acting planner sweeps every up node's
	// inventory for orphaned copies (shards the map does not know) and
	// deletes those older than OrphanGrace; a node back from down is swept
	// too (see orphans.go). DefaultConfig sets 10 min; 0 turns the
	// collection off.
	OrphanScan time.Duration
	// OrphanGrace is how old an orphaned copy's file must be before it is
	// deleted (default 1 h): writes of objects not yet committed are younger.
	OrphanGrace time.Duration
	// OrphanMaxShare holds a node's sweep (nothing deleted, counted and
	// logged) when more than this share of its inventory is unknown to the
	// map (default 0.2).
	OrphanMaxShare float64
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ID:                defaultID(),
		LeaseTTL:          bus.LeaseTTL,
		TickInterval:      250 * time.Millisecond,
		PlanDebounce:      2 * time.Millisecond,
		PerNodeIn:         2,
		PerNodeOut:        2,
		MaxInFlight:       64,
		Batch:             8,
		MaxFill:           0.9,
		BalanceBand:       0.05,
		Placement:         PlacementRandom,
		ScatterWidth:      10,
		MaxAttempts:       5,
		RetryLater:        time.Minute,
		TaskTimeout:       2 * time.Minute,
		StallAfter:        60 * time.Second,
		ProgressInterval:  time.Second,
		AllocationTTL:     60 * time.Second,
		MaxAllocateShards: 100000,
		AutoHeal:          true,
		OrphanScan:        10 * time.Minute,
		OrphanGrace:       time.Hour,
		OrphanMaxShare:    0.2,
	}
}

// defaultID is hostname-pid, reduced to the characters of a node id.
func defaultID() string {
	host, _ := os.Hostname()
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host)
	if id == "" {
		id = "planner"
	}
	return id + "-" + strconv.Itoa(os.Getpid())
}

// withDefaults fills zero fields and rejects negative ones.
// Validate reports the first invalid field of c (zero fields take their
// defaults), so a command can refuse bad flags before it connects.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.ID == "" {
		c.ID = d.ID
	}
	durs := []struct {
		v   *time.Duration
		def time.Duration
		n   string
	}{{&c.TickInterval, d.TickInterval, "TickInterval"}, {&c.TaskTimeout, d.TaskTimeout, "TaskTimeout"},
		{&c.StallAfter, d.StallAfter, "StallAfter"}, {&c.ProgressInterval, d.ProgressInterval, "ProgressInterval"},
		{&c.AllocationTTL, d.AllocationTTL, "AllocationTTL"}, {&c.LeaseTTL, d.LeaseTTL, "LeaseTTL"},
		{&c.PlanDebounce, d.PlanDebounce, "PlanDebounce"}, {&c.RetryLater, d.RetryLater, "RetryLater"},
		{&c.OrphanGrace, d.OrphanGrace, "OrphanGrace"}}
	for _, f := range durs {
		if *f.v < 0 {
			return c, fmt.Errorf("planner config: %s is negative", f.n)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	ints := []struct {
		v   *int
		def int
		n   string
	}{{&c.PerNodeIn, d.PerNodeIn, "PerNodeIn"}, {&c.PerNodeOut, d.PerNodeOut, "PerNodeOut"},
		{&c.MaxInFlight, d.MaxInFlight, "MaxInFlight"}, {&c.Batch, d.Batch, "Batch"}, {&c.MaxAllocateShards, d.MaxAllocateShards, "MaxAllocateShards"},
		{&c.MaxAttempts, d.MaxAttempts, "MaxAttempts"}, {&c.ScatterWidth, d.ScatterWidth, "ScatterWidth"}}
	for _, f := range ints {
		if *f.v < 0 {
			return c, fmt.Errorf("planner config: %s is negative", f.n)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	switch {
	case c.Batch > event.MaxBatch:
		return c, fmt.Errorf("planner config: Batch %d above %d", c.Batch, event.MaxBatch)
	case c.MaxBytesPerSec < 0:
		return c, errors.New("planner config: MaxBytesPerSec is negative")
	case !(c.MaxFill >= 0 && c.MaxFill <= 1): // NaN too
		return c, fmt.Errorf("planner config: MaxFill %.2f outside 0-1", c.MaxFill)
	case c.MaxFill == 0:
		c.MaxFill = d.MaxFill
	}
	switch {
	case c.OrphanScan < 0:
		return c, errors.New("planner config: OrphanScan is negative")
	case !(c.OrphanMaxShare >= 0 && c.OrphanMaxShare <= 1):
		return c, fmt.Errorf("planner config: OrphanMaxShare %.2f outside 0-1", c.OrphanMaxShare)
	case c.OrphanMaxShare == 0:
		c.OrphanMaxShare = d.OrphanMaxShare
	}
	switch c.Placement {
	case "":
		c.Placement = d.Placement
	case PlacementRandom, PlacementCopyset:
	default:
		return c, fmt.Errorf("planner config: placement %q: want %s or %s", c.Placement, PlacementRandom, PlacementCopyset)
	}
	if c.LeaseTTL < minLeaseTTL {
		return c, fmt.Errorf("planner config: LeaseTTL %s below %s", c.LeaseTTL, minLeaseTTL)
	}
	if c.LeaseTTL > bus.LeaseTTL {
		return c, fmt.Errorf("planner config: LeaseTTL %s above the lease bucket's TTL %s", c.LeaseTTL, bus.LeaseTTL)
	}
	if err := model.ValidateNodeID(c.ID); err != nil {
		return c, fmt.Errorf("planner config: ID: %w", err)
	}
	return c, nil
}

// The placements of Config.Placement.
const (
	PlacementRandom  = "random"
	PlacementCopyset = "copyset"
)

// minLeaseTTL is the shortest lease: a renewal (one KV round trip) must fit
// in a third of it.
const minLeaseTTL = 300 * time.Millisecond

// opTimeout bounds one bus round trip.
const opTimeout = 10 * time.Second

// Service is a running planner. Build it with New, then call Run once.
type Service struct {
	cfg      Config
	copysets copysetCache // under s.mu
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	tracer   trace.Tracer
	now      func() time.Time
	reg      *prometheus.Registry
	m        *metrics

	mu    sync.Mutex // guards v and bytes
	v     *core.View
	bytes *rate.Limiter // copy bytes admitted per second (nil: no cap)

	kvNodes, kvLive, kvPlace, kvObjects, kvCtl jetstream.KeyValue
	places                                     mapStore // kvPlace, for writes
	tasks                                      taskQueue
	pub                                        publisher
	lease                                      *lease

	sw      switchState // the heal switch (guarded by mu)
	rbsw    switchState // the rebalancer's switch (guarded by mu)
	orphans orphanState // orphan collection (guarded by mu)
	checks  checks      // serialises the inventory checks of each node

	kick   chan struct{} // plan now
	ctlSem chan struct{} // bounds concurrent mutating control calls

	acting    atomic.Bool   // between startActing and stopActing
	loaded    atomic.Bool   // the view's initial load is done
	placeSeen atomic.Uint64 // highest placement revision the view has applied
	// indexer keeps the listing index while acting (nil while standing by).
	indexer atomic.Pointer[listing.Indexer]
	// snap is the latest snapshot the read-only calls answer from
	// (snapshot.go).
	snap  atomic.Pointer[viewSnapshot]
	ctlWG sync.WaitGroup // control calls running on their own goroutines
}

// New builds a planner on a NATS connection whose streams and buckets exist
// (bus.Ensure). now is its clock (time.Now in production). It does no I/O.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, now func() time.Time) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil {
		return nil, errors.New("planner: a NATS connection and JetStream are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	reg := prometheus.NewRegistry()
	s := &Service{
		cfg: cfg, nc: nc, js: js, log: log.With("planner", cfg.ID), now: now, reg: reg, m: newMetrics(reg),
		tracer: telemetry.Provider(cfg.TracerProvider).Tracer("github.com/rehome/rehome/services/planner"),
		v: core.NewView(now, core.Policy{MaxAttempts: cfg.MaxAttempts, RetryLater: cfg.RetryLater, AutoHeal: cfg.AutoHeal,
			Copysets: cfg.Placement == PlacementCopyset}),
		kick: make(chan struct{}, 1), ctlSem: make(chan struct{}, 16),
		pub: jsPublisher{js},
	}
	s.v.DeferMerges = true // a verdict sorts its newly short shards without the lock (apply)
	if cfg.MaxBytesPerSec > 0 {
		burst := int(min(cfg.MaxBytesPerSec, math.MaxInt32))
		s.bytes = rate.NewLimiter(rate.Limit(cfg.MaxBytesPerSec), burst)
	}
	return s, nil
}

// syncLease makes acting follow the lease: it stops acting when the lease is
// lost or was re-taken under a new term (another planner may have acted in
// between, so it starts afresh), and starts acting when the lease is held.
// A failure to start gives the lease back; only ctx ending is returned.
func (s *Service) syncLease(ctx context.Context, act *acting) (*acting, error) {
	held := s.lease.held(s.now())
	if act != nil && (!held || s.lease.term.Load() != act.term) {
		s.stopActing(act, false)
		act = nil
	}
	if held && act == nil {
		var err error
		act, err = s.startActing(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			s.log.Warn("could not start acting; giving the lease back", "err", err)
			s.lease.drop()
			return nil, nil
		}
	}
	return act, nil
}

// Registry returns the planner's own metrics registry.
func (s *Service) Registry() *prometheus.Registry { return s.reg }

// Loaded reports whether the view's initial load is done: from then on the
// planner can act (or take over) at once. Safe for concurrent use.
func (s *Service) Loaded() bool { return s.loaded.Load() }

// Acting reports whether this planner holds the lease and acts now (safe
// for concurrent use).
func (s *Service) Acting() bool { return s.acting.Load() }

func (s *Service) limits() core.Limits {
	return core.Limits{PerNodeIn: s.cfg.PerNodeIn, PerNodeOut: s.cfg.PerNodeOut, MaxInFlight: s.cfg.MaxInFlight,
		MaxFill: s.cfg.MaxFill, Bytes: s.bytes, Paused: s.sw.sw.Paused, Batch: s.cfg.Batch}
}

// plan asks the loop to plan at once (non-blocking).
func (s *Service) plan() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// malformed counts an input dropped under subject (or bucket) and the
// reason err gives (event.Reason).
func (s *Service) malformed(subject string, err error) {
	reason := event.Reason(err)
	s.m.malformed.WithLabelValues(subject, reason).Inc()
	s.log.Debug("dropped rejected input", "subject", subject, "reason", reason, "err", err)
}

// Run loads the cluster view and the heal switch and keeps them current,
// and competes for the planner lease: while it holds the lease it serves
// control calls, consumes mover results and corrupt reports, checks node
// inventories, plans repairs and reports progress; otherwise it stands by
// with its view warm, ready to take over. It blocks until ctx is cancelled,
// then stops acting (draining results), releases the lease and returns nil.
// It returns an error only when it cannot work (buckets missing, bus gone).
func (s *Service) Run(ctx context.Context) error {
	if err := s.open(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	hbSub, err := s.nc.Subscribe(event.HeartbeatPrefix+"*", s.onHeartbeat)
	if err != nil {
		return fmt.Errorf("subscribe heartbeats: %w", err)
	}
	defer func() { _ = hbSub.Unsubscribe() }()

	watches := []struct {
		kv   jetstream.KeyValue
		name string
	}{{s.kvNodes, bus.BucketNodes}, {s.kvLive, bus.BucketLiveness}, {s.kvPlace, bus.BucketPlacement}, {s.kvCtl, bus.BucketControl}}
	ws := make([]jetstream.KeyWatcher, len(watches))
	for i, w := range watches {
		var kw jetstream.KeyWatcher
		if w.kv == s.kvCtl {
			kw, err = w.kv.WatchFiltered(ctx, controlWatchKeys())
		} else {
			kw, err = w.kv.WatchAll(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch %s: %w", w.name, err)
		}
		defer func() { _ = kw.Stop() }()
		ws[i] = kw
	}

	// Initial values: nothing is planned or answered before all are in.
	s.mu.Lock()
	s.v.Loading = true
	s.mu.Unlock()
	loaded := make([]bool, len(ws))
	restoreGC := relaxGCForLoad()
	defer restoreGC() // also when the load ends early (idempotent)
	for !allTrue(loaded) {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-ws[0].Updates():
			err = s.initial(0, e, ok, loaded)
		case e, ok := <-ws[1].Updates():
			err = s.initial(1, e, ok, loaded)
		case e, ok := <-ws[placementWatch].Updates():
			err = s.initialPlacements(e, ok, ws[placementWatch].Updates(), loaded)
		case e, ok := <-ws[3].Updates():
			err = s.initial(3, e, ok, loaded)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	restoreGC()
	s.seedHeartbeats(ctx)
	s.mu.Lock()
	start := time.Now()
	s.v.Loading = false
	s.v.Rescan()
	s.m.rescanSeconds.Set(time.Since(start).Seconds())
	t := s.v.Totals()
	paused := s.sw.sw.Paused
	s.mu.Unlock()
	s.loaded.Store(true)
	s.log.Info("planner view loaded", "shards", t.Shards, "objects", t.Objects,
		"under_replicated", t.UnderReplicated, "lost", t.Lost, "heal_paused", paused)

	// The lease: its own goroutine renews it or tries to take it, and
	// signals every change of hands.
	leaseCtx, stopLease := context.WithCancel(ctx)
	leaseChanged := make(chan struct{}, 1)
	var leaseWG sync.WaitGroup
	leaseWG.Go(func() { s.lease.run(leaseCtx, leaseChanged) })
	var act *acting
	defer func() {
		if act != nil {
			s.stopActing(act, true)
		}
		stopLease()
		leaseWG.Wait()
		s.lease.release()
	}()

	ticks := s.cfg.Ticks
	if ticks == nil {
		ticks = clock.Wall
	}
	tick := ticks.NewTicker(s.cfg.TickInterval)
	defer tick.Stop()
	prog := ticks.NewTicker(s.cfg.ProgressInterval)
	defer prog.Stop()
	soon := time.NewTimer(time.Hour) // debounced planning, or the byte cap's wait
	soon.Stop()
	armed := false
	arm := func(d time.Duration) {
		if !armed {
			soon.Reset(d)
			armed = true
		}
	}
	plan := func() {
		if act == nil {
			return
		}
		if !s.lease.held(s.now()) || s.lease.term.Load() != act.term {
			s.stopActing(act, false)
			act = nil
			s.plan() // start again at once if the lease was taken again meanwhile
			return
		}
		if wait := s.tick(ctx, act); wait > 0 {
			arm(wait)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-ws[0].Updates():
			err = s.update(bus.BucketNodes, e, ok)
		case e, ok := <-ws[1].Updates():
			err = s.update(bus.BucketLiveness, e, ok)
		case e, ok := <-ws[placementWatch].Updates():
			err = s.updatePlacements(e, ok, ws[placementWatch].Updates())
		case e, ok := <-ws[3].Updates():
			err = s.updateSwitch(ctx, e, ok)
		case <-leaseChanged:
			act, err = s.syncLease(ctx, act)
		case <-s.kick:
			if act != nil {
				arm(s.cfg.PlanDebounce)
			}
		case <-soon.C:
			armed = false
			plan()
		case <-tick.C():
			// The lease may have lapsed and been taken again between two
			// changes the lease loop reports: reconcile on every tick too.
			if act, err = s.syncLease(ctx, act); err == nil {
				plan()
			}
		case <-prog.C():
			if act != nil && s.lease.held(s.now()) {
				s.publishProgress(ctx)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// acting is what a planner runs while it holds the lease.
type acting struct {
	term   uint64 // the lease term it acts in
	subs   []*nats.Subscription
	cons   jetstream.Consumer
	cc     jetstream.ConsumeContext
	cancel context.CancelFunc // ends result handling
	// gateUntil holds planning back, until then, while results handed to the
	// previous acting planner are still unacknowledged (they come back to
	// this one after the consumer's AckWait): re-planning those shards would
	// duplicate copies already made.
	gate       core.TakeoverGate
	gateLogged bool
	// bg runs the background inventory checks on bgCtx (cancelled with
	// result handling).
	bg    sync.WaitGroup
	bgCtx context.Context
}

// startActing takes over: forgets flights of an earlier term, re-reads the
// tasks still queued, answers control calls, consumes results and plans.
// On error the caller gives the lease back.
func (s *Service) startActing(ctx context.Context) (*acting, error) {
	s.log.Info("acquired the planner lease: acting", "id", s.cfg.ID)
	s.m.acting.Set(1)
	act := &acting{term: s.lease.term.Load()}
	s.mu.Lock()
	s.v.ClearFlights()
	// Copies another planner found lacking were known to it alone: check
	// every live node holding shards again (with AutoHeal).
	for i := range s.v.Nodes {
		if n := &s.v.Nodes[i]; n.Registered && n.Shards > 0 && n.EffState().Live() {
			s.v.WantReconcile(core.NodeRef(i))
		}
	}
	s.mu.Unlock()
	if err := s.seedFlights(ctx); err != nil {
		s.stopActing(act, false)
		return nil, err
	}
	s.acting.Store(true)
	s.publishSnapshot()
	subs, err := s.serveControl(ctx)
	act.subs = subs
	if err != nil {
		s.stopActing(act, false)
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	act.cancel = cancel
	act.bgCtx = rctx
	act.cons, act.cc, err = s.consumeResults(rctx)
	if err != nil {
		s.stopActing(act, false)
		return nil, err
	}
	ix := listing.NewIndexer(s.js, s.log)
	s.indexer.Store(ix)
	act.bg.Add(1)
	go func() {
		defer act.bg.Done()
		if err := ix.Run(rctx); err != nil && rctx.Err() == nil {
			s.log.Error("listing index stopped", "err", err)
		}
	}()
	act.gate.Close(s.now().Add(resultsAckWait + time.Second))
	if wait := s.tick(ctx, act); wait > 0 {
		s.plan()
	}
	return act, nil
}

// stopActing stops answering control calls and consuming results. A clean
// stop (shutdown) first finishes the results already received; a lost lease
// stops at once (unacknowledged results go to the next acting planner).
func (s *Service) stopActing(act *acting, clean bool) {
	s.acting.Store(false) // calls waiting to read their writes stop waiting
	for _, sub := range act.subs {
		_ = sub.Unsubscribe()
	}
	s.ctlWG.Wait() // let calls under way answer
	if act.cc != nil {
		if clean {
			act.cc.Drain()
			select {
			case <-act.cc.Closed():
			case <-time.After(5 * time.Second):
				act.cc.Stop()
			}
		} else {
			act.cc.Stop()
		}
	}
	if act.cancel != nil {
		act.cancel()
	}
	act.bg.Wait()
	s.indexer.Store(nil)
	s.m.acting.Set(0)
	s.m.inFlight.Set(0)
	s.acting.Store(false)
	if clean {
		s.log.Info("stopped acting: shutting down", "id", s.cfg.ID)
	} else {
		s.log.Warn("lost the planner lease: standing by", "id", s.cfg.ID, "reason", s.lease.lostReason())
	}
}

func allTrue(b []bool) bool {
	for _, x := range b {
		if !x {
			return false
		}
	}
	return true
}

var bucketOf = []string{bus.BucketNodes, bus.BucketLiveness, bus.BucketPlacement, bus.BucketControl}

// placementWatch is the placement bucket's index in bucketOf (and in Run's
// watches): its entries are applied in batches (placements.go).
const placementWatch = 2

// initial applies one entry of the initial load of watch i.
func (s *Service) initial(i int, e jetstream.KeyValueEntry, ok bool, loaded []bool) error {
	if !ok {
		return fmt.Errorf("watch %s closed during the initial load", bucketOf[i])
	}
	if e == nil {
		loaded[i] = true
		return nil
	}
	if bucketOf[i] == bus.BucketControl {
		s.applySwitch(e)
		s.applyRebalanceSwitch(e)
		s.applyNodeRecord(e)
		return nil
	}
	s.apply(bucketOf[i], e)
	return nil
}

// update applies one live watch entry.
func (s *Service) update(bucket string, e jetstream.KeyValueEntry, ok bool) error {
	if !ok {
		return fmt.Errorf("watch %s closed", bucket)
	}
	if e != nil && s.apply(bucket, e) {
		s.plan()
	}
	return nil
}

// open binds the buckets and the task stream.
func (s *Service) open(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{bus.BucketNodes, &s.kvNodes}, {bus.BucketLiveness, &s.kvLive}, {bus.BucketPlacement, &s.kvPlace},
		{bus.BucketObjects, &s.kvObjects}, {bus.BucketControl, &s.kvCtl}} {
		kv, err := s.js.KeyValue(ctx, b.name)
		if err != nil {
			return fmt.Errorf("open bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	st, err := s.js.Stream(ctx, bus.StreamTasks)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", bus.StreamTasks, err)
	}
	s.tasks = st
	s.places = s.kvPlace
	kv, err := s.js.KeyValue(ctx, bus.BucketLease)
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", bus.BucketLease, err)
	}
	s.lease = newLease(kv, s.cfg.ID, s.cfg.LeaseTTL, s.now, s.log)
	return nil
}

// apply folds one KV entry into the view; it reports whether to plan at
// once: a node's liveness changed, or a copy landed and freed its slots.
// A verdict's (or registration's) newly short shards are sorted into the
// repair queue in two halves around the sort (core.PendingMerge): the lock
// is held to decide and to merge, not to sort; both halves count as the
// entry's lock time.
func (s *Service) apply(bucket string, e jetstream.KeyValueEntry) bool {
	var (
		pend *core.PendingMerge
		held time.Duration
	)
	plan := s.applyEntry(bucket, e, &pend, &held)
	if pend != nil {
		pend.Sort()
		s.mu.Lock()
		start := time.Now()
		s.v.MergePending(pend)
		if s.acting.Load() {
			s.publishSnapshotLocked()
		}
		held += time.Since(start)
		s.mu.Unlock()
	}
	s.m.lockHeld.WithLabelValues(bucketOp(bucket)).Observe(held.Seconds())
	return plan
}

// applyEntry is apply under the lock: it leaves in *pend what the entry's
// refresh left to sort (see apply) and in *held the time it held the lock.
func (s *Service) applyEntry(bucket string, e jetstream.KeyValueEntry, pend **core.PendingMerge, held *time.Duration) bool {
	key := e.Key()
	del := e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
	s.mu.Lock()
	start := time.Now()
	defer func() {
		*pend = s.v.TakePending()
		if *pend == nil && s.acting.Load() && !s.v.Loading {
			s.publishSnapshotLocked() // a verdict or a registration: status shows it at once
		}
		*held = time.Since(start)
		s.mu.Unlock()
	}()
	switch bucket {
	case bus.BucketNodes:
		if del {
			s.v.RemoveNode(key)
			return true
		}
		var n model.Node
		if err := decodeRecord(e.Value(), &n); err != nil {
			s.malformed(bucket, err)
			return false
		}
		if err := n.Validate(); err != nil || n.ID != key {
			s.malformed(bucket, fmt.Errorf("node %q: %v", key, err))
			return false
		}
		asked, registered := false, false
		if r, ok := s.v.NodeIndex[n.ID]; ok {
			asked, registered = s.v.Nodes[r].NeedReconcile, s.v.Nodes[r].Registered
		}
		if err := s.v.SetNode(n); err != nil {
			s.malformed(bucket, err)
			return false
		}
		r := s.v.NodeIndex[n.ID]
		if !asked && s.v.Nodes[r].NeedReconcile {
			s.log.Info("node registered anew while the map lists it: checking its inventory", "node", n.ID, "boot_id", n.BootID)
			return true
		}
		return !registered || s.v.NeedRescan // a node (re)joined: plan
	case bus.BucketLiveness:
		if del {
			return s.v.ClearLiveness(key)
		}
		var l model.Liveness
		if err := decodeRecord(e.Value(), &l); err != nil {
			s.malformed(bucket, err)
			return false
		}
		if err := validLiveness(l, key); err != nil {
			s.malformed(bucket, err)
			return false
		}
		if !s.v.Loading && !s.v.KnowsNode(l.Node) {
			// A verdict on a node never registered nor in the map (during
			// the initial load, registrations may come after verdicts).
			s.malformed(bucket, fmt.Errorf("liveness: %w %s", event.ErrUnknownNode, l.Node))
			return false
		}
		changed, err := s.v.SetLiveness(l)
		if err != nil {
			s.malformed(bucket, err)
		}
		if changed {
			s.log.Info("node state changed", "node", l.Node, "state", l.State, "since", l.Since)
		}
		return changed
	}
	return false
}

// bucketOp names the lock-time series of a watch update of bucket.
func bucketOp(bucket string) string {
	switch bucket {
	case bus.BucketLiveness:
		return "verdict"
	case bus.BucketNodes:
		return "registration"
	case bus.BucketPlacement:
		return "placement"
	}
	return "control"
}

// decodeRecord unmarshals a KV record.
func decodeRecord(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w record: %w", model.ErrInvalid, err)
	}
	return nil
}

// validLiveness checks a liveness record (model.Liveness.Validate) and that
// its key names its node.
func validLiveness(l model.Liveness, key string) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if l.Node != key {
		return fmt.Errorf("%w: liveness %.64q names node %q", event.ErrSubjectMismatch, key, l.Node)
	}
	return nil
}

// onHeartbeat records a node's usage (core subscription callback).
func (s *Service) onHeartbeat(msg *nats.Msg) {
	start := time.Now()
	defer func() { s.m.handling.WithLabelValues("heartbeat").Observe(time.Since(start).Seconds()) }()
	var hb event.Heartbeat
	err := event.Decode(msg.Data, &hb)
	if err == nil {
		err = event.CheckSubjectNode(msg.Subject, hb.Node)
	}
	s.mu.Lock()
	if err == nil && !s.v.Loading && !s.v.KnowsNode(hb.Node) {
		err = fmt.Errorf("%w %s", event.ErrUnknownNode, hb.Node) // registrations come first
	}
	if err != nil {
		s.mu.Unlock()
		s.malformed(strings.TrimSuffix(event.HeartbeatPrefix, "."), fmt.Errorf("heartbeat on %s: %w", msg.Subject, err))
		return
	}
	s.v.Heartbeat(hb.Node, hb.UsedBytes, hb.CapacityBytes, s.now())
	accepts := s.v.DiskCondition(hb.Node, hb.Full, hb.ReadOnly)
	asked := s.v.BootSeen(hb.Node, hb.BootID)
	s.mu.Unlock()
	if accepts {
		s.log.Info("node accepts new shards again", "node", hb.Node)
		s.plan()
	}
	if asked {
		s.log.Info("node booted anew while the map lists it: checking its inventory", "node", hb.Node, "boot_id", hb.BootID)
		s.plan()
	}
}

// seedHeartbeats reads each registered node's last heartbeat from its
// stream, so status has usage before the next beat.
func (s *Service) seedHeartbeats(ctx context.Context) {
	st, err := s.js.Stream(ctx, bus.StreamHeartbeats)
	if err != nil {
		s.log.Warn("heartbeat stream", "err", err)
		return
	}
	s.mu.Lock()
	var ids []string
	for i := range s.v.Nodes {
		if s.v.Nodes[i].Registered && s.v.Nodes[i].HeartbeatAt.IsZero() {
			ids = append(ids, s.v.Nodes[i].ID)
		}
	}
	s.mu.Unlock()
	for _, id := range ids {
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		m, err := st.GetLastMsgForSubject(gctx, event.HeartbeatPrefix+id)
		cancel()
		if err != nil {
			continue
		}
		var hb event.Heartbeat
		if event.Decode(m.Data, &hb) != nil || hb.Node != id {
			continue
		}
		s.mu.Lock()
		if r, ok := s.v.NodeIndex[id]; ok && s.v.Nodes[r].HeartbeatAt.IsZero() {
			s.v.Heartbeat(id, hb.UsedBytes, hb.CapacityBytes, m.Time)
			s.v.DiskCondition(id, hb.Full, hb.ReadOnly)
			s.v.BootSeen(id, hb.BootID)
		}
		s.mu.Unlock()
	}
}
