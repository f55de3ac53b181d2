package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// fuzzService is a planner without a bus around a view of six up nodes on
// three racks, one replicated object (fz-s0, fz-s1) and one 2+1 stripe
// (ec-s0p0..2), its initial load done.
func fuzzService(t testing.TB) *Service {
	t.Helper()
	cfg, err := Config{ID: "planner-fuzz", AutoHeal: true}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	v := core.TestView(t, 6, 3)
	core.Put(t, v, "fz-s0", 100, "storage-1", "storage-2", "storage-3")
	core.Put(t, v, "fz-s1", 100, "storage-4", "storage-5", "storage-6")
	core.PutStripe(t, v, "ec", 0, 2, 1, 50, "storage-1", "storage-2", "storage-3")
	v.Rescan()
	return &Service{cfg: cfg, log: slog.New(slog.DiscardHandler), now: func() time.Time { return core.Epoch },
		reg: prometheus.NewRegistry(), m: newMetrics(prometheus.NewRegistry()), v: v,
		kick: make(chan struct{}, 1), ctlSem: make(chan struct{}, 1)}
}

// FuzzResults feeds arbitrary subjects and payloads to the results
// consumer's decoder and semantic check: nothing panics; what is refused
// has a reason; what is accepted validates and names nodes (and, but for
// deletes, shards) the planner knows.
func FuzzResults(f *testing.F) {
	f.Add(event.DonePrefix+"storage-4", []byte(`{"v":1,"task":"t","shard":"fz-s0","kind":"copy","target":"storage-4","bytes":100}`))
	s := fuzzService(f)
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		label, r, err := core.DecodeResult(subject, data)
		if err == nil {
			s.mu.Lock()
			err = s.v.CheckResult(r)
			s.mu.Unlock()
		}
		if err != nil {
			if label == "" || event.Reason(err) == "" {
				t.Fatalf("refused without label or reason: %v", err)
			}
			return
		}
		switch {
		case r.Done != nil:
			d := r.Done
			if d.Validate() != nil || !s.v.KnowsNode(d.Target) {
				t.Fatalf("accepted done %+v", d)
			}
			if _, ok := s.v.IDs.Lookup(d.Shard); !ok && d.Kind != event.KindDelete {
				t.Fatalf("accepted done of unknown shard %+v", d)
			}
		case r.Failed != nil:
			if r.Failed.Validate() != nil {
				t.Fatalf("accepted failed %+v", r.Failed)
			}
		case r.Corrupt != nil:
			c := r.Corrupt
			if _, ok := s.v.IDs.Lookup(c.Shard); !ok || c.Validate() != nil || !s.v.KnowsNode(c.Node) || event.LastToken(subject) != c.Node {
				t.Fatalf("accepted corrupt report %+v on %s", c, subject)
			}
		default:
			t.Fatal("accepted nothing")
		}
	})
}

// FuzzControl feeds arbitrary request bodies to every control call the
// planner decodes (allocate, commit, delete, status, heal status, heal and
// heal plan) up to where they would touch the bus: nothing panics, bad
// input is refused as invalid (a 4xx, never "unavailable"), and an
// allocation answered gives every shard asked for distinct registered nodes.
func FuzzControl(f *testing.F) {
	f.Add(0, []byte(`{"key":"k","layout":{"rf":3},"shards":[{"id":"k-s0","size":10}]}`))
	f.Fuzz(func(t *testing.T, call int, data []byte) {
		s := fuzzService(t)
		ctx := context.Background()
		refused := func(what string, err error) {
			t.Helper()
			var r *refusal
			if err != nil && !errors.Is(err, model.ErrInvalid) && !errors.As(err, &r) {
				t.Fatalf("%s refused %q as unavailable: %v", what, data, err)
			}
		}
		switch (call%7 + 7) % 7 {
		case 0:
			out, err := s.ctlAllocate(ctx, data)
			if err != nil {
				return // invalid, or no room for it: both answered as such
			}
			var req control.AllocateRequest
			_ = decodeRequest(data, &req)
			reply := out.(control.AllocateReply)
			if len(reply.Allocations) != len(req.Shards) {
				t.Fatalf("%d allocations for %d shards", len(reply.Allocations), len(req.Shards))
			}
			for i, a := range reply.Allocations {
				seen := map[string]bool{}
				for _, ep := range a.Nodes {
					if seen[ep.Node] || !s.v.KnowsNode(ep.Node) {
						t.Fatalf("allocation %d: %+v", i, a)
					}
					seen[ep.Node] = true
				}
				if a.Shard != req.Shards[i].ID || len(a.Nodes) != req.Layout.Copies() {
					t.Fatalf("allocation %d for %+v: %+v", i, req.Shards[i], a)
				}
			}
		case 1:
			var req control.CommitRequest
			if err := decodeRequest(data, &req); err != nil {
				refused("commit", err)
				return
			}
			refused("commit", s.validateCommit(req))
		case 2:
			var req control.DeleteRequest
			err := decodeRequest(data, &req)
			if err == nil {
				err = model.ValidateKey(req.Key)
			}
			refused("delete", err)
		case 3:
			_, err := s.ctlStatus(ctx, data)
			refused("status", err)
		case 4:
			_, err := s.ctlHealStatus(ctx, data)
			refused("heal status", err)
		case 5, 6:
			_, err := s.healTarget(data)
			refused("heal", err)
		}
	})
}

// entry is a KV entry with a given key, value and operation.
type entry struct {
	jetstream.KeyValueEntry
	bucket, key string
	value       []byte
	op          jetstream.KeyValueOp
}

func (e entry) Bucket() string                  { return e.bucket }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return 1 }
func (e entry) Operation() jetstream.KeyValueOp { return e.op }
func (e entry) Created() time.Time              { return core.Epoch }

// FuzzRecords feeds arbitrary KV records (registrations, verdicts, map
// entries; puts and deletes) and heartbeats to the planner's view as its
// watchers and subscription deliver them: nothing panics, the view stays
// consistent enough to answer status and plan a round, and a record naming
// a node the view never heard of adds no node.
func FuzzRecords(f *testing.F) {
	f.Add(1, "storage-1", []byte(`{"v":1,"node":"storage-1","state":"down","since":"2026-01-01T00:00:00Z"}`), false)
	buckets := []string{bus.BucketNodes, bus.BucketLiveness, bus.BucketPlacement, "heartbeat"}
	f.Fuzz(func(t *testing.T, which int, key string, value []byte, del bool) {
		s := fuzzService(t)
		nodes := len(s.v.Nodes)
		bucket := buckets[(which%len(buckets)+len(buckets))%len(buckets)]
		switch bucket {
		case "heartbeat":
			s.onHeartbeat(&nats.Msg{Subject: event.HeartbeatPrefix + key, Data: value})
		case bus.BucketPlacement:
			op := jetstream.KeyValuePut
			if del {
				op = jetstream.KeyValueDelete
			}
			s.applyPlacements([]jetstream.KeyValueEntry{entry{bucket: bucket, key: key, value: value, op: op}})
		default:
			op := jetstream.KeyValuePut
			if del {
				op = jetstream.KeyValueDelete
			}
			s.apply(bucket, entry{bucket: bucket, key: key, value: value, op: op})
		}
		if bucket == bus.BucketLiveness || bucket == "heartbeat" {
			if len(s.v.Nodes) != nodes {
				t.Fatalf("a %s record under %q added a node", bucket, key)
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.v.Rescan()
		_ = s.v.ClusterStatus()
		_ = s.v.Round(core.Epoch.Add(time.Minute), s.limits())
	})
}

// FuzzConfig feeds arbitrary values to the planner's configuration check
// (the rehome planner flags): an accepted configuration has positive
// throttles and durations and a max fill in (0, 1].
func FuzzConfig(f *testing.F) {
	f.Add(2, 2, 64, int64(2*time.Minute), int64(0), 0.9, 5, "planner-1")
	f.Fuzz(func(t *testing.T, perNodeIn, perNodeOut, maxInFlight int, taskTimeout, maxBytesPerSec int64, maxFill float64, maxAttempts int, id string) {
		c := Config{ID: id, PerNodeIn: perNodeIn, PerNodeOut: perNodeOut, MaxInFlight: maxInFlight,
			TaskTimeout: time.Duration(taskTimeout), MaxBytesPerSec: maxBytesPerSec, MaxFill: maxFill, MaxAttempts: maxAttempts}
		got, err := c.withDefaults()
		if err != nil {
			return
		}
		if got.PerNodeIn <= 0 || got.PerNodeOut <= 0 || got.MaxInFlight <= 0 || got.TaskTimeout <= 0 || got.MaxAttempts <= 0 ||
			got.MaxBytesPerSec < 0 || math.IsNaN(got.MaxFill) || got.MaxFill <= 0 || got.MaxFill > 1 || model.ValidateNodeID(got.ID) != nil {
			t.Fatalf("accepted %+v", got)
		}
	})
}

// FuzzPlacementDecode checks the placement watch's decoder (go-json, for
// speed) against encoding/json: it never panics, and every record the
// standard decoder and the entry's checks accept, it accepts with the same
// value (records of valid UTF-8, as every writer's json.Marshal makes them:
// on invalid UTF-8 the two may differ, and both keep to a checked entry).
func FuzzPlacementDecode(f *testing.F) {
	f.Add([]byte(`{"v":1,"shard":"obj-1-c000000","key":"k","object_id":"obj-1","size":4,"sha256":"`+
		strings.Repeat("0", 64)+`","layout":{"rf":3},"nodes":["storage-1","storage-2"]}`), "obj-1-c000000")
	f.Add([]byte(`{"v":1,"shard":"obj-1-s000001p002","key":"k\u00e9","object_id":"obj-1","stripe":1,"index":2,"size":7,"sha256":"`+
		strings.Repeat("a", 64)+`","layout":{"k":4,"m":2},"nodes":[]}`), "obj-1-s000001p002")
	f.Add([]byte(`{"v":1,"shard":"x","nodes":null,"Size":3,"SHA256":"`+strings.Repeat("b", 64)+`","layout":{"rf":1}}`), "x")
	f.Fuzz(func(t *testing.T, value []byte, key string) {
		got := decodePlacement(entry{bucket: bus.BucketPlacement, key: key, value: value, op: jetstream.KeyValuePut})
		var want model.Placement
		if !utf8.Valid(value) || json.Unmarshal(value, &want) != nil || want.Validate() != nil || want.Shard != key {
			return
		}
		if got.err != nil || !reflect.DeepEqual(got.p, want) {
			t.Fatalf("%q: decoded %+v (%v), encoding/json %+v", value, got.p, got.err, want)
		}
	})
}
