package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/objects"
	"github.com/rehome/rehome/shared/shardapi"
)

// shardCounts is the map's per-node shard count, by node id.
func (c *cluster) shardCounts(t *testing.T) map[string]int {
	t.Helper()
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, n := range st.Nodes {
		out[n.ID] = n.Shards
	}
	return out
}

// nodeAddr returns node id's shard API address from cluster status,
// polling while status fails (no planner acting for a moment).
func (c *cluster) nodeAddr(t *testing.T, id string) string {
	t.Helper()
	addr := ""
	bustest.CheckFor(t, 30*time.Second, func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		for _, n := range st.Nodes {
			if n.ID == id {
				addr = n.Addr
				return nil
			}
		}
		return fmt.Errorf("%s not in cluster status", id)
	})
	return addr
}

// waitRejoined waits until a restarted node registered again (its HTTP
// address, picked anew at start, differs from old).
func (c *cluster) waitRejoined(t *testing.T, id, old string) {
	t.Helper()
	waitFor(t, 20*time.Second, id+" registered again", func() bool {
		st, err := c.status()
		if err != nil {
			return false
		}
		for _, n := range st.Nodes {
			if n.ID == id {
				return n.Addr != old
			}
		}
		return false
	})
}

// putMixed stores replicated and 4+2 erasure-coded objects.
func (c *cluster) putMixed(t *testing.T, oc *objects.Client) map[string][]byte {
	t.Helper()
	want := c.putRandom(t, 30, 48<<10)
	for i := 0; i < 4; i++ {
		name := fmt.Sprintf("ec-%d", i)
		data := bytes.Repeat([]byte(name), (300<<10)/len(name)+i)
		if _, err := oc.Put(context.Background(), name, bytes.NewReader(data), int64(len(data)), objects.PutOptions{Layout: ecLayout}); err != nil {
			t.Fatal(err)
		}
		want[name] = data
	}
	return want
}

func (c *cluster) readBack(t *testing.T, oc *objects.Client, want map[string][]byte) {
	t.Helper()
	for name, b := range want {
		var buf bytes.Buffer
		if _, err := oc.Get(context.Background(), name, &buf); err != nil || !bytes.Equal(buf.Bytes(), b) {
			t.Fatalf("get %s: bytes differ (%v)", name, err)
		}
	}
}

// taskTargets returns the targets of every repair task seen so far.
func (l *eventLog) taskTargets() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, s := range l.subjects {
		if strings.HasPrefix(s, "rehome.repair.task.") {
			out[strings.TrimPrefix(s, "rehome.repair.task.")]++
		}
	}
	return out
}

// TestReplacementRunbook is the operator's runbook for a failed node, end to
// end: maintenance on, the node dies, nothing is re-homed; its disk is wiped
// and it starts again under the same identity; heal --node rebuilds it in
// place, touching no other node; every node ends with the shards it had.
func TestReplacementRunbook(t *testing.T) {
	c := startDev(t, "--nodes", "6", "--racks", "3", "--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "2s")
	waitHealthy(t, c, 6)
	oc := c.objects(t)
	want := c.putMixed(t, oc)
	before := c.shardCounts(t)
	events := c.tailEvents(t)

	if _, err := c.rehome("node", "maintenance", "storage-5", "on"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "storage-5 in maintenance", func() bool { return c.nodeState("storage-5") == "maintenance" })
	oldAddr := c.nodeAddr(t, "storage-5")
	c.signal(t, "storage-5", syscall.SIGKILL)
	killed := time.Now()
	bustest.Consistently(t, time.Until(killed.Add(5*time.Second)), "nothing re-homed while in maintenance", func() bool {
		return len(events.taskTargets()) == 0 && !events.saw("rehome.node.down.")
	})
	// The replacement: same identity, empty disk, same command line.
	if err := os.RemoveAll(filepath.Join(c.dir, "storage-5")); err != nil {
		t.Fatal(err)
	}
	c.restart(t, "storage-5")
	c.waitRejoined(t, "storage-5", oldAddr)
	out, err := c.rehome("heal", "--node", "storage-5")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("heal --node: %s", strings.TrimSpace(out))
	if out, err := c.rehome("heal", "status", "--node", "storage-5", "--follow", "--interval", "200ms"); err != nil {
		t.Fatalf("heal status --follow: %v\n%s", err, out)
	}
	if out, err := c.rehome("heal", "status", "--follow", "--interval", "200ms"); err != nil {
		t.Fatalf("heal status --follow: %v\n%s", err, out)
	}
	if _, err := c.rehome("node", "maintenance", "storage-5", "off"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "storage-5 up", func() bool { return c.nodeState("storage-5") == "up" })
	c.waitHealed(t, 30*time.Second)

	// Only storage-5 received anything.
	for target, n := range events.taskTargets() {
		if target != "storage-5" {
			t.Errorf("%d repair tasks targeted %s: the heal must touch no other node", n, target)
		}
	}
	if events.taskTargets()["storage-5"] == 0 {
		t.Error("no repair task targeted storage-5")
	}
	after := c.shardCounts(t)
	for id, n := range before {
		if after[id] != n {
			t.Errorf("%s holds %d shards in the map after the heal, %d before", id, after[id], n)
		}
	}
	// Its disk holds what the map says.
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.ID != "storage-5" {
			continue
		}
		inv, err := shardapi.New(c.token()).List(context.Background(), n.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if len(inv.Shards) != n.Shards {
			t.Errorf("storage-5's disk holds %d shards, the map %d", len(inv.Shards), n.Shards)
		}
	}
	c.readBack(t, oc, want)
}

// TestPauseResumeAndPlan: with repairs paused nothing is issued, the plan of a
// node's heal lists what would move where and changes nothing; resume heals.
func TestPauseResumeAndPlan(t *testing.T) {
	c := startDev(t, "--nodes", "6", "--racks", "3", "--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "2s")
	waitHealthy(t, c, 6)
	oc := c.objects(t)
	want := c.putMixed(t, oc)
	events := c.tailEvents(t)
	if out, err := c.rehome("heal", "pause"); err != nil || !strings.Contains(out, "paused") {
		t.Fatalf("heal pause: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, "pause visible in status and events", func() bool {
		out, err := c.rehome("heal", "status", "--json")
		var p struct {
			Paused bool `json:"paused"`
		}
		return err == nil && json.Unmarshal([]byte(out), &p) == nil && p.Paused && events.saw("rehome.heal.paused")
	})
	if _, err := c.rehome("node", "maintenance", "storage-2", "on"); err != nil {
		t.Fatal(err)
	}
	oldAddr := c.nodeAddr(t, "storage-2")
	c.signal(t, "storage-2", syscall.SIGKILL)
	if err := os.RemoveAll(filepath.Join(c.dir, "storage-2")); err != nil {
		t.Fatal(err)
	}
	c.restart(t, "storage-2")
	c.waitRejoined(t, "storage-2", oldAddr)

	out, err := c.rehome("heal", "plan", "--node", "storage-2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var plan control.HealPlan
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("heal plan --json: %v\n%s", err, out)
	}
	if plan.Shards == 0 || len(plan.Moves) != plan.Shards || plan.Bytes <= 0 || plan.EstimatedSeconds <= 0 {
		t.Fatalf("heal plan: %+v", plan)
	}
	for _, m := range plan.Moves {
		if m.Target != "storage-2" || m.Source == "" || m.Source == "storage-2" || m.TargetRack == "" {
			t.Fatalf("heal plan move %+v: want a source elsewhere and storage-2 as the target", m)
		}
	}
	if text, err := c.rehome("heal", "plan", "--node", "storage-2"); err != nil || !strings.Contains(text, "Nothing was changed") {
		t.Fatalf("heal plan: %v\n%s", err, text)
	}
	bustest.Consistently(t, 3*time.Second, "no task while paused", func() bool { return len(events.taskTargets()) == 0 })

	if _, err := c.rehome("heal", "resume"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.rehome("heal", "--node", "storage-2"); err != nil {
		t.Fatal(err)
	}
	if out, err := c.rehome("heal", "status", "--follow", "--interval", "200ms"); err != nil {
		t.Fatalf("heal status --follow after resume: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "resume announced", func() bool { return events.saw("rehome.heal.resumed") })
	if _, err := c.rehome("node", "maintenance", "storage-2", "off"); err != nil {
		t.Fatal(err)
	}
	c.readBack(t, oc, want)
}

// TestScrubRepairsAFlippedByte: a byte flipped in a shard file on disk is found
// by the node's scrub, the copy is dropped, and it is rebuilt in place from a
// good replica.
func TestScrubRepairsAFlippedByte(t *testing.T) {
	c := startDev(t, "--nodes", "6", "--racks", "3", "--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "2s",
		"--storage-flag=--scrub-delay=2s", "--storage-flag=--scrub-every=2s", "--storage-flag=--scrub-rate=200000000")
	waitHealthy(t, c, 6)
	oc := c.objects(t)
	want := c.putRandom(t, 10, 64<<10)
	in, err := oc.Inspect(context.Background(), "r-003")
	if err != nil {
		t.Fatal(err)
	}
	shard, node := in.Shards[0].ID, in.Shards[0].Nodes[0]
	events := c.tailEvents(t)
	path := filepath.Join(c.dir, node, "shards", shard[:2], shard)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-100] ^= 0x40 // a byte of the shard's data
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "scrub reports the corrupt copy", func() bool { return events.saw("rehome.shard.corrupt." + node) })
	waitFor(t, 30*time.Second, "the copy rebuilt in place", func() bool {
		return events.taskTargets()[node] > 0 && events.saw("rehome.repair.done."+node)
	})
	c.waitHealed(t, 30*time.Second)
	// The copy on that node is good again.
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	var addr string
	for _, n := range st.Nodes {
		if n.ID == node {
			addr = n.Addr
		}
	}
	body, _, err := shardapi.New(c.token()).Get(context.Background(), addr, shard)
	if err != nil {
		t.Fatalf("read the repaired copy on %s: %v", node, err)
	}
	h := sha256.New()
	_, err = io.Copy(h, body)
	body.Close()
	if err != nil || hex.EncodeToString(h.Sum(nil)) != in.Shards[0].SHA256 {
		t.Fatalf("the repaired copy on %s does not match its checksum (%v)", node, err)
	}
	c.readBack(t, oc, want)
}
