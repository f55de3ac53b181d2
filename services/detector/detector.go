// Package detector is rehome's failure detector service (SPEC §5): it listens
// to storage heartbeats, judges nodes with a liveness.Tracker, records each
// verdict in the liveness KV bucket and announces it on
// rehome.node.{suspect,down,up}.<node>.
//
// It also makes the mass-silence guard visible and operable: while it holds
// down verdicts the guard's state is in the detector bucket (model.HoldKey)
// and announced on rehome.detector.held / rehome.detector.released, and an
// operator's model.HoldOverride under model.OverrideKey lets verdicts flow
// until its Until. With Config.SystemURL set it also listens to the NATS
// server's $SYS.ACCOUNT.*.DISCONNECT events and suspects a storage node the
// moment its connection closes.
//
// Several detectors may run at once: verdict events carry a message id derived
// from (state, node, last-heard time), so two detectors judging the same
// silence publish one event, and liveness records are written with
// compare-and-set so an operator's maintenance record is never overwritten.
package detector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/services/detector/liveness"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/clock"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/telemetry"
)

// Config tunes the detector. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// SuspectAfter is the silence after which a node is suspect (default 3 s).
	SuspectAfter time.Duration
	// Grace is the further silence after which a suspect node is down (default 30 s).
	Grace time.Duration
	// MaxSilentShare is the share of nodes that may be silent at once before
	// down verdicts are held (default 0.5).
	MaxSilentShare float64
	// StartupHold is how long after start (or after the bus comes back) nobody
	// is judged; 0 (the default) means SuspectAfter+Grace as configured.
	StartupHold time.Duration
	// Ticks makes the ticker of the service loop; nil is the wall clock.
	// Tests pass a clock.Manual to fire ticks one by one.
	Ticks clock.Source
	// Tick is how often verdicts are decided (default 100 ms).
	Tick time.Duration
	// MaxClockSkew bounds how far a heartbeat's own timestamp may be from the
	// local clock for it to be used as the last-heard time (so that several
	// detectors agree on it); beyond that the receipt time is used (default 500 ms).
	MaxClockSkew time.Duration
	// FlapWindow is how long a suspect episode counts as a flap (default 10 min).
	FlapWindow time.Duration
	// FlapThreshold is how many flaps inside FlapWindow a node may have with
	// the plain Grace (default 2); each one more doubles its grace.
	FlapThreshold int
	// MaxGrace caps the lengthened grace of a flapping node; 0 (the default)
	// means 10 × Grace as configured. Set it to Grace to turn damping off.
	MaxGrace time.Duration
	// SystemURL, when set, is a NATS URL with system-account credentials
	// (e.g. nats://sys:secret@127.0.0.1:4222). The detector then opens a second
	// connection there, listens to $SYS.ACCOUNT.*.DISCONNECT and suspects a
	// storage node (one whose connection name is its node id) as soon as its
	// connection closes. The notice only brings the suspect verdict forward:
	// down still takes SuspectAfter + the node's grace of silence counted from
	// its last heartbeat, and a heartbeat after a reconnect makes it up again.
	// Default "" (heartbeats only).
	SystemURL string
	// TracerProvider receives the verdict spans; nil (the default) uses
	// otel's global provider, which telemetry.Setup installs (a no-op when
	// tracing is off).
	TracerProvider trace.TracerProvider
}

// DefaultConfig returns SPEC §5 defaults: suspect 3 s, grace 30 s, share 0.5,
// hold 0 (= suspect + grace), tick 100 ms, skew 500 ms, flap window 10 min,
// flap threshold 2, max grace 0 (= 10 × grace), no system URL.
func DefaultConfig() Config {
	d := liveness.DefaultConfig()
	return Config{
		SuspectAfter:   d.SuspectAfter,
		Grace:          d.Grace,
		MaxSilentShare: d.MaxSilentShare,
		StartupHold:    d.StartupHold,
		Tick:           100 * time.Millisecond,
		MaxClockSkew:   500 * time.Millisecond,
		FlapWindow:     d.FlapWindow,
		FlapThreshold:  d.FlapThreshold,
		MaxGrace:       d.MaxGrace,
	}
}

func (c Config) withDefaults() (Config, error) {
	if c.SuspectAfter < 0 || c.Grace < 0 || c.StartupHold < 0 || c.Tick < 0 || c.MaxClockSkew < 0 ||
		c.FlapWindow < 0 || c.MaxGrace < 0 {
		return c, fmt.Errorf("detector config: negative duration in suspect %s, grace %s, hold %s, tick %s, skew %s, flap window %s or max grace %s",
			c.SuspectAfter, c.Grace, c.StartupHold, c.Tick, c.MaxClockSkew, c.FlapWindow, c.MaxGrace)
	}
	if c.FlapThreshold < 0 {
		return c, fmt.Errorf("detector config: negative flap threshold %d", c.FlapThreshold)
	}
	if c.SystemURL != "" {
		if _, err := url.Parse(c.SystemURL); err != nil {
			return c, fmt.Errorf("detector config: system URL is not a URL")
		}
	}
	if !(c.MaxSilentShare >= 0 && c.MaxSilentShare <= 1) { // NaN too
		return c, fmt.Errorf("detector config: max silent share %v outside [0, 1]", c.MaxSilentShare)
	}
	d := DefaultConfig()
	if c.SuspectAfter == 0 {
		c.SuspectAfter = d.SuspectAfter
	}
	if c.Grace == 0 {
		c.Grace = d.Grace
	}
	if c.MaxSilentShare == 0 {
		c.MaxSilentShare = d.MaxSilentShare
	}
	if c.Tick == 0 {
		c.Tick = d.Tick
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = d.MaxClockSkew
	}
	if c.FlapWindow == 0 {
		c.FlapWindow = d.FlapWindow
	}
	if c.FlapThreshold == 0 {
		c.FlapThreshold = d.FlapThreshold
	}
	return c, nil
}

// redacted returns u with any password masked, for logs and errors.
func redacted(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// maxHeartbeatBytes bounds a heartbeat payload; larger ones are malformed.
const maxHeartbeatBytes = 16 << 10

// maxBacklog bounds the verdicts kept for retry while JetStream fails.
const maxBacklog = 4096

// opTimeout bounds one KV write or publish.
const opTimeout = 5 * time.Second

// disconnectSubject carries the server's client-disconnect events (system account).
const disconnectSubject = "$SYS.ACCOUNT.*.DISCONNECT"

// maxDisconnectBytes bounds a disconnect event; larger ones are malformed.
const maxDisconnectBytes = 64 << 10

// disconnectQueue bounds the disconnect notices waiting for the Run loop.
const disconnectQueue = 1024

// Service is one running detector. Create it with New and call Run once.
type Service struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *slog.Logger
	now    func() time.Time
	reg    *prometheus.Registry
	m      *metrics
	tracer trace.Tracer

	mu sync.Mutex // guards tr (heartbeat callbacks run on NATS goroutines)
	tr *liveness.Tracker

	// disc carries node names from disconnect events to the Run loop.
	disc chan string

	// Owned by the Run goroutine.
	kv      jetstream.KeyValue
	dkv     jetstream.KeyValue // bus.BucketDetector
	revs    map[string]uint64  // last known liveness revision per node
	backlog []pending
	offline bool
	// holdAnnounced is the guard state last recorded in the detector bucket
	// (by this detector, or found there at start); holdSince the Since of the
	// hold it describes (for the release's message id).
	holdAnnounced bool
	holdSince     time.Time
	holdTries     int
}

// pending is a decided transition not yet recorded and announced.
type pending struct {
	liveness.Transition
	at    time.Time
	tries int
	// span is the verdict's span, started at the first attempt and ended
	// when the verdict is announced (or dropped); a down verdict's span is
	// the root of the incident's trace.
	span trace.Span
}

// New checks cfg and returns a detector using nc for heartbeats and js for
// the liveness bucket and verdict events. now is the clock (time.Now when
// nil); log may be nil (discard).
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, now func() time.Time) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if nc == nil || js == nil {
		return nil, errors.New("detector: a NATS connection and JetStream are required")
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if now == nil {
		now = time.Now
	}
	reg := prometheus.NewRegistry()
	return &Service{
		cfg: cfg, nc: nc, js: js, log: log, now: now, reg: reg,
		m:      newMetrics(reg, cfg.SuspectAfter+cfg.Grace),
		tracer: telemetry.Provider(cfg.TracerProvider).Tracer(tracerName),
		revs:   map[string]uint64{},
		disc:   make(chan string, disconnectQueue),
	}, nil
}

// Registry returns the detector's own prometheus registry.
func (s *Service) Registry() *prometheus.Registry { return s.reg }

// Config returns the configuration in use (zero fields replaced by defaults;
// StartupHold 0 still means SuspectAfter+Grace).
func (s *Service) Config() Config { return s.cfg }

// Held reports whether down verdicts are currently held by the mass-silence
// guard, and why. Safe to call concurrently with Run.
func (s *Service) Held() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tr == nil {
		return false, ""
	}
	return s.tr.Held()
}

// Hold returns the mass-silence guard's state as of the last tick (zero
// before Run starts). Safe to call concurrently with Run.
func (s *Service) Hold() liveness.Hold {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tr == nil {
		return liveness.Hold{}
	}
	return s.tr.Hold()
}

// Nodes returns the tracker's snapshot of every known node (state, flaps,
// grace) as of the last tick; nil before Run starts. Safe to call
// concurrently with Run.
func (s *Service) Nodes() []liveness.NodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tr == nil {
		return nil
	}
	return s.tr.Nodes()
}

// Run seeds the tracker from the liveness bucket and the heartbeat stream,
// then judges nodes every Tick until ctx is cancelled, when it returns nil.
// It returns an error only if it cannot start: a bucket or stream missing, or
// a SystemURL that cannot be connected to or does not reach the system account.
func (s *Service) Run(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, bus.BucketLiveness)
	if err != nil {
		return fmt.Errorf("detector: open bucket %s: %w", bus.BucketLiveness, err)
	}
	s.kv = kv
	dkv, err := s.js.KeyValue(ctx, bus.BucketDetector)
	if err != nil {
		return fmt.Errorf("detector: open bucket %s: %w", bus.BucketDetector, err)
	}
	s.dkv = dkv
	start := s.now()
	tc := liveness.Config{
		SuspectAfter: s.cfg.SuspectAfter, Grace: s.cfg.Grace,
		MaxSilentShare: s.cfg.MaxSilentShare, StartupHold: s.cfg.StartupHold,
		FlapWindow: s.cfg.FlapWindow, FlapThreshold: s.cfg.FlapThreshold, MaxGrace: s.cfg.MaxGrace,
	}
	s.mu.Lock()
	s.tr = liveness.New(tc, start)
	s.mu.Unlock()

	// Subscribe first so no heartbeat falls between seeding and listening;
	// the tracker keeps the latest time whatever the order.
	sub, err := s.nc.Subscribe(event.HeartbeatPrefix+"*", s.onHeartbeat)
	if err != nil {
		return fmt.Errorf("detector: subscribe heartbeats: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	w, err := s.seedLiveness(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer func() { _ = w.Stop() }()
	nodes, err := s.seedHeartbeats(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := s.loadHold(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	ow, err := s.seedOverride(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer func() { _ = ow.Stop() }()
	if s.cfg.SystemURL != "" {
		sysnc, err := s.listenDisconnects(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		defer sysnc.Close()
	}
	// The hold counts from when the detector is actually listening.
	s.mu.Lock()
	s.tr.Restart(s.now())
	holdUntil := s.tr.HoldUntil()
	s.mu.Unlock()
	s.log.Info("detector started", "suspect_after", s.cfg.SuspectAfter, "grace", s.cfg.Grace, "max_silent_share", s.cfg.MaxSilentShare,
		"flap_window", s.cfg.FlapWindow, "flap_threshold", s.cfg.FlapThreshold, "max_grace", s.tr.Config().MaxGrace,
		"disconnect_events", s.cfg.SystemURL != "",
		"known_nodes", nodes, "judging_from", holdUntil.UTC().Format(time.RFC3339Nano))

	ticks := s.cfg.Ticks
	if ticks == nil {
		ticks = clock.Wall
	}
	ticker := ticks.NewTicker(s.cfg.Tick)
	defer ticker.Stop()
	updates := w.Updates()
	overrides := ow.Updates()
	for {
		select {
		case <-ctx.Done():
			return nil
		case name := <-s.disc:
			s.onDisconnect(ctx, name)
		case e, ok := <-overrides:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				s.log.Warn("override watch ended; restarting it")
				overrides = nil
				continue
			}
			if e != nil {
				s.onOverride(e)
			}
		case e, ok := <-updates:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				s.log.Warn("liveness watch ended; restarting it")
				updates = nil
				continue
			}
			if e != nil {
				s.onLiveness(e)
			}
		case <-ticker.C():
			if updates == nil {
				if nw, err := kv.WatchAll(ctx); err == nil {
					w = nw
					updates = w.Updates()
				}
			}
			if overrides == nil {
				if nw, err := dkv.Watch(ctx, model.OverrideKey); err == nil {
					ow = nw
					overrides = ow.Updates()
				}
			}
			s.tick(ctx)
		}
	}
}

// seedLiveness reads every liveness record into the tracker and returns the
// watcher, positioned after the initial values, for later changes.
func (s *Service) seedLiveness(ctx context.Context) (jetstream.KeyWatcher, error) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("detector: watch bucket %s: %w", bus.BucketLiveness, err)
	}
	now := s.now()
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("detector: watch bucket %s closed", bus.BucketLiveness)
			}
			if e == nil {
				return w, nil
			}
			s.noteRevision(e.Key(), e.Revision())
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			rec, err := decodeLiveness(e)
			if err != nil {
				s.malformed("liveness", e.Key(), err)
				continue
			}
			last := rec.LastHeard
			if last.After(now) {
				last = now
			}
			s.mu.Lock()
			s.tr.Seed(rec.Node, last, rec.State)
			s.tr.SeedFlaps(rec.Node, rec.Flaps, rec.Since)
			s.mu.Unlock()
		}
	}
}

// seedHeartbeats reads the last heartbeat of every node from the heartbeat
// stream (its timestamp, capped at now, as last heard) and returns how many
// nodes the tracker knows afterwards.
func (s *Service) seedHeartbeats(ctx context.Context) (int, error) {
	cons, err := s.js.OrderedConsumer(ctx, bus.StreamHeartbeats, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{event.HeartbeatPrefix + "*"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return 0, fmt.Errorf("detector: read stream %s: %w", bus.StreamHeartbeats, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("detector: read stream %s: %w", bus.StreamHeartbeats, err)
	}
	for remaining := info.NumPending; remaining > 0; {
		batch, err := cons.Fetch(int(min(remaining, 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return 0, fmt.Errorf("detector: read stream %s: %w", bus.StreamHeartbeats, err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			md, err := msg.Metadata()
			if err == nil {
				remaining = md.NumPending
			}
			hb, err := decodeHeartbeat(msg.Subject(), msg.Data())
			if err != nil {
				s.malformed("heartbeat", msg.Subject(), err)
				continue
			}
			now := s.now()
			last := hb.TS
			if last.IsZero() || last.After(now) {
				last = now
			}
			s.mu.Lock()
			s.tr.Heard(hb.Node, hb.BootID, last)
			s.mu.Unlock()
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return 0, fmt.Errorf("detector: read stream %s: %w", bus.StreamHeartbeats, err)
		}
		if got == 0 {
			break
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tr.Nodes()), nil
}

// onHeartbeat handles one core-NATS heartbeat. Thread-safe.
func (s *Service) onHeartbeat(msg *nats.Msg) {
	hb, err := decodeHeartbeat(msg.Subject, msg.Data)
	if err != nil {
		s.malformed("heartbeat", msg.Subject, err)
		return
	}
	now := s.now()
	at := now
	// Trust the sender's timestamp when it is close to ours: every detector
	// then records the same last-heard time and their verdicts dedup.
	if d := now.Sub(hb.TS); !hb.TS.IsZero() && d <= s.cfg.MaxClockSkew && d >= -s.cfg.MaxClockSkew {
		at = hb.TS
	}
	s.mu.Lock()
	restarted := s.tr.Heard(hb.Node, hb.BootID, at)
	s.mu.Unlock()
	if restarted {
		s.log.Info("node restarted within the grace", "node", hb.Node, "boot_id", hb.BootID)
	}
}

// decodeHeartbeat decodes a heartbeat and checks it names the subject's node.
func decodeHeartbeat(subject string, data []byte) (event.Heartbeat, error) {
	var hb event.Heartbeat
	if len(data) > maxHeartbeatBytes {
		return hb, fmt.Errorf("%w: %d bytes, limit %d", event.ErrMalformed, len(data), maxHeartbeatBytes)
	}
	if err := event.Decode(data, &hb); err != nil {
		return hb, err
	}
	return hb, event.CheckSubjectNode(subject, hb.Node)
}

// decodeLiveness decodes and checks a liveness record (model.Liveness.Validate,
// and its key names its node). Errors wrap event.ErrMalformed.
func decodeLiveness(e jetstream.KeyValueEntry) (model.Liveness, error) {
	var rec model.Liveness
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, fmt.Errorf("%w: %w", event.ErrMalformed, err)
	}
	if err := rec.Validate(); err != nil {
		return rec, fmt.Errorf("%w: %w", event.ErrMalformed, err)
	}
	if rec.Node != e.Key() {
		return rec, fmt.Errorf("%w: %w: liveness record for %q under key %.64q", event.ErrMalformed, event.ErrSubjectMismatch, rec.Node, e.Key())
	}
	return rec, nil
}

// malformed counts a rejected message or record under kind and the reason
// err gives (event.Reason) and drops it.
func (s *Service) malformed(kind, where string, err error) {
	reason := event.Reason(err)
	s.m.malformed.WithLabelValues(kind, reason).Inc()
	s.log.Debug("dropped a rejected message", "kind", kind, "subject", where, "reason", reason, "err", err)
}

// noteRevision remembers the newest liveness revision seen for node.
func (s *Service) noteRevision(node string, rev uint64) {
	if rev > s.revs[node] {
		s.revs[node] = rev
	}
}

// onLiveness follows changes others make to the liveness bucket: an operator
// putting a node in or out of maintenance.
func (s *Service) onLiveness(e jetstream.KeyValueEntry) {
	node := e.Key()
	s.noteRevision(node, e.Revision())
	maint := false
	if e.Operation() == jetstream.KeyValuePut {
		rec, err := decodeLiveness(e)
		if err != nil {
			s.malformed("liveness", node, err)
			return
		}
		maint = rec.State == model.StateMaintenance
	}
	s.mu.Lock()
	was := s.tr.InMaintenance(node)
	if maint != was {
		s.tr.SetMaintenance(node, maint, s.now())
	}
	s.mu.Unlock()
	if maint != was {
		s.log.Info("maintenance changed", "node", node, "maintenance", maint)
	}
}

// tick decides this tick's transitions and records and announces them (and
// any left over from failed attempts).
func (s *Service) tick(ctx context.Context) {
	now := s.now()
	if !s.nc.IsConnected() {
		if !s.offline {
			s.log.Warn("lost the bus: judging nobody until it is back")
		}
		s.offline = true
		return
	}
	s.mu.Lock()
	if s.offline {
		s.tr.Restart(now)
		s.log.Info("bus is back: holding verdicts for a full timeout", "until", s.tr.HoldUntil().UTC().Format(time.RFC3339Nano))
		s.offline = false
	}
	trs := s.tr.Tick(now)
	hold := s.tr.Hold()
	nodes := s.tr.Nodes()
	s.mu.Unlock()

	if hold.Held != s.holdAnnounced {
		s.announceHold(ctx, hold, now)
	}
	for _, t := range trs {
		s.backlog = append(s.backlog, pending{Transition: t, at: now})
	}
	if over := len(s.backlog) - maxBacklog; over > 0 {
		s.log.Error("dropping unannounced verdicts", "count", over)
		for _, p := range s.backlog[:over] {
			if p.span != nil {
				p.span.SetStatus(codes.Error, "dropped: too many verdicts waiting")
				p.span.End()
			}
		}
		s.backlog = s.backlog[over:]
	}
	s.flush(ctx)
	s.m.observe(nodes, hold, now)
}

// flush announces the backlog in order; a node whose verdict fails keeps its
// later verdicts queued behind it so they are announced in order.
func (s *Service) flush(ctx context.Context) {
	var keep []pending
	blocked := map[string]bool{}
	for i := range s.backlog {
		p := &s.backlog[i]
		if blocked[p.Node] || ctx.Err() != nil {
			keep = append(keep, *p)
			continue
		}
		if err := s.announce(ctx, p); err != nil {
			p.tries++
			s.m.failedPubs.Inc()
			if p.tries == 1 || p.tries%50 == 0 {
				s.log.Warn("could not announce verdict; will retry", "node", p.Node, "state", p.To, "tries", p.tries, "err", err)
			}
			blocked[p.Node] = true
			keep = append(keep, *p)
		}
	}
	s.backlog = keep
}

// tracerName is the instrumentation scope of the detector's spans.
const tracerName = "github.com/rehome/rehome/services/detector"

// startSpan starts the verdict's span: "rehome.node.<state>", a new root. A
// down verdict's span is the root of the incident: the planner, the movers
// and the storage nodes continue its trace.
func (s *Service) startSpan(ctx context.Context, p *pending) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		attribute.String("rehome.node", p.Node),
		attribute.String("rehome.state", string(p.To)),
		attribute.String("rehome.previous_state", string(p.From)),
		attribute.String("rehome.reason", p.Reason),
		attribute.Float64("rehome.silence_seconds", p.Silent.Seconds()),
		attribute.Float64("rehome.grace_seconds", p.Grace.Seconds()),
		attribute.Int("rehome.flaps", p.Flaps),
	}
	if p.To == model.StateDown {
		attrs = append(attrs, attribute.String("rehome.incident", incidentOf(*p)))
	}
	return s.tracer.Start(ctx, "rehome.node."+string(p.To), trace.WithNewRoot(),
		trace.WithTimestamp(p.at), trace.WithAttributes(attrs...))
}

// incidentOf names the incident a down verdict opens: <node>-<unix ms of the verdict>.
func incidentOf(p pending) string {
	return p.Node + "-" + strconv.FormatInt(p.at.UnixMilli(), 10)
}

// announce records one transition in the liveness bucket and publishes its
// verdict, inside the verdict's span (started at the first attempt, ended on
// success). A down verdict's liveness record carries the span's traceparent.
// Idempotent: retrying after a failure publishes at most once.
func (s *Service) announce(ctx context.Context, p *pending) error {
	s.mu.Lock()
	maint := s.tr.InMaintenance(p.Node)
	s.mu.Unlock()
	if maint {
		if p.span != nil {
			p.span.SetAttributes(attribute.Bool("rehome.maintenance", true))
			p.span.End()
			p.span = nil
		}
		return nil
	}
	if p.span == nil {
		_, p.span = s.startSpan(ctx, p)
	}
	sctx := trace.ContextWithSpan(ctx, p.span)
	err := s.record(sctx, p)
	if err != nil {
		p.span.AddEvent("attempt failed", trace.WithAttributes(attribute.Int("rehome.attempt", p.tries+1), attribute.String("error", err.Error())))
		return err
	}
	p.span.End()
	p.span = nil
	return nil
}

// record writes the liveness record and publishes the verdict, in ctx's span.
func (s *Service) record(ctx context.Context, p *pending) error {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rec := model.Liveness{
		V: model.Version, Node: p.Node, State: p.To, Since: p.at.UTC(), Reason: p.Reason,
		LastHeard: p.LastHeard.UTC(), BootID: p.BootID,
		Flaps: p.Flaps, GraceMS: p.Grace.Milliseconds(),
	}
	if p.To == model.StateDown {
		rec.TraceParent = telemetry.TraceParent(ctx)
	}
	publish, err := s.putLiveness(octx, rec)
	if err != nil || !publish {
		return err
	}
	v := &event.Verdict{
		Header: event.Header{TS: p.at.UTC()},
		Node:   p.Node, State: p.To, Reason: p.Reason, SilentMS: p.Silent.Milliseconds(),
	}
	if p.To == model.StateDown {
		v.Incident = incidentOf(*p)
	}
	if err := bus.Publish(octx, s.js, subjectFor(p.To)+p.Node, v, msgID(p.Transition)); err != nil {
		return err
	}
	s.m.verdicts.WithLabelValues(string(p.To)).Inc()
	if p.To == model.StateDown {
		s.m.delay.Observe(p.Silent.Seconds())
	}
	lvl := slog.LevelInfo
	if p.To == model.StateDown {
		lvl = slog.LevelWarn
	}
	s.log.Log(ctx, lvl, "verdict", "node", p.Node, "from", string(p.From), "to", string(p.To),
		"reason", p.Reason, "silent_ms", v.SilentMS, "incident", v.Incident, "flaps", p.Flaps, "grace", p.Grace)
	return nil
}

// putLiveness writes rec with compare-and-set. It reports publish=false when
// the node turned out to be in maintenance (the operator's record stands).
// A record already in rec's state (written by another detector) is kept.
func (s *Service) putLiveness(ctx context.Context, rec model.Liveness) (publish bool, err error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return false, fmt.Errorf("encode liveness of %s: %w", rec.Node, err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		var rev uint64
		if r := s.revs[rec.Node]; r > 0 {
			rev, err = s.kv.Update(ctx, rec.Node, data, r)
		} else {
			rev, err = s.kv.Create(ctx, rec.Node, data)
		}
		if err == nil {
			s.noteRevision(rec.Node, rev)
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, fmt.Errorf("write liveness of %s: %w", rec.Node, err)
		}
		// Someone else wrote the record since we last saw it: look at it.
		e, gerr := s.kv.Get(ctx, rec.Node)
		if errors.Is(gerr, jetstream.ErrKeyNotFound) {
			s.revs[rec.Node] = 0
			continue
		}
		if gerr != nil {
			return false, fmt.Errorf("read liveness of %s: %w", rec.Node, gerr)
		}
		s.noteRevision(rec.Node, e.Revision())
		cur, derr := decodeLiveness(e)
		if derr == nil && cur.State == model.StateMaintenance {
			s.mu.Lock()
			s.tr.SetMaintenance(rec.Node, true, s.now())
			s.mu.Unlock()
			return false, nil
		}
		if derr == nil && cur.State == rec.State {
			return true, nil
		}
	}
	return false, fmt.Errorf("write liveness of %s: %w", rec.Node, err)
}

func subjectFor(s model.State) string {
	switch s {
	case model.StateSuspect:
		return event.SuspectPrefix
	case model.StateDown:
		return event.DownPrefix
	}
	return event.UpPrefix
}

// msgID identifies a verdict across detectors: the same state for the same
// node after the same last heartbeat is the same verdict.
func msgID(t liveness.Transition) string {
	return string(t.To) + "-" + t.Node + "-" + strconv.FormatInt(t.LastHeard.UnixNano(), 10)
}
