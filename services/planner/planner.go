// Package planner is rehome's planner: the single writer of the placement map
// and of object manifests, and the brain of repair. It is level-triggered:
// the repair queue is derived from the placement map and node liveness every
// time they change, so a lost event, a crash or a restart loses no work.
//
// It watches the nodes, liveness and placement buckets and the heartbeats,
// answers the control calls (allocate, commit, delete, status, heal status),
// issues copy tasks on the work queue within per-node and global throttles,
// records verified copies from mover results, and reports progress.
package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Config tunes the planner. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// TickInterval is how often the repair queue is planned (default 250 ms);
	// a liveness change plans at once.
	TickInterval time.Duration
	// PerNodeIn bounds copies writing to one node at once (default 4).
	PerNodeIn int
	// PerNodeOut bounds copies reading from one node at once (default 4).
	PerNodeOut int
	// MaxInFlight bounds copies in flight cluster-wide (default 64).
	MaxInFlight int
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
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		TickInterval:      250 * time.Millisecond,
		PerNodeIn:         4,
		PerNodeOut:        4,
		MaxInFlight:       64,
		TaskTimeout:       2 * time.Minute,
		StallAfter:        60 * time.Second,
		ProgressInterval:  time.Second,
		AllocationTTL:     60 * time.Second,
		MaxAllocateShards: 100000,
	}
}

// withDefaults fills zero fields and rejects negative ones.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	durs := []struct {
		v   *time.Duration
		def time.Duration
		n   string
	}{{&c.TickInterval, d.TickInterval, "TickInterval"}, {&c.TaskTimeout, d.TaskTimeout, "TaskTimeout"},
		{&c.StallAfter, d.StallAfter, "StallAfter"}, {&c.ProgressInterval, d.ProgressInterval, "ProgressInterval"},
		{&c.AllocationTTL, d.AllocationTTL, "AllocationTTL"}}
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
		{&c.MaxInFlight, d.MaxInFlight, "MaxInFlight"}, {&c.MaxAllocateShards, d.MaxAllocateShards, "MaxAllocateShards"}}
	for _, f := range ints {
		if *f.v < 0 {
			return c, fmt.Errorf("planner config: %s is negative", f.n)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return c, nil
}

// opTimeout bounds one bus round trip.
const opTimeout = 10 * time.Second

// Service is a running planner. Build it with New, then call Run once.
type Service struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	now func() time.Time
	reg *prometheus.Registry
	m   *metrics

	mu sync.Mutex // guards v
	v  *view

	kvNodes, kvLive, kvPlace, kvObjects jetstream.KeyValue
	tasks                               jetstream.Stream

	kick   chan struct{} // plan now
	ctlSem chan struct{} // bounds concurrent mutating control calls

	placeSeen atomic.Uint64  // highest placement revision the view has applied
	ctlWG     sync.WaitGroup // control calls running on their own goroutines
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
	return &Service{
		cfg: cfg, nc: nc, js: js, log: log, now: now, reg: reg, m: newMetrics(reg),
		v: newView(), kick: make(chan struct{}, 1), ctlSem: make(chan struct{}, 16),
	}, nil
}

// Registry returns the planner's own metrics registry.
func (s *Service) Registry() *prometheus.Registry { return s.reg }

func (s *Service) limits() limits {
	return limits{perNodeIn: s.cfg.PerNodeIn, perNodeOut: s.cfg.PerNodeOut, maxInFlight: s.cfg.MaxInFlight}
}

// plan asks the loop to plan at once (non-blocking).
func (s *Service) plan() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Service) malformed(subject string, err error) {
	s.m.malformed.WithLabelValues(subject).Inc()
	s.log.Debug("dropped malformed input", "subject", subject, "err", err)
}

// Run loads the cluster view, then serves control calls, consumes mover
// results and plans repairs until ctx is cancelled (then it returns nil). It
// returns an error only when it cannot work (buckets missing, bus gone).
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
	}{{s.kvNodes, bus.BucketNodes}, {s.kvLive, bus.BucketLiveness}, {s.kvPlace, bus.BucketPlacement}}
	ws := make([]jetstream.KeyWatcher, len(watches))
	for i, w := range watches {
		kw, err := w.kv.WatchAll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch %s: %w", w.name, err)
		}
		defer func() { _ = kw.Stop() }()
		ws[i] = kw
	}

	// Initial values: nothing is planned or answered before all three are in.
	s.mu.Lock()
	s.v.loading = true
	s.mu.Unlock()
	loaded := make([]bool, len(ws))
	for !allTrue(loaded) {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-ws[0].Updates():
			err = s.initial(0, e, ok, loaded)
		case e, ok := <-ws[1].Updates():
			err = s.initial(1, e, ok, loaded)
		case e, ok := <-ws[2].Updates():
			err = s.initial(2, e, ok, loaded)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	s.seedHeartbeats(ctx)
	if err := s.seedFlights(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.mu.Lock()
	s.v.loading = false
	s.v.rescan()
	t := s.v.totals()
	s.m.rescanSeconds.Set(s.v.rescanDur.Seconds())
	s.mu.Unlock()
	s.log.Info("planner view loaded", "shards", t.shards, "objects", t.objects,
		"under_replicated", t.underReplicated, "lost", t.lost, "in_flight", t.inFlight)

	subs, err := s.serveControl(ctx)
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		s.ctlWG.Wait() // let calls under way answer
	}()
	if err != nil {
		return err
	}
	cc, err := s.consumeResults(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer cc.Stop()

	tick := time.NewTicker(s.cfg.TickInterval)
	defer tick.Stop()
	prog := time.NewTicker(s.cfg.ProgressInterval)
	defer prog.Stop()
	s.tick(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-ws[0].Updates():
			err = s.update(bus.BucketNodes, e, ok)
		case e, ok := <-ws[1].Updates():
			err = s.update(bus.BucketLiveness, e, ok)
		case e, ok := <-ws[2].Updates():
			err = s.update(bus.BucketPlacement, e, ok)
		case <-s.kick:
			s.tick(ctx)
		case <-tick.C:
			s.tick(ctx)
		case <-prog.C:
			s.publishProgress(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
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

var bucketOf = []string{bus.BucketNodes, bus.BucketLiveness, bus.BucketPlacement}

// initial applies one entry of the initial load of watch i.
func (s *Service) initial(i int, e jetstream.KeyValueEntry, ok bool, loaded []bool) error {
	if !ok {
		return fmt.Errorf("watch %s closed during the initial load", bucketOf[i])
	}
	if e == nil {
		loaded[i] = true
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
	}{{bus.BucketNodes, &s.kvNodes}, {bus.BucketLiveness, &s.kvLive}, {bus.BucketPlacement, &s.kvPlace}, {bus.BucketObjects, &s.kvObjects}} {
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
	return nil
}

// apply folds one KV entry into the view; it reports whether a node's
// liveness changed (plan at once).
func (s *Service) apply(bucket string, e jetstream.KeyValueEntry) bool {
	key := e.Key()
	del := e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
	s.mu.Lock()
	defer s.mu.Unlock()
	switch bucket {
	case bus.BucketNodes:
		if del {
			s.v.removeNode(key)
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
		if err := s.v.setNode(n); err != nil {
			s.malformed(bucket, err)
		}
		return s.v.needRescan
	case bus.BucketLiveness:
		if del {
			return s.v.clearLiveness(key)
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
		changed, err := s.v.setLiveness(l)
		if err != nil {
			s.malformed(bucket, err)
		}
		if changed {
			s.log.Info("node state changed", "node", l.Node, "state", l.State, "since", l.Since)
		}
		return changed
	case bus.BucketPlacement:
		defer s.placeSeen.Store(max(s.placeSeen.Load(), e.Revision()))
		if del {
			s.v.removePlacement(key)
			return false
		}
		var p model.Placement
		if err := decodeRecord(e.Value(), &p); err != nil {
			s.malformed(bucket, err)
			return false
		}
		if err := p.Validate(); err != nil || p.Shard != key {
			s.malformed(bucket, fmt.Errorf("placement %q: %v", key, err))
			return false
		}
		if err := s.v.upsertPlacement(p); err != nil {
			s.malformed(bucket, err)
		}
	}
	return false
}

// decodeRecord unmarshals a KV record.
func decodeRecord(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w record: %w", model.ErrInvalid, err)
	}
	return nil
}

func validLiveness(l model.Liveness, key string) error {
	if l.V != model.Version {
		return fmt.Errorf("%w liveness %q: version %d", model.ErrInvalid, key, l.V)
	}
	if err := model.ValidateNodeID(l.Node); err != nil {
		return err
	}
	if l.Node != key {
		return fmt.Errorf("%w liveness %q names node %q", model.ErrInvalid, key, l.Node)
	}
	switch l.State {
	case model.StateUp, model.StateSuspect, model.StateDown, model.StateMaintenance:
		return nil
	}
	return fmt.Errorf("%w liveness %q: state %q", model.ErrInvalid, key, l.State)
}

// onHeartbeat records a node's usage (core subscription callback).
func (s *Service) onHeartbeat(msg *nats.Msg) {
	var hb event.Heartbeat
	if err := event.Decode(msg.Data, &hb); err != nil || hb.Node != event.LastToken(msg.Subject) {
		s.malformed(strings.TrimSuffix(event.HeartbeatPrefix, "."), fmt.Errorf("heartbeat on %s: %v", msg.Subject, err))
		return
	}
	s.mu.Lock()
	s.v.heartbeat(hb.Node, hb.UsedBytes, hb.CapacityBytes, s.now())
	s.mu.Unlock()
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
	for i := range s.v.nodes {
		if s.v.nodes[i].registered && s.v.nodes[i].hbAt.IsZero() {
			ids = append(ids, s.v.nodes[i].id)
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
		if r, ok := s.v.nodeIdx[id]; ok && s.v.nodes[r].hbAt.IsZero() {
			s.v.heartbeat(id, hb.UsedBytes, hb.CapacityBytes, m.Time)
		}
		s.mu.Unlock()
	}
}
