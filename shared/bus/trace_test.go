package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/telemetry"
)

// TestPublishCarriesTraceContext publishes inside a span and consumes the
// message as a mover would: the consumer's span continues the trace.
func TestPublishCarriesTraceContext(t *testing.T) {
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := tracetest.NewSpanRecorder()
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")

	sctx, root := tracer.Start(ctx, "rehome.node.down")
	done := &event.Done{Task: "t1", Shard: "s1", Kind: event.KindCopy, Target: "storage-2", Bytes: 1}
	ack, err := bus.PublishAck(sctx, env.JS, event.DonePrefix+"storage-2", done, "done-t1")
	root.End()
	if err != nil || ack.Duplicate {
		t.Fatalf("publish: %v %+v", err, ack)
	}
	// Without a span the message carries no trace headers.
	if err := bus.Publish(ctx, env.JS, event.DonePrefix+"storage-3", done, ""); err != nil {
		t.Fatal(err)
	}
	cons, err := env.JS.OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{event.DonePrefix + ">"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	pctx, span := telemetry.StartProcess(ctx, tracer, "rehome.repair.commit", msg.Subject(), msg.Headers(), attribute.String("rehome.shard", "s1"))
	span.End()
	if got := trace.SpanContextFromContext(pctx).TraceID(); got != root.SpanContext().TraceID() {
		t.Fatalf("consumer span in trace %s, want %s", got, root.SpanContext().TraceID())
	}
	spans := rec.Ended()
	last := spans[len(spans)-1]
	if last.Parent().SpanID() != root.SpanContext().SpanID() || last.SpanKind() != trace.SpanKindConsumer {
		t.Fatalf("consumer span parent %s kind %s, want child of %s, consumer", last.Parent().SpanID(), last.SpanKind(), root.SpanContext().SpanID())
	}
	attrs := map[attribute.Key]string{}
	for _, kv := range last.Attributes() {
		attrs[kv.Key] = kv.Value.Emit()
	}
	if attrs["messaging.system"] != "nats" || attrs["messaging.destination.name"] != event.DonePrefix+"storage-2" || attrs["messaging.operation"] != "process" {
		t.Fatalf("messaging attributes: %v", attrs)
	}

	msg, err = cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if tp := msg.Headers().Get("traceparent"); tp != "" {
		t.Fatalf("message published without a span carries traceparent %q", tp)
	}
}
