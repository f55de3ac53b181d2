package shardapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/rehome/rehome/shared/shardapi"
)

// TestClientCarriesTraceContext checks that a request made inside a span gets
// a client span (child of it) whose context reaches the server in the
// traceparent header, and that a request without a span goes out untraced.
func TestClientCarriesTraceContext(t *testing.T) {
	var (
		mu      sync.Mutex
		parents []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		parents = append(parents, r.Header.Get("traceparent"))
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set(shardapi.HeaderSHA256, strings.Repeat("0", 64))
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	rec := tracetest.NewSpanRecorder()
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")
	c := shardapi.New("")
	defer c.HTTP.CloseIdleConnections()

	ctx, span := tracer.Start(context.Background(), "copy")
	if err := c.Put(ctx, addr, "s-1", strings.Repeat("0", 64), 3, bytes.NewReader([]byte("abc"))); err != nil {
		t.Fatal(err)
	}
	span.End()
	if err := c.Put(context.Background(), addr, "s-2", strings.Repeat("0", 64), 3, bytes.NewReader([]byte("abc"))); err != nil {
		t.Fatal(err)
	}

	var client sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "PUT /v1/shards/{id}" {
			client = s
		}
	}
	if client == nil || client.Parent().SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("no client span under the caller's span: %v", rec.Ended())
	}
	mu.Lock()
	defer mu.Unlock()
	want := "00-" + span.SpanContext().TraceID().String() + "-" + client.SpanContext().SpanID().String() + "-01"
	if len(parents) != 2 || parents[0] != want || parents[1] != "" {
		t.Fatalf("server saw traceparent %q, want [%q \"\"]", parents, want)
	}
}
