package detector_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
	"github.com/rehome/rehome/shared/model"
)

// holds collects the guard events on rehome.detector.>.
type holds struct {
	mu   sync.Mutex
	list []event.Hold
	subj []string
}

func collectHolds(t *testing.T, nc *nats.Conn) *holds {
	t.Helper()
	h := &holds{}
	sub, err := nc.Subscribe("rehome.detector.>", func(m *nats.Msg) {
		var ev event.Hold
		if err := event.Decode(m.Data, &ev); err != nil {
			t.Errorf("detector published a malformed hold event on %s: %v", m.Subject, err)
			return
		}
		h.mu.Lock()
		h.list = append(h.list, ev)
		h.subj = append(h.subj, m.Subject)
		h.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

// count returns how many events arrived on subject, and the last of them.
func (h *holds) count(subject string) (int, event.Hold) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, last := 0, event.Hold{}
	for i, s := range h.subj {
		if s == subject {
			n++
			last = h.list[i]
		}
	}
	return n, last
}

func detectorKV(t *testing.T, env *bustest.Env) jetstream.KeyValue {
	t.Helper()
	kv, err := env.JS.KeyValue(context.Background(), bus.BucketDetector)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// holdRecord reads the guard record (ok false when absent).
func holdRecord(t *testing.T, kv jetstream.KeyValue) (model.Hold, bool) {
	t.Helper()
	e, err := kv.Get(context.Background(), model.HoldKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return model.Hold{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var rec model.Hold
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.V != model.Version {
		t.Fatalf("hold record %s: %v", e.Value(), err)
	}
	return rec, true
}

func putJSON(t *testing.T, kv jetstream.KeyValue, key string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

func TestMassSilenceIsRecordedAnnouncedAndOverridable(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	dkv := detectorKV(t, env)
	seen := collect(t, env.NC)
	hs := collectHolds(t, env.NC)
	nodes := []string{"storage-1", "storage-2", "storage-3", "storage-4"}
	b := startBeater(t, env.NC, nodes...)
	cfg := fastConfig()
	svc, _ := run(t, env, cfg)
	bustest.Eventually(t, wait, "every beating node recorded up", allUp(t, kv, nodes...))
	if _, ok := holdRecord(t, dkv); ok {
		t.Fatal("a hold record was written with every node beating")
	}

	// Three of four fall silent at once: the watcher is more likely cut off.
	for _, n := range nodes[1:] {
		b.set(n, false)
	}
	bustest.Eventually(t, wait, "the hold recorded in the detector bucket and announced", func() bool {
		rec, ok := holdRecord(t, dkv)
		n, _ := hs.count(event.DetectorHeld)
		return ok && rec.Held && n == 1
	})
	rec, _ := holdRecord(t, dkv)
	if rec.Silent != 3 || rec.Judged != 4 || !strings.Contains(rec.Reason, "3 of 4 nodes silent at once (more than 50%): holding down verdicts") ||
		rec.Since.IsZero() {
		t.Fatalf("hold record %+v", rec)
	}
	_, ev := hs.count(event.DetectorHeld)
	if !ev.Held || ev.Silent != 3 || ev.Judged != 4 || strings.Join(ev.Nodes, ",") != "storage-2,storage-3,storage-4" || ev.Reason != rec.Reason {
		t.Fatalf("held event %+v", ev)
	}
	limit := (cfg.SuspectAfter + cfg.Grace).Seconds()
	bustest.Eventually(t, wait, "silent nodes well past suspect + grace", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_heartbeat_age_seconds", "node", "storage-2") > limit+0.5
	})
	for _, n := range nodes[1:] {
		if has(seen.of(n), model.StateDown) || stateOf(t, kv, n) != model.StateSuspect {
			t.Fatalf("%s: verdicts %v, record %s while held; want suspect and no down", n, seen.of(n), stateOf(t, kv, n))
		}
	}
	if got := metricstest.Value(t, svc.Registry(), "rehome_detector_verdicts_held"); got != 1 {
		t.Fatalf("verdicts_held = %v while held", got)
	}
	if held, why := svc.Held(); !held || why != rec.Reason {
		t.Fatalf("Held() = %v %q", held, why)
	}

	// Two come back: the share drops, the hold is released, the last one goes down.
	b.set("storage-3", true)
	b.set("storage-4", true)
	bustest.Eventually(t, wait, "the release recorded and announced, storage-2 down", func() bool {
		rec, _ := holdRecord(t, dkv)
		n, _ := hs.count(event.DetectorReleased)
		return !rec.Held && n == 1 && stateOf(t, kv, "storage-2") == model.StateDown
	})
	_, rel := hs.count(event.DetectorReleased)
	if rel.Held || !strings.Contains(rel.Reason, "1 of 4 nodes silent") {
		t.Fatalf("released event %+v", rel)
	}
	if got := metricstest.Value(t, svc.Registry(), "rehome_detector_verdicts_held"); got != 0 {
		t.Fatalf("verdicts_held = %v after the release", got)
	}

	// Held again (2 of the 3 judged), then an operator overrides the guard.
	b.set("storage-3", false)
	b.set("storage-4", false)
	bustest.Eventually(t, wait, "held again", func() bool {
		rec, _ := holdRecord(t, dkv)
		n, _ := hs.count(event.DetectorHeld)
		return rec.Held && n == 2 && rec.Silent == 2 && rec.Judged == 3
	})
	putJSON(t, dkv, model.OverrideKey, model.HoldOverride{V: model.Version, Until: time.Now().Add(time.Minute).UTC(), By: "test"})
	bustest.Eventually(t, wait, "override: released and both silent nodes down", func() bool {
		rec, _ := holdRecord(t, dkv)
		n, _ := hs.count(event.DetectorReleased)
		return !rec.Held && n == 2 && stateOf(t, kv, "storage-3") == model.StateDown && stateOf(t, kv, "storage-4") == model.StateDown
	})
	_, rel = hs.count(event.DetectorReleased)
	if !strings.Contains(rel.Reason, "operator override until") {
		t.Fatalf("release by override says %q", rel.Reason)
	}
	bustest.Eventually(t, wait, "override gauge set, held gauge clear", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_hold_override_active") == 1 &&
			metricstest.Value(t, svc.Registry(), "rehome_detector_verdicts_held") == 0
	})
	// Each guard event is in the events stream exactly once.
	stream, err := env.JS.Stream(context.Background(), bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter("rehome.detector.>"))
	if err != nil {
		t.Fatal(err)
	}
	if h, r := info.State.Subjects[event.DetectorHeld], info.State.Subjects[event.DetectorReleased]; h != 2 || r != 2 {
		t.Fatalf("stream holds %d held and %d released events, want 2 and 2", h, r)
	}
}

func TestOverrideInForceAtStartLetsDownsFlowAndBadOverridesAreCounted(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	dkv := detectorKV(t, env)
	hs := collectHolds(t, env.NC)
	// A hold left behind by a detector that died, and an override in force.
	putJSON(t, dkv, model.HoldKey, model.Hold{V: model.Version, Held: true, Reason: "old", Since: time.Now().UTC(), Silent: 2, Judged: 2})
	putJSON(t, dkv, model.OverrideKey, model.HoldOverride{V: model.Version, Until: time.Now().Add(time.Minute).UTC()})
	b := startBeater(t, env.NC, "storage-1", "storage-2")
	svc, _ := run(t, env, fastConfig())
	bustest.Eventually(t, wait, "the stale hold released", func() bool {
		rec, _ := holdRecord(t, dkv)
		n, _ := hs.count(event.DetectorReleased)
		return !rec.Held && n == 1
	})
	bustest.Eventually(t, wait, "both nodes up", allUp(t, kv, "storage-1", "storage-2"))
	b.set("storage-1", false)
	b.set("storage-2", false)
	bustest.Eventually(t, wait, "2 of 2 silent, yet both down under the override", func() bool {
		return stateOf(t, kv, "storage-1") == model.StateDown && stateOf(t, kv, "storage-2") == model.StateDown
	})
	if n, _ := hs.count(event.DetectorHeld); n != 0 {
		t.Fatalf("%d held events under an override", n)
	}

	// Garbage in the override key is counted and changes nothing; deleting
	// the key cancels the override.
	for _, bad := range []string{"not json", `{"v":2,"until":"2999-01-01T00:00:00Z"}`, `{"v":1}`} {
		if _, err := dkv.Put(context.Background(), model.OverrideKey, []byte(bad)); err != nil {
			t.Fatal(err)
		}
	}
	bustest.Eventually(t, wait, "malformed overrides counted", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_malformed_events_total", "subject", "override") == 3
	})
	if got := metricstest.Value(t, svc.Registry(), "rehome_detector_hold_override_active"); got != 1 {
		t.Fatalf("override gauge %v after garbage, want the override still in force", got)
	}
	if err := dkv.Delete(context.Background(), model.OverrideKey); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, wait, "override cancelled", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_hold_override_active") == 0
	})
}

func TestFlapsAndGraceInTheLivenessRecord(t *testing.T) {
	env := bustest.Start(t)
	kv := livenessKV(t, env)
	seen := collect(t, env.NC)
	b := startBeater(t, env.NC, "storage-1", "storage-2", "storage-3")
	cfg := fastConfig()
	cfg.FlapThreshold = 1
	cfg.Grace = 2 * time.Second
	svc, _ := run(t, env, cfg)
	bustest.Eventually(t, wait, "every beating node recorded up", allUp(t, kv, "storage-1", "storage-2", "storage-3"))
	for i := 1; i <= 2; i++ {
		b.set("storage-3", false)
		bustest.Eventually(t, wait, "storage-3 suspect", func() bool { return stateOf(t, kv, "storage-3") == model.StateSuspect })
		b.set("storage-3", true)
		bustest.Eventually(t, wait, "storage-3 up again", func() bool { return stateOf(t, kv, "storage-3") == model.StateUp })
	}
	e, err := kv.Get(context.Background(), "storage-3")
	if err != nil {
		t.Fatal(err)
	}
	var rec model.Liveness
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	// Threshold 1: the second flap doubles the 2 s grace.
	if rec.Flaps != 2 || rec.GraceMS != 4000 {
		t.Fatalf("record after two blips: %+v, want 2 flaps and grace 4000 ms", rec)
	}
	var other model.Liveness
	e, _ = kv.Get(context.Background(), "storage-1")
	_ = json.Unmarshal(e.Value(), &other)
	if other.Flaps != 0 || other.GraceMS != 2000 {
		t.Fatalf("steady node's record %+v, want 0 flaps and grace 2000 ms", other)
	}
	bustest.Eventually(t, wait, "flap and grace gauges", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_detector_node_flaps", "node", "storage-3") == 2 &&
			metricstest.Value(t, svc.Registry(), "rehome_detector_node_grace_seconds", "node", "storage-3") == 4
	})
	if s := seen.of("storage-3"); has(s, model.StateDown) {
		t.Fatalf("blips produced %v", s)
	}
}
