package telemetry_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/telemetry"
)

// FuzzTraceContext feeds arbitrary trace context to the two places rehome
// reads it from: a liveness record's traceparent (ContextFromTraceParent)
// and NATS headers (Extract, names in any case). Neither may panic; a
// traceparent that yields a valid span context round-trips through
// TraceParent, and a malformed one leaves the context without a span.
func FuzzTraceContext(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "traceparent", "k=v")
	f.Fuzz(func(t *testing.T, tp, name, baggage string) {
		ctx := telemetry.ContextFromTraceParent(context.Background(), tp)
		sc := trace.SpanContextFromContext(ctx)
		if sc.IsValid() {
			back := telemetry.TraceParent(ctx)
			again := trace.SpanContextFromContext(telemetry.ContextFromTraceParent(context.Background(), back))
			if !again.Equal(sc.WithRemote(true)) {
				t.Fatalf("traceparent %q read as %v, written as %q, read back as %v", tp, sc, back, again)
			}
		} else if telemetry.TraceParent(ctx) != "" {
			t.Fatalf("malformed traceparent %q left a trace parent", tp)
		}
		h := nats.Header{}
		h[name] = []string{tp}
		h["baggage"] = []string{baggage}
		_ = telemetry.Extract(context.Background(), h)
	})
}
