package planner_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/services/planner"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// TestOrphanedCopiesAreCollected runs a real planner on a real embedded
// JetStream against nodes answering inventory requests: on storage-1 a copy
// the map does not know, written two hours ago, is deleted; one written a
// minute ago is kept (and counted as awaiting its grace); no mapped copy is
// ever touched; and storage-2, where most of the inventory looks orphaned,
// keeps everything (the guard holds and says so in a metric).
func TestOrphanedCopiesAreCollected(t *testing.T) {
	h := newHarness(t, 3, 3)
	cfg := fastConfig()
	cfg.OrphanScan = 200 * time.Millisecond
	cfg.OrphanGrace = time.Hour
	cfg.OrphanMaxShare = 0.2
	svc, _ := h.startPlanner(cfg)
	for i := range 10 {
		h.put(fmt.Sprintf("object-%d", i), 1, 100)
	}
	disks := h.disks()
	now := time.Now()
	add := func(node, id string, age time.Duration) {
		d := disks[node]
		d.shards[id] = control.InventoryShard{ID: id, Size: 100, SHA256: "", Written: now.Add(-age)}
	}
	for _, d := range disks {
		for id, sh := range d.shards {
			sh.Written = now.Add(-3 * time.Hour) // mapped copies are old too
			d.shards[id] = sh
		}
	}
	add("storage-1", "orphan-old", 2*time.Hour)
	add("storage-1", "orphan-young", time.Minute)
	for i := range 20 {
		add("storage-2", fmt.Sprintf("stray-%02d", i), 2*time.Hour)
	}
	for _, d := range disks {
		h.serveDisk(d)
	}
	mapped := h.placements()
	mv := &mover{}
	h.runMover(mv)

	bustest.Eventually(t, deadline, "the old orphan on storage-1 is deleted", func() bool {
		return hasDelete(mv, "orphan-old", "storage-1")
	})
	bustest.Eventually(t, deadline, "the guard holds on storage-2", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_planner_orphan_sweeps_held_total") >= 1
	})
	bustest.Consistently(t, time.Second, "sweeps go on and delete nothing else", func() bool {
		for _, tk := range mv.deletes() {
			if tk.Shard == "orphan-old" && tk.Target == "storage-1" {
				continue
			}
			t.Errorf("unexpected delete task %s of %s on %s", tk.Task, tk.Shard, tk.Target)
			return false
		}
		return true
	})
	if got := metricstest.Value(t, svc.Registry(), "rehome_planner_orphans_deleted_total"); got != 1 {
		t.Errorf("orphans deleted = %v, want 1", got)
	}
	if got := metricstest.Value(t, svc.Registry(), "rehome_planner_orphans_awaiting_grace"); got != 1 {
		t.Errorf("orphans awaiting their grace = %v, want 1", got)
	}
	if after := h.placements(); len(after) != len(mapped) {
		t.Errorf("the map changed: %d entries, was %d", len(after), len(mapped))
	}
}

func hasDelete(mv *mover, shard, node string) bool {
	return slices.ContainsFunc(mv.deletes(), func(tk event.Task) bool { return tk.Shard == shard && tk.Target == node })
}

func TestOrphanConfigIsChecked(t *testing.T) {
	for name, mod := range map[string]func(*planner.Config){
		"negative scan":  func(c *planner.Config) { c.OrphanScan = -time.Second },
		"negative grace": func(c *planner.Config) { c.OrphanGrace = -time.Second },
		"share above 1":  func(c *planner.Config) { c.OrphanMaxShare = 1.5 },
		"negative share": func(c *planner.Config) { c.OrphanMaxShare = -0.1 },
	} {
		cfg := planner.DefaultConfig()
		mod(&cfg)
		if _, err := planner.New(cfg, nil, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "Orphan") {
			t.Errorf("%s: %v, want a config error naming the field", name, err)
		}
	}
}
