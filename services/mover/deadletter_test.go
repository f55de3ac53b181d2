package mover

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rehome/rehome/shared/event"
)

func TestBuryAs(t *testing.T) {
	task := []byte(`{"v":1,"task":"t-1","shard":"s-1","kind":"copy","target":"storage-b"}`)
	junk := make([]byte, event.MaxDeadPayload+1000)
	_, _ = rand.Read(junk)
	longJSON := []byte(`{"target":"storage-c","pad":"` + strings.Repeat("x", event.MaxDeadPayload) + `"}`)
	cases := []struct {
		name        string
		subject     string
		data        []byte
		wantSubject string
		wantTask    []byte // the payload kept as JSON, or nil
		wantPayload []byte // the payload kept as raw bytes, or nil
	}{
		{"task on its target's subject", event.TaskPrefix + "storage-b", task, event.DeadPrefix + "storage-b", task, nil},
		{"task on another node's subject stays with the queue it came from", event.TaskPrefix + "storage-a", task, event.DeadPrefix + "storage-a", task, nil},
		{"subject token no node id: the payload's target", event.TaskPrefix + "stor:age", task, event.DeadPrefix + "storage-b", task, nil},
		{"neither: unknown", event.TaskPrefix + "stor:age", []byte("not json"), event.DeadPrefix + "unknown", nil, []byte("not json")},
		{"payload target no node id: unknown", "elsewhere", []byte(`{"target":"../x"}`), event.DeadPrefix + "unknown", []byte(`{"target":"../x"}`), nil},
		{"JSON that is not an object", event.TaskPrefix + "storage-b", []byte(`[1,2]`), event.DeadPrefix + "storage-b", []byte(`[1,2]`), nil},
		{"empty payload", event.TaskPrefix + "storage-b", nil, event.DeadPrefix + "storage-b", nil, nil},
		{"binary junk is cut to the limit", event.TaskPrefix + "storage-b", junk, event.DeadPrefix + "storage-b", nil, junk[:event.MaxDeadPayload]},
		{"over-long JSON is kept as cut raw bytes", event.TaskPrefix + "x:y", longJSON, event.DeadPrefix + "unknown", nil, longJSON[:event.MaxDeadPayload]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := bytes.Clone(tc.data)
			dl := buryAs(tc.subject, data, 42, 3, "malformed: bad")
			if dl.subject != tc.wantSubject {
				t.Fatalf("subject %q, want %q", dl.subject, tc.wantSubject)
			}
			d := dl.event
			if !bytes.Equal(d.Task, tc.wantTask) || !bytes.Equal(d.Payload, tc.wantPayload) {
				t.Fatalf("task %q payload %d bytes, want task %q payload %d bytes", d.Task, len(d.Payload), tc.wantTask, len(tc.wantPayload))
			}
			if d.Size != len(tc.data) || d.Subject != tc.subject || d.StreamSeq != 42 || d.Deliveries != 3 || d.Reason != "malformed: bad" {
				t.Fatalf("dead letter %+v", d)
			}
			if got := event.LastToken(dl.subject); d.Target != got {
				t.Fatalf("target %q but subject %q", d.Target, dl.subject)
			}
			// The letter owns its bytes: the message buffer may be reused.
			for i := range data {
				data[i] = 'z'
			}
			if (tc.wantTask != nil && !bytes.Equal(d.Task, tc.wantTask)) || (tc.wantPayload != nil && !bytes.Equal(d.Payload, tc.wantPayload)) {
				t.Fatal("dead letter aliases the message buffer")
			}
			// It encodes, validates and decodes back to the same bytes.
			b, err := event.Encode(d)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > 2*event.MaxDeadPayload {
				t.Fatalf("encoded dead letter is %d bytes", len(b))
			}
			var back event.Dead
			if err := event.Decode(b, &back); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.Task, d.Task) || !bytes.Equal(back.Payload, d.Payload) || back.Target != d.Target {
				t.Fatalf("round trip changed the letter: %+v", back)
			}
		})
	}
}

func TestBuryAsMessageIDIsStablePerStreamMessage(t *testing.T) {
	a := buryAs(event.TaskPrefix+"n", []byte(`{}`), 7, 1, "r1")
	b := buryAs(event.TaskPrefix+"n", []byte(`{}`), 7, 5, "r2")
	if a.msgID != b.msgID {
		t.Fatalf("one message, two ids: %q %q", a.msgID, b.msgID)
	}
	for _, other := range []deadLetter{
		buryAs(event.TaskPrefix+"n", []byte(`{}`), 8, 1, "r1"),
		buryAs(event.TaskPrefix+"n", []byte(`{"a":1}`), 7, 1, "r1"),
	} {
		if other.msgID == a.msgID {
			t.Fatalf("two messages share id %q", a.msgID)
		}
	}
}

func TestDeadValidate(t *testing.T) {
	for _, d := range []event.Dead{{Target: "unknown"}, {Target: "a.b", Reason: "r"}, {Target: "", Reason: "r"}} {
		if d.Validate() == nil {
			t.Errorf("%+v accepted", d)
		}
	}
	if err := (event.Dead{Target: "unknown", Reason: "r"}).Validate(); err != nil {
		t.Fatal(err)
	}
	var d event.Dead
	if err := json.Unmarshal([]byte(`{"v":1,"target":"storage-1","reason":"x","payload":"AAE="}`), &d); err != nil || !bytes.Equal(d.Payload, []byte{0, 1}) {
		t.Fatalf("payload is not base64 in JSON: %v %v", d.Payload, err)
	}
}
