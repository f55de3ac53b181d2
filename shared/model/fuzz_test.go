package model_test

import (
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/rehome/rehome/shared/model"
)

// FuzzIDs: an id accepted as a shard or node id is safe as a file name, a KV
// key and a subject token; object keys round-trip through their KV encoding.
func FuzzIDs(f *testing.F) {
	for _, s := range []string{"storage-1", "..", "a/b", "a.b", "x\x00y", strings.Repeat("z", 200), "%2F", "ünï", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if model.ValidateShardID(s) == nil || model.ValidateNodeID(s) == nil {
			if strings.ContainsAny(s, "./\\\x00 *>") || s == "" {
				t.Fatalf("accepted unsafe id %q", s)
			}
		}
		if model.ValidateKey(s) == nil {
			back, err := model.ObjectKeyFromKV(model.ObjectKVKey(s))
			if err != nil || back != s {
				t.Fatalf("key %q does not round-trip: %q %v", s, back, err)
			}
		}
	})
}

// FuzzRecords: manifests, placement entries, node registrations and
// liveness records decoded from arbitrary JSON never panic in Validate, and
// what Validate accepts keeps the promises readers rely on.
func FuzzRecords(f *testing.F) {
	f.Add([]byte(`{"v":1,"key":"k","id":"i","size":1,"sha256":"aa","layout":{"rf":3},"chunk_size":4,"shards":[{"id":"i-c0","size":1,"sha256":"` + strings.Repeat("a", 64) + `"}]}`))
	f.Add([]byte(`{"v":1,"shard":"s","layout":{"k":4,"m":2},"sha256":"` + strings.Repeat("a", 64) + `","nodes":["a","b/c"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m model.Manifest
		if json.Unmarshal(data, &m) == nil && m.Validate() == nil {
			total := new(big.Int)
			for _, s := range m.Shards {
				if model.ValidateShardID(s.ID) != nil || s.Size < 0 {
					t.Fatalf("manifest accepted with shard %+v", s)
				}
				total.Add(total, big.NewInt(s.Size))
			}
			if !m.Layout.Erasure() && total.Cmp(big.NewInt(m.Size)) != 0 {
				t.Fatalf("manifest of %d bytes accepted with shards adding to %s", m.Size, total)
			}
			if m.Layout.Validate() != nil || m.ChunkSize <= 0 {
				t.Fatalf("manifest accepted with layout %v chunk size %d", m.Layout, m.ChunkSize)
			}
		}
		var p model.Placement
		if json.Unmarshal(data, &p) == nil && p.Validate() == nil {
			if slices.ContainsFunc(p.Nodes, func(n string) bool { return model.ValidateNodeID(n) != nil }) || p.Size < 0 {
				t.Fatalf("placement accepted with nodes %q size %d", p.Nodes, p.Size)
			}
		}
		var n model.Node
		if json.Unmarshal(data, &n) == nil && n.Validate() == nil && (n.Addr == "" || n.CapacityBytes < 0) {
			t.Fatalf("node record accepted without address or with negative capacity: %+v", n)
		}
		var l model.Liveness
		if json.Unmarshal(data, &l) == nil && l.Validate() == nil {
			switch l.State {
			case model.StateUp, model.StateSuspect, model.StateDown, model.StateMaintenance:
			default:
				t.Fatalf("liveness accepted in state %q", l.State)
			}
		}
	})
}
