// Package storage is a rehome storage node: it keeps immutable shards on
// local disk (package disk), serves them over the HTTP protocol of package
// shardapi, registers itself in the nodes bucket and publishes a heartbeat
// every interval (SPEC §5). It answers inventory requests over the bus
// (control.InventoryPrefix + id), re-verifies its shards in the background at
// a bounded rate (the scrub) and publishes an event.Corrupt for every shard it
// quarantines, however the damage was found. A disk that is full or
// read-only makes writes fail with 507 and the node say so in its
// heartbeats (at once when that changes) until room or writability returns.
package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/nice"
	"github.com/rehome/rehome/shared/shardapi"
)

// Service is one running storage node. Create it with New, then call Run once.
type Service struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	store    *disk.Store
	ln       net.Listener
	srv      *http.Server
	addr     string
	bootID   string
	capacity int64
	started  time.Time
	reg      *prometheus.Registry
	m        *metrics
	now      func() time.Time
	rep      *reporter
	scrub    *scrubber
	invReqs  *prometheus.CounterVec

	ran       atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// condChanged is signalled when the store's Condition changes, so the
	// heartbeat saying so goes out at once rather than at the next tick.
	condChanged chan struct{}
	// published is the condition last announced by publishCondition.
	published disk.Condition
}

// New opens the store in cfg.Dir (removing crash leftovers, quarantining
// shards with damaged headers, rebuilding the index), binds the HTTP listener
// (so Addr is known before Run) and draws a fresh boot id. It does not touch
// NATS yet: shards quarantined while opening are reported once Run starts. If
// Run is never called, Close releases the directory and the port.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil {
		return nil, errors.New("storage: a NATS connection and JetStream context are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.ID)
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("storage dir: %w", err)
	}
	capacity := cfg.CapacityBytes
	if capacity == 0 {
		if capacity, err = disk.FilesystemSize(cfg.Dir); err != nil {
			return nil, fmt.Errorf("storage capacity: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	bootID := uuid.NewString()
	publish := func(ctx context.Context, subject string, p event.Payload, msgID string) error {
		return bus.Publish(ctx, js, subject, p, msgID)
	}
	rep := newReporter(cfg.ID, bootID, cfg.CorruptQueue, publish, time.Now, log, reg)
	condChanged := make(chan struct{}, 1)
	onCond := func(disk.Condition) {
		select {
		case condChanged <- struct{}{}:
		default: // a heartbeat is already due
		}
	}
	store, err := disk.Open(cfg.Dir, disk.Options{CapacityBytes: capacity, OnQuarantine: rep.report, OnCondition: onCond, Files: cfg.files}, log)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("storage listen on %s: %w", cfg.Listen, err)
	}
	hostname, _ := os.Hostname()
	s := &Service{
		cfg:      cfg,
		nc:       nc,
		js:       js,
		log:      log,
		store:    store,
		ln:       ln,
		addr:     advertiseAddr(cfg.Advertise, ln.Addr().String(), hostname),
		bootID:   bootID,
		capacity: capacity,
		reg:      reg,
		now:      time.Now,
		rep:      rep,

		condChanged: condChanged,
	}
	s.started = s.now().UTC()
	s.m = newMetrics(s.reg, store, capacity)
	s.scrub = newScrubber(store, cfg.ScrubBytesPerSec, cfg.ScrubDelay, cfg.ScrubEvery, s.now, log, reg)
	s.invReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rehome_storage_inventory_requests_total",
		Help: "Inventory requests answered over the bus, by result (ok, invalid, error).",
	}, []string{"result"})
	for _, r := range []string{inventoryOK, inventoryInvalid, inventoryError} {
		s.invReqs.WithLabelValues(r)
	}
	reg.MustRegister(s.invReqs)
	peers := cfg.Peers
	if peers == nil {
		peers = shardapi.New(cfg.Token)
	}
	a := &api{
		source:   peers,
		store:    store,
		node:     cfg.ID,
		token:    []byte(cfg.Token),
		maxShard: cfg.MaxShardBytes,
		prio:     newPriority(cfg.RepairPaceBytesPerSec, cfg.RepairBusyWindow, cfg.RepairNice, reg),
		m:        s.m,
		reg:      s.reg,
		log:      log,
	}
	s.srv = &http.Server{
		Handler:           traced(a.handler(), cfg.TracerProvider),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         cfg.TLS,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Addr is the address published for this node (Config.Advertise or the bound
// listen address). Known as soon as New returns.
func (s *Service) Addr() string { return s.addr }

// BootID is this start's boot id: a fresh uuid each time New is called.
func (s *Service) BootID() string { return s.bootID }

// Registry is the node's own Prometheus registry (also served on /metrics).
func (s *Service) Registry() *prometheus.Registry { return s.reg }

// Handler is the node's HTTP handler (the one Run serves).
func (s *Service) Handler() http.Handler { return s.srv.Handler }

// ScrubNow asks for a scrub pass as soon as possible: at once when none is
// running, right after the running one otherwise (requests coalesce; one
// made before Run is served as Run starts). It never blocks, is safe for
// concurrent use, and does nothing when the scrub is off (ScrubBytesPerSec
// 0). Completed passes are counted by rehome_storage_scrub_passes_total.
func (s *Service) ScrubNow() { s.scrub.trigger() }

// Close releases the listener and the data directory. It is idempotent and is
// called by Run on return; call it directly only if Run is never called.
func (s *Service) Close() error {
	s.closed.Store(true)
	s.closeOnce.Do(func() {
		lerr := s.ln.Close()
		if errors.Is(lerr, net.ErrClosed) {
			lerr = nil
		}
		s.closeErr = errors.Join(lerr, s.store.Close())
	})
	return s.closeErr
}

// Run serves the shard API, answers inventory requests on
// control.InventoryPrefix+ID, registers the node in the nodes bucket,
// publishes heartbeats (the first at once), scrubs (first pass
// Config.ScrubDelay after start) and publishes a corrupt event for every
// quarantined shard, until ctx ends; then it shuts the HTTP server down
// gracefully (bounded by Config.ShutdownTimeout), makes a last short attempt
// to publish pending corrupt reports, closes the store and returns nil. NATS
// trouble never stops the node: registration and reports are retried and
// heartbeats resume when the bus is back. It returns an error only if the
// HTTP server fails or the NATS connection is closed at start. Run may be
// called once, and not after Close.
func (s *Service) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("storage: Run called twice")
	}
	defer s.Close()
	if s.closed.Load() {
		return errors.New("storage: Run after Close")
	}
	sub, err := s.nc.Subscribe(control.InventoryPrefix+s.cfg.ID, s.answerInventory)
	if err != nil {
		return fmt.Errorf("storage: subscribe to inventory requests: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Corrupt reports outlive the HTTP server: a read cut during the graceful
	// shutdown is still reported.
	repCtx, stopRep := context.WithCancel(context.WithoutCancel(ctx))
	var repWG sync.WaitGroup
	repWG.Go(func() { s.rep.run(repCtx) })
	defer func() { stopRep(); repWG.Wait() }()

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.serve() }()
	s.log.Info("storage node serving", "addr", s.addr, "listen", s.ln.Addr().String(), "rack", s.cfg.Rack,
		"boot_id", s.bootID, "capacity_bytes", s.capacity)

	regCtx, stopReg := context.WithCancel(ctx)
	want := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { s.registrar(regCtx, want) })
	wg.Go(func() { // the scrub reads and hashes at the repair streams' CPU priority
		_ = nice.Run(s.cfg.RepairNice, func() error { s.scrub.run(regCtx, s.started); return nil })
	})

	err = s.heartbeats(ctx, want, serveErr)
	stopReg()
	wg.Wait()

	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if serr := s.srv.Shutdown(shCtx); serr != nil {
		s.log.Warn("graceful shutdown incomplete, closing connections", "err", serr)
		_ = s.srv.Close()
	}
	if err != nil {
		return fmt.Errorf("storage http server: %w", err)
	}
	s.log.Info("storage node stopped")
	return nil
}

// answerInventory replies to one inventory request (see inventoryReply).
// Requests without a reply subject are counted and dropped.
func (s *Service) answerInventory(msg *nats.Msg) {
	if msg.Reply == "" {
		s.invReqs.WithLabelValues(inventoryInvalid).Inc()
		s.m.malformed.WithLabelValues(malformedInventory, event.ReasonMalformed).Inc()
		s.log.Debug("inventory request without a reply subject dropped")
		return
	}
	maxPayload := int(s.nc.MaxPayload())
	if maxPayload <= 0 {
		maxPayload = defaultMaxPayload
	}
	reply, result := inventoryReply(s.store, s.cfg.ID, s.bootID, msg.Data, maxPayload)
	s.invReqs.WithLabelValues(result).Inc()
	if result == inventoryInvalid {
		_, perr := parseInventoryRequest(msg.Data)
		s.m.malformed.WithLabelValues(malformedInventory, event.Reason(perr)).Inc()
	}
	if result != inventoryOK {
		s.log.Debug("inventory request refused", "result", result, "body", truncate(msg.Data, 200))
	}
	if err := msg.Respond(reply); err != nil {
		s.log.Debug("inventory reply not sent", "err", err)
	}
}

// truncate returns at most n bytes of b as a string, for logs.
func truncate(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

// heartbeats publishes one heartbeat now and one per interval, and asks the
// registrar to (re)register when needRegister says so. Before each beat it
// rechecks a store that refuses writes (full or read-only), and it sends an
// extra beat as soon as the store's condition changes. It returns nil when
// ctx ends, or the HTTP server's error if it stops.
func (s *Service) heartbeats(ctx context.Context, want chan<- struct{}, serveErr <-chan error) error {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	lastReconnects := s.nc.Stats().Reconnects
	for tick := 0; ; tick++ {
		reconnects := s.nc.Stats().Reconnects
		if needRegister(tick, s.cfg.RegisterEvery, reconnects != lastReconnects) {
			select {
			case want <- struct{}{}:
			default: // a registration is already pending
			}
		}
		lastReconnects = reconnects
		s.store.Recheck()
		s.publishHeartbeat()
		s.publishCondition(ctx)
		if stop, err := s.awaitBeat(ctx, t.C, serveErr); stop {
			return err
		}
	}
}

// awaitBeat waits for the next tick, publishing a heartbeat each time the
// store's condition changes meanwhile. stop reports that ctx ended (err nil)
// or that the HTTP server stopped (err its error, nil for a shutdown).
func (s *Service) awaitBeat(ctx context.Context, tick <-chan time.Time, serveErr <-chan error) (stop bool, err error) {
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case err := <-serveErr:
			if errors.Is(err, http.ErrServerClosed) {
				return true, nil
			}
			return true, err
		case <-s.condChanged:
			s.publishHeartbeat()
			s.publishCondition(ctx)
		case <-tick:
			return false, nil
		}
	}
}

// needRegister decides whether the node record is re-put on heartbeat number
// tick: at start, every `every` heartbeats, and right after a reconnect.
func needRegister(tick, every int, reconnected bool) bool {
	return tick == 0 || reconnected || (every > 0 && tick%every == 0)
}

// registrar writes the node record each time it is asked, retrying every
// heartbeat interval until a write succeeds. It returns when ctx ends.
func (s *Service) registrar(ctx context.Context, want <-chan struct{}) {
	var kv jetstream.KeyValue
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-want:
		}
		for {
			var err error
			kv, err = s.register(ctx, kv)
			if err == nil {
				s.m.registrations.WithLabelValues("ok").Inc()
				if failing {
					s.log.Info("node registered again")
				}
				failing = false
				break
			}
			s.m.registrations.WithLabelValues("error").Inc()
			if ctx.Err() != nil {
				return
			}
			if !failing {
				s.log.Warn("cannot register node, will retry", "err", err)
			}
			failing = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.cfg.HeartbeatInterval):
			}
		}
	}
}

// register puts the node record into the nodes bucket, looking the bucket up
// first if kv is nil. It returns the bucket handle for reuse.
func (s *Service) register(ctx context.Context, kv jetstream.KeyValue) (jetstream.KeyValue, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if kv == nil {
		var err error
		if kv, err = s.js.KeyValue(actx, bus.BucketNodes); err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", bus.BucketNodes, err)
		}
	}
	data, err := json.Marshal(s.nodeRecord())
	if err != nil {
		return kv, fmt.Errorf("encode node record: %w", err)
	}
	if _, err := kv.Put(actx, s.cfg.ID, data); err != nil {
		return kv, fmt.Errorf("put node record: %w", err)
	}
	return kv, nil
}

// nodeRecord is this node's registration.
func (s *Service) nodeRecord() model.Node {
	return model.Node{
		V:             model.Version,
		ID:            s.cfg.ID,
		Rack:          s.cfg.Rack,
		Addr:          s.addr,
		BootID:        s.bootID,
		CapacityBytes: s.capacity,
		Started:       s.started,
	}
}

// heartbeat is the payload published now.
func (s *Service) heartbeat() *event.Heartbeat {
	shards, used := s.store.Usage()
	cond := s.store.Condition()
	return &event.Heartbeat{
		Header:        event.Header{TS: s.now().UTC()},
		Node:          s.cfg.ID,
		Rack:          s.cfg.Rack,
		Addr:          s.addr,
		BootID:        s.bootID,
		Shards:        shards,
		UsedBytes:     used,
		CapacityBytes: s.capacity,
		Full:          cond.Full,
		ReadOnly:      cond.ReadOnly,
	}
}

// publishCondition publishes a condition event (rehome.node.condition.<node>)
// when the store's condition differs from the last one published; at start
// the last one is "writable", so a node that starts full says so. A failed
// publish is retried at the next heartbeat. Only the heartbeat goroutine
// calls it.
func (s *Service) publishCondition(ctx context.Context) {
	cond := s.store.Condition()
	if cond == s.published {
		return
	}
	c := &event.Condition{Header: event.Header{TS: s.now().UTC()}, Node: s.cfg.ID, Full: cond.Full, ReadOnly: cond.ReadOnly}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatInterval)
	defer cancel()
	if err := bus.Publish(pctx, s.js, event.ConditionPrefix+s.cfg.ID, c, ""); err != nil {
		s.log.Debug("condition not published; retried at the next heartbeat", "err", err)
		return
	}
	s.published = cond
}

// publishHeartbeat sends one heartbeat with core NATS (the heartbeat stream
// captures it). Failures are logged at debug level: the next beat retries.
func (s *Service) publishHeartbeat() {
	data, err := event.Encode(s.heartbeat())
	if err != nil {
		s.log.Error("encode heartbeat", "err", err)
		return
	}
	if err := s.nc.Publish(event.HeartbeatPrefix+s.cfg.ID, data); err != nil {
		s.log.Debug("heartbeat not published", "err", err)
		return
	}
	s.m.heartbeats.Inc()
}
