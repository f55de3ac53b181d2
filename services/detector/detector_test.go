package detector_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/metricstest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/services/detector"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

const wait = 20 * time.Second

// beater plays storage nodes: every 100 ms it publishes a heartbeat for each
// node that is switched on.
type beater struct {
	mu   sync.Mutex
	on   map[string]bool
	boot map[string]string
}

func startBeater(t *testing.T, nc *nats.Conn, nodes ...string) *beater {
	t.Helper()
	b := &beater{on: map[string]bool{}, boot: map[string]string{}}
	for _, n := range nodes {
		b.on[n] = true
		b.boot[n] = n + "-boot-1"
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			b.mu.Lock()
			for n, on := range b.on {
				if !on {
					continue
				}
				data, err := event.Encode(&event.Heartbeat{Node: n, Rack: "rack-1", Addr: "127.0.0.1:1", BootID: b.boot[n], CapacityBytes: 1 << 30})
				if err == nil {
					_ = nc.Publish(event.HeartbeatPrefix+n, data)
				}
			}
			b.mu.Unlock()
			select {
			case <-done:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
	return b
}

func (b *beater) set(node string, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on[node] = on
	if b.boot[node] == "" {
		b.boot[node] = node + "-boot-1"
	}
}

// verdicts collects every verdict event seen on rehome.node.>.
type verdicts struct {
	mu   sync.Mutex
	list []event.Verdict
	subj []string
}

func collect(t *testing.T, nc *nats.Conn) *verdicts {
	t.Helper()
	v := &verdicts{}
	sub, err := nc.Subscribe("rehome.node.>", func(m *nats.Msg) {
		var ev event.Verdict
		if err := event.Decode(m.Data, &ev); err != nil {
			t.Errorf("detector published a malformed verdict on %s: %v", m.Subject, err)
			return
		}
		v.mu.Lock()
		v.list = append(v.list, ev)
		v.subj = append(v.subj, m.Subject)
		v.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return v
}

// of returns the states announced for node, in order.
func (v *verdicts) of(node string) []model.State {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []model.State
	for i, ev := range v.list {
		if ev.Node == node {
			if want := "rehome.node." + string(ev.State) + "." + node; v.subj[i] != want {
				panic("verdict " + string(ev.State) + " published on " + v.subj[i])
			}
			out = append(out, ev.State)
		}
	}
	return out
}

func (v *verdicts) find(node string, s model.State) (event.Verdict, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ev := range v.list {
		if ev.Node == node && ev.State == s {
			return ev, true
		}
	}
	return event.Verdict{}, false
}

func has(states []model.State, s model.State) bool {
	for _, x := range states {
		if x == s {
			return true
		}
	}
	return false
}

// run starts a detector and stops it (checking Run returned nil) at cleanup
// or when the returned stop is called.
func run(t *testing.T, env *bustest.Env, cfg detector.Config) (*detector.Service, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	svc, err := detector.New(cfg, env.NC, env.JS, log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- svc.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run returned %v on shutdown, want nil", err)
				}
			case <-time.After(wait):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return svc, stop
}

func fastConfig() detector.Config {
	c := detector.DefaultConfig()
	c.SuspectAfter = 300 * time.Millisecond
	c.Grace = 700 * time.Millisecond
	c.StartupHold = 100 * time.Millisecond // the restart test uses the default
	c.Tick = 20 * time.Millisecond
	return c
}

func livenessKV(t *testing.T, env *bustest.Env) jetstream.KeyValue {
	t.Helper()
	kv, err := env.JS.KeyValue(context.Background(), bus.BucketLiveness)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// stateOf reads a node's liveness record ("" when absent).
func stateOf(t *testing.T, kv jetstream.KeyValue, node string) model.State {
	t.Helper()
	e, err := kv.Get(context.Background(), node)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	var rec model.Liveness
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatalf("liveness record of %s: %v", node, err)
	}
	if rec.V != model.Version || rec.Node != node {
		t.Fatalf("liveness record of %s: %+v", node, rec)
	}
	return rec.State
}

func putLiveness(t *testing.T, kv jetstream.KeyValue, rec model.Liveness) {
	t.Helper()
	rec.V = model.Version
	data, _ := json.Marshal(rec)
	if _, err := kv.Put(context.Background(), rec.Node, data); err != nil {
		t.Fatal(err)
	}
}

func allUp(t *testing.T, kv jetstream.KeyValue, nodes ...string) func() bool {
	return func() bool {
		for _, n := range nodes {
			if stateOf(t, kv, n) != model.StateUp {
				return false
			}
		}
		return true
	}
}

func TestSilentNodeGoesSuspectThenDownAndComesBackUp(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	seen := collect(t, env.NC)
	b := startBeater(t, env.NC, "storage-1", "storage-2", "storage-3")
	svc, _ := run(t, env, fastConfig())

	bustest.Eventually(t, wait, "every beating node recorded up", allUp(t, kv, "storage-1", "storage-2", "storage-3"))

	b.set("storage-3", false)
	bustest.Eventually(t, wait, "storage-3 down in the liveness bucket", func() bool {
		return stateOf(t, kv, "storage-3") == model.StateDown
	})
	bustest.Eventually(t, wait, "suspect then down events for storage-3", func() bool {
		s := seen.of("storage-3")
		return len(s) >= 3 && s[1] == model.StateSuspect && s[2] == model.StateDown
	})
	down, _ := seen.find("storage-3", model.StateDown)
	if !strings.HasPrefix(down.Incident, "storage-3-") || down.SilentMS < 1000 || down.Reason == "" {
		t.Fatalf("down verdict %+v: want incident storage-3-<ms>, silent >= 1000 ms, a reason", down)
	}
	suspect, _ := seen.find("storage-3", model.StateSuspect)
	if gap := down.TS.Sub(suspect.TS); gap < 600*time.Millisecond {
		t.Fatalf("down %s after suspect, want about the 700 ms grace", gap)
	}
	// The verdict is durable in the events stream too.
	stream, err := env.JS.Stream(context.Background(), bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetLastMsgForSubject(context.Background(), event.DownPrefix+"storage-3")
	if err != nil {
		t.Fatalf("down verdict not in %s: %v", bus.StreamEvents, err)
	}
	var stored event.Verdict
	if err := event.Decode(raw.Data, &stored); err != nil || stored.Incident != down.Incident {
		t.Fatalf("stored down verdict %+v (%v), want incident %s", stored, err, down.Incident)
	}
	for _, n := range []string{"storage-1", "storage-2"} {
		if s := seen.of(n); len(s) != 1 || s[0] != model.StateUp || stateOf(t, kv, n) != model.StateUp {
			t.Fatalf("%s: verdicts %v, record %s; want only up", n, s, stateOf(t, kv, n))
		}
	}
	if got := metricstest.Value(t, svc.Registry(), "rehome_detector_verdicts_total", "state", "down"); got != 1 {
		t.Fatalf("verdicts_total{state=down} = %v, want 1", got)
	}
	if got := metricstest.Value(t, svc.Registry(), "rehome_detector_detection_delay_seconds"); got != 1 {
		t.Fatalf("detection delay histogram has %v samples, want 1", got)
	}
	bustest.Eventually(t, wait, "node_state gauge shows storage-3 down", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_node_state", "node", "storage-3", "state", "down") == 1 &&
			metricstest.Value(t, svc.Registry(), "rehome_detector_heartbeat_age_seconds", "node", "storage-3") >= 1
	})

	b.set("storage-3", true)
	bustest.Eventually(t, wait, "storage-3 up again in the bucket and on rehome.node.up", func() bool {
		s := seen.of("storage-3")
		return stateOf(t, kv, "storage-3") == model.StateUp && len(s) == 4 && s[3] == model.StateUp
	})
}

func TestBlipShorterThanGraceCostsNoDown(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	seen := collect(t, env.NC)
	b := startBeater(t, env.NC, "storage-1", "storage-2", "storage-3")
	cfg := fastConfig()
	cfg.Grace = 2 * time.Second
	run(t, env, cfg)
	bustest.Eventually(t, wait, "every beating node recorded up", allUp(t, kv, "storage-1", "storage-2", "storage-3"))

	b.set("storage-2", false)
	bustest.Eventually(t, wait, "storage-2 suspect", func() bool { return has(seen.of("storage-2"), model.StateSuspect) })
	b.set("storage-2", true)
	bustest.Eventually(t, wait, "storage-2 back up", func() bool {
		s := seen.of("storage-2")
		return len(s) == 3 && s[2] == model.StateUp && stateOf(t, kv, "storage-2") == model.StateUp
	})
	if s := seen.of("storage-2"); has(s, model.StateDown) {
		t.Fatalf("a blip inside the grace produced %v", s)
	}
}

func TestRestartedDetectorStillDeclaresSilentNodeDown(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	seen := collect(t, env.NC)
	b := startBeater(t, env.NC, "storage-1", "storage-2", "storage-3")
	cfg := fastConfig()
	cfg.StartupHold = 0 // default: suspect + grace
	_, stop := run(t, env, cfg)
	bustest.Eventually(t, wait, "every beating node recorded up", allUp(t, kv, "storage-1", "storage-2", "storage-3"))
	stop()

	// storage-3 dies while no detector runs: its record still says up.
	b.set("storage-3", false)
	if stateOf(t, kv, "storage-3") != model.StateUp {
		t.Fatal("record of storage-3 should still say up")
	}
	started := time.Now()
	svc, _ := run(t, env, cfg)
	bustest.Eventually(t, wait, "the second detector declares storage-3 down", func() bool {
		return stateOf(t, kv, "storage-3") == model.StateDown
	})
	hold := cfg.SuspectAfter + cfg.Grace
	for _, st := range []model.State{model.StateSuspect, model.StateDown} {
		v, ok := seen.find("storage-3", st)
		if !ok {
			t.Fatalf("no %s event for storage-3: %v", st, seen.of("storage-3"))
		}
		if v.TS.Before(started.Add(hold)) {
			t.Fatalf("%s judged at %s, inside the startup hold ending %s", st, v.TS, started.Add(hold))
		}
	}
	for _, n := range []string{"storage-1", "storage-2"} {
		if s := seen.of(n); len(s) != 1 {
			t.Fatalf("%s: verdicts %v across the restart, want the single first up", n, s)
		}
	}
	if held, why := svc.Held(); held {
		t.Fatalf("verdicts held: %s", why)
	}
}

func TestMalformedHeartbeatsAreCountedAndDropped(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	startBeater(t, env.NC, "storage-1", "storage-2")
	svc, _ := run(t, env, fastConfig())
	bustest.Eventually(t, wait, "beating nodes recorded up", allUp(t, kv, "storage-1", "storage-2"))

	big := make([]byte, 64<<10)
	_, _ = rand.Read(big)
	garbage := []struct{ subject, data string }{
		{event.HeartbeatPrefix + "storage-9", "not json"},
		{event.HeartbeatPrefix + "storage-9", `{"v":2,"node":"storage-9","boot_id":"b"}`},
		{event.HeartbeatPrefix + "storage-9", string(big)},
		{event.HeartbeatPrefix + "storage-9", `{"v":1,"node":"storage-8","boot_id":"b"}`}, // subject names another node
		{event.HeartbeatPrefix + "storage-9", `{"v":1,"node":"storage-9"}`},               // no boot id
		{event.HeartbeatPrefix + "storage-9", `{"v":1,"node":"storage-9","boot_id":"b","shards":-1}`},
		{event.HeartbeatPrefix + "storage-9", `{"v":1,"node":"storage-9","boot_id":"b","used_bytes":-1}`},
		{event.HeartbeatPrefix + "storage-9", `{"v":1,"node":"storage-9","boot_id":"b","capacity_bytes":-1}`},
	}
	for _, g := range garbage {
		if err := env.NC.Publish(g.subject, []byte(g.data)); err != nil {
			t.Fatal(err)
		}
	}
	bustest.Eventually(t, wait, "every malformed heartbeat counted", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_malformed_events_total", "subject", "heartbeat") == float64(len(garbage))
	})
	for reason, want := range map[string]float64{event.ReasonMalformed: 3, event.ReasonSubjectMismatch: 1, event.ReasonInvalid: 4} {
		if got := metricstest.Value(t, svc.Registry(), "rehome_detector_malformed_events_total", "subject", "heartbeat", "reason", reason); got != want {
			t.Errorf("heartbeats rejected as %s: %v, want %v", reason, got, want)
		}
	}
	// Still working: a newcomer is recorded, the garbage names are not.
	b2 := startBeater(t, env.NC, "storage-4")
	_ = b2
	bustest.Eventually(t, wait, "a new node recorded up after the garbage", allUp(t, kv, "storage-4"))
	for _, n := range []string{"storage-8", "storage-9"} {
		if s := stateOf(t, kv, n); s != "" {
			t.Fatalf("garbage created a liveness record for %s: %s", n, s)
		}
	}
}

func TestMaintenanceIsNeverDeclaredDown(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	seen := collect(t, env.NC)
	b := startBeater(t, env.NC, "storage-1", "storage-2", "storage-3")
	cfg := fastConfig()
	svc, _ := run(t, env, cfg)
	bustest.Eventually(t, wait, "every beating node recorded up", allUp(t, kv, "storage-1", "storage-2", "storage-3"))

	putLiveness(t, kv, model.Liveness{Node: "storage-3", State: model.StateMaintenance, Since: time.Now().UTC(), Reason: "operator"})
	bustest.Eventually(t, wait, "detector sees the maintenance", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_node_state", "node", "storage-3", "state", "maintenance") == 1
	})
	b.set("storage-3", false)
	limit := (cfg.SuspectAfter + cfg.Grace).Seconds()
	bustest.Eventually(t, wait, "storage-3 silent well past suspect + grace", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_heartbeat_age_seconds", "node", "storage-3") > limit+0.5
	})
	if s := seen.of("storage-3"); len(s) != 1 || stateOf(t, kv, "storage-3") != model.StateMaintenance {
		t.Fatalf("maintenance node: verdicts %v, record %s; want no verdict and the record kept", s, stateOf(t, kv, "storage-3"))
	}

	// Maintenance off while the node is still silent: judged afresh, then down.
	putLiveness(t, kv, model.Liveness{Node: "storage-3", State: model.StateUp, Since: time.Now().UTC(), Reason: "operator"})
	bustest.Eventually(t, wait, "storage-3 down after maintenance ends", func() bool {
		return stateOf(t, kv, "storage-3") == model.StateDown && has(seen.of("storage-3"), model.StateDown)
	})
}

func TestTwoDetectorsPublishEachVerdictOnce(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	b := startBeater(t, env.NC, "storage-1", "storage-2", "storage-3")
	cfg := fastConfig()
	run(t, env, cfg)
	run(t, env, cfg)
	bustest.Eventually(t, wait, "every beating node recorded up", allUp(t, kv, "storage-1", "storage-2", "storage-3"))
	b.set("storage-1", false)
	bustest.Eventually(t, wait, "storage-1 down", func() bool { return stateOf(t, kv, "storage-1") == model.StateDown })

	stream, err := env.JS.Stream(context.Background(), bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(event.DownPrefix+">"))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[event.DownPrefix+"storage-1"]; n != 1 {
		t.Fatalf("%d down verdicts for storage-1 in the stream from two detectors, want 1", n)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	env := bustest.Start(t)
	bad := []detector.Config{{Grace: -time.Second}, {MaxSilentShare: 1.5}, {FlapWindow: -time.Second}, {FlapThreshold: -1}, {MaxGrace: -time.Second}}
	for _, c := range bad {
		if _, err := detector.New(c, env.NC, env.JS, nil, nil); err == nil {
			t.Fatalf("New accepted %+v", c)
		}
	}
	if _, err := detector.New(detector.Config{}, nil, env.JS, nil, nil); err == nil {
		t.Fatal("New accepted a nil connection")
	}
	svc, err := detector.New(detector.Config{}, env.NC, env.JS, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := svc.Config(); got != detector.DefaultConfig() {
		t.Fatalf("zero config became %+v, want the defaults %+v", got, detector.DefaultConfig())
	}
}

func TestNodeKnownOnlyFromTheHeartbeatStreamIsJudged(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	b := startBeater(t, env.NC, "storage-1", "storage-7")
	stream, err := env.JS.Stream(context.Background(), bus.StreamHeartbeats)
	if err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, wait, "both nodes' heartbeats in the stream", func() bool {
		info, err := stream.Info(context.Background())
		return err == nil && info.State.Msgs == 2
	})
	b.set("storage-7", false) // died before any detector ran; no liveness record
	cfg := fastConfig()
	cfg.StartupHold = 0
	run(t, env, cfg)
	bustest.Eventually(t, wait, "storage-7 judged down from its last streamed heartbeat", func() bool {
		return stateOf(t, kv, "storage-7") == model.StateDown && stateOf(t, kv, "storage-1") == model.StateUp
	})
}
