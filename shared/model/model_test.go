package model_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/rehome/rehome/shared/model"
)

func TestShardIDs(t *testing.T) {
	good := []string{"a", "3f2a-c000001", strings.Repeat("x", 128), "A_b-9"}
	bad := []string{"", "..", "a/b", "a\\b", "a.b", "a\x00b", strings.Repeat("x", 129), "%2F", "a b", "é", "a\n", "a:b", "[x]", "`"}
	for _, id := range good {
		if err := model.ValidateShardID(id); err != nil {
			t.Errorf("%q refused: %v", id, err)
		}
	}
	for _, id := range bad {
		if model.ValidateShardID(id) == nil {
			t.Errorf("%q accepted", id)
		}
	}
}

func TestObjectKeysRoundTripAsKVKeys(t *testing.T) {
	for _, k := range []string{"a", "dir/file.txt", "ünï cödé", "..", "a.b.c", "*", ">"} {
		enc := model.ObjectKVKey(k)
		if strings.ContainsAny(enc, ".*> /") {
			t.Errorf("%q encodes to %q: not a safe KV key", k, enc)
		}
		dec, err := model.ObjectKeyFromKV(enc)
		if err != nil || dec != k {
			t.Errorf("%q: round trip gave %q, %v", k, dec, err)
		}
	}
	if model.ValidateKey("") == nil || model.ValidateKey("a\x00") == nil || model.ValidateKey(strings.Repeat("k", model.MaxKeyLen+1)) == nil || model.ValidateKey(strings.Repeat("k", model.MaxKeyLen)) != nil {
		t.Fatal("bad keys accepted")
	}
}

func TestLayouts(t *testing.T) {
	valid := []model.Layout{{RF: 3}, {RF: 1}, {K: 4, M: 2}, {K: 1, M: 1}}
	invalid := []model.Layout{{}, {RF: 3, K: 4, M: 2}, {K: 4}, {K: 200, M: 100}, {RF: -1}, {RF: 17}}
	for _, l := range valid {
		if err := l.Validate(); err != nil {
			t.Errorf("%+v refused: %v", l, err)
		}
	}
	for _, l := range invalid {
		if l.Validate() == nil {
			t.Errorf("%+v accepted", l)
		}
	}
	if (model.Layout{K: 4, M: 2}).Copies() != 1 || (model.Layout{RF: 3}).Copies() != 3 {
		t.Fatal("copies per shard wrong")
	}
}

func TestManifestValidate(t *testing.T) {
	sha := strings.Repeat("a", 64)
	m := model.Manifest{V: 1, Key: "k", ID: "id", Size: 10, SHA256: sha, Layout: model.Layout{RF: 3}, ChunkSize: 4,
		Shards: []model.ShardRef{{ID: "id-c0", Size: 4, SHA256: sha}, {ID: "id-c1", Size: 4, SHA256: sha}, {ID: "id-c2", Size: 2, SHA256: sha}}}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	m.Size = 11
	if m.Validate() == nil {
		t.Fatal("size mismatch accepted")
	}
}

func TestLivenessValidate(t *testing.T) {
	ok := model.Liveness{V: 1, Node: "storage-1", State: model.StateDown, Flaps: 2, GraceMS: 30000}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]model.Liveness{
		"version":        {V: 2, Node: "storage-1", State: model.StateUp},
		"node id":        {V: 1, Node: "storage/1", State: model.StateUp},
		"no node":        {V: 1, State: model.StateUp},
		"state":          {V: 1, Node: "storage-1", State: "exploded"},
		"empty state":    {V: 1, Node: "storage-1"},
		"negative flaps": {V: 1, Node: "storage-1", State: model.StateUp, Flaps: -1},
		"negative grace": {V: 1, Node: "storage-1", State: model.StateUp, GraceMS: -1},
	}
	for name, l := range bad {
		if err := l.Validate(); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestManifestSizesDoNotOverflow(t *testing.T) {
	sha := strings.Repeat("a", 64)
	huge := int64(math.MaxInt64)
	// The shard sizes wrap around to the object's size in int64 arithmetic.
	m := model.Manifest{V: 1, Key: "k", ID: "id", Size: 0, SHA256: sha, Layout: model.Layout{RF: 3}, ChunkSize: 4,
		Shards: []model.ShardRef{{ID: "id-c0", Size: huge, SHA256: sha}, {ID: "id-c1", Size: huge, SHA256: sha}, {ID: "id-c2", Size: 2, SHA256: sha}}}
	if err := m.Validate(); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("wrapping shard sizes: %v, want ErrInvalid", err)
	}
}

func TestParseLayout(t *testing.T) {
	for s, want := range map[string]model.Layout{"rf=3": {RF: 3}, "rf=1": {RF: 1}, "ec=4+2": {K: 4, M: 2}, "ec=10+4": {K: 10, M: 4}} {
		got, err := model.ParseLayout(s)
		if err != nil || got != want || got.String() != s {
			t.Errorf("ParseLayout(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "rf", "rf=", "rf=x", "rf=3x", "rf=0", "rf=17", "ec=4", "ec=4+", "ec=+2", "ec=0+2", "ec=4+2+1", "xx=3", "3", "4+2"} {
		if _, err := model.ParseLayout(s); err == nil {
			t.Errorf("ParseLayout(%q) accepted", s)
		}
	}
}
