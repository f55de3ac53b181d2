package storage

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/shardapi"
)

// TestShardRequestsOfATraceAreSpansOfIt checks what an operator sees of a
// storage node in a trace: a PUT and a GET made inside a caller's span are
// server spans of that trace, named by route; requests without trace context
// and the /metrics scrape leave no span.
func TestShardRequestsOfATraceAreSpansOfIt(t *testing.T) {
	env := bustest.Start(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = "storage-1", "rack-1", t.TempDir()
	cfg.TracerProvider = tp
	r := startService(t, env, cfg)
	addr := r.svc.Addr()
	c := shardapi.New("")
	defer c.HTTP.CloseIdleConnections()
	data := bytes.Repeat([]byte("x"), 1<<20)
	sha := sum(data)

	ctx, caller := tp.Tracer("test").Start(context.Background(), "copy")
	if err := c.Put(ctx, addr, "shard-1", sha, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	body, _, err := c.Get(ctx, addr, "shard-1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	caller.End()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get: %d bytes, %v", len(got), err)
	}
	// Untraced: a client without a span, and the metrics scrape.
	if _, err := c.Head(context.Background(), addr, "shard-1"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	server := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			server[s.Name()] = s
		}
	}
	if len(server) != 2 || server["PUT /v1/shards/{id}"] == nil || server["GET /v1/shards/{id}"] == nil {
		t.Fatalf("server spans %v, want exactly the traced PUT and GET", server)
	}
	for name, s := range server {
		if s.SpanContext().TraceID() != caller.SpanContext().TraceID() || !s.Parent().IsRemote() {
			t.Errorf("%s: trace %s (remote parent %v), want the caller's %s", name, s.SpanContext().TraceID(), s.Parent().IsRemote(), caller.SpanContext().TraceID())
		}
	}
}
