package core

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// Fixtures for tests of the core and of its drivers: a view of numbered
// nodes, replicated shards and erasure-coded stripes.

// Epoch is the time fixtures and harness tests start at.
var Epoch = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

const sha = "0000000000000000000000000000000000000000000000000000000000000000"

// TestView builds a loaded view of n up nodes dealt round-robin on racks.
func TestView(t testing.TB, n, racks int) *View {
	t.Helper()
	v := NewView(func() time.Time { return Epoch }, Policy{MaxAttempts: 5, RetryLater: time.Minute})
	for i := 1; i <= n; i++ {
		err := v.SetNode(model.Node{V: 1, ID: fmt.Sprintf("storage-%d", i), Rack: fmt.Sprintf("rack-%d", (i-1)%racks+1),
			Addr: fmt.Sprintf("127.0.0.1:%d", 9000+i), CapacityBytes: 1 << 40})
		if err != nil {
			t.Fatal(err)
		}
	}
	v.Rescan()
	return v
}

// Put maps replicated shard id (3 copies, size bytes) on nodes, failing t
// on a refused entry.
func Put(t testing.TB, v *View, id string, size int64, nodes ...string) {
	t.Helper()
	_, err := v.UpsertPlacement(model.Placement{V: 1, Shard: id, Key: "k-" + id, ObjectID: "obj-" + id, Size: size,
		SHA256: sha, Layout: model.Layout{RF: 3}, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
}

func setState(t testing.TB, v *View, node string, st model.State, since time.Time) {
	t.Helper()
	if _, err := v.SetLiveness(model.Liveness{V: 1, Node: node, State: st, Since: since}); err != nil {
		t.Fatal(err)
	}
}

// pieceID names piece index of stripe s of object obj as the client does.
func pieceID(obj string, s, index int) string { return fmt.Sprintf("%s-s%06dp%03d", obj, s, index) }

func pieceSum(id string) string {
	b := sha256.Sum256([]byte(id))
	return hex.EncodeToString(b[:])
}

func pieceEntry(obj string, s, index, k, m int, size int64, nodes ...string) model.Placement {
	id := pieceID(obj, s, index)
	return model.Placement{V: 1, Shard: id, Key: "key-" + obj, ObjectID: obj, Stripe: s, Index: index, Size: size,
		SHA256: pieceSum(id), Layout: model.Layout{K: k, M: m}, Nodes: nodes}
}

// putPiece maps one piece on nodes.
func putPiece(t testing.TB, v *View, obj string, s, index, k, m int, size int64, nodes ...string) {
	t.Helper()
	if _, err := v.UpsertPlacement(pieceEntry(obj, s, index, k, m, size, nodes...)); err != nil {
		t.Fatal(err)
	}
}

// PutStripe maps stripe s of obj with piece i on nodes[i].
func PutStripe(t testing.TB, v *View, obj string, s, k, m int, size int64, nodes ...string) {
	t.Helper()
	if len(nodes) != k+m {
		t.Fatalf("%d nodes for %d+%d", len(nodes), k, m)
	}
	for i, n := range nodes {
		putPiece(t, v, obj, s, i, k, m, size, n)
	}
}
