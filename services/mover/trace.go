package mover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/telemetry"
)

// tracerName is the instrumentation scope of the mover's spans.
const tracerName = "github.com/rehome/rehome/services/mover"

// maxIncidents bounds the incidents remembered for tracing.
const maxIncidents = 4096

// incidents remembers the trace of each node loss: the traceparent the
// detector wrote into a down verdict's liveness record, under the incident id
// (<node>-<unix ms of the verdict>) that tasks repairing it carry. A task
// that arrives without trace context in its headers still joins its
// incident's trace through it. The most recent maxIncidents are kept
// (incidents without a traceparent too, as ""). It is safe for concurrent use.
type incidents struct {
	log       *slog.Logger
	malformed func(error)

	mu    sync.Mutex
	tps   map[string]string  // incident -> traceparent
	order []string           // insertion order, oldest first
	kv    jetstream.KeyValue // the liveness bucket, once watched
}

func newIncidents(log *slog.Logger, malformed func(error)) *incidents {
	return &incidents{log: log, malformed: malformed, tps: map[string]string{}}
}

// lookupTimeout bounds the read of a liveness record for an incident the
// watch has not shown yet.
const lookupTimeout = time.Second

// TraceParent returns the traceparent of incident ("" when it has none). An
// incident the watch has not shown yet (a task can overtake the watch) is
// read from the bucket once and remembered, found or not.
func (in *incidents) TraceParent(ctx context.Context, incident string) string {
	in.mu.Lock()
	tp, ok := in.tps[incident]
	kv := in.kv
	in.mu.Unlock()
	node := incidentNode(incident)
	if ok || kv == nil || node == "" {
		return tp
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	e, err := kv.Get(ctx, node)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		in.log.Debug("reading liveness for an incident trace", "incident", incident, "err", err)
		return ""
	default:
		if id, tp, ok := in.decode(e.Key(), e.Value()); ok && id == incident {
			in.remember(id, tp)
			return tp
		}
	}
	in.remember(incident, "")
	return ""
}

// incidentNode is the node of an incident id <node>-<unix ms> ("" if malformed).
func incidentNode(incident string) string {
	i := strings.LastIndexByte(incident, '-')
	if i <= 0 {
		return ""
	}
	if _, err := strconv.ParseInt(incident[i+1:], 10, 64); err != nil {
		return ""
	}
	return incident[:i]
}

// decode reads a liveness record: ok when it is a down verdict with a
// traceparent, id being its incident.
func (in *incidents) decode(key string, value []byte) (id, tp string, ok bool) {
	var l model.Liveness
	err := json.Unmarshal(value, &l)
	if err == nil {
		err = l.Validate()
	}
	if err == nil && l.Node != key {
		err = fmt.Errorf("%w: %w: liveness record for %q under key %.64q", event.ErrMalformed, event.ErrSubjectMismatch, l.Node, key)
	}
	if err != nil {
		in.malformed(err)
		in.log.Debug("ignoring malformed liveness record", "key", key, "err", err)
		return "", "", false
	}
	if l.State != model.StateDown || l.TraceParent == "" {
		return "", "", false
	}
	return l.Node + "-" + strconv.FormatInt(l.Since.UnixMilli(), 10), l.TraceParent, true
}

// note records one liveness record: a down verdict with a traceparent opens
// an incident.
func (in *incidents) note(key string, value []byte) {
	if id, tp, ok := in.decode(key, value); ok {
		in.remember(id, tp)
	}
}

// remember stores incident's traceparent, evicting the oldest beyond maxIncidents.
func (in *incidents) remember(incident, tp string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, ok := in.tps[incident]; !ok {
		in.order = append(in.order, incident)
	}
	in.tps[incident] = tp
	for len(in.order) > maxIncidents {
		delete(in.tps, in.order[0])
		in.order = in.order[1:]
	}
}

// watch follows the liveness bucket until ctx ends, restarting a broken
// watch. It closes ready once the bucket's current records are loaded (or
// when it returns).
func (in *incidents) watch(ctx context.Context, js jetstream.JetStream, ready chan<- struct{}) {
	rewatch(ctx, in.log, "watching liveness for incident traces", ready, func(markReady func()) error {
		return in.watchOnce(ctx, js, markReady)
	})
}

func (in *incidents) watchOnce(ctx context.Context, js jetstream.JetStream, markReady func()) error {
	kv, w, err := watchBucket(ctx, js, bus.BucketLiveness)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	in.mu.Lock()
	in.kv = kv
	in.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("liveness watch closed")
			}
			switch {
			case e == nil:
				markReady()
			case e.Operation() == jetstream.KeyValuePut:
				in.note(e.Key(), e.Value())
			}
		}
	}
}

// startSpan starts the span of one task attempt, named after its kind
// ("copy", "rebuild", "delete"), of kind consumer with the messaging
// attributes of the task message: a child of the trace context in the
// message headers (the planner's), or, when they carry none, of the
// incident's root span (the detector's down verdict), so a repair is always
// part of its incident's trace when tracing is on.
func (s *Service) startSpan(ctx context.Context, msg jetstream.Msg, t event.Task, attempt int) (context.Context, trace.Span) {
	ctx = telemetry.Extract(ctx, msg.Headers())
	if !trace.SpanContextFromContext(ctx).IsValid() && t.Incident != "" {
		ctx = telemetry.ContextFromTraceParent(ctx, s.incidents.TraceParent(ctx, t.Incident))
	}
	attrs := []attribute.KeyValue{
		attribute.String("rehome.task", t.Task),
		attribute.String("rehome.shard", t.Shard),
		attribute.String("rehome.kind", t.Kind),
		attribute.String("rehome.target", t.Target),
		attribute.String("rehome.sources", strings.Join(t.Sources, ",")),
		attribute.Int64("rehome.bytes", t.Bytes),
		attribute.Int("rehome.attempt", attempt),
		attribute.String("rehome.mover", s.cfg.ID),
	}
	if t.Incident != "" {
		attrs = append(attrs, attribute.String("rehome.incident", t.Incident))
	}
	if md, err := msg.Metadata(); err == nil {
		attrs = append(attrs, attribute.String(telemetry.AttrMessagingMessageID, strconv.FormatUint(md.Sequence.Stream, 10)))
	}
	return s.tracer.Start(ctx, t.Kind, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(append(telemetry.MessagingAttrs(msg.Subject()), attrs...)...))
}

// endSpan records a task attempt's outcome on its span and ends it.
func endSpan(span trace.Span, source string, written int64, result string, err error) {
	if source != "" {
		span.SetAttributes(attribute.String("rehome.source", source))
	}
	span.SetAttributes(attribute.Int64("rehome.bytes_written", written), attribute.String("rehome.result", result))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, oneLine(err))
	}
	span.End()
}
