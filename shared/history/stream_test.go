package history_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/history"
	"github.com/rehome/rehome/shared/model"
)

// TestReadAndFollowTheEventsStream publishes through the real bus and reads
// back: Read stops at the stream's end, Follow keeps going, the filter
// applies, and a verdict's trace id comes from its message headers.
func TestReadAndFollowTheEventsStream(t *testing.T) {
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	empty := 0
	if err := history.Read(ctx, env.JS, time.Time{}, nil, func(history.Event) { empty++ }); err != nil || empty != 0 {
		t.Fatalf("Read of an empty stream: %d events, %v", empty, err)
	}

	tid := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled})
	tctx := trace.ContextWithSpanContext(ctx, sc)
	now := time.Now().UTC()
	publish := func(ctx context.Context, subject string, p event.Payload) {
		t.Helper()
		if err := bus.Publish(ctx, env.JS, subject, p, ""); err != nil {
			t.Fatal(err)
		}
	}
	publish(ctx, event.SuspectPrefix+"storage-3", &event.Verdict{Header: event.Header{TS: now}, Node: "storage-3", State: model.StateSuspect, Reason: "heartbeat_timeout"})
	publish(tctx, event.DownPrefix+"storage-3", &event.Verdict{Header: event.Header{TS: now}, Node: "storage-3", State: model.StateDown, Reason: "heartbeat_timeout", Incident: "storage-3-1"})
	publish(ctx, event.CorruptPrefix+"storage-1", &event.Corrupt{Header: event.Header{TS: now}, Node: "storage-1", Shard: "s1", Reason: "sha256", Found: "scrub"})

	var subjects []string
	log := history.NewLog()
	if err := history.Read(ctx, env.JS, time.Time{}, []string{"rehome.node.>"}, func(e history.Event) {
		subjects = append(subjects, e.Subject)
		if e.Time.IsZero() {
			t.Errorf("%s: no stream time", e.Subject)
		}
		log.Add(e)
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{event.SuspectPrefix + "storage-3", event.DownPrefix + "storage-3"}; !slices.Equal(subjects, want) {
		t.Fatalf("Read delivered %v, want %v", subjects, want)
	}
	if incs := log.Incidents(time.Time{}); len(incs) != 1 || incs[0].TraceID != tid.String() {
		t.Fatalf("incidents %+v, want one with trace %s", incs, tid)
	}
	// Nothing matches: Read returns anyway.
	if err := history.Read(ctx, env.JS, time.Time{}, []string{event.LostPrefix + ">"}, func(e history.Event) { t.Errorf("unexpected %s", e.Subject) }); err != nil {
		t.Fatal(err)
	}
	// Since the future: nothing.
	if err := history.Read(ctx, env.JS, time.Now().Add(time.Hour), nil, func(e history.Event) { t.Errorf("unexpected %s", e.Subject) }); err != nil {
		t.Fatal(err)
	}

	// Follow: the stored events, then a live one, then ctx ends it cleanly.
	fctx, fcancel := context.WithCancel(ctx)
	got := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- history.Follow(fctx, env.JS, time.Time{}, nil, func(e history.Event) { got <- e.Subject })
	}()
	for range 3 {
		<-got
	}
	publish(ctx, event.UpPrefix+"storage-3", &event.Verdict{Header: event.Header{TS: time.Now().UTC()}, Node: "storage-3", State: model.StateUp, Reason: "heartbeat"})
	select {
	case s := <-got:
		if s != event.UpPrefix+"storage-3" {
			t.Fatalf("Follow delivered %s", s)
		}
	case <-ctx.Done():
		t.Fatal("Follow did not deliver the live event")
	}
	fcancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow after its ctx ended: %v", err)
	}
}
