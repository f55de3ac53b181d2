// Package mover executes repair tasks. Movers form a pool sharing one durable
// pull consumer (bus.MoverConsumer) on the work-queue stream bus.StreamTasks:
// each task (event.Task on rehome.repair.task.<target>) is streamed from a
// source storage node straight into its target, which verifies the checksum
// before it keeps anything, or deleted from its target, or, for an
// erasure-coded stripe (kind "rebuild"), rebuilt: K verified pieces are read
// from their holders, the missing pieces reconstructed and put on their
// targets, one event.Done per piece. Every outcome is
// reported as event.Done or event.Failed before the task leaves the queue; a
// task the mover terminates (malformed, failed permanently, or out of
// deliveries) is first republished, original payload and reason, as
// event.Dead on rehome.repair.dead.<target>.
package mover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/shardapi"
	"github.com/rehome/rehome/shared/telemetry"
)

// Config tunes one mover. Zero fields take their defaults (DefaultConfig).
type Config struct {
	// ID names this mover in logs (default "mover").
	ID string
	// Workers is how many tasks this mover executes at once; it also sizes
	// the client-side buffer of pulled tasks (default 4). A rebuild holds
	// its K pieces read and the pieces it rebuilds in memory (piece buffers
	// are recycled), so a mover needs about Workers x (K+M) x piece size.
	Workers int
	// AckWait is how long a task may go without news before the bus hands it
	// to another mover; a running copy reports progress every AckWait/3
	// (default 30 s).
	AckWait time.Duration
	// MaxDeliver is how many attempts a task gets before it is given up with
	// a final Failed event (default 20).
	MaxDeliver int
	// MaxAckPending caps the tasks delivered and not yet answered across all
	// movers of the pool, buffers included; every mover should use the same
	// value since they share the consumer (default 256).
	MaxAckPending int
	// Token is the storage API bearer token (default none).
	Token string
	// BackoffMin and BackoffMax bound the delay before a transiently failed
	// task is delivered again: BackoffMin doubling per attempt, at most
	// BackoffMax (defaults 250 ms and 10 s).
	BackoffMin time.Duration
	BackoffMax time.Duration
	// ShutdownGrace is how long tasks in flight may run on once Run's context
	// ends before they are aborted and handed back (default 5 s).
	ShutdownGrace time.Duration
	// TracerProvider receives the task spans (and, through the storage
	// client, their HTTP spans); nil (the default) uses otel's global
	// provider, which telemetry.Setup installs (a no-op when tracing is off).
	TracerProvider trace.TracerProvider
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ID:            "mover",
		Workers:       4,
		AckWait:       30 * time.Second,
		MaxDeliver:    20,
		MaxAckPending: 256,
		BackoffMin:    250 * time.Millisecond,
		BackoffMax:    10 * time.Second,
		ShutdownGrace: 5 * time.Second,
	}
}

// withDefaults fills zero fields and rejects negative ones.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.Workers < 0 || c.AckWait < 0 || c.MaxDeliver < 0 || c.MaxAckPending < 0 ||
		c.BackoffMin < 0 || c.BackoffMax < 0 || c.ShutdownGrace < 0 {
		return c, errors.New("mover config: negative workers, ack wait, max deliver, max ack pending, backoff or grace")
	}
	if c.ID == "" {
		c.ID = d.ID
	}
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.AckWait == 0 {
		c.AckWait = d.AckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = d.MaxDeliver
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = d.MaxAckPending
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = d.BackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = d.BackoffMax
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = d.ShutdownGrace
	}
	if c.BackoffMax < c.BackoffMin {
		return c, fmt.Errorf("mover config: backoff max %s below min %s", c.BackoffMax, c.BackoffMin)
	}
	if c.AckWait < 100*time.Millisecond {
		return c, fmt.Errorf("mover config: ack wait %s below 100ms", c.AckWait)
	}
	return c, nil
}

// Service is one mover of the pool. Create it with New and start it with Run.
type Service struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	log   *slog.Logger
	exec  executor
	nodes *directory
	m     *metrics
	// incidents and tracer put each task attempt in its incident's trace.
	incidents *incidents
	tracer    trace.Tracer
	now       func() time.Time
	own       *shardapi.Client // the storage client New made, if it made one
}

// New builds a mover. shards talks to the storage nodes: when nil, a client
// with cfg.Token is made; when cfg.Token is set it is used in place of the
// client's token. New does no I/O.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, shards *shardapi.Client, log *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil {
		return nil, errors.New("mover: a NATS connection and JetStream are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var own *shardapi.Client
	switch {
	case shards == nil:
		shards = shardapi.New(cfg.Token)
		own = shards
	case cfg.Token != "" && shards.Token != cfg.Token:
		c := *shards
		c.Token = cfg.Token
		shards = &c
	}
	log = log.With("mover", cfg.ID)
	m := newMetrics()
	nodes := newDirectory(log, func(err error) { m.malformed.WithLabelValues(malformedNode, event.Reason(err)).Inc() })
	return &Service{
		cfg:       cfg,
		nc:        nc,
		js:        js,
		log:       log,
		exec:      newExecutor(shards, nodes),
		nodes:     nodes,
		m:         m,
		incidents: newIncidents(log, func(err error) { m.malformed.WithLabelValues(malformedLiveness, event.Reason(err)).Inc() }),
		tracer:    telemetry.Provider(cfg.TracerProvider).Tracer(tracerName),
		now:       time.Now,
		own:       own,
	}, nil
}

// Registry returns the mover's own metrics registry (rehome_mover_*).
func (s *Service) Registry() *prometheus.Registry { return s.m.reg }

// Config returns the configuration in effect, defaults filled in.
func (s *Service) Config() Config { return s.cfg }

// Run executes tasks until ctx ends, then stops pulling, lets tasks in flight
// finish for up to ShutdownGrace (aborting and handing back the rest) and
// returns nil. It returns an error only if it cannot work: the task stream is
// missing or the NATS connection was closed under it.
func (s *Service) Run(ctx context.Context) error {
	// Tasks run on their own context so that shutdown can let them finish.
	workCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()

	ready := make(chan struct{})
	var bg sync.WaitGroup
	watchCtx, stopWatch := context.WithCancel(workCtx)
	defer func() { stopWatch(); bg.Wait() }()
	incidentsReady := make(chan struct{})
	bg.Go(func() { s.nodes.watch(watchCtx, s.js, ready) })
	bg.Go(func() { s.incidents.watch(watchCtx, s.js, incidentsReady) })
	loading := time.NewTimer(10 * time.Second)
	defer loading.Stop()
load:
	for _, w := range []struct {
		ready  <-chan struct{}
		bucket string
	}{{ready, bus.BucketNodes}, {incidentsReady, bus.BucketLiveness}} {
		select {
		case <-w.ready:
		case <-ctx.Done():
			return nil
		case <-loading.C:
			s.log.Warn("records not loaded yet; starting anyway", "bucket", w.bucket)
			break load
		}
	}

	sub, err := s.nc.QueueSubscribe(maxDeliveriesSubject, bus.MoverConsumer, func(m *nats.Msg) {
		s.giveUp(workCtx, m.Data)
	})
	if err != nil {
		return fmt.Errorf("subscribe to delivery advisories: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	s.log.Info("mover started", "workers", s.cfg.Workers, "ack_wait", s.cfg.AckWait, "max_deliver", s.cfg.MaxDeliver)
	var tasks sync.WaitGroup
	slots := make(chan struct{}, s.cfg.Workers)
	err = s.consume(ctx, workCtx, slots, &tasks)

	grace := time.AfterFunc(s.cfg.ShutdownGrace, abort)
	tasks.Wait()
	grace.Stop()
	if s.own != nil {
		s.own.HTTP.CloseIdleConnections()
	}
	if err != nil {
		return err
	}
	s.log.Info("mover stopped")
	return nil
}

// consume (re)creates the consumer and pulls from it until ctx ends, starting
// one goroutine per task while a slot is free.
func (s *Service) consume(ctx, workCtx context.Context, slots chan struct{}, tasks *sync.WaitGroup) error {
	for {
		cons, err := s.consumer(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		err = s.pull(ctx, workCtx, cons, slots, tasks)
		switch {
		case ctx.Err() != nil:
			return nil
		case s.nc.IsClosed():
			return fmt.Errorf("pull tasks: NATS connection closed: %w", err)
		}
		s.log.Warn("task pull interrupted; subscribing again", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// consumer creates or updates the shared durable consumer, retrying while the
// bus is unavailable (e.g. a cluster electing its leader).
func (s *Service) consumer(ctx context.Context) (jetstream.Consumer, error) {
	cc := jetstream.ConsumerConfig{
		Durable:       bus.MoverConsumer,
		Description:   "rehome movers: repair tasks",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    s.cfg.MaxDeliver,
		MaxAckPending: s.cfg.MaxAckPending,
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := s.js.CreateOrUpdateConsumer(actx, bus.StreamTasks, cc)
		cancel()
		switch {
		case err == nil:
			return cons, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return nil, fmt.Errorf("create consumer %s: stream %s missing (bus.Ensure not run?): %w", bus.MoverConsumer, bus.StreamTasks, err)
		case s.nc.IsClosed():
			return nil, fmt.Errorf("create consumer %s: %w", bus.MoverConsumer, err)
		}
		s.log.Warn("creating task consumer; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// pull feeds tasks from one message iterator to workers until ctx ends or the
// iterator breaks. Tasks still buffered when it stops are handed back at once.
func (s *Service) pull(ctx, workCtx context.Context, cons jetstream.Consumer, slots chan struct{}, tasks *sync.WaitGroup) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(s.cfg.Workers))
	if err != nil {
		return fmt.Errorf("pull tasks: %w", err)
	}
	defer s.handBack(it)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			<-slots
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				s.log.Debug("task pull missed a heartbeat", "err", err)
				continue
			}
			return fmt.Errorf("next task: %w", err)
		}
		tasks.Go(func() {
			defer func() { <-slots }()
			s.handle(workCtx, msg)
		})
	}
}

// handBack drains the iterator and naks what it still buffered so another
// mover can take it without waiting for AckWait.
func (s *Service) handBack(it jetstream.MessagesContext) {
	it.Drain()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(250 * time.Millisecond))
		if err != nil {
			return
		}
		if err := msg.Nak(); err != nil {
			s.log.Debug("handing back a buffered task", "err", err)
		}
	}
}
