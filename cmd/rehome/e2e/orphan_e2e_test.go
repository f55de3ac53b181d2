package e2e

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/shardapi"
)

// onDisk lists the shard ids node's disk holds (through its storage API).
func (c *cluster) onDisk(t *testing.T, node string) []string {
	t.Helper()
	inv, err := shardapi.New(c.token()).List(context.Background(), c.nodeAddr(t, node))
	if err != nil {
		t.Fatalf("inventory of %s: %v", node, err)
	}
	ids := make([]string, len(inv.Shards))
	for i, s := range inv.Shards {
		ids[i] = s.ID
	}
	return ids
}

// TestOrphanedCopyIsCollected: an object removed while one of its holders
// is down leaves that holder's copy orphaned (its delete task was never
// sent). When the node comes back, the planner's orphan sweep deletes the
// copy from its disk; every other object reads back intact, and every copy
// the map lists on the node is still there.
func TestOrphanedCopyIsCollected(t *testing.T) {
	c := startDev(t, "--nodes", "4", "--racks", "4", "--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "2s",
		"--planner-flag=--orphan-scan=1s", "--planner-flag=--orphan-grace=3s")
	waitHealthy(t, c, 4)
	want := c.putRandom(t, 12, 8<<10)
	oc := c.objects(t)
	const victim = "r-000"
	in, err := oc.Inspect(context.Background(), victim)
	if err != nil {
		t.Fatal(err)
	}
	node, shards := in.Shards[0].Nodes[0], []string{}
	for _, sv := range in.Shards {
		if slices.Contains(sv.Nodes, node) {
			shards = append(shards, sv.ID)
		}
	}
	oldAddr := c.nodeAddr(t, node)
	c.signal(t, node, syscall.SIGKILL)
	waitFor(t, 30*time.Second, node+" down", func() bool { return c.nodeState(node) == "down" })
	if _, err := c.rehome("rm", victim); err != nil {
		t.Fatal(err)
	}
	delete(want, victim)
	c.restart(t, node)
	c.waitRejoined(t, node, oldAddr)
	waitFor(t, 30*time.Second, node+" up again", func() bool { return c.nodeState(node) == "up" })
	waitFor(t, 60*time.Second, "the removed object's copy gone from "+node, func() bool {
		disk := c.onDisk(t, node)
		for _, id := range shards {
			if slices.Contains(disk, id) {
				return false
			}
		}
		return true
	})
	c.waitHealed(t, 60*time.Second)
	getAll(t, c, want)
	disk := c.onDisk(t, node)
	for k := range want {
		in, err := oc.Inspect(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range in.Shards {
			if slices.Contains(sv.Nodes, node) && !slices.Contains(disk, sv.ID) {
				t.Errorf("%s: the map lists %s there, its disk lacks it", node, sv.ID)
			}
		}
	}
}
