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

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/listing"
	"github.com/rehome/rehome/shared/objects"
	"github.com/rehome/rehome/shared/shardapi"
)

// Gateway serves S3 on one listener. Build it with New, run it with Run.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics
	ln      net.Listener
	client  *objects.Client
	mp      *multipart
	handler http.Handler
}

// New binds the gateway's listener and wires it to the bus. It fails when
// the listen address is taken or rehome's buckets do not exist (no cluster
// on this bus).
func New(ctx context.Context, cfg Config, nc *nats.Conn, js jetstream.JetStream, shards *shardapi.Client, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := objects.New(ctx, nc, js, shards)
	if err != nil {
		return nil, err
	}
	state, err := js.KeyValue(ctx, bus.BucketS3)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bus.BucketS3, err)
	}
	idx, err := js.KeyValue(ctx, bus.BucketIndex)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bus.BucketIndex, err)
	}
	g := &Gateway{cfg: cfg, log: log, reg: prometheus.NewRegistry(), client: client}
	g.metrics = newMetrics(g.reg)
	b := &backend{store: client, index: listing.NewReader(idx), buckets: buckets{kv: state}, layout: cfg.Layout, log: log}
	g.mp = &multipart{b: b, kv: state, log: log, now: time.Now, grace: cfg.UploadGrace}
	g.handler = g.routes(b, g.mp)
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

// Handler is the gateway's HTTP handler (for tests that serve it themselves).
func (g *Gateway) Handler() http.Handler { return g.handler }

// Run serves until ctx ends, then drains requests for a few seconds. It also
// keeps the node view current and collects abandoned multipart uploads.
func (g *Gateway) Run(ctx context.Context) error {
	g.client.Watch(ctx)
	go g.mp.collect(ctx, min(g.cfg.UploadGrace/4, 10*time.Minute))
	srv := &http.Server{Handler: g.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	g.log.Info("s3 gateway listening", "addr", g.Addr(), "region", g.cfg.Region, "layout", g.cfg.Layout.String())
	if err := srv.Serve(g.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("s3 server: %w", err)
	}
	return nil
}
