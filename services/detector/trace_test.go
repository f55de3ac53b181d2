package detector_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/telemetry"
)

// TestDownVerdictIsTheRootOfTheIncidentTrace checks the trace a node loss
// starts: a root span rehome.node.down naming node, silence and incident,
// whose context is in the liveness record (traceparent) and in the headers
// of the verdict event, so that whoever acts on either continues the trace.
func TestDownVerdictIsTheRootOfTheIncidentTrace(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	rec := tracetest.NewSpanRecorder()
	cfg := fastConfig()
	cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))

	headers := make(chan nats.Header, 1)
	sub, err := env.NC.Subscribe(event.DownPrefix+"storage-2", func(m *nats.Msg) {
		select {
		case headers <- m.Header:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	b := startBeater(t, env.NC, "storage-1", "storage-2")
	run(t, env, cfg)
	bustest.Eventually(t, wait, "both nodes up", allUp(t, kv, "storage-1", "storage-2"))
	b.set("storage-2", false)

	var down sdktrace.ReadOnlySpan
	bustest.Eventually(t, wait, "a rehome.node.down span", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "rehome.node.down" {
				down = s
				return true
			}
		}
		return false
	})
	if down.Parent().IsValid() {
		t.Fatalf("the down span has a parent %s: it must be the root", down.Parent().SpanID())
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range down.Attributes() {
		attrs[kv.Key] = kv.Value
	}
	if attrs["rehome.node"].AsString() != "storage-2" || attrs["rehome.silence_seconds"].AsFloat64() < 1 ||
		len(attrs["rehome.incident"].AsString()) <= len("storage-2-") {
		t.Fatalf("down span attributes: %v", attrs)
	}

	e, err := kv.Get(context.Background(), "storage-2")
	if err != nil {
		t.Fatal(err)
	}
	var live model.Liveness
	if err := json.Unmarshal(e.Value(), &live); err != nil {
		t.Fatal(err)
	}
	sc := trace.SpanContextFromContext(telemetry.ContextFromTraceParent(context.Background(), live.TraceParent))
	if live.State != model.StateDown || sc.TraceID() != down.SpanContext().TraceID() || sc.SpanID() != down.SpanContext().SpanID() {
		t.Fatalf("liveness record %+v does not point at the down span %s", live, down.SpanContext().SpanID())
	}

	select {
	case h := <-headers:
		sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h))
		if sc.TraceID() != down.SpanContext().TraceID() {
			t.Fatalf("verdict event headers %v: not in the incident's trace %s", h, down.SpanContext().TraceID())
		}
	case <-time.After(wait):
		t.Fatal("no down verdict event seen")
	}

	// Suspect verdicts are spans of their own; their records carry no traceparent.
	var suspect bool
	for _, s := range rec.Ended() {
		suspect = suspect || (s.Name() == "rehome.node.suspect" && s.SpanContext().TraceID() != down.SpanContext().TraceID())
	}
	if !suspect {
		t.Fatal("no rehome.node.suspect span in a trace of its own")
	}
}
