// Package telemetry sets up what every rehome process reports about itself:
// structured logs that carry the trace and span ids of the context they are
// logged with, and OpenTelemetry traces whose context rides in NATS message
// headers (W3C trace context, see Inject and Extract) and in HTTP headers.
package telemetry

import (
	"context"
	"io"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/trace"
)

// Logger returns a JSON slog logger tagged with the service name, writing to w
// (stderr when nil). Level "debug" enables debug lines. A line logged with a
// context that carries a span (log.InfoContext(ctx, ...)) gets "trace_id" and
// "span_id" attributes (see NewHandler).
func Logger(w io.Writer, service, level string) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	lv := slog.LevelInfo
	if level == "debug" {
		lv = slog.LevelDebug
	}
	return slog.New(NewHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv}))).With("service", service)
}

// Names of the attributes NewHandler adds.
const (
	LogTraceID = "trace_id"
	LogSpanID  = "span_id"
)

// NewHandler wraps next so that every record handled with a context carrying a
// valid span context gets LogTraceID and LogSpanID attributes (hex, as W3C
// traceparent writes them). Records without one pass through unchanged. The
// handler is safe for concurrent use when next is.
func NewHandler(next slog.Handler) slog.Handler { return traceHandler{next: next} }

type traceHandler struct{ next slog.Handler }

func (h traceHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String(LogTraceID, sc.TraceID().String()), slog.String(LogSpanID, sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{next: h.next.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{next: h.next.WithGroup(name)}
}
