package bus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
)

func TestEnsureIsIdempotentAndHeartbeatsKeepLastPerNode(t *testing.T) {
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A second Ensure (another service starting) must not fail or reset anything.
	if err := bus.Ensure(ctx, env.JS, bus.Config{}); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	for i := 0; i < 3; i++ {
		hb := &event.Heartbeat{Node: "storage-1", Rack: "rack-1", Addr: "127.0.0.1:1", BootID: "b", Shards: i}
		if err := bus.Publish(ctx, env.JS, event.HeartbeatPrefix+"storage-1", hb, ""); err != nil {
			t.Fatal(err)
		}
	}
	s, err := env.JS.Stream(ctx, bus.StreamHeartbeats)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, event.HeartbeatPrefix+"storage-1")
	if err != nil {
		t.Fatal(err)
	}
	var got event.Heartbeat
	if err := event.Decode(m.Data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Shards != 2 {
		t.Fatalf("last heartbeat has shards=%d, want 2", got.Shards)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("heartbeat stream keeps %d messages for one node, want 1", info.State.Msgs)
	}
}

func TestPublishDedupsByMsgID(t *testing.T) {
	env := bustest.Start(t)
	ctx := context.Background()
	v := &event.Verdict{Node: "storage-2", State: "down", Reason: "silent"}
	for i := 0; i < 2; i++ {
		if err := bus.Publish(ctx, env.JS, event.DownPrefix+"storage-2", v, "down-storage-2-1"); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := env.JS.Stream(ctx, bus.StreamEvents)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d verdicts, want 1 after a duplicate publish", info.State.Msgs)
	}
}

func TestRedactHidesPasswords(t *testing.T) {
	got := bus.Redact("nats://operator:s3cret@nats-1:4222,nats://operator:s3cret@nats-2:4222")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "nats-2:4222") {
		t.Fatalf("Redact: %s", got)
	}
	if got := bus.Redact("nats://127.0.0.1:4222"); got != "nats://127.0.0.1:4222" {
		t.Fatalf("Redact changed a URL without credentials: %s", got)
	}
}
