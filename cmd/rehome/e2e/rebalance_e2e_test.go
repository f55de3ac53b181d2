package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/objects"
)

// addNode starts storage node id in rack by hand, as an operator adds a
// machine (the dev cluster's admin credentials), with capacity bytes; it is
// stopped when the test ends.
func (c *cluster) addNode(t testing.TB, id, rack string, capacity int64) {
	t.Helper()
	cmd := exec.Command(rehomeBin, "storage", "--env-file", filepath.Join(c.dir, "env", "admin.env"),
		"--id", id, "--rack", rack, "--dir", filepath.Join(c.dir, id), "--heartbeat", "250ms",
		"--capacity", strconv.FormatInt(capacity, 10))
	cmd.Env = c.env
	logf, err := os.Create(filepath.Join(c.dir, "logs", id+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
}

func (c *cluster) balance(t *testing.T) control.BalanceStatus {
	t.Helper()
	out, err := c.rehome("rebalance", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st control.BalanceStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("rebalance status --json: %v\n%s", err, out)
	}
	return st
}

// TestAddedNodeIsRebalancedIn: storage-7 joins a 6-node cluster filled to
// about 60%: it takes new writes at once, and the rebalancer moves copies
// onto it until every fill is within the 5-point band; every object reads
// back, with 3 copies in 3 racks. Pausing stops new moves.
func TestAddedNodeIsRebalancedIn(t *testing.T) {
	const capacity = 8 << 20
	c := startDev(t, append([]string{"--nodes", "6", "--racks", "6", "--capacity", strconv.Itoa(capacity)}, detectorTiming...)...)
	waitHealthy(t, c, 6)
	if out, err := c.rehome("rebalance", "pause"); err != nil {
		t.Fatalf("rebalance pause: %v\n%s", err, out)
	}
	w := c.startWorkload(t, "full", 150) // 150 x 64 KiB x 3 copies: ~59% of 6 x 8 MiB
	w.finish(t)
	if st := c.balance(t); !st.Balanced || !st.Paused {
		t.Fatalf("before the join: %+v", st)
	}
	c.addNode(t, "storage-7", "rack-7", capacity)
	waitHealthy(t, c, 7)
	if st := c.balance(t); st.Balanced || st.MovesInFlight != 0 {
		t.Fatalf("with an empty node and rebalancing paused: %+v, want unbalanced and no moves", st)
	}
	if out, err := c.rehome("rebalance", "resume"); err != nil {
		t.Fatalf("rebalance resume: %v\n%s", err, out)
	}
	var st control.BalanceStatus
	waitFor(t, 60*time.Second, "fills within the band", func() bool {
		st = c.balance(t)
		return st.Balanced && st.MovesInFlight == 0
	})
	t.Logf("balanced: mean %.3f, widest %.3f, nodes %+v", st.MeanFill, st.MaxDeviation, st.Nodes)
	if out, _ := c.rehome("rebalance", "status"); !bytes.Contains([]byte(out), []byte("balanced")) {
		t.Fatalf("rebalance status:\n%s", out)
	}
	ctx := context.Background()
	on7 := 0
	for key, b := range w.want {
		var buf bytes.Buffer
		if _, err := w.oc.Get(ctx, key, &buf); err != nil || !bytes.Equal(buf.Bytes(), b) {
			t.Fatalf("get %s after the rebalance: %v", key, err)
		}
		in, err := w.oc.Inspect(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range in.Shards {
			if len(sv.Nodes) != 3 || distinct(sv.Racks) != 3 {
				t.Fatalf("%s shard %s on %v (racks %v) after the rebalance", key, sv.ID, sv.Nodes, sv.Racks)
			}
			if contains(sv.Nodes, "storage-7") {
				on7++
			}
		}
	}
	if on7 == 0 {
		t.Fatal("storage-7 holds nothing after the rebalance")
	}
	// New writes land on it too.
	w2 := c.startWorkload(t, "new", 30)
	w2.finish(t)
	for key := range w2.want {
		if in, err := w2.oc.Inspect(ctx, key); err == nil && slices.ContainsFunc(in.Shards, func(sv objects.ShardView) bool { return contains(sv.Nodes, "storage-7") }) {
			return
		}
	}
	t.Fatal("no new write landed on storage-7")
}
