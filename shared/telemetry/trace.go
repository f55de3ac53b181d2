package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Environment variables that turn tracing on (see Enabled). They are the
// standard OpenTelemetry ones; every other OTEL_* variable (protocol,
// headers, sampler, batch delays) is honoured by the exporter and the SDK.
const (
	EnvTracesExporter     = "OTEL_TRACES_EXPORTER"
	EnvOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envSDKDisabled        = "OTEL_SDK_DISABLED"
)

// Resource attributes Setup sets.
const (
	attrServiceName       = "service.name"
	attrServiceInstanceID = "service.instance.id"
	attrServiceNamespace  = "service.namespace"
	serviceNamespace      = "rehome"
)

// Enabled reports whether the environment asks for traces: OTEL_TRACES_EXPORTER
// is set (to anything but "none"), or an OTLP endpoint is
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and
// OTEL_SDK_DISABLED is not "true".
func Enabled() bool { return enabled(os.Getenv) }

func enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv(envSDKDisabled)), "true") {
		return false
	}
	switch exp := strings.TrimSpace(getenv(EnvTracesExporter)); {
	case strings.EqualFold(exp, "none"):
		return false
	case exp != "":
		return true
	}
	return getenv(EnvOTLPEndpoint) != "" || getenv(EnvOTLPTracesEndpoint) != ""
}

// Option adjusts Setup.
type Option func(*setup)

type setup struct {
	instance string
	log      *slog.Logger
}

// WithInstance sets the resource's service.instance.id (e.g. "storage-3",
// "mover-1"), telling apart processes of one service.
func WithInstance(id string) Option { return func(s *setup) { s.instance = id } }

// WithLogger routes the SDK's own errors (an unreachable collector, say) to
// log at warn level instead of the standard logger.
func WithLogger(log *slog.Logger) Option { return func(s *setup) { s.log = log } }

// Setup installs the W3C trace-context propagator globally and, when the
// environment asks for traces (Enabled), a global TracerProvider whose
// resource names the service (service.name, service.namespace "rehome", and
// service.instance.id with WithInstance), batching spans to the exporter
// that OTEL_* selects (autoexport: OTLP over HTTP by default). Otherwise
// tracing stays off: the global provider is a no-op, no exporter is created
// and nothing is dialled. Call it once at process start; shutdown flushes the
// spans still buffered and stops the exporter (bounded by its context). Not
// safe to call concurrently with itself.
func Setup(ctx context.Context, service string, opts ...Option) (shutdown func(context.Context) error, err error) {
	var cfg setup
	for _, o := range opts {
		o(&cfg)
	}
	otel.SetTextMapPropagator(Propagator())
	noop := func(context.Context) error { return nil }
	if !Enabled() {
		return noop, nil
	}
	if cfg.log != nil {
		log := cfg.log
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("telemetry", "err", err) }))
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return noop, fmt.Errorf("telemetry: span exporter from %s: %w", EnvTracesExporter, err)
	}
	attrs := []attribute.KeyValue{
		attribute.String(attrServiceName, service),
		attribute.String(attrServiceNamespace, serviceNamespace),
	}
	if cfg.instance != "" {
		attrs = append(attrs, attribute.String(attrServiceInstanceID, cfg.instance))
	}
	// Ours come last so they win over OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		_ = exp.Shutdown(ctx)
		return noop, fmt.Errorf("telemetry: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Provider returns tp, or otel's global provider when tp is nil (the one
// Setup installs; a no-op until then). Services take an optional provider in
// their Config and resolve it with Provider.
func Provider(tp trace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return otel.GetTracerProvider()
	}
	return tp
}

var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Propagator is the propagator rehome uses everywhere: W3C trace context and
// baggage. Inject and Extract use it whatever the global one is.
func Propagator() propagation.TextMapPropagator { return propagator }

// HeaderCarrier adapts nats.Header to propagation.TextMapCarrier. Unlike
// propagation.HeaderCarrier its Get ignores case, so a "traceparent" set by
// another client in any case is found; Set replaces every case variant.
type HeaderCarrier nats.Header

// Get returns the first value of key, matched case-insensitively ("" if none).
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set stores value under key, dropping any other case variant of key.
func (c HeaderCarrier) Set(key, value string) {
	for k := range c {
		if k != key && strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[key] = []string{value}
}

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx (traceparent, tracestate, baggage)
// into h, which must be non-nil. It writes nothing when ctx carries no valid
// span context.
func Inject(ctx context.Context, h nats.Header) {
	if h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagator.Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the remote span context found in h (header names
// in any case) as its parent, or ctx unchanged when h carries none or a
// malformed one. h may be nil.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// TraceParent returns the W3C traceparent of ctx's span context
// ("00-<trace id>-<span id>-<flags>"), or "" when it has none. It is what
// records that cannot carry headers store (model.Liveness.TraceParent).
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// ContextFromTraceParent returns ctx with the span context of the W3C
// traceparent tp as its remote parent, so a span started from it continues
// that trace. A malformed or empty tp leaves ctx unchanged.
func ContextFromTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// Messaging attribute keys (OpenTelemetry messaging semantic conventions).
const (
	AttrMessagingSystem        = "messaging.system"
	AttrMessagingDestination   = "messaging.destination.name"
	AttrMessagingOperation     = "messaging.operation"
	AttrMessagingOperationType = "messaging.operation.type"
	AttrMessagingMessageID     = "messaging.message.id"
	messagingSystemNATS        = "nats"
	messagingProcess           = "process"
)

// MessagingAttrs are the attributes of a span processing a message received
// on subject: messaging.system "nats", messaging.destination.name subject,
// messaging.operation (and .type) "process".
func MessagingAttrs(subject string) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String(AttrMessagingSystem, messagingSystemNATS),
		attribute.String(AttrMessagingDestination, subject),
		attribute.String(AttrMessagingOperation, messagingProcess),
		attribute.String(AttrMessagingOperationType, messagingProcess),
	}
}

// StartProcess starts a span of kind consumer named name for processing a
// message received on subject with headers h: a child of the trace context
// in h when there is one, else of ctx's span (if any). It carries
// MessagingAttrs(subject) and attrs. The caller ends the span.
func StartProcess(ctx context.Context, tracer trace.Tracer, name, subject string, h nats.Header, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx = Extract(ctx, h)
	return tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(append(MessagingAttrs(subject), attrs...)...))
}
