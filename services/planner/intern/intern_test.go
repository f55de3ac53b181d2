package intern

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

func TestTableMatchesAMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	tab := New()
	model := map[string]uint32{}
	keys := make([]string, 5000)
	for i := range keys {
		keys[i] = fmt.Sprintf("obj-%d-c%06d", r.IntN(1000), i)
	}
	for step := 0; step < 200000; step++ {
		k := keys[r.IntN(len(keys))]
		switch r.IntN(3) {
		case 0, 1:
			h, added := tab.Intern(k)
			if old, ok := model[k]; ok {
				if added || h != old {
					t.Fatalf("step %d: re-intern %q gave %d added=%v, had %d", step, k, h, added, old)
				}
			} else {
				if !added {
					t.Fatalf("step %d: new %q not added", step, k)
				}
				model[k] = h
			}
		case 2:
			if h, ok := model[k]; ok {
				tab.Remove(h)
				delete(model, k)
				if tab.Valid(h) {
					t.Fatalf("step %d: handle %d still valid after Remove", step, h)
				}
			}
		}
		if tab.Len() != len(model) {
			t.Fatalf("step %d: Len %d, model %d", step, tab.Len(), len(model))
		}
	}
	seen := map[uint32]bool{}
	for k, h := range model {
		got, ok := tab.Lookup(k)
		if !ok || got != h || tab.String(h) != k {
			t.Fatalf("%q: lookup %d %v, string %q; want %d", k, got, ok, tab.String(h), h)
		}
		if seen[h] {
			t.Fatalf("handle %d used twice", h)
		}
		seen[h] = true
	}
	if _, ok := tab.Lookup("absent"); ok {
		t.Fatal("found a string never added")
	}
}

func TestCompactionKeepsStringsAndHandles(t *testing.T) {
	tab := New()
	var hs []uint32
	for i := 0; i < 200000; i++ {
		h, _ := tab.Intern(fmt.Sprintf("%040d", i))
		hs = append(hs, h)
	}
	early := tab.String(hs[1]) // held across the compaction
	for i := 0; i < 200000; i++ {
		if i%3 != 1 {
			tab.Remove(hs[i])
		}
	}
	if removed := int64(133333 * 40); tab.dead >= removed {
		t.Fatalf("no compaction happened (dead=%d live=%d)", tab.dead, tab.live)
	}
	if early != fmt.Sprintf("%040d", 1) {
		t.Fatalf("string handed out before compaction changed: %q", early)
	}
	for i := 1; i < 200000; i += 3 {
		if got := tab.String(hs[i]); got != fmt.Sprintf("%040d", i) {
			t.Fatalf("handle %d: %q", hs[i], got)
		}
		if h, ok := tab.Lookup(fmt.Sprintf("%040d", i)); !ok || h != hs[i] {
			t.Fatalf("lookup %d after compaction: %d %v", i, h, ok)
		}
	}
}

// TestMemoryPerString checks the point of the package: a 44-byte shard id
// (uuid + "-c000000") costs well under 100 bytes.
func TestMemoryPerString(t *testing.T) {
	const n = 300000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tab := New()
	for i := 0; i < n; i++ {
		tab.Intern(fmt.Sprintf("%08x-1234-5678-9abc-def012345678-c%06d", i/10, i%10))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.1f bytes per 44-byte string", per)
	if per > 80 {
		t.Fatalf("%.1f bytes per string, want <= 80", per)
	}
	runtime.KeepAlive(tab)
}
