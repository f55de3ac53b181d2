package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/rehome/rehome/shared/telemetry"
)

func recorder() (*tracetest.SpanRecorder, trace.Tracer) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	return rec, tp.Tracer("test")
}

func TestExtractFindsTraceparentInAnyCase(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, key := range []string{"traceparent", "Traceparent", "TRACEPARENT", "TraceParent"} {
		h := nats.Header{key: []string{tp}}
		sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h))
		if !sc.IsValid() || sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" || !sc.IsRemote() {
			t.Errorf("header %q: extracted %+v", key, sc)
		}
	}
	for name, h := range map[string]nats.Header{
		"nil": nil, "empty": {}, "garbage": {"traceparent": []string{"00-zz-yy-01"}}, "other": {"X-Foo": []string{"bar"}},
	} {
		if sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h)); sc.IsValid() {
			t.Errorf("%s header: extracted a span context %+v", name, sc)
		}
	}
}

func TestInjectThenExtractContinuesTheTrace(t *testing.T) {
	rec, tracer := recorder()
	ctx, span := tracer.Start(context.Background(), "root")
	h := nats.Header{"TRACEPARENT": []string{"stale"}}
	telemetry.Inject(ctx, h)
	span.End()
	if len(h) != 1 || h.Get("traceparent") == "" {
		t.Fatalf("inject left %v, want one traceparent replacing the stale one", h)
	}
	cctx, child := tracer.Start(telemetry.Extract(context.Background(), h), "child")
	child.End()
	_ = cctx
	spans := rec.Ended()
	if len(spans) != 2 || spans[1].Parent().SpanID() != spans[0].SpanContext().SpanID() ||
		spans[1].SpanContext().TraceID() != spans[0].SpanContext().TraceID() {
		t.Fatalf("child is not a child of root across the header: %+v", spans)
	}

	// No span, no header.
	empty := nats.Header{}
	telemetry.Inject(context.Background(), empty)
	if len(empty) != 0 {
		t.Fatalf("inject without a span wrote %v", empty)
	}
}

func TestTraceParentRoundTrip(t *testing.T) {
	_, tracer := recorder()
	ctx, span := tracer.Start(context.Background(), "rehome.node.down")
	defer span.End()
	tp := telemetry.TraceParent(ctx)
	want := "00-" + span.SpanContext().TraceID().String() + "-" + span.SpanContext().SpanID().String() + "-01"
	if tp != want {
		t.Fatalf("TraceParent = %q, want %q", tp, want)
	}
	sc := trace.SpanContextFromContext(telemetry.ContextFromTraceParent(context.Background(), tp))
	if sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("ContextFromTraceParent lost the span: %+v", sc)
	}
	if telemetry.TraceParent(context.Background()) != "" {
		t.Fatal("TraceParent without a span is not empty")
	}
	for _, bad := range []string{"", "nonsense", "00-00000000000000000000000000000000-0000000000000000-01"} {
		if sc := trace.SpanContextFromContext(telemetry.ContextFromTraceParent(context.Background(), bad)); sc.IsValid() {
			t.Errorf("ContextFromTraceParent(%q) gave a span context", bad)
		}
	}
}

func TestLoggerAddsTraceAndSpanIDs(t *testing.T) {
	var buf bytes.Buffer
	log := telemetry.Logger(&buf, "mover-1", "info").With("task", "t1")
	_, tracer := recorder()
	ctx, span := tracer.Start(context.Background(), "copy")
	log.InfoContext(ctx, "task done")
	span.End()
	log.Info("no context")
	log.DebugContext(ctx, "hidden")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first["trace_id"] != span.SpanContext().TraceID().String() || first["span_id"] != span.SpanContext().SpanID().String() ||
		first["service"] != "mover-1" || first["task"] != "t1" {
		t.Fatalf("line with a span: %v", first)
	}
	if _, ok := second["trace_id"]; ok {
		t.Fatalf("line without a span has a trace id: %v", second)
	}
}

func TestEnabledFollowsTheEnvironment(t *testing.T) {
	cases := []struct {
		exporter, endpoint, tracesEndpoint, disabled string
		want                                         bool
	}{
		{want: false},
		{exporter: "otlp", want: true},
		{exporter: "console", want: true},
		{exporter: "none", endpoint: "http://127.0.0.1:4318", want: false},
		{endpoint: "http://127.0.0.1:4318", want: true},
		{tracesEndpoint: "http://127.0.0.1:4318/v1/traces", want: true},
		{endpoint: "http://127.0.0.1:4318", disabled: "true", want: false},
	}
	for _, c := range cases {
		t.Setenv(telemetry.EnvTracesExporter, c.exporter)
		t.Setenv(telemetry.EnvOTLPEndpoint, c.endpoint)
		t.Setenv(telemetry.EnvOTLPTracesEndpoint, c.tracesEndpoint)
		t.Setenv("OTEL_SDK_DISABLED", c.disabled)
		if got := telemetry.Enabled(); got != c.want {
			t.Errorf("%+v: Enabled = %v", c, got)
		}
	}
}

func TestSetupOffInstallsThePropagatorOnly(t *testing.T) {
	t.Setenv(telemetry.EnvTracesExporter, "")
	t.Setenv(telemetry.EnvOTLPEndpoint, "")
	t.Setenv(telemetry.EnvOTLPTracesEndpoint, "")
	before := otel.GetTracerProvider()
	shutdown, err := telemetry.Setup(context.Background(), "detector")
	if err != nil {
		t.Fatal(err)
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if otel.GetTracerProvider() != before {
		t.Fatal("Setup installed a tracer provider with tracing off")
	}
	if f := otel.GetTextMapPropagator().Fields(); !strings.Contains(strings.Join(f, ","), "traceparent") {
		t.Fatalf("global propagator fields %v, want traceparent", f)
	}
}

// TestSetupExportsOverOTLPHTTP points the standard environment at an OTLP/HTTP
// receiver and checks a span arrives with the service's resource.
func TestSetupExportsOverOTLPHTTP(t *testing.T) {
	var (
		mu   sync.Mutex
		reqs []*collectortrace.ExportTraceServiceRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		reqs = append(reqs, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	defer srv.Close()
	t.Setenv(telemetry.EnvTracesExporter, "")
	t.Setenv(telemetry.EnvOTLPTracesEndpoint, "")
	t.Setenv(telemetry.EnvOTLPEndpoint, srv.URL)
	t.Setenv("OTEL_SERVICE_NAME", "overridden")
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)

	shutdown, err := telemetry.Setup(context.Background(), "detector", telemetry.WithInstance("detector-1"))
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(context.Background(), "rehome.node.down")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown (flush): %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	found := false
	for _, req := range reqs {
		for _, rs := range req.GetResourceSpans() {
			attrs := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					if s.GetName() == "rehome.node.down" {
						found = true
						if attrs["service.name"] != "detector" || attrs["service.instance.id"] != "detector-1" || attrs["service.namespace"] != "rehome" {
							t.Errorf("resource attributes %v", attrs)
						}
					}
				}
			}
		}
	}
	if !found {
		t.Fatalf("the span did not reach the receiver (%d requests)", len(reqs))
	}
}
