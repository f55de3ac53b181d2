package model_test

import (
	"encoding/json"
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

// FuzzRecords: manifests and placement entries decoded from arbitrary JSON
// never panic in Validate.
func FuzzRecords(f *testing.F) {
	f.Add([]byte(`{"v":1,"key":"k","id":"i","size":1,"sha256":"aa","layout":{"rf":3},"chunk_size":4,"shards":[{"id":"i-c0","size":1,"sha256":"` + strings.Repeat("a", 64) + `"}]}`))
	f.Add([]byte(`{"v":1,"shard":"s","layout":{"k":4,"m":2},"sha256":"` + strings.Repeat("a", 64) + `","nodes":["a","b/c"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m model.Manifest
		if json.Unmarshal(data, &m) == nil {
			_ = m.Validate()
		}
		var p model.Placement
		if json.Unmarshal(data, &p) == nil {
			_ = p.Validate()
		}
		var n model.Node
		if json.Unmarshal(data, &n) == nil {
			_ = n.Validate()
		}
	})
}
