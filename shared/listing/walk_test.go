package listing

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
)

// sliceCursor is a cursor over a sorted slice, counting the entries read.
type sliceCursor struct {
	keys  []string
	i     int
	reads int
}

func (c *sliceCursor) seek(k string) error {
	c.i = sort.SearchStrings(c.keys, k)
	return nil
}

func (c *sliceCursor) next() (Entry, bool, error) {
	if c.i >= len(c.keys) {
		return Entry{}, false, nil
	}
	c.reads++
	c.i++
	return Entry{Key: c.keys[c.i-1]}, true, nil
}

// naive is S3's listing over every key, the slow obvious way.
func naive(keys []string, q Query) Result {
	var res Result
	seen := map[string]bool{}
	for _, k := range keys {
		if k <= q.After || !strings.HasPrefix(k, q.Prefix) {
			continue
		}
		item, isPrefix := k, false
		if q.Delimiter != "" {
			if i := strings.Index(k[len(q.Prefix):], q.Delimiter); i >= 0 {
				item, isPrefix = k[:len(q.Prefix)+i+len(q.Delimiter)], true
			}
		}
		if isPrefix && (seen[item] || item <= q.After) {
			continue
		}
		if len(res.Entries)+len(res.CommonPrefixes) == q.MaxKeys {
			res.Truncated = true
			return res
		}
		res.Next = item
		if isPrefix {
			seen[item] = true
			res.CommonPrefixes = append(res.CommonPrefixes, item)
		} else {
			res.Entries = append(res.Entries, Entry{Key: k})
		}
	}
	return res
}

func keysOf(es []Entry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Key)
	}
	return out
}

func TestWalkMatchesNaiveListing(t *testing.T) {
	alphabet := []string{"a", "b", "/", "é", "ü", " ", "-", "\xff", "z/"}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 3000; round++ {
		set := map[string]bool{}
		for range rng.IntN(40) {
			var b strings.Builder
			for range 1 + rng.IntN(5) {
				b.WriteString(alphabet[rng.IntN(len(alphabet))])
			}
			set[b.String()] = true
		}
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range set {
				if !yield(k) {
					return
				}
			}
		})
		pick := func() string {
			if len(keys) > 0 && rng.IntN(2) == 0 {
				k := keys[rng.IntN(len(keys))]
				return k[:rng.IntN(len(k)+1)]
			}
			return alphabet[rng.IntN(len(alphabet))]
		}
		q := Query{MaxKeys: 1 + rng.IntN(6)}
		if rng.IntN(2) == 0 {
			q.Prefix = pick()
		}
		if rng.IntN(2) == 0 {
			q.Delimiter = []string{"/", "b", "é"}[rng.IntN(3)]
		}
		if rng.IntN(2) == 0 {
			q.After = pick()
		}
		got, err := walk(&sliceCursor{keys: keys}, q)
		if err != nil {
			t.Fatal(err)
		}
		want := naive(keys, q)
		if fmt.Sprint(keysOf(got.Entries), got.CommonPrefixes, got.Truncated) != fmt.Sprint(keysOf(want.Entries), want.CommonPrefixes, want.Truncated) ||
			(want.Truncated && got.Next != want.Next) {
			t.Fatalf("keys %q query %+v:\n got %q %q truncated %v next %q\nwant %q %q truncated %v next %q", keys, q,
				keysOf(got.Entries), got.CommonPrefixes, got.Truncated, got.Next, keysOf(want.Entries), want.CommonPrefixes, want.Truncated, want.Next)
		}
	}
}

// TestWalkSeeksPastCommonPrefixes: a listing with a delimiter reads one key
// per common prefix, not every key under it.
func TestWalkSeeksPastCommonPrefixes(t *testing.T) {
	var keys []string
	for d := range 10 {
		for f := range 10000 {
			keys = append(keys, fmt.Sprintf("dir%d/file%05d", d, f))
		}
	}
	sort.Strings(keys)
	c := &sliceCursor{keys: keys}
	res, err := walk(c, Query{Delimiter: "/", MaxKeys: 1000})
	if err != nil || len(res.CommonPrefixes) != 10 || res.Truncated {
		t.Fatalf("got %v %v, %v", res.CommonPrefixes, res.Truncated, err)
	}
	if c.reads > 10 {
		t.Errorf("read %d keys to list 10 common prefixes of 100000 keys", c.reads)
	}
}

func TestSuccessor(t *testing.T) {
	for in, want := range map[string]string{"a/": "a0", "a": "b", "a\xff": "b", "\xff\xff": "", "": ""} {
		if got := successor(in); got != want {
			t.Errorf("successor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPageSplitKeepsOrderAndBounds(t *testing.T) {
	p := &Page{V: 1, ID: "0"}
	for i := range maxEntries + 1 {
		p.upsert(Entry{Key: fmt.Sprintf("k%06d", (i*7919)%(maxEntries+1))})
	}
	if !p.oversized() {
		t.Fatal("not oversized")
	}
	r := p.split("1")
	if p.High != r.Low || p.Next != "1" || r.High != "" || len(p.Entries)+len(r.Entries) != maxEntries+1 {
		t.Fatalf("split: left high %q next %q, right low %q high %q", p.High, p.Next, r.Low, r.High)
	}
	for _, pg := range []*Page{p, r} {
		if !sort.SliceIsSorted(pg.Entries, func(i, j int) bool { return pg.Entries[i].Key < pg.Entries[j].Key }) {
			t.Error("entries out of order")
		}
		for _, e := range pg.Entries {
			if !pg.covers(e.Key) {
				t.Errorf("page %s holds %s outside [%s,%s)", pg.ID, e.Key, pg.Low, pg.High)
			}
		}
	}
}
