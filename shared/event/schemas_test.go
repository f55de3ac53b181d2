package event_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/event/eventtest"
)

const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// samples are payloads as the services publish them, one or more per subject
// (a subject may appear several times), built from the Go types.
func samples() []struct {
	subject string
	p       event.Payload
} {
	at := time.Date(2026, 3, 1, 14, 2, 0, 0, time.UTC)
	piece := func(i int, node string) event.Piece {
		return event.Piece{Shard: "obj1-s0p" + string(rune('0'+i)), Index: i, Node: node, Size: 1 << 20, SHA256: sha}
	}
	return []struct {
		subject string
		p       event.Payload
	}{
		{event.HeartbeatPrefix + "storage-3", &event.Heartbeat{Node: "storage-3", Rack: "rack-3", Addr: "127.0.0.1:40123", BootID: "0d5c", Shards: 12, UsedBytes: 4 << 20, CapacityBytes: 1 << 30}},
		{event.HeartbeatPrefix + "storage-4", &event.Heartbeat{Node: "storage-4", Rack: "rack-1", Addr: "127.0.0.1:40124", BootID: "77ab", Shards: 3, UsedBytes: 1 << 30, CapacityBytes: 1 << 30, Full: true, ReadOnly: true}},
		{event.SuspectPrefix + "storage-3", &event.Verdict{Node: "storage-3", State: "suspect", Reason: "connection closed", SilentMS: 250}},
		{event.DownPrefix + "storage-3", &event.Verdict{Node: "storage-3", State: "down", Reason: "silent past the grace", SilentMS: 13010, Incident: "storage-3-1772373720000"}},
		{event.UpPrefix + "storage-3", &event.Verdict{Node: "storage-3", State: "up", Reason: "heartbeat"}},
		{event.DetectorHeld, &event.Hold{Held: true, Reason: "4 of 6 nodes silent", Silent: 4, Judged: 6, Nodes: []string{"storage-1", "storage-2", "storage-3", "storage-4"}, Detector: "detector"}},
		{event.DetectorReleased, &event.Hold{Reason: "share dropped", Silent: 0, Judged: 6}},
		{event.PlanPrefix + "storage-3-1772373720000", &event.Plan{Incident: "storage-3-1772373720000", Shards: 3, Bytes: 3 << 20,
			Targets: []event.PlanTarget{{Node: "storage-1", Shards: 2, Bytes: 2 << 20}, {Node: "storage-5", Shards: 1, Bytes: 1 << 20}}}},
		{event.PlanPrefix + "partial-write", &event.Plan{Incident: "partial-write"}},
		{event.TaskPrefix + "storage-5", &event.Task{Task: "t-obj1-s0-3", Incident: "storage-3-1772373720000", Shard: "obj1-s0", Kind: event.KindCopy,
			Sources: []string{"storage-1", "storage-2"}, Target: "storage-5", Bytes: 1 << 20, SHA256: sha, Attempt: 1}},
		{event.TaskPrefix + "storage-6", &event.Task{Task: "t-obj1-s0p1-1", Shard: "obj1-s0p1", Kind: event.KindRebuild, Sources: []string{"storage-1", "storage-3", "storage-4", "storage-5"},
			Target: "storage-6", Bytes: 1 << 20, SHA256: sha, Attempt: 1, K: 4, M: 2,
			Stripe:  []event.Piece{piece(0, "storage-1"), piece(1, ""), piece(2, "storage-3"), piece(3, "storage-4"), piece(4, "storage-5"), piece(5, "")},
			Rebuild: []event.Piece{piece(1, "storage-6"), piece(5, "storage-2")}}},
		{event.TaskPrefix + "storage-2", &event.Task{Task: "trim-obj1-s0", Shard: "obj1-s0", Kind: event.KindDelete, Target: "storage-2"}},
		{event.TaskPrefix + "storage-5", &event.Task{Task: "obj1-s0-storage-5-1", Incident: "storage-3-1772373720000", Shard: "obj1-s0", Kind: event.KindCopy,
			Sources: []string{"storage-1", "storage-2"}, Target: "storage-5", Bytes: 4096, SHA256: sha, Attempt: 1,
			Batch: []event.BatchShard{
				{Task: "obj1-s0-storage-5-1", Incident: "storage-3-1772373720000", Shard: "obj1-s0", Sources: []string{"storage-1", "storage-2"}, Bytes: 4096, SHA256: sha, Attempt: 1},
				{Task: "obj2-s0-storage-5-2", Shard: "obj2-s0", Sources: []string{"storage-1", "storage-4"}, Bytes: 4096, SHA256: sha, Attempt: 2, RackRelaxed: true}}}},
		{event.DonePrefix + "storage-5", &event.Done{Task: "t-obj1-s0-3", Incident: "storage-3-1772373720000", Shard: "obj1-s0", Kind: event.KindCopy, Source: "storage-1", Target: "storage-5", Bytes: 1 << 20, DurationMS: 12}},
		{event.DonePrefix + "storage-2", &event.Done{Task: "trim-obj1-s0", Shard: "obj1-s0", Kind: event.KindDelete, Target: "storage-2"}},
		{event.FailedPrefix + "storage-5", &event.Failed{Task: "t-obj1-s0-3", Shard: "obj1-s0", Kind: event.KindCopy, Target: "storage-5", Error: "target storage-5: node full", Attempt: 2, Side: event.SideTarget}},
		{event.FailedPrefix + "storage-5", &event.Failed{Task: "t-obj1-s0-3", Shard: "obj1-s0", Kind: event.KindCopy, Target: "storage-5", Error: "no source could supply the shard", Attempt: 1, Side: event.SideSource}},
		{event.FailedPrefix + "storage-5", &event.Failed{Task: "t-obj1-s0-3", Shard: "obj1-s0", Kind: event.KindCopy, Target: "storage-5", Error: "5 attempts failed", Attempt: 5, Final: true, RetryAt: at}},
		{event.DeadPrefix + "storage-5", &event.Dead{Task: json.RawMessage(`{"v":1,"task":"t"}`), Size: 18, Subject: event.TaskPrefix + "storage-5", Target: "storage-5", Reason: "permanent: checksum mismatch", Deliveries: 3, StreamSeq: 42}},
		{event.DeadPrefix + event.DeadUnknownTarget, &event.Dead{Payload: []byte{0xff, 0x00}, Size: 2, Subject: event.TaskPrefix + "x", Target: event.DeadUnknownTarget, Reason: "malformed", Deliveries: 1}},
		{event.LostPrefix + "obj1-s0", &event.Lost{Shard: "obj1-s0", Key: "photos/cat.jpg", Nodes: []string{"storage-1", "storage-2", "storage-3"}}},
		{event.CorruptPrefix + "storage-2", &event.Corrupt{Node: "storage-2", Shard: "obj1-s0", Reason: "sha256 mismatch", Found: "scrub"}},
		{event.ConditionPrefix + "storage-2", &event.Condition{Node: "storage-2", Full: true, Reason: "no space left on device"}},
		{event.ConditionPrefix + "storage-2", &event.Condition{Node: "storage-2"}},
		{event.DrainingPrefix + "storage-3", &event.Drain{Node: "storage-3", By: "operator", Shards: 120, Bytes: 480 << 20}},
		{event.DrainedPrefix + "storage-3", &event.Drain{Node: "storage-3", Shards: 120, Bytes: 480 << 20}},
		{event.HealProgress, &event.Progress{UnderReplicated: 120, BytesRemaining: 120 << 20, RateBytesPerSec: 95e6, ETASeconds: 1.3, InFlight: 16, VerifiedBytes: 5 << 20, Shards: 400, SingleCopyETASeconds: -1}},
		{event.HealStalled, &event.Stalled{UnderReplicated: 3, BytesRemaining: 3 << 20, IdleSeconds: 61}},
		{event.HealPaused, &event.HealSwitched{Paused: true, By: "operator at host", Since: at, Planner: "planner"}},
		{event.HealResumed, &event.HealSwitched{Since: at}},
	}
}

func validator(t *testing.T) *eventtest.Validator {
	t.Helper()
	v, err := eventtest.New()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSamplePayloadsConformToTheirSchemas(t *testing.T) {
	v := validator(t)
	used := map[string]bool{}
	for _, s := range samples() {
		data, err := event.Encode(s.p)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(s.subject, data); err != nil {
			t.Errorf("%v\n%s", err, data)
		}
		used[event.SchemaName(s.subject)] = true
	}
	for _, f := range v.Files() {
		if !used[f] {
			t.Errorf("schema %s has no sample payload", f)
		}
	}
}

func TestSchemasRefuseWhatTheyMustNot(t *testing.T) {
	v := validator(t)
	bad := []struct{ subject, data string }{
		{event.DownPrefix + "storage-3", `{"v":2,"ts":"2026-03-01T14:02:00Z","node":"storage-3","state":"down","reason":"x","silent_ms":1}`},
		{event.DownPrefix + "storage-3", `{"v":1,"ts":"2026-03-01T14:02:00Z","node":"storage.3","state":"down","reason":"x","silent_ms":1}`},
		{event.DownPrefix + "storage-3", `{"v":1,"ts":"2026-03-01T14:02:00Z","node":"storage-3","state":"dead","reason":"x","silent_ms":1}`},
		{event.DownPrefix + "storage-3", `{"v":1,"ts":"yesterday","node":"storage-3","state":"down","reason":"x","silent_ms":1}`},
		{event.DownPrefix + "storage-3", `{"v":1,"node":"storage-3","state":"down","reason":"x","silent_ms":1}`},
		{event.TaskPrefix + "storage-5", `{"v":1,"ts":"2026-03-01T14:02:00Z","task":"t","shard":"s","kind":"copy","sources":[],"target":"storage-5","bytes":1,"sha256":"` + sha + `","attempt":1}`},
		{event.TaskPrefix + "storage-5", `{"v":1,"ts":"2026-03-01T14:02:00Z","task":"t","shard":"../etc","kind":"copy","sources":["a"],"target":"storage-5","bytes":1,"sha256":"` + sha + `","attempt":1}`},
		{event.TaskPrefix + "storage-5", `{"v":1,"ts":"2026-03-01T14:02:00Z","task":"t","shard":"s","kind":"rebuild","sources":["a"],"target":"storage-5","bytes":1,"sha256":"` + sha + `","attempt":1}`},
		{event.FailedPrefix + "storage-5", `{"v":1,"ts":"2026-03-01T14:02:00Z","task":"t","shard":"s","kind":"copy","target":"storage-5","error":"x","attempt":1,"final":true,"side":"both"}`},
		{event.HealProgress, `{"v":1,"ts":"2026-03-01T14:02:00Z","under_replicated":-1}`},
		{event.HeartbeatPrefix + "storage-1", `[1,2,3]`},
	}
	for _, b := range bad {
		if err := v.Validate(b.subject, []byte(b.data)); err == nil {
			t.Errorf("%s accepted: %s", b.subject, b.data)
		}
	}
	if err := v.Validate(event.CtlStatus, []byte(`{}`)); !errors.Is(err, eventtest.ErrNoSchema) {
		t.Errorf("control subject: want ErrNoSchema, got %v", err)
	}
}

// TestSchemasDescribeTheGoTypes keeps the schemas and the Go payloads in
// step: every JSON field of a type is a property of its schema and the other
// way round, and a field is required exactly when it is never omitted.
func TestSchemasDescribeTheGoTypes(t *testing.T) {
	types := map[string]any{
		"heartbeat.json": event.Heartbeat{}, "verdict.json": event.Verdict{}, "hold.json": event.Hold{},
		"plan.json": event.Plan{}, "task.json": event.Task{}, "done.json": event.Done{}, "failed.json": event.Failed{},
		"dead.json": event.Dead{}, "lost.json": event.Lost{}, "corrupt.json": event.Corrupt{},
		"condition.json": event.Condition{}, "drain.json": event.Drain{},
		"progress.json": event.Progress{}, "stalled.json": event.Stalled{}, "heal_switch.json": event.HealSwitched{},
	}
	files, _ := fs.Glob(event.Schemas(), "*.json")
	if len(files) != len(types) {
		t.Errorf("schema files %v, want one per payload type (%d)", files, len(types))
	}
	for file, typ := range types {
		b, err := fs.ReadFile(event.Schemas(), file)
		if err != nil {
			t.Errorf("%T: %v", typ, err)
			continue
		}
		var sch struct {
			Required   []string                   `json:"required"`
			Properties map[string]json.RawMessage `json:"properties"`
			Subjects   []string                   `json:"x-rehome-subjects"`
		}
		if err := json.Unmarshal(b, &sch); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		fields, required := jsonFields(reflect.TypeOf(typ))
		for _, f := range fields {
			if _, ok := sch.Properties[f]; !ok {
				t.Errorf("%s: field %q of %T is not in the schema", file, f, typ)
			}
		}
		for p := range sch.Properties {
			if !slices.Contains(fields, p) {
				t.Errorf("%s: property %q is not a field of %T", file, p, typ)
			}
		}
		slices.Sort(required)
		slices.Sort(sch.Required)
		if !slices.Equal(required, sch.Required) {
			t.Errorf("%s: required %v, want the fields never omitted %v", file, sch.Required, required)
		}
		if len(sch.Subjects) == 0 {
			t.Errorf("%s: no x-rehome-subjects", file)
		}
		for _, s := range sch.Subjects {
			subj := strings.NewReplacer("<node>", "storage-1", "<target>", "storage-1", "<shard>", "obj-s0", "<incident>", "storage-1-1").Replace(s)
			if got := event.SchemaName(subj); got != file {
				t.Errorf("%s lists subject %s, but SchemaName(%s) = %q", file, s, subj, got)
			}
		}
	}
}

// jsonFields lists the JSON names of t's fields (embedded structs inlined)
// and those encoded always (no omitempty or omitzero).
func jsonFields(t reflect.Type) (all, required []string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			a, r := jsonFields(f.Type)
			all, required = append(all, a...), append(required, r...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
			required = append(required, name)
		}
	}
	return all, required
}

func TestSchemaNameCoversEverySubject(t *testing.T) {
	cases := map[string]string{
		"rehome.heartbeat.storage-1":         "heartbeat.json",
		"rehome.node.down.storage-1":         "verdict.json",
		"rehome.repair.task.storage-1":       "task.json",
		"rehome.repair.dead.unknown":         "dead.json",
		"rehome.heal.progress":               "progress.json",
		"rehome.heal.progress.extra":         "",
		"rehome.node.down.":                  "",
		"rehome.node.down.storage-1.x":       "",
		"rehome.ctl.status":                  "",
		"rehome.ctl.inventory.storage-1":     "",
		"$JS.EVENT.ADVISORY.CONSUMER.X.Y.Z":  "",
		"rehome.detector.held":               "hold.json",
		"rehome.shard.corrupt.storage-2":     "corrupt.json",
		"rehome.node.condition.storage-2":    "condition.json",
		"rehome.repair.plan.storage-1-12345": "plan.json",
	}
	for subj, want := range cases {
		if got := event.SchemaName(subj); got != want {
			t.Errorf("SchemaName(%q) = %q, want %q", subj, got, want)
		}
	}
}
