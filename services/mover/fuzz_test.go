package mover

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// FuzzTask feeds arbitrary subjects and payloads to the task decoder as the
// mover consumes the work queue: what it accepts validates, is queued for
// its own target and (a rebuild) forms one stripe; what it refuses wraps
// event.ErrMalformed (so it is dead-lettered at once, never retried) with a
// reason the rejection counter knows.
func FuzzTask(f *testing.F) {
	f.Add(event.TaskPrefix+"storage-2", []byte(`{"v":1,"task":"t","shard":"s-1","kind":"copy","sources":["storage-1"],"target":"storage-2","bytes":1,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`))
	f.Add(event.TaskPrefix+"storage-2", []byte(`{"v":1,"task":"t","shard":"s-1","kind":"copy","sources":["storage-1"],"target":"storage-2","bytes":1,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",`+
		`"batch":[{"task":"t","shard":"s-1","sources":["storage-1"],"bytes":1,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","attempt":1},`+
		`{"task":"u","shard":"s-2","sources":["storage-1","storage-3"],"bytes":7,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","attempt":2}]}`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		var tk event.Task
		err := decodeTask(subject, data, &tk)
		if err != nil {
			if !errors.Is(err, event.ErrMalformed) || Classify(err) != Permanent {
				t.Fatalf("refused as retryable: %v", err)
			}
			switch event.Reason(err) {
			case event.ReasonMalformed, event.ReasonInvalid, event.ReasonSubjectMismatch:
			default:
				t.Fatalf("refused for reason %q: %v", event.Reason(err), err)
			}
			return
		}
		if tk.Validate() != nil || event.LastToken(subject) != tk.Target || tk.Bytes < 0 {
			t.Fatalf("accepted %+v on %q", tk, subject)
		}
		if tk.Kind == event.KindCopy && len(tk.Sources) == 0 {
			t.Fatalf("accepted a copy without sources: %+v", tk)
		}
		if tk.Kind == event.KindRebuild && checkStripe(tk) != nil {
			t.Fatalf("accepted a rebuild whose stripe does not hold: %+v", tk)
		}
		for _, m := range tk.Members() { // each shard of a batch is a copy the mover can run
			if len(tk.Batch) > 0 && (m.Validate() != nil || m.Target != tk.Target || m.Kind != event.KindCopy) {
				t.Fatalf("accepted a batch with a member that is no valid copy: %+v", m)
			}
		}
	})
}

// FuzzDeadLetter buries arbitrary task messages: every dead letter is a
// valid event that encodes and decodes again, on the subject of its target,
// carrying at most event.MaxDeadPayload bytes of the original.
func FuzzDeadLetter(f *testing.F) {
	f.Add(event.TaskPrefix+"storage-2", []byte(`{"v":1,"target":"storage-2"}`), 3)
	f.Fuzz(func(t *testing.T, subject string, data []byte, deliveries int) {
		dl := buryAs(subject, data, 7, max(deliveries, 0), "malformed: fuzz")
		d := dl.event
		if dl.subject != event.DeadPrefix+d.Target || d.Size != len(data) || len(d.Task)+len(d.Payload) > event.MaxDeadPayload {
			t.Fatalf("dead letter on %s for %s: size %d, carries %d+%d bytes", dl.subject, d.Target, d.Size, len(d.Task), len(d.Payload))
		}
		b, err := event.Encode(d)
		if err != nil {
			t.Fatalf("dead letter does not encode: %v", err)
		}
		var back event.Dead
		if err := event.Decode(b, &back); err != nil {
			t.Fatalf("dead letter does not decode: %v\n%s", err, b)
		}
	})
}

// FuzzRecords feeds arbitrary KV records to the two readers the mover
// keeps: node registrations (addresses) and liveness records (incident
// traces). What they accept is valid under its own key; what they refuse is
// counted with a reason.
func FuzzRecords(f *testing.F) {
	f.Add("storage-1", []byte(`{"v":1,"id":"storage-1","rack":"r","addr":"127.0.0.1:1","boot_id":"b"}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		if n, err := decodeNode(key, value); err == nil && (n.ID != key || n.Validate() != nil) {
			t.Fatalf("node record accepted under %q: %+v", key, n)
		}
		var refused error
		in := newIncidents(slog.New(slog.DiscardHandler), func(err error) { refused = err })
		id, tp, ok := in.decode(key, value)
		if ok && (tp == "" || id == "") {
			t.Fatalf("liveness record under %q read as incident %q trace %q", key, id, tp)
		}
		if refused != nil && event.Reason(refused) == event.ReasonUnknownShard {
			t.Fatalf("liveness refused for reason %q: %v", event.Reason(refused), refused)
		}
		if ok && refused != nil {
			t.Fatalf("liveness record both read and refused: %v", refused)
		}
		_ = model.ValidateNodeID(key)
	})
}

// FuzzConfig feeds arbitrary values to the mover's configuration check and
// its retry backoff: an accepted configuration has positive workers,
// deliveries and ack wait, and every backoff it computes lies between its
// minimum and maximum.
func FuzzConfig(f *testing.F) {
	f.Add(4, int64(30*time.Second), 20, int64(250*time.Millisecond), int64(10*time.Second), 5)
	f.Fuzz(func(t *testing.T, workers int, ackWait int64, maxDeliver int, backoffMin, backoffMax int64, attempt int) {
		c := Config{Workers: workers, AckWait: time.Duration(ackWait), MaxDeliver: maxDeliver,
			BackoffMin: time.Duration(backoffMin), BackoffMax: time.Duration(backoffMax)}
		got, err := c.withDefaults()
		if err != nil {
			return
		}
		if got.Workers <= 0 || got.MaxDeliver <= 0 || got.AckWait < 100*time.Millisecond || got.BackoffMin <= 0 || got.BackoffMax < got.BackoffMin {
			t.Fatalf("accepted %+v", got)
		}
		if d := Backoff(attempt, got.BackoffMin, got.BackoffMax); d < got.BackoffMin || d > got.BackoffMax {
			t.Fatalf("backoff of attempt %d between %s and %s: %s", attempt, got.BackoffMin, got.BackoffMax, d)
		}
	})
}
