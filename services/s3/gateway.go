package s3

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/shardapi"
)

// Gateway serves S3 on one listener. Build it with New, run it with Run.
type Gateway struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	shards  *shardapi.Client
	log     *slog.Logger
	reg     *prometheus.Registry
	ln      net.Listener
	handler http.Handler
}

// New binds the gateway's listener and wires it to the bus. It fails when
// the listen address is taken or rehome's buckets do not exist.
func New(ctx context.Context, cfg Config, nc *nats.Conn, js jetstream.JetStream, shards *shardapi.Client, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, nc: nc, js: js, shards: shards, log: log, reg: prometheus.NewRegistry()}
	g.handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not implemented", http.StatusNotImplemented)
	})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("s3 listener: %w", err)
	}
	g.ln = ln
	return g, nil
}

// Addr is the bound listen address.
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// Registry returns the gateway's metrics.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// Run serves until ctx ends, then drains requests for a few seconds.
func (g *Gateway) Run(ctx context.Context) error {
	srv := &http.Server{Handler: g.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	g.log.Info("s3 gateway listening", "addr", g.Addr(), "region", g.cfg.Region)
	if err := srv.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("s3 server: %w", err)
	}
	return nil
}
