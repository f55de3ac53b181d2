package detector

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
	"github.com/rehome/rehome/shared/model"
)

// FuzzHeartbeat feeds arbitrary subjects and payloads to the heartbeat
// decoder as the detector consumes it: what it accepts names the subject's
// node, validates and fits the size bound; what it refuses wraps
// event.ErrMalformed and has a reason.
func FuzzHeartbeat(f *testing.F) {
	f.Add(event.HeartbeatPrefix+"storage-1", []byte(`{"v":1,"node":"storage-1","rack":"r","addr":"a:1","boot_id":"b"}`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		hb, err := decodeHeartbeat(subject, data)
		if err != nil {
			if !errors.Is(err, event.ErrMalformed) {
				t.Fatalf("refused without ErrMalformed: %v", err)
			}
			if r := event.Reason(err); r == event.ReasonUnknownNode || r == event.ReasonUnknownShard {
				t.Fatalf("refused for reason %q: %v", r, err)
			}
			return
		}
		if hb.Validate() != nil || event.LastToken(subject) != hb.Node || len(data) > maxHeartbeatBytes {
			t.Fatalf("accepted %+v on %q (%d bytes)", hb, subject, len(data))
		}
	})
}

// entry is a KV entry with a given key and value.
type entry struct {
	jetstream.KeyValueEntry
	key   string
	value []byte
	op    jetstream.KeyValueOp
}

func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return 1 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }
func (e entry) Bucket() string                  { return "rehome-liveness" }
func (e entry) Created() time.Time              { return time.Time{} }

// FuzzLiveness feeds arbitrary liveness records (key and value) to the
// decoder the detector seeds from and follows maintenance with: what it
// accepts is a valid record under its own node's key.
func FuzzLiveness(f *testing.F) {
	f.Add("storage-1", []byte(`{"v":1,"node":"storage-1","state":"maintenance","since":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		rec, err := decodeLiveness(entry{key: key, value: value, op: jetstream.KeyValuePut})
		if err != nil {
			if !errors.Is(err, event.ErrMalformed) {
				t.Fatalf("refused without ErrMalformed: %v", err)
			}
			return
		}
		if rec.Validate() != nil || rec.Node != key {
			t.Fatalf("accepted %+v under key %q", rec, key)
		}
	})
}

// FuzzDisconnect feeds arbitrary server disconnect advisories to the
// detector's handler: it never panics or blocks, counts what is not an
// advisory as malformed, and passes on only names that are node ids.
func FuzzDisconnect(f *testing.F) {
	f.Add([]byte(`{"type":"io.nats.server.advisory.v1.client_disconnect","client":{"name":"storage-1","acc":"A"},"reason":"Client Closed"}`))
	reg := prometheus.NewRegistry()
	s := &Service{m: newMetrics(reg, time.Second), log: slog.New(slog.DiscardHandler), disc: make(chan string, 1)}
	f.Fuzz(func(t *testing.T, data []byte) {
		before := metricstest.Value(t, reg, "rehome_detector_malformed_events_total", "subject", "disconnect")
		s.onDisconnectMsg(&nats.Msg{Subject: "$SYS.ACCOUNT.A.DISCONNECT", Data: data})
		select {
		case name := <-s.disc:
			var ev disconnectEvent
			if json.Unmarshal(data, &ev) != nil || ev.Type != disconnectType || ev.Client.Name != name || model.ValidateNodeID(name) != nil {
				t.Fatalf("passed on %q from %q", name, data)
			}
		default:
			var ev disconnectEvent
			if json.Unmarshal(data, &ev) != nil || ev.Type != disconnectType || len(data) > maxDisconnectBytes {
				if metricstest.Value(t, reg, "rehome_detector_malformed_events_total", "subject", "disconnect") != before+1 {
					t.Fatalf("not an advisory, not counted: %q", data)
				}
			}
		}
	})
}

// FuzzConfig feeds arbitrary flag values (the rehome detector flags and
// the rest of Config) to the configuration check: whatever it accepts has
// positive durations and a silent share in (0, 1].
func FuzzConfig(f *testing.F) {
	f.Add(int64(3*time.Second), int64(30*time.Second), 0.5, int64(10*time.Minute), 2, int64(0), int64(0), "")
	f.Fuzz(func(t *testing.T, suspect, grace int64, share float64, flapWindow int64, flapThreshold int, maxGrace, tick int64, systemURL string) {
		c := DefaultConfig()
		c.SuspectAfter, c.Grace, c.MaxSilentShare = time.Duration(suspect), time.Duration(grace), share
		c.FlapWindow, c.FlapThreshold, c.MaxGrace, c.Tick = time.Duration(flapWindow), flapThreshold, time.Duration(maxGrace), time.Duration(tick)
		c.SystemURL = systemURL
		got, err := c.withDefaults()
		if err != nil {
			return
		}
		if got.SuspectAfter <= 0 || got.Grace <= 0 || got.Tick <= 0 || got.FlapWindow <= 0 || got.MaxClockSkew <= 0 || got.MaxGrace < 0 ||
			got.FlapThreshold < 0 || math.IsNaN(got.MaxSilentShare) || got.MaxSilentShare <= 0 || got.MaxSilentShare > 1 {
			t.Fatalf("accepted %+v", got)
		}
	})
}
