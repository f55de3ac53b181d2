package core

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/control"
)

func TestFindOrphans(t *testing.T) {
	now := Epoch
	const grace = time.Hour
	inv := func(specs ...string) []control.InventoryShard { // "id:age" with age "-" for undated
		var out []control.InventoryShard
		for _, s := range specs {
			var id, age string
			id = s
			for i := range s {
				if s[i] == ':' {
					id, age = s[:i], s[i+1:]
				}
			}
			sh := control.InventoryShard{ID: id, Size: 1}
			if age != "-" {
				d, err := time.ParseDuration(age)
				if err != nil {
					t.Fatal(err)
				}
				sh.Written = now.Add(-d)
			}
			out = append(out, sh)
		}
		return out
	}
	mapped := map[string]bool{"m1": true, "m2": true, "m3": true, "m4": true, "m5": true, "m6": true, "m7": true, "m8": true}
	known := func(id string) bool { return mapped[id] }
	cases := []struct {
		name     string
		shards   []control.InventoryShard
		total    int
		maxShare float64
		del      []string
		young    int
		undated  int
		held     bool
	}{
		{name: "all mapped", shards: inv("m1:3h", "m2:3h"), maxShare: 0.2},
		{name: "old orphan deleted", shards: inv("m1:3h", "m2:3h", "m3:1m", "m4:1m", "x:2h"), maxShare: 0.2, del: []string{"x"}},
		{name: "young orphan kept", shards: inv("m1:3h", "m2:3h", "m3:1m", "m4:1m", "y:59m"), maxShare: 0.2, young: 1},
		{name: "exactly the grace is kept", shards: inv("m1:3h", "m2:3h", "m3:1m", "m4:1m", "y:1h"), maxShare: 0.2, young: 1},
		{name: "future mtime is kept", shards: inv("m1:3h", "m2:3h", "m3:1m", "m4:1m", "y:-2h"), maxShare: 0.2, young: 1},
		{name: "undated kept", shards: inv("m1:3h", "m2:3h", "m3:1m", "m4:1m", "u:-"), maxShare: 0.2, undated: 1},
		{name: "guard: most of the node unknown", shards: inv("m1:3h", "x1:3h", "x2:3h", "x3:3h"), maxShare: 0.2, held: true, young: 0},
		{name: "guard counts young ones too", shards: inv("m1:3h", "m2:3h", "m3:3h", "x:3h", "y:1m"), maxShare: 0.2, held: true, young: 1},
		{name: "guard on a filtered subset uses the total", shards: inv("x:3h"), total: 10, maxShare: 0.2, del: []string{"x"}},
		{name: "guard: a lone orphan is all of the node", shards: inv("x:3h"), maxShare: 0.2, held: true},
		{name: "share 1 allows a whole node", shards: inv("x:3h", "z:3h"), maxShare: 1, del: []string{"x", "z"}},
		{name: "empty inventory", maxShare: 0.2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := FindOrphans(c.shards, c.total, known, now, grace, c.maxShare)
			var del []string
			for _, sh := range v.Delete {
				del = append(del, sh.ID)
			}
			if !slices.Equal(del, c.del) || v.Young != c.young || v.Undated != c.undated || v.Held != c.held {
				t.Fatalf("got delete %v young %d undated %d held %v; want %v %d %d %v",
					del, v.Young, v.Undated, v.Held, c.del, c.young, c.undated, c.held)
			}
		})
	}
	if v := FindOrphans(inv("m1:3h", "m2:3h", "m3:3h", "m4:3h", "x:3h"), 0, known, now, 0, 0.2); len(v.Delete) != 0 {
		t.Fatalf("grace 0 deleted %v", v.Delete)
	}
}

// TestFindOrphansProperty checks on random inventories that a copy is never
// deleted when the map knows it, when it is not older than the grace or
// undated, or when the guard holds; and that every old unknown copy is
// deleted otherwise.
func TestFindOrphansProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 2000 {
		grace := time.Duration(rng.IntN(7200)+1) * time.Second
		maxShare := rng.Float64()
		mapped := map[string]bool{}
		var shards []control.InventoryShard
		for i := range rng.IntN(50) {
			id := fmt.Sprintf("s%d", i)
			if rng.IntN(3) > 0 {
				mapped[id] = true
			}
			sh := control.InventoryShard{ID: id}
			if rng.IntN(10) > 0 {
				sh.Written = Epoch.Add(-time.Duration(rng.IntN(4*7200)-3600) * time.Second)
			}
			shards = append(shards, sh)
		}
		known := func(id string) bool { return mapped[id] }
		v := FindOrphans(shards, len(shards), known, Epoch, grace, maxShare)
		oldUnknown := 0
		for _, sh := range shards {
			if !mapped[sh.ID] && !sh.Written.IsZero() && Epoch.Sub(sh.Written) > grace {
				oldUnknown++
			}
		}
		for _, sh := range v.Delete {
			switch {
			case mapped[sh.ID]:
				t.Fatalf("iteration %d: deleted %s, which the map knows", iter, sh.ID)
			case sh.Written.IsZero() || Epoch.Sub(sh.Written) <= grace:
				t.Fatalf("iteration %d: deleted %s, written %s, within the grace %s", iter, sh.ID, sh.Written, grace)
			}
		}
		if v.Held != (float64(v.Unknown) > maxShare*float64(len(shards))) {
			t.Fatalf("iteration %d: held %v with %d unknown of %d, max share %.2f", iter, v.Held, v.Unknown, len(shards), maxShare)
		}
		if v.Held && len(v.Delete) > 0 || !v.Held && len(v.Delete) != oldUnknown {
			t.Fatalf("iteration %d: held %v, deleted %d of %d old unknown", iter, v.Held, len(v.Delete), oldUnknown)
		}
	}
}

func TestOrphanKnownCoversMapFlightsAndAllocations(t *testing.T) {
	h := newPlanHarness(t, 3, 3, Limits{PerNodeIn: 2, PerNodeOut: 2, MaxInFlight: 8, MaxFill: 1})
	h.put("mapped", 10, "storage-1", "storage-2", "storage-3")
	h.v.noteUnmapped("copying", "task-1")
	h.v.AddAllocation("key", map[NodeRef]int64{0: 10}, Epoch.Add(time.Minute))
	h.v.Allocs["key"].Shards = map[string]bool{"writing": true}
	for id, want := range map[string]bool{"mapped": true, "copying": true, "writing": true, "orphan": false} {
		if got := h.v.OrphanKnown(id); got != want {
			t.Errorf("orphanKnown(%s) = %v, want %v", id, got, want)
		}
	}
	h.v.Expire(Epoch.Add(2 * time.Minute))
	if h.v.OrphanKnown("writing") {
		t.Error("an expired allocation still protects its shards")
	}
}

func TestNodeBackFromDownIsDueForASweep(t *testing.T) {
	h := newPlanHarness(t, 3, 3, Limits{PerNodeIn: 2, PerNodeOut: 2, MaxInFlight: 8, MaxFill: 1})
	r := h.v.NodeIndex["storage-1"]
	if h.v.Nodes[r].SweepDue {
		t.Fatal("a node never down is due for a sweep")
	}
	h.state("storage-1", "down")
	h.state("storage-1", "up")
	if !h.v.Nodes[r].SweepDue {
		t.Fatal("a node back from down is not due for a sweep")
	}
}
