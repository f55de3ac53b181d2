package history_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/history"
	"github.com/rehome/rehome/shared/model"
)

var t0 = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)

// at returns t0 plus s seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// ev builds an event whose payload carries time ts.
func ev(t *testing.T, subject string, ts time.Time, p event.Payload) history.Event {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	m["v"], m["ts"] = 1, ts
	data, _ = json.Marshal(m)
	return history.Event{Subject: subject, Time: ts.Add(time.Millisecond), Data: data}
}

func verdict(t *testing.T, s float64, node string, state model.State, incident string) history.Event {
	prefix := map[model.State]string{model.StateSuspect: event.SuspectPrefix, model.StateDown: event.DownPrefix, model.StateUp: event.UpPrefix}[state]
	return ev(t, prefix+node, at(s), &event.Verdict{Node: node, State: state, Reason: "heartbeat_timeout", SilentMS: 3000, Incident: incident})
}

func progress(t *testing.T, s float64, under int, lost int) history.Event {
	return ev(t, event.HealProgress, at(s), &event.Progress{UnderReplicated: under, Lost: lost, BytesRemaining: int64(under) << 20, RateBytesPerSec: 50 << 20})
}

func kinds(es []history.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

func phases(inc history.Incident) []string {
	var out []string
	for _, s := range inc.Steps {
		out = append(out, s.Phase)
	}
	return out
}

// TestIncidentTimelineFromSuspectToHealthy folds one node's loss: suspect,
// down, plan, repairs, progress and the first all-clear.
func TestIncidentTimelineFromSuspectToHealthy(t *testing.T) {
	l := history.NewLog()
	inc := "storage-3-1000"
	down := verdict(t, 13, "storage-3", model.StateDown, inc)
	down.TraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, e := range []history.Event{
		progress(t, 1, 0, 0), // before anything: no incident to touch
		verdict(t, 3, "storage-3", model.StateSuspect, ""),
		progress(t, 12, 0, 0), // suspect copies still count: not healthy yet, no plan
		down,
		ev(t, event.PlanPrefix+inc, at(13.1), &event.Plan{Incident: inc, Shards: 3, Bytes: 3 << 20,
			Targets: []event.PlanTarget{{Node: "storage-1", Shards: 2, Bytes: 2 << 20}, {Node: "storage-5", Shards: 1, Bytes: 1 << 20}}}),
		progress(t, 13.2, 3, 0),
		ev(t, event.DonePrefix+"storage-1", at(13.5), &event.Done{Task: "a", Incident: inc, Shard: "s1", Kind: event.KindCopy, Source: "storage-2", Target: "storage-1", Bytes: 1 << 20}),
		ev(t, event.FailedPrefix+"storage-5", at(13.6), &event.Failed{Task: "b", Incident: inc, Shard: "s2", Kind: event.KindCopy, Target: "storage-5", Error: "target full", Attempt: 1}),
		progress(t, 13.7, 2, 0), // too soon after the last progress step
		ev(t, event.DonePrefix+"storage-1", at(14), &event.Done{Task: "c", Incident: inc, Shard: "s2", Kind: event.KindCopy, Source: "storage-2", Target: "storage-1", Bytes: 1 << 20}),
		ev(t, event.DonePrefix+"storage-5", at(14.5), &event.Done{Task: "d", Incident: inc, Shard: "s3", Kind: event.KindCopy, Source: "storage-4", Target: "storage-5", Bytes: 1 << 20}),
		ev(t, event.DonePrefix+"storage-2", at(14.6), &event.Done{Task: "trim-x", Incident: "trim", Shard: "s9", Kind: event.KindDelete, Target: "storage-2"}),
		progress(t, 15, 0, 0),
		progress(t, 16, 0, 0),
	} {
		l.Add(e)
	}
	incs := l.Incidents(time.Time{})
	if len(incs) != 1 {
		t.Fatalf("incidents %+v, want one", incs)
	}
	got := incs[0]
	if want := []string{"suspect", "down", "plan", "progress", "failed", "healthy"}; !slices.Equal(phases(got), want) {
		t.Fatalf("timeline %v, want %v (%+v)", phases(got), want, got.Steps)
	}
	if got.Node != "storage-3" || got.TraceID != down.TraceID || !got.Opened.Equal(at(13)) || !got.Healed.Equal(at(15)) {
		t.Fatalf("incident %+v", got)
	}
	if got.PlannedShards != 3 || got.Repaired != 3 || got.RepairedBytes != 3<<20 || got.Failed != 1 {
		t.Fatalf("counts %+v", got)
	}
	if !got.Steps[0].Time.Equal(at(3)) {
		t.Fatalf("suspect step at %v, want the suspect verdict's time %v", got.Steps[0].Time, at(3))
	}

	if k := kinds(l.Node("storage-3")); !slices.Equal(k, []string{"suspect", "down", "plan"}) {
		t.Fatalf("storage-3 history %v", k)
	}
	s1 := l.Node("storage-1")
	if len(s1) != 1 || s1[0].Kind != history.KindRepairTo || s1[0].Shards != 2 || s1[0].Bytes != 2<<20 ||
		!s1[0].First.Equal(at(13.5)) || !s1[0].Time.Equal(at(14)) || s1[0].Incident != inc {
		t.Fatalf("storage-1 history %+v, want one repair_to entry counting 2 copies", s1)
	}
	s2 := l.Node("storage-2")
	if len(s2) != 1 || s2[0].Kind != history.KindRepairFrom || s2[0].Shards != 2 {
		t.Fatalf("storage-2 history %+v, want it as the source of 2 copies and no trim", s2)
	}
	if k := kinds(l.Node("storage-5")); !slices.Equal(k, []string{"repair_failed", "repair_to"}) {
		t.Fatalf("storage-5 history %v", k)
	}
}

// TestFlapsConditionsAndCorruption: a node back within the grace is a flap,
// not an incident; disk conditions and corrupt shards land in its history.
func TestFlapsConditionsAndCorruption(t *testing.T) {
	l := history.NewLog()
	for _, e := range []history.Event{
		verdict(t, 0, "storage-2", model.StateUp, ""), // first heard
		verdict(t, 3, "storage-2", model.StateSuspect, ""),
		verdict(t, 5, "storage-2", model.StateUp, ""),
		ev(t, event.ConditionPrefix+"storage-2", at(20), &event.Condition{Node: "storage-2", Full: true}),
		ev(t, event.ConditionPrefix+"storage-2", at(30), &event.Condition{Node: "storage-2"}),
		ev(t, event.ConditionPrefix+"storage-2", at(40), &event.Condition{Node: "storage-2", ReadOnly: true}),
		ev(t, event.CorruptPrefix+"storage-2", at(50), &event.Corrupt{Node: "storage-2", Shard: "s7", Reason: "sha256 mismatch", Found: "scrub"}),
		ev(t, event.DrainingPrefix+"storage-2", at(70), &event.Drain{Node: "storage-2", By: "ops", Shards: 1, Bytes: 10}),
		ev(t, event.DonePrefix+"storage-4", at(71), &event.Done{Task: "m", Incident: "drain-storage-2", Shard: "s8", Kind: event.KindCopy, Source: "storage-2", Target: "storage-4", Bytes: 10}),
		ev(t, event.DrainedPrefix+"storage-2", at(72), &event.Drain{Node: "storage-2", Shards: 1, Bytes: 10}),
		{Subject: event.CorruptPrefix + "storage-2", Time: at(60), Data: []byte("not json")},
	} {
		l.Add(e)
	}
	if incs := l.Incidents(time.Time{}); len(incs) != 0 {
		t.Fatalf("a flap or a drain opened incidents: %+v", incs)
	}
	h := l.Node("storage-2")
	if want := []string{"up", "suspect", "flap", "full", "writable", "read_only", "corrupt", "draining", "repair_from", "drained"}; !slices.Equal(kinds(h), want) {
		t.Fatalf("history %v, want %v", kinds(h), want)
	}
	// Silent 3 s at the suspect verdict, back 2 s later.
	if !strings.Contains(h[2].Detail, "back after 5s silent") || !strings.Contains(h[6].Detail, "s7") {
		t.Fatalf("details %q / %q", h[2].Detail, h[6].Detail)
	}
}

// TestReturnedNodeAndLostShards: a node back after its down verdict is an
// up entry and an up step; shards lost with it count in its incident.
func TestReturnedNodeAndLostShards(t *testing.T) {
	l := history.NewLog()
	inc := "storage-4-2000"
	for _, e := range []history.Event{
		verdict(t, 2, "storage-4", model.StateDown, inc),
		ev(t, event.PlanPrefix+inc, at(2.1), &event.Plan{Incident: inc, Shards: 2, Bytes: 2}),
		ev(t, event.LostPrefix+"s1", at(2.2), &event.Lost{Shard: "s1", Key: "k", Nodes: []string{"storage-4", "storage-6"}}),
		ev(t, event.LostPrefix+"s2", at(2.3), &event.Lost{Shard: "s2", Key: "k", Nodes: []string{"storage-4"}}),
		verdict(t, 40, "storage-4", model.StateUp, ""),
		progress(t, 41, 0, 0),
	} {
		l.Add(e)
	}
	got := l.Incidents(time.Time{})[0]
	if want := []string{"down", "plan", "lost", "up", "healthy"}; !slices.Equal(phases(got), want) || got.Lost != 2 {
		t.Fatalf("timeline %v lost %d", phases(got), got.Lost)
	}
	if k := kinds(l.Node("storage-4")); !slices.Equal(k, []string{"down", "plan", "lost", "up"}) {
		t.Fatalf("storage-4 history %v", k)
	}
	if h := l.Node("storage-6"); len(h) != 1 || h[0].Kind != history.KindLost || h[0].Shards != 1 {
		t.Fatalf("storage-6 history %+v", h)
	}
	if l.Node("storage-9") != nil {
		t.Fatal("an unknown node has a history")
	}
	if len(l.Incidents(at(3))) != 0 {
		t.Fatal("Incidents(since) returned one opened before since")
	}
}

// TestInPlaceHealIsAnIncident: `heal --node` plans under "heal-<node>",
// which opens an incident of that node without any verdict.
func TestInPlaceHealIsAnIncident(t *testing.T) {
	l := history.NewLog()
	l.Add(ev(t, event.PlanPrefix+"heal-storage-2", at(1), &event.Plan{Incident: "heal-storage-2", Shards: 5, Bytes: 5}))
	l.Add(ev(t, event.DonePrefix+"storage-2", at(2), &event.Done{Task: "x", Incident: "heal-storage-2", Shard: "s", Kind: event.KindCopy, Source: "storage-1", Target: "storage-2", Bytes: 1}))
	l.Add(ev(t, event.HealProgress, at(3), &event.Progress{Node: "storage-2"}))
	got := l.Incidents(time.Time{})
	if len(got) != 1 || got[0].Node != "storage-2" || got[0].Healed.IsZero() || got[0].Repaired != 1 {
		t.Fatalf("incidents %+v", got)
	}
}
