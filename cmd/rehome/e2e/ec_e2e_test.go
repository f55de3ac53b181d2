package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestErasureCodedObjectsSurviveANode: 4+2 objects of awkward sizes on 8 nodes
// in 4 racks; a node is killed; every object reads back at once (degraded,
// before any verdict), and after the rebuild every stripe has its 6 pieces on
// 6 distinct live nodes, at most 2 per rack.
func TestErasureCodedObjectsSurviveANode(t *testing.T) {
	c := startDev(t, "--nodes", "8", "--racks", "4", "--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "4s")
	waitHealthy(t, c, 8)
	src := t.TempDir()
	want := map[string][]byte{}
	var files []string
	for _, size := range []int{0, 1, 3, 4097, 1 << 20, 5_000_003, 16 << 20} {
		b := make([]byte, size)
		_, _ = rand.Read(b)
		name := fmt.Sprintf("ec-%d", size)
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = b
		files = append(files, filepath.Join(src, name))
	}
	// `--ec 4+2` with a space, as SPEC writes it.
	if _, err := c.rehome(append([]string{"put", "--ec", "4+2"}, files...)...); err != nil {
		t.Fatal(err)
	}
	// Bad layouts are one-line errors.
	for _, bad := range [][]string{{"--ec=0+2"}, {"--ec=4+0"}, {"--ec=200+100"}, {"--ec=x"}, {"--ec=8+4"}, {"--ec=4+2", "--rf=3"}} {
		_, err := c.rehome(append(append([]string{"put"}, bad...), "--key", "bad-"+strings.Join(bad, ""), files[0])...)
		if err == nil {
			t.Errorf("put %v accepted", bad)
		}
	}
	oc := c.objects(t)
	ctx := context.Background()
	for name := range want {
		in, err := oc.Inspect(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if in.Layout.K != 4 || in.Layout.M != 2 || len(in.Shards)%6 != 0 {
			t.Fatalf("%s: layout %+v with %d pieces", name, in.Layout, len(in.Shards))
		}
	}
	checkStripes := func(dead string) {
		t.Helper()
		for name := range want {
			in, err := oc.Inspect(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			nodes := map[int][]string{}
			racks := map[int]map[string]int{}
			for _, sv := range in.Shards {
				if len(sv.Nodes) != 1 {
					t.Fatalf("%s piece %s (stripe %d index %d): live nodes %v, want exactly one", name, sv.ID, sv.Stripe, sv.Index, sv.Nodes)
				}
				if sv.Nodes[0] == dead {
					t.Fatalf("%s piece %s still on the dead node", name, sv.ID)
				}
				nodes[sv.Stripe] = append(nodes[sv.Stripe], sv.Nodes[0])
				if racks[sv.Stripe] == nil {
					racks[sv.Stripe] = map[string]int{}
				}
				racks[sv.Stripe][sv.Racks[0]]++
			}
			for s, ns := range nodes {
				if len(ns) != 6 || distinct(ns) != 6 {
					t.Fatalf("%s stripe %d: pieces on %v, want 6 distinct nodes", name, s, ns)
				}
				for r, n := range racks[s] {
					if n > 2 {
						t.Fatalf("%s stripe %d: %d pieces in %s, want at most 2 per rack", name, s, n, r)
					}
				}
			}
		}
	}
	checkStripes("")
	readAll := func(when string) {
		t.Helper()
		for name, b := range want {
			var buf bytes.Buffer
			if _, err := oc.Get(ctx, name, &buf); err != nil || !bytes.Equal(buf.Bytes(), b) {
				t.Fatalf("%s: get %s: bytes differ (%v)", when, name, err)
			}
		}
	}
	readAll("healthy")

	events := c.tailEvents(t)
	victim := "storage-2"
	c.signal(t, victim, syscall.SIGKILL)
	killed := time.Now()
	readAll("degraded, before any verdict")
	if events.saw("rehome.node.down.") || time.Since(killed) > 5*time.Second {
		t.Fatalf("the degraded reads took %s and a down verdict came first; they must not wait for repair", time.Since(killed))
	}
	waitFor(t, 30*time.Second, victim+" down", func() bool { return events.saw("rehome.node.down." + victim) })
	c.waitHealed(t, 60*time.Second)
	if !events.saw("rehome.repair.task.") {
		t.Fatal("no rebuild task was issued")
	}
	checkStripes(victim)
	readAll("after the rebuild")
	// The CLI reads it too.
	out := filepath.Join(t.TempDir(), "out")
	if _, err := c.rehome("get", "ec-5000003", "-o", out); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want["ec-5000003"]) {
		t.Fatal("rehome get -o: bytes differ")
	}
}
