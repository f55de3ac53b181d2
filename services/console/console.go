package console

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/history"
)

// Console serves the operator's page. It holds nothing that the bus cannot
// give it again: the status is polled, the window's events are re-read at
// start.
type Console struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	now      func() time.Time
	reg      *prometheus.Registry
	sessions *sessions
	ln       net.Listener
	srv      *http.Server

	mu      sync.Mutex
	last    *polled // the last round that answered (nil before the first)
	busErr  string
	hlog    *history.Log
	chart   *series
	changed chan struct{} // closed and replaced on every change
}

// New validates cfg and binds the listen address; Run serves.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, log *slog.Logger, now func() time.Time) (*Console, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("console: listen: %w", err)
	}
	c := &Console{cfg: cfg, nc: nc, js: js, log: log, now: now, reg: prometheus.NewRegistry(),
		sessions: newSessions(cfg.SessionTTL, now), ln: ln,
		hlog: history.NewLog(), chart: &series{window: cfg.Window}, changed: make(chan struct{})}
	c.srv = &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 5 * time.Second}
	if cfg.Open() {
		log.Warn("the console's bus URL carries no credentials: the page is open to anyone who reaches it", "addr", c.Addr())
	}
	return c, nil
}

// Addr is the bound listen address.
func (c *Console) Addr() string { return c.ln.Addr().String() }

// Registry is the console's metrics registry (the Go runtime's only).
func (c *Console) Registry() *prometheus.Registry { return c.reg }

// Run serves the page and follows the bus until ctx ends.
func (c *Console) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.poll(ctx) }()
	go func() { defer wg.Done(); c.follow(ctx) }()
	go func() {
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = c.srv.Shutdown(sctx)
	}()
	c.log.Info("console listening", "url", "http://"+c.Addr())
	err := c.srv.Serve(c.ln)
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("console: %w", err)
}

// notify wakes every stream waiting for a change.
func (c *Console) notify() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// changes returns a channel closed at the next change.
func (c *Console) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}
