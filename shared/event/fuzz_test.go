package event_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/rehome/rehome/shared/event"
)

// FuzzDecode feeds arbitrary bytes to the decoder of every payload type: it
// must return a value or an error wrapping ErrMalformed, never panic; what it
// accepts must validate, encode and decode again; what it refuses has a
// reason.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"v":1,"ts":"2026-01-01T00:00:00Z","node":"storage-1","rack":"rack-1","addr":"127.0.0.1:1","boot_id":"b","shards":3}`,
		`{"v":1,"node":"storage-2","state":"down","reason":"silent","silent_ms":33000}`,
		`{"v":1,"task":"t","shard":"s","kind":"copy","sources":["a"],"target":"b","bytes":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}`,
		`{"v":1,"task":"t","shard":"s","kind":"copy","sources":["a"],"target":"b","bytes":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000000",` +
			`"batch":[{"task":"t","shard":"s","sources":["a"],"bytes":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","attempt":0},` +
			`{"task":"u","shard":"r","sources":["a","c"],"bytes":2,"sha256":"0000000000000000000000000000000000000000000000000000000000000000","attempt":1}]}`,
		`{"v":1,"task":"t","shard":"s-s000000p001","kind":"rebuild","sources":["a"],"target":"x","k":1,"m":1,"stripe":[],"rebuild":[]}`,
		`{"v":2}`, `{}`, `null`, `[]`, `"x"`, ``, `{"v":1,"node":"../../etc"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		payloads := []event.Payload{&event.Heartbeat{}, &event.Verdict{}, &event.Task{}, &event.Done{}, &event.Failed{},
			&event.Plan{}, &event.Lost{}, &event.Progress{}, &event.Stalled{}, &event.Hold{}, &event.Corrupt{}, &event.Dead{},
			&event.HealSwitched{}, &event.Condition{}, &event.Drain{}}
		for _, p := range payloads {
			if err := event.Decode(data, p); err != nil {
				if !errors.Is(err, event.ErrMalformed) {
					t.Fatalf("%T refused without ErrMalformed: %v", p, err)
				}
				if r := event.Reason(err); r != event.ReasonMalformed && r != event.ReasonInvalid {
					t.Fatalf("%T refused for reason %q: %v", p, r, err)
				}
				continue
			}
			if v, ok := p.(interface{ Validate() error }); ok {
				if err := v.Validate(); err != nil {
					t.Fatalf("%T accepted but invalid: %v", p, err)
				}
			}
			b, err := event.Encode(p)
			if err != nil {
				t.Fatalf("%T accepted but does not encode: %v", p, err)
			}
			again := reflect.New(reflect.TypeOf(p).Elem()).Interface().(event.Payload)
			if err := event.Decode(b, again); err != nil {
				t.Fatalf("%T accepted, encoded as %s, refused: %v", p, b, err)
			}
		}
	})
}
