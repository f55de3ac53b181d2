package event_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// validator is implemented by every payload with field rules.
type validating interface {
	event.Payload
	Validate() error
}

// TestSamplesValidate: every payload as the services publish it passes its
// own Validate (and so event.Decode).
func TestSamplesValidate(t *testing.T) {
	for _, s := range samples() {
		if v, ok := s.p.(validating); ok {
			if err := v.Validate(); err != nil {
				t.Errorf("%s: sample refused: %v", s.subject, err)
			}
		}
	}
}

// TestValidateRefusesWellFormedButWrongPayloads: JSON that decodes into the
// payload type but breaks its contract is refused by Decode with ErrMalformed
// and ErrInvalid, and classified as invalid.
func TestValidateRefusesWellFormedButWrongPayloads(t *testing.T) {
	const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	hb := `"node":"storage-1","rack":"r","addr":"a:1","boot_id":"b"`
	task := `"task":"t","shard":"s-1","target":"storage-2","sha256":"` + sha + `"`
	done := `"task":"t","shard":"s-1","kind":"copy","target":"storage-2"`
	failed := `"task":"t","shard":"s-1","kind":"copy","target":"storage-2","error":"x"`
	cases := []struct {
		name string
		p    func() validating
		data string
	}{
		{"heartbeat negative shards", func() validating { return &event.Heartbeat{} }, `{` + hb + `,"shards":-1}`},
		{"heartbeat negative used", func() validating { return &event.Heartbeat{} }, `{` + hb + `,"used_bytes":-1}`},
		{"heartbeat negative capacity", func() validating { return &event.Heartbeat{} }, `{` + hb + `,"capacity_bytes":-9223372036854775808}`},
		{"heartbeat no boot id", func() validating { return &event.Heartbeat{} }, `{"node":"storage-1"}`},
		{"heartbeat path in node", func() validating { return &event.Heartbeat{} }, `{"node":"../../etc","boot_id":"b"}`},
		{"verdict negative silence", func() validating { return &event.Verdict{} }, `{"node":"storage-1","state":"down","silent_ms":-1}`},
		{"verdict unknown state", func() validating { return &event.Verdict{} }, `{"node":"storage-1","state":"exploded"}`},
		{"verdict maintenance", func() validating { return &event.Verdict{} }, `{"node":"storage-1","state":"maintenance"}`},
		{"task negative bytes", func() validating { return &event.Task{} }, `{` + task + `,"kind":"copy","sources":["storage-1"],"bytes":-1}`},
		{"task copy without sources", func() validating { return &event.Task{} }, `{` + task + `,"kind":"copy","bytes":1}`},
		{"task copy with empty sources", func() validating { return &event.Task{} }, `{` + task + `,"kind":"copy","sources":[],"bytes":1}`},
		{"task bad source", func() validating { return &event.Task{} }, `{` + task + `,"kind":"copy","sources":["a.b"],"bytes":1}`},
		{"task negative attempt", func() validating { return &event.Task{} }, `{` + task + `,"kind":"copy","sources":["storage-1"],"attempt":-1}`},
		{"task delete negative bytes", func() validating { return &event.Task{} }, `{"task":"t","shard":"s-1","target":"storage-2","kind":"delete","bytes":-5}`},
		{"task sha not hex", func() validating { return &event.Task{} },
			`{"task":"t","shard":"s-1","target":"storage-2","kind":"copy","sources":["storage-1"],"sha256":"` + fmt.Sprintf("%064s", "zz") + `"}`},
		{"task unknown kind", func() validating { return &event.Task{} }, `{` + task + `,"kind":"move","sources":["storage-1"]}`},
		{"task unknown class", func() validating { return &event.Task{} }, `{` + task + `,"kind":"copy","sources":["storage-1"],"sha256":"` + strings.Repeat("a", 64) + `","class":"urgent"}`},
		{"task rebuild negative k", func() validating { return &event.Task{} }, `{` + task + `,"kind":"rebuild","sources":["storage-1"],"k":-1,"m":2}`},
		{"task batch of a delete", func() validating { return &event.Task{} }, batchTask("delete", "t", "s-1", "s-2")},
		{"task batch first not repeated", func() validating { return &event.Task{} }, batchTask("copy", "t", "s-2", "s-1")},
		{"task batch shard twice", func() validating { return &event.Task{} }, batchTask("copy", "t", "s-1", "s-1")},
		{"task batch member without task", func() validating { return &event.Task{} }, batchTask("copy", "t", "s-1", "")},
		{"task batch member bad shard", func() validating { return &event.Task{} }, batchTask("copy", "t", "s-1", "a/b")},
		{"done negative bytes", func() validating { return &event.Done{} }, `{` + done + `,"bytes":-1}`},
		{"done negative duration", func() validating { return &event.Done{} }, `{` + done + `,"duration_ms":-1}`},
		{"done unknown kind", func() validating { return &event.Done{} }, `{"task":"t","shard":"s-1","kind":"teleport","target":"storage-2"}`},
		{"done no task", func() validating { return &event.Done{} }, `{"shard":"s-1","kind":"copy","target":"storage-2"}`},
		{"done bad target", func() validating { return &event.Done{} }, `{"task":"t","shard":"s-1","kind":"copy","target":"storage 2"}`},
		{"failed negative attempt", func() validating { return &event.Failed{} }, `{` + failed + `,"attempt":-3}`},
		{"failed bad target", func() validating { return &event.Failed{} }, `{"task":"t","shard":"s-1","kind":"copy","target":""}`},
		{"failed unknown side", func() validating { return &event.Failed{} }, `{` + failed + `,"side":"both"}`},
		{"failed unknown kind", func() validating { return &event.Failed{} }, `{"task":"t","shard":"s-1","kind":"","target":"storage-2"}`},
		{"corrupt bad shard", func() validating { return &event.Corrupt{} }, `{"node":"storage-1","shard":"a/b"}`},
		{"dead negative size", func() validating { return &event.Dead{} }, `{"target":"unknown","reason":"x","size":-1}`},
		{"plan negative bytes", func() validating { return &event.Plan{} }, `{"incident":"i","bytes":-1}`},
		{"plan bad target", func() validating { return &event.Plan{} }, `{"incident":"i","targets":[{"node":"*","shards":1}]}`},
		{"lost bad node", func() validating { return &event.Lost{} }, `{"shard":"s-1","nodes":["storage-1",">"]}`},
		{"progress negative", func() validating { return &event.Progress{} }, `{"under_replicated":-1}`},
		{"progress negative rate", func() validating { return &event.Progress{} }, `{"rate_bytes_per_sec":-0.5}`},
		{"stalled negative idle", func() validating { return &event.Stalled{} }, `{"idle_seconds":-1}`},
		{"hold negative silent", func() validating { return &event.Hold{} }, `{"silent":-1}`},
	}
	for _, c := range cases {
		var fields map[string]any
		dec := json.NewDecoder(strings.NewReader(c.data))
		dec.UseNumber()
		if err := dec.Decode(&fields); err != nil {
			t.Fatalf("%s: test data: %v", c.name, err)
		}
		fields["v"] = 1
		data, _ := json.Marshal(fields)
		p := c.p()
		err := event.Decode(data, p)
		if !errors.Is(err, event.ErrMalformed) || !errors.Is(err, event.ErrInvalid) {
			t.Errorf("%s: Decode = %v, want ErrMalformed and ErrInvalid", c.name, err)
			continue
		}
		if got := event.Reason(err); got != event.ReasonInvalid {
			t.Errorf("%s: reason %q, want %q", c.name, got, event.ReasonInvalid)
		}
	}
}

func TestReason(t *testing.T) {
	var hb event.Heartbeat
	syntax := event.Decode([]byte(`{"v":1,`), &hb)
	types := event.Decode([]byte(`{"v":1,"shards":"many"}`), &hb)
	version := event.Decode([]byte(`{"v":2}`), &hb)
	var x map[string]any
	jsonErr := json.Unmarshal([]byte(`{`), &x)
	cases := []struct {
		err  error
		want string
	}{
		{syntax, event.ReasonMalformed},
		{types, event.ReasonMalformed},
		{version, event.ReasonMalformed},
		{event.ErrMalformed, event.ReasonMalformed},
		{errors.New("anything"), event.ReasonMalformed},
		{fmt.Errorf("%w record: %w", model.ErrInvalid, jsonErr), event.ReasonMalformed},
		{model.ValidateNodeID("a.b"), event.ReasonInvalid},
		{event.CheckSubjectNode(event.HeartbeatPrefix+"storage-1", "storage-2"), event.ReasonSubjectMismatch},
		{fmt.Errorf("done: %w: storage-9", event.ErrUnknownNode), event.ReasonUnknownNode},
		{fmt.Errorf("done: %w: %w", event.ErrUnknownShard, event.ErrUnknownNode), event.ReasonUnknownShard},
	}
	for i, c := range cases {
		if got := event.Reason(c.err); got != c.want {
			t.Errorf("case %d (%v): reason %q, want %q", i, c.err, got, c.want)
		}
	}
	if err := event.CheckSubjectNode(event.HeartbeatPrefix+"storage-1", "storage-1"); err != nil {
		t.Fatalf("matching subject refused: %v", err)
	}
	if err := event.CheckSubjectNode("storage-1", "storage-1"); err != nil {
		t.Fatalf("bare token refused: %v", err)
	}
	if err := event.CheckSubjectNode(event.HeartbeatPrefix+"storage-1", "storage-11"); !errors.Is(err, event.ErrMalformed) {
		t.Fatalf("mismatch: %v, want ErrMalformed", err)
	}
}

// batchTask renders a batched task of kind whose own fields name shard
// s-1, with one member per shard given (member "" has no task id).
func batchTask(kind, task string, shards ...string) string {
	sha := fmt.Sprintf("%064d", 0)
	var members []string
	for i, sh := range shards {
		id := fmt.Sprintf("%s-%d", task, i)
		if i == 0 {
			id = task
		}
		if sh == "" {
			id, sh = "", "s-9"
		}
		members = append(members, `{"task":"`+id+`","shard":"`+sh+`","sources":["storage-1"],"bytes":1,"sha256":"`+sha+`","attempt":1}`)
	}
	return `{"v":1,"task":"` + task + `","shard":"s-1","kind":"` + kind + `","sources":["storage-1"],"target":"storage-2","bytes":1,"sha256":"` + sha +
		`","attempt":1,"batch":[` + strings.Join(members, ",") + `]}`
}
