package mover_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/services/storage"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/telemetry"
)

// tracedCluster is a cluster whose storage nodes and mover report spans to one
// recorder, as processes exporting to one collector would.
func tracedCluster(t *testing.T) (*cluster, *tracetest.SpanRecorder, trace.TracerProvider) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c := newCluster(t)
	for _, id := range []string{"storage-a", "storage-b"} {
		cfg := storage.DefaultConfig()
		cfg.ID, cfg.Rack, cfg.Dir, cfg.Token, cfg.TracerProvider = id, "rack-1", t.TempDir(), token, tp
		cfg.HeartbeatInterval = 200 * time.Millisecond
		svc, err := storage.New(cfg, c.env.NC, c.env.JS, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		run(t, "storage "+id, svc.Run)
		t.Cleanup(c.shards.HTTP.CloseIdleConnections)
		c.nodes[id] = svc
	}
	kv := c.kv()
	bustest.Eventually(t, timeout, "nodes registered", func() bool {
		for id := range c.nodes {
			if _, err := kv.Get(context.Background(), id); err != nil {
				return false
			}
		}
		return true
	})
	return c, rec, tp
}

// spanNamed waits for an ended span named name whose attribute rehome.task
// (when it has one) is task.
func spanNamed(t *testing.T, rec *tracetest.SpanRecorder, name, task string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	bustest.Eventually(t, timeout, "span "+name+" of "+task, func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == name && attr(s, "rehome.task") == task {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// doneHeaders records the headers of done events by task.
func doneHeaders(t *testing.T, nc *nats.Conn) func(task string) nats.Header {
	var mu sync.Mutex
	seen := map[string]nats.Header{}
	sub, err := nc.Subscribe(event.DonePrefix+">", func(m *nats.Msg) {
		var d event.Done
		if event.Decode(m.Data, &d) == nil {
			mu.Lock()
			seen[d.Task] = m.Header
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func(task string) nats.Header {
		mu.Lock()
		defer mu.Unlock()
		return seen[task]
	}
}

// TestCopySpanContinuesTheTaskMessagesTrace publishes a task inside a
// planner-like span: the mover's copy span is its child (consumer, messaging
// and repair attributes), the target's pull and the source's GET are spans
// of the same trace under it, and the done event carries the copy span's context.
func TestCopySpanContinuesTheTaskMessagesTrace(t *testing.T) {
	c, rec, tp := tracedCluster(t)
	c.mover(mover.Config{ID: "m1", TracerProvider: tp})
	headers := doneHeaders(t, c.env.NC)
	data := randomBytes(t, 256<<10)
	c.put("storage-a", "shard-1", data)

	ctx, plan := tp.Tracer("test").Start(context.Background(), "rehome.repair.plan")
	task := copyTask("task-1", "shard-1", data, "storage-b", "storage-a")
	task.Attempt = 1
	if err := bus.Publish(ctx, c.env.JS, event.TaskPrefix+task.Target, task, ""); err != nil {
		t.Fatal(err)
	}
	plan.End()

	cp := spanNamed(t, rec, "copy", "task-1")
	if cp.Parent().SpanID() != plan.SpanContext().SpanID() || cp.SpanContext().TraceID() != plan.SpanContext().TraceID() {
		t.Fatalf("copy span parent %s, want the plan span %s", cp.Parent().SpanID(), plan.SpanContext().SpanID())
	}
	want := map[string]string{
		"messaging.system": "nats", "messaging.destination.name": event.TaskPrefix + "storage-b", "messaging.operation": "process",
		"rehome.shard": "shard-1", "rehome.source": "storage-a", "rehome.target": "storage-b",
		"rehome.bytes": strconv.Itoa(len(data)), "rehome.attempt": "1", "rehome.result": "done",
	}
	for k, v := range want {
		if got := attr(cp, k); got != v {
			t.Errorf("copy span %s = %q, want %q", k, got, v)
		}
	}
	if cp.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("copy span kind %s, want consumer", cp.SpanKind())
	}

	// Storage spans: the target's pull is a child (through a client span) of
	// the copy span, and the source's GET a child (through the target's
	// client span) of the pull.
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	var pull, get sdktrace.ReadOnlySpan
	bustest.Eventually(t, timeout, "storage pull and GET spans", func() bool {
		for _, s := range rec.Ended() {
			byID[s.SpanContext().SpanID()] = s
			if s.SpanKind() == trace.SpanKindServer && s.SpanContext().TraceID() == cp.SpanContext().TraceID() {
				switch s.Name() {
				case "POST /v1/shards/{id}/pull":
					pull = s
				case "GET /v1/shards/{id}":
					get = s
				}
			}
		}
		return pull != nil && get != nil
	})
	under := func(s sdktrace.ReadOnlySpan, parent trace.SpanID) bool {
		client := byID[s.Parent().SpanID()]
		return client != nil && client.SpanKind() == trace.SpanKindClient && client.Parent().SpanID() == parent
	}
	if !under(pull, cp.SpanContext().SpanID()) {
		t.Errorf("storage span %s is not under a client span of the copy span", pull.Name())
	}
	if !under(get, pull.SpanContext().SpanID()) {
		t.Errorf("storage span %s is not under a client span of the target's pull", get.Name())
	}

	bustest.Eventually(t, timeout, "done event headers", func() bool { return headers("task-1") != nil })
	sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), headers("task-1")))
	if sc.SpanID() != cp.SpanContext().SpanID() {
		t.Fatalf("done event carries span %s, want the copy span %s", sc.SpanID(), cp.SpanContext().SpanID())
	}
}

// TestTaskWithoutTraceContextJoinsItsIncident checks the fallback for a task
// published without trace headers: its span continues the trace of its
// incident's down verdict, found in the liveness record (the planner does not
// instrument its tasks yet, and a task re-derived after a planner restart has
// no plan span either).
func TestTaskWithoutTraceContextJoinsItsIncident(t *testing.T) {
	c, rec, tp := tracedCluster(t)
	data := randomBytes(t, 64<<10)
	c.put("storage-a", "shard-2", data)

	// The detector's down verdict on storage-z, with its root span's traceparent.
	ctx, root := tp.Tracer("test").Start(context.Background(), "rehome.node.down", trace.WithAttributes(attribute.String("rehome.node", "storage-z")))
	root.End()
	since := time.Now().UTC()
	live := model.Liveness{V: model.Version, Node: "storage-z", State: model.StateDown, Since: since, LastHeard: since.Add(-10 * time.Second),
		TraceParent: telemetry.TraceParent(ctx)}
	b, _ := json.Marshal(live)
	kv, err := c.env.JS.KeyValue(context.Background(), bus.BucketLiveness)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "storage-z", b); err != nil {
		t.Fatal(err)
	}
	incident := "storage-z-" + strconv.FormatInt(since.UnixMilli(), 10)
	// The mover loads the liveness records before it takes tasks.
	c.mover(mover.Config{ID: "m1", TracerProvider: tp})
	task := copyTask("task-2", "shard-2", data, "storage-b", "storage-a")
	task.Incident = incident
	c.publish(task)
	cp := spanNamed(t, rec, "copy", "task-2")
	if cp.SpanContext().TraceID() != root.SpanContext().TraceID() || cp.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Fatalf("copy span in trace %s under %s, want the incident's %s under %s",
			cp.SpanContext().TraceID(), cp.Parent().SpanID(), root.SpanContext().TraceID(), root.SpanContext().SpanID())
	}
	if got := attr(cp, "rehome.incident"); got != incident {
		t.Fatalf("copy span incident %q, want %q", got, incident)
	}

	// A verdict written while the mover runs, its task right behind it (the
	// task may overtake the mover's watch of the bucket): still joined.
	ctx, root2 := tp.Tracer("test").Start(context.Background(), "rehome.node.down")
	root2.End()
	since2 := time.Now().UTC()
	live2 := model.Liveness{V: model.Version, Node: "storage-y", State: model.StateDown, Since: since2, LastHeard: since2, TraceParent: telemetry.TraceParent(ctx)}
	b, _ = json.Marshal(live2)
	if _, err := kv.Put(context.Background(), "storage-y", b); err != nil {
		t.Fatal(err)
	}
	c.put("storage-a", "shard-3", data)
	task3 := copyTask("task-3", "shard-3", data, "storage-b", "storage-a")
	task3.Incident = "storage-y-" + strconv.FormatInt(since2.UnixMilli(), 10)
	c.publish(task3)
	cp3 := spanNamed(t, rec, "copy", "task-3")
	if cp3.Parent().SpanID() != root2.SpanContext().SpanID() {
		t.Fatalf("copy span of task-3 under %s, want the second incident's root %s", cp3.Parent().SpanID(), root2.SpanContext().SpanID())
	}
}
