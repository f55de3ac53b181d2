package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

// testLogger discards logs unless REHOME_TEST_LOG is set (goroutines may log
// after a test ends, which t.Log forbids).
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	if os.Getenv("REHOME_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type running struct {
	svc    *Service
	cancel context.CancelFunc
	done   chan error
}

func startService(t *testing.T, env *bustest.Env, cfg Config) *running {
	t.Helper()
	svc, err := New(cfg, env.NC, env.JS, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it; it is idempotent.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancel")
	}
}

func nodeRecord(t *testing.T, env *bustest.Env, id string) (model.Node, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := env.JS.KeyValue(ctx, bus.BucketNodes)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		return model.Node{}, false
	}
	var n model.Node
	if err := json.Unmarshal(e.Value(), &n); err != nil {
		t.Fatalf("node record is not JSON: %v", err)
	}
	return n, true
}

// nextHeartbeat waits for a heartbeat on sub that satisfies ok.
func nextHeartbeat(t *testing.T, sub *nats.Subscription, ok func(event.Heartbeat) bool) event.Heartbeat {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var hb event.Heartbeat
		if err := event.Decode(msg.Data, &hb); err != nil {
			t.Fatalf("heartbeat does not decode: %v", err)
		}
		if ok(hb) {
			return hb
		}
	}
	t.Fatal("no matching heartbeat within 15s")
	return event.Heartbeat{}
}

func TestServiceRegistersHeartbeatsAndRestarts(t *testing.T) {
	env := bustest.Start(t)
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = "storage-1", "rack-2", dir
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.RegisterEvery = 4
	cfg.CapacityBytes = 1 << 30
	cfg.Token = "tok"

	sub, err := env.NC.SubscribeSync(event.HeartbeatPrefix + "storage-1")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	r1 := startService(t, env, cfg)
	svc := r1.svc
	if !strings.HasPrefix(svc.Addr(), "127.0.0.1:") || strings.HasSuffix(svc.Addr(), ":0") {
		t.Fatalf("Addr() = %q, want the bound loopback address", svc.Addr())
	}
	boot1 := svc.BootID()
	if boot1 == "" {
		t.Fatal("no boot id")
	}

	var rec model.Node
	bustest.Eventually(t, 15*time.Second, "node record in the nodes bucket", func() bool {
		var ok bool
		rec, ok = nodeRecord(t, env, "storage-1")
		return ok
	})
	if err := rec.Validate(); err != nil {
		t.Fatalf("node record invalid: %v", err)
	}
	if rec.Addr != svc.Addr() || rec.BootID != boot1 || rec.Rack != "rack-2" || rec.CapacityBytes != 1<<30 {
		t.Fatalf("node record = %+v", rec)
	}

	hb := nextHeartbeat(t, sub, func(event.Heartbeat) bool { return true })
	if hb.Node != "storage-1" || hb.Rack != "rack-2" || hb.Addr != svc.Addr() || hb.BootID != boot1 ||
		hb.Shards != 0 || hb.CapacityBytes != 1<<30 {
		t.Fatalf("first heartbeat = %+v", hb)
	}

	c := shardapi.New("tok")
	ctx := testCtx(t)
	body := data(42, 123_456)
	if err := c.Put(ctx, svc.Addr(), "shard-a", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	hb = nextHeartbeat(t, sub, func(h event.Heartbeat) bool { return h.Shards == 1 })
	if hb.UsedBytes != int64(len(body)) {
		t.Fatalf("heartbeat after put = %+v, want used_bytes %d", hb, len(body))
	}

	// A lost registration heals within a few heartbeats.
	kv, err := env.JS.KeyValue(ctx, bus.BucketNodes)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "storage-1"); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 15*time.Second, "node record re-put after deletion", func() bool {
		n, ok := nodeRecord(t, env, "storage-1")
		return ok && n.BootID == boot1
	})

	// /healthz and /metrics are served on the node's own address.
	if code, b := do(t, "GET", "http://"+svc.Addr()+"/healthz", nil, nil); code != 200 || b != "ok" {
		t.Fatalf("/healthz = %d %q", code, b)
	}
	if got := scrape(t, svc.Addr(), "rehome_storage_capacity_bytes"); got != 1<<30 {
		t.Fatalf("capacity metric = %v", got)
	}

	r1.stop(t)
	if _, err := c.List(ctx, svc.Addr()); err == nil {
		t.Fatal("node still answers after Run returned")
	}

	// A second start on the same dir: a new boot id, the shard still there.
	r2 := startService(t, env, cfg)
	boot2 := r2.svc.BootID()
	if boot2 == "" || boot2 == boot1 {
		t.Fatalf("second start boot id %q, first %q: want a fresh one", boot2, boot1)
	}
	bustest.Eventually(t, 15*time.Second, "node record with the new boot id", func() bool {
		n, ok := nodeRecord(t, env, "storage-1")
		return ok && n.BootID == boot2 && n.Addr == r2.svc.Addr()
	})
	nextHeartbeat(t, sub, func(h event.Heartbeat) bool { return h.BootID == boot2 && h.Shards == 1 })
	rc, _, err := c.Get(ctx, r2.svc.Addr(), "shard-a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("shard after restart: %d bytes, %v", len(got), err)
	}
}

func TestNewRefusesBadConfigAndABusyDir(t *testing.T) {
	env := bustest.Start(t)
	dir := t.TempDir()
	bad := []Config{
		{Rack: "r", Dir: dir},
		{ID: "a.b", Rack: "r", Dir: dir},
		{ID: "s1", Dir: dir},
		{ID: "s1", Rack: "r"},
		{ID: "s1", Rack: "r", Dir: dir, CapacityBytes: -1},
		{ID: "s1", Rack: "r", Dir: dir, Advertise: "no-port"},
		{ID: "s1", Rack: "r", Dir: dir, Listen: "256.0.0.1:99999"},
	}
	for _, cfg := range bad {
		if s, err := New(cfg, env.NC, env.JS, nil); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := New(Config{ID: "s1", Rack: "r", Dir: dir}, nil, nil, nil); err == nil {
		t.Error("New without NATS succeeded")
	}
	s1, err := New(Config{ID: "s1", Rack: "r", Dir: dir}, env.NC, env.JS, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{ID: "s2", Rack: "r", Dir: dir}, env.NC, env.JS, nil); err == nil {
		t.Error("a second node on the same dir was accepted")
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	// Run after Close must neither hang nor pretend to serve.
	if err := s1.Run(context.Background()); err == nil {
		t.Error("Run after Close returned nil")
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{ID: "s", Rack: "r", Dir: "/d"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:0" || c.HeartbeatInterval != time.Second || c.MaxShardBytes != 64<<20 ||
		c.RegisterEvery != 10 || c.ShutdownTimeout != 5*time.Second {
		t.Fatalf("defaults = %+v", c)
	}
	if DefaultConfig().Listen != "127.0.0.1:0" {
		t.Fatal("DefaultConfig listen")
	}
	if _, err := (Config{}).withDefaults(); err == nil || !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("empty config: %v", err)
	}
}

func TestAdvertiseAddr(t *testing.T) {
	cases := []struct{ configured, bound, host, want string }{
		{"", "127.0.0.1:7001", "h", "127.0.0.1:7001"},
		{"node3:7001", "0.0.0.0:7001", "h", "node3:7001"},
		{"", "0.0.0.0:7001", "storage-3", "storage-3:7001"},
		{"", "[::]:7001", "storage-3", "storage-3:7001"},
		{"", "[::]:7001", "", "127.0.0.1:7001"},
		{"", "[::1]:7001", "h", "[::1]:7001"},
	}
	for _, c := range cases {
		if got := advertiseAddr(c.configured, c.bound, c.host); got != c.want {
			t.Errorf("advertiseAddr(%q, %q, %q) = %q, want %q", c.configured, c.bound, c.host, got, c.want)
		}
	}
}

func TestNeedRegister(t *testing.T) {
	cases := []struct {
		tick, every int
		reconnected bool
		want        bool
	}{
		{0, 10, false, true},
		{1, 10, false, false},
		{9, 10, false, false},
		{10, 10, false, true},
		{20, 10, false, true},
		{7, 10, true, true},
		{3, 0, false, false},
	}
	for _, c := range cases {
		if got := needRegister(c.tick, c.every, c.reconnected); got != c.want {
			t.Errorf("needRegister(%d, %d, %v) = %v", c.tick, c.every, c.reconnected, got)
		}
	}
}
