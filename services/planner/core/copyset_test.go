package core

import (
	"fmt"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// repairTargets maps 12 shards on the same three nodes (one copyset), takes
// one of them down and returns the targets of the repairs the first round
// issues, under policy copysets or not.
func repairTargets(t *testing.T, copysets bool) map[string]int {
	t.Helper()
	h := NewHarness(Epoch, Policy{MaxAttempts: 5, RetryLater: time.Minute, Copysets: copysets},
		Limits{PerNodeIn: 100, PerNodeOut: 100, MaxInFlight: 100})
	if err := h.AddNodes(12, 4); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		id := fmt.Sprintf("sh-%02d", i)
		if err := h.Write(model.Placement{V: 1, Shard: id, Key: "k-" + id, ObjectID: "obj-" + id, Size: 1 << 20,
			SHA256: sha, Layout: model.Layout{RF: 3}, Nodes: []string{"storage-1", "storage-2", "storage-3"}}); err != nil {
			t.Fatal(err)
		}
	}
	h.View.Rescan()
	h.Advance(time.Second)
	if err := h.SetLiveness("storage-1", model.StateDown); err != nil {
		t.Fatal(err)
	}
	targets := map[string]int{}
	for _, task := range h.Step().Tasks {
		targets[task.Target]++
	}
	if n := len(h.Tasks(nil)); n != 12 {
		t.Fatalf("copysets %v: %d repairs issued, want 12", copysets, n)
	}
	return targets
}

// TestCopysetRepairsStayTogether: under the copyset policy every shard that
// lost the same node of the same copyset is repaired onto one node (in a
// rack without a copy); under random placement they spread over several.
func TestCopysetRepairsStayTogether(t *testing.T) {
	sticky := repairTargets(t, true)
	if len(sticky) != 1 {
		t.Fatalf("copyset policy: repairs went to %v, want one node", sticky)
	}
	for n := range sticky {
		if n == "storage-2" || n == "storage-3" || n == "storage-6" || n == "storage-7" || n == "storage-10" || n == "storage-11" {
			t.Fatalf("copyset policy: target %s shares a rack with a surviving copy", n)
		}
	}
	if spread := repairTargets(t, false); len(spread) < 2 {
		t.Fatalf("random policy: repairs went to %v, want several nodes", spread)
	}
}
