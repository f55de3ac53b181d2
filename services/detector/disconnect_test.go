package detector_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/services/detector"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/embedded"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
	"github.com/rehome/rehome/shared/model"
)

// systemBus starts an embedded server with a system account (and the rehome
// streams) and returns the test env (a plain client) and the system URL.
func systemBus(t *testing.T, dir string) (*bustest.Env, string) {
	t.Helper()
	pw := make([]byte, 12)
	_, _ = rand.Read(pw)
	cfg := embedded.Config{StoreDir: dir, SystemUser: "sys", SystemPassword: "p@ss:/" + hex.EncodeToString(pw)}
	env := bustest.StartWith(t, cfg, func(url string) string { return url })
	return env, cfg.SystemURL(env.URL)
}

// namedNode plays one storage node on its own connection named after it, as the
// storage service does: heartbeats every 100 ms until stopped.
type namedNode struct {
	nc   *nats.Conn
	done chan struct{}
	wg   sync.WaitGroup
}

func startNamedNode(t *testing.T, url, id string) *namedNode {
	t.Helper()
	nc, err := bus.Connect(url, id, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n := &namedNode{nc: nc, done: make(chan struct{})}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			if data, err := event.Encode(&event.Heartbeat{Node: id, Rack: "rack-1", Addr: "127.0.0.1:1", BootID: id + "-boot", CapacityBytes: 1 << 30}); err == nil {
				_ = nc.Publish(event.HeartbeatPrefix+id, data)
			}
			select {
			case <-n.done:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(n.close)
	return n
}

// close stops the heartbeats and closes the connection. Idempotent.
func (n *namedNode) close() {
	select {
	case <-n.done:
		return
	default:
	}
	close(n.done)
	n.wg.Wait()
	_ = n.nc.Flush()
	n.nc.Close()
}

func TestClosedConnectionIsSuspectedAtOnce(t *testing.T) {
	env, sysURL := systemBus(t, t.TempDir())
	kv := livenessKV(t, env)
	seen := collect(t, env.NC)
	startBeater(t, env.NC, "storage-2", "storage-3")
	n1 := startNamedNode(t, env.URL, "storage-1")
	cfg := fastConfig()
	cfg.SuspectAfter = 2 * time.Second
	cfg.Grace = time.Second
	cfg.SystemURL = sysURL
	svc, _ := run(t, env, cfg)
	bustest.Eventually(t, wait, "every node recorded up", allUp(t, kv, "storage-1", "storage-2", "storage-3"))
	// Up verdicts come from the loop, which starts with the startup hold: it
	// ends at most StartupHold from now. (A disconnect during the hold is
	// announced when it ends; the liveness tests cover that.)
	upAt := time.Now()
	bustest.Eventually(t, wait, "startup hold over", func() bool { return time.Since(upAt) > cfg.StartupHold+50*time.Millisecond })

	n1.close()
	closed := time.Now()
	bustest.Eventually(t, wait, "storage-1 suspect", func() bool { return has(seen.of("storage-1"), model.StateSuspect) })
	v, _ := seen.find("storage-1", model.StateSuspect)
	if d := v.TS.Sub(closed); d > time.Second || v.Reason != "connection to NATS closed" {
		t.Fatalf("suspect verdict %+v came %s after the close; want at once (well inside the 2 s suspect timeout), saying why", v, d)
	}

	// It reconnects and beats again: up as usual.
	n1 = startNamedNode(t, env.URL, "storage-1")
	bustest.Eventually(t, wait, "storage-1 up again", func() bool {
		s := seen.of("storage-1")
		return len(s) == 3 && s[2] == model.StateUp && stateOf(t, kv, "storage-1") == model.StateUp
	})

	// It goes away for good: suspect at once, down only after suspect + grace of silence.
	n1.close()
	bustest.Eventually(t, wait, "storage-1 down", func() bool { return stateOf(t, kv, "storage-1") == model.StateDown })
	s := seen.of("storage-1")
	if len(s) != 5 || s[3] != model.StateSuspect || s[4] != model.StateDown {
		t.Fatalf("verdicts %v, want up suspect up suspect down", s)
	}
	down, _ := seen.find("storage-1", model.StateDown)
	if limit := cfg.SuspectAfter + cfg.Grace; time.Duration(down.SilentMS)*time.Millisecond < limit {
		t.Fatalf("down after %d ms of silence, want more than %s", down.SilentMS, limit)
	}
	if got := metricstest.Value(t, svc.Registry(), "rehome_detector_disconnects_total", "outcome", "suspected"); got != 2 {
		t.Fatalf("disconnects_total{suspected} = %v, want 2", got)
	}
	for _, id := range []string{"storage-2", "storage-3"} {
		if s := seen.of(id); len(s) != 1 {
			t.Fatalf("%s: verdicts %v, want only the first up", id, s)
		}
	}
}

func TestSystemURLMustReachTheSystemAccount(t *testing.T) {
	env, sysURL := systemBus(t, t.TempDir())
	bad := map[string]string{
		"wrong password":   strings.Replace(sysURL, "p%40ss", "nope", 1),
		"ordinary account": env.URL,
	}
	for name, u := range bad {
		cfg := fastConfig()
		cfg.SystemURL = u
		svc, err := detector.New(cfg, env.NC, env.JS, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err = svc.Run(ctx)
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut {
			t.Fatalf("%s: Run returned %v, want an error at once", name, err)
		}
		if strings.Contains(err.Error(), "p@ss") || strings.Contains(err.Error(), "p%40ss") || strings.Contains(err.Error(), "nope") {
			t.Fatalf("%s: error %q shows the password", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestEmbeddedSystemAccount(t *testing.T) {
	dir := t.TempDir()
	env, sysURL := systemBus(t, dir)
	ctx := context.Background()

	// A plain client (no credentials) still publishes, subscribes and uses JetStream.
	sub, err := env.NC.SubscribeSync("plain.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.NC.Publish("plain.x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("plain pub/sub: %v %v", m, err)
	}
	kv, err := env.JS.KeyValue(ctx, bus.BucketLiveness)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "storage-1", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := bus.Publish(ctx, env.JS, event.UpPrefix+"storage-1", &event.Verdict{Node: "storage-1", State: model.StateUp, Reason: "t"}, ""); err != nil {
		t.Fatal(err)
	}
	// The plain client sees nothing of the system account.
	sysSub, err := env.NC.SubscribeSync("$SYS.ACCOUNT.>")
	if err != nil {
		t.Fatal(err)
	}

	// The system client hears a named client's disconnect.
	sys, err := bus.Connect(sysURL, "sys", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	got := make(chan *nats.Msg, 16)
	if _, err := sys.ChanSubscribe("$SYS.ACCOUNT.*.DISCONNECT", got); err != nil {
		t.Fatal(err)
	}
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	named, err := bus.Connect(env.URL, "storage-9", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	named.Close()
	deadline := time.After(wait)
	for found := false; !found; {
		select {
		case m := <-got:
			var ev struct {
				Type   string `json:"type"`
				Client struct {
					Name    string `json:"name"`
					Account string `json:"acc"`
				} `json:"client"`
			}
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			found = ev.Client.Name == "storage-9"
			if found && (m.Subject != "$SYS.ACCOUNT."+embedded.AppAccount+".DISCONNECT" || ev.Client.Account != embedded.AppAccount) {
				t.Fatalf("disconnect of storage-9 on %s in account %q", m.Subject, ev.Client.Account)
			}
		case <-deadline:
			t.Fatal("no DISCONNECT event for storage-9 on the system connection")
		}
	}
	if m, err := sysSub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("a plain client received a system event on %s", m.Subject)
	}

	// JetStream data of the app account survives a restart of the server.
	env.NC.Close()
	env.Server.Shutdown()
	env.Server.WaitForShutdown()
	s2, err := embedded.Start(embedded.Config{Port: -1, StoreDir: dir, SystemUser: "sys", SystemPassword: "other"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s2.Shutdown(); s2.WaitForShutdown() }()
	nc2, err := bus.Connect(s2.ClientURL(), "test", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	kv2, err := js2.KeyValue(ctx, bus.BucketLiveness)
	if err != nil {
		t.Fatalf("bucket after restart: %v", err)
	}
	if e, err := kv2.Get(ctx, "storage-1"); err != nil || string(e.Value()) != `{"v":1}` {
		t.Fatalf("value after restart: %v", err)
	}
}

func TestEmbeddedConfigRefusesHalfCredentials(t *testing.T) {
	for _, c := range []embedded.Config{
		{Port: -1, StoreDir: t.TempDir(), SystemUser: "sys"},
		{Port: -1, StoreDir: t.TempDir(), SystemPassword: "x"},
	} {
		if s, err := embedded.Start(c); err == nil {
			s.Shutdown()
			t.Fatalf("Start accepted %+v", c)
		}
	}
	if got := (embedded.Config{SystemUser: "sys", SystemPassword: "a b@c"}).SystemURL("nats://127.0.0.1:4222"); got != "nats://sys:a%20b%40c@127.0.0.1:4222" {
		t.Fatalf("SystemURL = %s", got)
	}
}
