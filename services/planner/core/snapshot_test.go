package core

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// TestSnapshotAnswersAsTheView checks that a snapshot answers every
// read-only call exactly as the view it was made from: status, progress, each
// node's heal progress (lacking shards, a down node, a drain under way),
// drain status with its refusals, and rebalance status.
func TestSnapshotAnswersAsTheView(t *testing.T) {
	v := TestView(t, 6, 3)
	for i := range 40 {
		Put(t, v, fmt.Sprintf("shard-%02d", i), int64(1000+i), fmt.Sprintf("storage-%d", i%6+1),
			fmt.Sprintf("storage-%d", (i+1)%6+1), fmt.Sprintf("storage-%d", (i+2)%6+1))
	}
	setState(t, v, "storage-2", model.StateDown, Epoch)
	setState(t, v, "storage-5", model.StateSuspect, Epoch)
	for i := 0; i < 40; i += 3 {
		h, _ := v.IDs.Lookup(fmt.Sprintf("shard-%02d", i))
		r := v.NodeIndex[fmt.Sprintf("storage-%d", i%6+1)]
		v.MarkMissing(h, r)
	}
	if _, err := v.SetDrain("storage-3", true, DrainState{Since: Epoch}); err != nil {
		t.Fatal(err)
	}
	now := Epoch.Add(time.Minute)
	s := v.Snapshot(now, 30*time.Second, 0.05)

	if got, want := s.Status, v.ClusterStatus(); !reflect.DeepEqual(got, want) {
		t.Errorf("status %+v, the view's %+v", got, want)
	}
	if got, want := s.Progress, v.Progress(now, 30*time.Second); got != want {
		t.Errorf("progress %+v, the view's %+v", got, want)
	}
	if s.Progress.UnderReplicated == 0 {
		t.Fatal("nothing under-replicated: the fixture tests nothing")
	}
	marked := 0
	for id, r := range v.NodeIndex {
		got, ok := s.NodeProgress(id)
		if want := v.NodeProgress(r, now, 30*time.Second); !ok || got != want {
			t.Errorf("%s: heal progress %+v (%v), the view's %+v", id, got, ok, want)
		}
		marked += got.UnderReplicated
	}
	if marked == 0 {
		t.Error("no node lacks a shard: the fixture tests nothing")
	}
	if _, ok := s.NodeProgress("storage-9"); ok {
		t.Error("an unknown node has a heal progress")
	}
	for _, node := range []string{"", "storage-3", "storage-1", "storage-9"} {
		got, gerr := s.DrainStatus(node)
		want, werr := v.DrainStatus(node, now)
		if !reflect.DeepEqual(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Errorf("drain status %q: %+v, %v; the view's %+v, %v", node, got, gerr, want, werr)
		}
	}
	if got, want := s.Balance, v.BalanceStatus(0.05); !reflect.DeepEqual(got, want) {
		t.Errorf("balance %+v, the view's %+v", got, want)
	}
}
