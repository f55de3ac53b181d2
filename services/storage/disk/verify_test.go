package disk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// reports collects what a store hands to Options.OnQuarantine.
type reports struct {
	mu  sync.Mutex
	got []Quarantine
}

func (r *reports) add(q Quarantine) {
	r.mu.Lock()
	r.got = append(r.got, q)
	r.mu.Unlock()
}

func (r *reports) list() []Quarantine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func TestVerifyPassesGoodShardsAndPacesEveryByte(t *testing.T) {
	var rep reports
	s := openStore(t, t.TempDir(), Options{OnQuarantine: rep.add})
	for i, size := range []int{0, 1, VerifyChunk - 1, VerifyChunk, 3*VerifyChunk + 17} {
		id := fmt.Sprintf("ok-%d", i)
		put(t, s, id, randBytes(uint64(i), size))
		var paced int
		n, err := s.Verify(id, func(k int) error {
			if k <= 0 || k > VerifyChunk {
				t.Errorf("pace(%d): want 1..%d", k, VerifyChunk)
			}
			paced += k
			return nil
		})
		if err != nil || n != int64(size) || paced != size {
			t.Fatalf("verify %s (%d bytes) = %d, %v; paced %d", id, size, n, err, paced)
		}
	}
	if n, _ := s.Usage(); n != 5 {
		t.Fatalf("%d shards after verifying, want 5", n)
	}
	if got := rep.list(); len(got) != 0 || s.ChecksumFailures() != 0 {
		t.Fatalf("good shards reported damaged: %+v", got)
	}
}

func TestVerifyQuarantinesAndReportsAFlippedByte(t *testing.T) {
	var rep reports
	s := openStore(t, t.TempDir(), Options{OnQuarantine: rep.add})
	data := randBytes(21, 200_000)
	put(t, s, "rot", data)
	put(t, s, "fine", data)
	put(t, s, "empty", nil)
	flipByte(t, s.path("rot"), HeaderSize+150_000)

	if _, err := s.Verify("rot", nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("verify of damaged shard: %v, want ErrCorrupt", err)
	}
	if _, err := s.Verify("fine", nil); err != nil {
		t.Fatalf("verify of good shard: %v", err)
	}
	if _, err := s.Stat("rot"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged shard still indexed: %v", err)
	}
	if _, _, err := s.Get("rot"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged shard still served: %v", err)
	}
	if q := quarantined(t, s); len(q) != 1 || !strings.HasPrefix(q[0], "rot.") {
		t.Fatalf("quarantine holds %v", q)
	}
	got := rep.list()
	if len(got) != 1 || got[0].ID != "rot" || got[0].Found != FoundScrub || got[0].Reason == "" {
		t.Fatalf("reports = %+v, want one scrub report of rot", got)
	}
	if _, err := s.Verify("rot", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second verify of the quarantined shard: %v, want ErrNotFound", err)
	}
	if len(rep.list()) != 1 {
		t.Fatal("a quarantined shard was reported twice")
	}
}

func TestVerifyStopsWhenPaceFails(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	put(t, s, "big", randBytes(3, 5*VerifyChunk))
	stop := errors.New("stop")
	calls := 0
	n, err := s.Verify("big", func(int) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2*VerifyChunk {
		t.Fatalf("verify = %d, %v; want %d bytes and the pace error", n, err, 2*VerifyChunk)
	}
	if _, err := s.Stat("big"); err != nil {
		t.Fatalf("an interrupted verify dropped the shard: %v", err)
	}
}

func TestVerifySparesAShardReplacedMeanwhile(t *testing.T) {
	var rep reports
	s := openStore(t, t.TempDir(), Options{OnQuarantine: rep.add})
	data := randBytes(5, 4*VerifyChunk)
	put(t, s, "r", data)
	flipByte(t, s.path("r"), HeaderSize+3*VerifyChunk+10)
	calls := 0
	_, err := s.Verify("r", func(int) error {
		calls++
		if calls == 2 { // mid-verification the shard is deleted and written again, intact
			if err := s.Delete("r"); err != nil {
				t.Error(err)
			}
			put(t, s, "r", data)
		}
		return nil
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("verify of the old file: %v, want ErrCorrupt", err)
	}
	if got, err := readAll(s, "r"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("replacement lost: %v", err)
	}
	if got := rep.list(); len(got) != 0 {
		t.Fatalf("replacement reported as damaged: %+v", got)
	}
}

func TestQuarantinesAreReportedAsFoundOnOpenAndRead(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(6, 100_000)
	put(t, s, "hdr", data)
	put(t, s, "body", data)
	put(t, s, "ok", data)
	flipByte(t, s.path("hdr"), 10)                 // the header: caught at the next open
	flipByte(t, s.path("body"), HeaderSize+50_000) // the bytes: caught when read
	s.Close()

	var rep reports
	s2 := openStore(t, dir, Options{OnQuarantine: rep.add})
	if got := rep.list(); len(got) != 1 || got[0] != (Quarantine{ID: "hdr", Found: FoundOpen, Reason: got[0].Reason}) || got[0].Reason == "" {
		t.Fatalf("reports after open = %+v, want hdr found at open", got)
	}
	if _, err := readAll(s2, "body"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of damaged body: %v", err)
	}
	got := rep.list()
	if len(got) != 2 || got[1].ID != "body" || got[1].Found != FoundRead {
		t.Fatalf("reports after read = %+v, want body found by a read", got)
	}
	if list := s2.List(); len(list) != 1 || list[0].ID != "ok" {
		t.Fatalf("store lists %+v, want only ok", list)
	}
}

// TestPageWalksTheIndexInOrder checks Page against the sorted List for random
// indexes, cursors and limits: concatenated pages are exactly the ids after
// the cursor, in order, and more says whether any remain.
func TestPageWalksTheIndexInOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ab-_0Z"
	for round := range 40 {
		s := &Store{index: map[string]entry{}}
		n := r.IntN(60)
		for range n {
			var b strings.Builder
			for range 1 + r.IntN(4) {
				b.WriteByte(alphabet[r.IntN(len(alphabet))])
			}
			if _, dup := s.index[b.String()]; !dup {
				s.add(b.String(), entry{size: int64(r.IntN(100))})
			}
		}
		all := s.List()
		if !slices.IsSortedFunc(all, func(a, b Info) int { return strings.Compare(a.ID, b.ID) }) || len(all) != len(s.index) {
			t.Fatalf("List is not the sorted index: %v", all)
		}
		limit := 1 + r.IntN(8)
		start := ""
		if round%2 == 1 && len(all) > 0 {
			start = all[r.IntN(len(all))].ID
		}
		want := slices.DeleteFunc(slices.Clone(all), func(i Info) bool { return i.ID <= start })
		var got []Info
		after := start
		for pages := 0; ; pages++ {
			page, more := s.Page(after, limit)
			if len(page) > limit || (more && len(page) != limit) {
				t.Fatalf("round %d: page of %d with more=%v at limit %d", round, len(page), more, limit)
			}
			got = append(got, page...)
			if !more {
				break
			}
			after = page[len(page)-1].ID
			if pages > 100 {
				t.Fatal("paging does not end")
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d (after %q, limit %d): pages %v, want %v", round, start, limit, got, want)
		}
	}
	s := &Store{index: map[string]entry{}}
	s.add("a", entry{})
	if p, more := s.Page("", 0); len(p) != 0 || more {
		t.Fatalf("limit 0 gave %v, %v", p, more)
	}
}

// BenchmarkPage1M measures one page of 10000 out of a million-shard index.
func BenchmarkPage1M(b *testing.B) {
	s := &Store{index: make(map[string]entry, 1_000_000)}
	ids := make([]string, 0, 1_000_000)
	for i := range 1_000_000 {
		id := fmt.Sprintf("obj-%08x-%03d", rand.Uint32(), i%1000)
		if _, dup := s.index[id]; !dup {
			s.index[id] = entry{size: 4 << 20}
			ids = append(ids, id)
		}
	}
	s.ids = newSortedIDs(ids)
	after := ""
	for b.Loop() {
		page, more := s.Page(after, 10_000)
		if !more {
			after = ""
			continue
		}
		after = page[len(page)-1].ID
	}
}

// TestSortedIDsMatchesASortedSet runs random inserts and removes (enough to
// split and empty blocks) against a map and checks order, membership, the
// count and iteration from arbitrary points.
func TestSortedIDsMatchesASortedSet(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	want := map[string]bool{}
	seed := make([]string, 0, 3000)
	for range 3000 {
		id := fmt.Sprintf("s%05d", r.IntN(20000))
		if !want[id] {
			want[id] = true
			seed = append(seed, id)
		}
	}
	set := newSortedIDs(seed)
	for op := range 20000 {
		id := fmt.Sprintf("s%05d", r.IntN(20000))
		if r.IntN(3) == 0 {
			if got := set.remove(id); got != want[id] {
				t.Fatalf("op %d: remove(%s) = %v, present %v", op, id, got, want[id])
			}
			delete(want, id)
		} else {
			if got := set.insert(id); got == want[id] {
				t.Fatalf("op %d: insert(%s) = %v, present %v", op, id, got, want[id])
			}
			want[id] = true
		}
	}
	sorted := make([]string, 0, len(want))
	for id := range want {
		sorted = append(sorted, id)
	}
	slices.Sort(sorted)
	if set.n != len(sorted) {
		t.Fatalf("count %d, want %d", set.n, len(sorted))
	}
	for _, blk := range set.blocks {
		if len(blk) == 0 || len(blk) > maxBlock {
			t.Fatalf("block of %d ids", len(blk))
		}
	}
	for range 200 {
		from := fmt.Sprintf("s%05d", r.IntN(20001))
		if r.IntN(10) == 0 {
			from = ""
		}
		i, _ := slices.BinarySearch(sorted, from)
		if i < len(sorted) && sorted[i] == from {
			i++
		}
		var got []string
		set.after(from, func(id string) bool { got = append(got, id); return len(got) < 50 })
		if exp := sorted[i:min(i+50, len(sorted))]; !slices.Equal(got, exp) {
			t.Fatalf("after(%q) = %v, want %v", from, got, exp)
		}
	}
}
