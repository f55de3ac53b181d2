package listing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// memStore keeps pages in memory: the pageStore and pageSource of the pure
// tests. conflict, when set, makes that share of updates fail as if another
// writer had rewritten the page first.
type memStore struct {
	pages    map[string]memPage
	rev      uint64
	root     rootIndex // what seek starts from
	reads    int
	conflict float64
	rng      *rand.Rand
}

type memPage struct {
	p   page
	rev uint64
}

func newMemStore() *memStore {
	return &memStore{pages: map[string]memPage{}, root: emptyRoot(), rng: rand.New(rand.NewPCG(1, 2))}
}

func (m *memStore) getPage(_ context.Context, id string) (page, uint64, error) {
	m.reads++
	mp, ok := m.pages[id]
	if !ok {
		if id == firstPageID {
			return page{ID: firstPageID}, 0, nil
		}
		return page{}, 0, fmt.Errorf("no page %s", id)
	}
	return mp.p, mp.rev, nil
}

func (m *memStore) createPage(_ context.Context, p page) error {
	if _, ok := m.pages[p.ID]; ok {
		return fmt.Errorf("page %s exists", p.ID)
	}
	m.rev++
	m.pages[p.ID] = memPage{p, m.rev}
	return nil
}

func (m *memStore) updatePage(_ context.Context, p page, rev uint64) error {
	cur := m.pages[p.ID].rev
	if m.conflict > 0 && m.rng.Float64() < m.conflict {
		m.rev++ // another writer rewrote it with the same content
		if mp, ok := m.pages[p.ID]; ok {
			mp.rev = m.rev
			m.pages[p.ID] = mp
		}
		return errConflict
	}
	if cur != rev {
		return fmt.Errorf("%w: at %d, not %d", errConflict, cur, rev)
	}
	m.rev++
	m.pages[p.ID] = memPage{p, m.rev}
	return nil
}

func (m *memStore) dropPage(_ context.Context, id string) { delete(m.pages, id) }

func (m *memStore) seek(ctx context.Context, key string) (*page, error) {
	p, _, _, err := locatePage(ctx, m, &m.root, key)
	return &p, err
}

func (m *memStore) page(ctx context.Context, id string) (*page, error) {
	p, _, err := m.getPage(ctx, id)
	return &p, err
}

// chain walks the pages from the first and checks the B-link invariants:
// ranges tile the key space, entries are sorted inside their page's range,
// pages fit lim. It returns the pages in order.
func (m *memStore) chain(t *testing.T, lim limits) []page {
	t.Helper()
	var out []page
	id, low := firstPageID, ""
	for {
		p, _, err := m.getPage(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if p.Low != low {
			t.Fatalf("page %s starts at %q, the previous ended at %q", p.ID, p.Low, low)
		}
		for i, e := range p.Entries {
			if !p.covers(e.Key) || i > 0 && p.Entries[i-1].Key >= e.Key {
				t.Fatalf("page %s [%q, %q): entry %d %q out of place", p.ID, p.Low, p.High, i, e.Key)
			}
		}
		if !fits(p, lim) {
			t.Fatalf("page %s exceeds the limits: %d entries", p.ID, len(p.Entries))
		}
		out = append(out, p)
		if p.High == "" {
			if p.Next != "" {
				t.Fatalf("last page %s links to %s", p.ID, p.Next)
			}
			return out
		}
		if p.High <= p.Low {
			t.Fatalf("page %s has an empty range [%q, %q)", p.ID, p.Low, p.High)
		}
		id, low = p.Next, p.High
	}
}

// refModel is the reference: the sorted keys and their entries.
type refModel map[string]Entry

func (md refModel) apply(ops []op) {
	for _, o := range ops {
		if o.Del {
			delete(md, o.Key)
		} else {
			md[o.Key] = o.Entry
		}
	}
}

func (md refModel) keys() []string {
	ks := make([]string, 0, len(md))
	for k := range md {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// naiveList is the S3 listing over a sorted slice, written as plainly as
// possible: every key, in order.
func naiveList(md refModel, q Query) Result {
	limit := q.MaxKeys
	if limit <= 0 {
		limit = DefaultMaxKeys
	}
	type item struct {
		cp string
		e  Entry
	}
	var items []item
	for _, k := range md.keys() {
		if !strings.HasPrefix(k, q.Prefix) || q.After != "" && k <= q.After {
			continue
		}
		if q.Delimiter != "" {
			rest := k[len(q.Prefix):]
			if i := strings.Index(rest, q.Delimiter); i >= 0 {
				cp := k[:len(q.Prefix)+i+len(q.Delimiter)]
				if cp == q.After || len(items) > 0 && items[len(items)-1].cp == cp {
					continue
				}
				items = append(items, item{cp: cp})
				continue
			}
		}
		items = append(items, item{e: md[k]})
	}
	var r Result
	for i, it := range items {
		if i == limit {
			r.Truncated = true
			break
		}
		if it.cp != "" {
			r.CommonPrefixes = append(r.CommonPrefixes, it.cp)
			r.Next = it.cp
		} else {
			r.Entries = append(r.Entries, it.e)
			r.Next = it.e.Key
		}
	}
	if !r.Truncated {
		r.Next = ""
	}
	return r
}

func sameResult(a, b Result) bool {
	return slices.EqualFunc(a.Entries, b.Entries, sameEntry) && slices.Equal(a.CommonPrefixes, b.CommonPrefixes) &&
		a.Truncated == b.Truncated && a.Next == b.Next
}

func showResult(r Result) string {
	ks := make([]string, len(r.Entries))
	for i, e := range r.Entries {
		ks[i] = e.Key
	}
	return fmt.Sprintf("entries %q prefixes %q truncated %v next %q", ks, r.CommonPrefixes, r.Truncated, r.Next)
}

var testTime = time.UnixMilli(1_700_000_000_000).UTC()

func ent(k string) Entry {
	return Entry{Key: k, Size: int64(len(k)), ETag: "e-" + k, Modified: testTime}
}

// build indexes keys (one batch) into a fresh store with lim.
func build(t *testing.T, lim limits, keys ...string) *memStore {
	t.Helper()
	m := newMemStore()
	ops := make([]op, len(keys))
	for i, k := range keys {
		ops[i] = op{Key: k, Seq: uint64(i + 1), Entry: ent(k)}
	}
	n := 0
	if _, err := applyBatch(context.Background(), m, &m.root, normalize(ops), uint64(len(keys)), lim,
		func() string { n++; return fmt.Sprint("n", n) }); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestListS3Semantics(t *testing.T) {
	ceph := []string{"asdf", "boo/bar", "boo/baz/xyzzy", "cquux/thud", "cquux/bla"}
	subdir := []string{"dir1/subdir/file.txt", "dir1/subdir.ext", "dir1/subdir1.ext", "dir1/subdir2.ext"}
	odd := []string{"/", "//", "/a", "a/", "a//", "a/b/", "é", "é/x", "日本/語", "日本語", "a--b--c", "a--d", "ab"}
	cases := []struct {
		name     string
		keys     []string
		q        Query
		entries  []string
		prefixes []string
		next     string // "" when not truncated
	}{
		{"all keys", ceph, Query{}, []string{"asdf", "boo/bar", "boo/baz/xyzzy", "cquux/bla", "cquux/thud"}, nil, ""},
		{"delimiter rolls up", ceph, Query{Delimiter: "/"}, []string{"asdf"}, []string{"boo/", "cquux/"}, ""},
		{"a prefix counts toward max keys", ceph, Query{Delimiter: "/", MaxKeys: 2}, []string{"asdf"}, []string{"boo/"}, "boo/"},
		{"marker is a common prefix", ceph, Query{Delimiter: "/", After: "boo/", MaxKeys: 1}, nil, []string{"cquux/"}, ""},
		{"marker is a key", ceph, Query{Delimiter: "/", After: "asdf", MaxKeys: 1}, nil, []string{"boo/"}, "boo/"},
		{"marker inside a common prefix lists it", ceph, Query{Delimiter: "/", After: "boo/bar"}, nil, []string{"boo/", "cquux/"}, ""},
		{"marker past the prefix", ceph, Query{Prefix: "boo/", After: "c"}, nil, nil, ""},
		{"marker before the prefix excludes nothing", ceph, Query{Prefix: "c", After: "b"}, []string{"cquux/bla", "cquux/thud"}, nil, ""},
		{"prefix and delimiter", ceph, Query{Prefix: "boo/", Delimiter: "/"}, []string{"boo/bar"}, []string{"boo/baz/"}, ""},
		{"max keys equal to the items is not truncated", ceph, Query{Delimiter: "/", MaxKeys: 3}, []string{"asdf"}, []string{"boo/", "cquux/"}, ""},
		{"next marker is the common prefix", subdir, Query{Prefix: "dir1/", Delimiter: "/", MaxKeys: 2}, []string{"dir1/subdir.ext"}, []string{"dir1/subdir/"}, "dir1/subdir/"},
		{"resume after the common prefix", subdir, Query{Prefix: "dir1/", Delimiter: "/", MaxKeys: 2, After: "dir1/subdir/"}, []string{"dir1/subdir1.ext", "dir1/subdir2.ext"}, nil, ""},
		{"slashes at the ends", odd, Query{Delimiter: "/"}, []string{"a--b--c", "a--d", "ab", "é", "日本語"}, []string{"/", "a/", "é/", "日本/"}, ""},
		{"prefix ending in the delimiter lists the key equal to it", odd, Query{Prefix: "a/", Delimiter: "/"}, []string{"a/"}, []string{"a//", "a/b/"}, ""},
		{"multi-byte delimiter", odd, Query{Prefix: "a", Delimiter: "--"}, []string{"a/", "a//", "a/b/", "ab"}, []string{"a--"}, ""},
		{"unicode prefix", odd, Query{Prefix: "日本"}, []string{"日本/語", "日本語"}, nil, ""},
		{"unicode delimiter", odd, Query{Delimiter: "本"}, []string{"/", "//", "/a", "a--b--c", "a--d", "a/", "a//", "a/b/", "ab", "é", "é/x"}, []string{"日本"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, lim := range []limits{defaultLimits, {entries: 1, bytes: 4096}, {entries: 2, bytes: 4096}} {
				m := build(t, lim, c.keys...)
				got, err := list(context.Background(), m, c.q)
				if err != nil {
					t.Fatal(err)
				}
				want := Result{CommonPrefixes: c.prefixes, Truncated: c.next != "", Next: c.next}
				for _, k := range c.entries {
					want.Entries = append(want.Entries, ent(k))
				}
				if !sameResult(got, want) {
					t.Fatalf("limits %+v:\n got %s\nwant %s", lim, showResult(got), showResult(want))
				}
				md := refModel{}
				for _, k := range c.keys {
					md[k] = ent(k)
				}
				if naive := naiveList(md, c.q); !sameResult(naive, want) {
					t.Fatalf("the naive model disagrees with the table:\n got %s\nwant %s", showResult(naive), showResult(want))
				}
			}
		})
	}
}

// TestListSeeksPastCommonPrefixes: a common prefix over many pages costs a
// seek, not a walk over its pages.
func TestListSeeksPastCommonPrefixes(t *testing.T) {
	keys := []string{"a", "m", "zz"}
	for i := range 20000 {
		keys = append(keys, fmt.Sprintf("big/%06d", i), fmt.Sprintf("huge/%06d/x", i))
	}
	m := build(t, defaultLimits, keys...)
	if n := len(m.chain(t, defaultLimits)); n < 20 {
		t.Fatalf("want many pages, got %d", n)
	}
	m.reads = 0
	got, err := list(context.Background(), m, Query{Delimiter: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.CommonPrefixes, []string{"big/", "huge/"}) || len(got.Entries) != 3 {
		t.Fatalf("got %s", showResult(got))
	}
	if m.reads > 6 {
		t.Fatalf("listing read %d pages; a seek per common prefix needs at most 6", m.reads)
	}
}

func TestApplyOpsSkipsReflectedOps(t *testing.T) {
	p := page{ID: "0", Seq: 10, Entries: []Entry{ent("a"), ent("c")}}
	ops := normalize([]op{
		{Key: "a", Seq: 9, Del: true},       // older than the page: skipped
		{Key: "b", Seq: 5, Entry: ent("b")}, // older: skipped
		{Key: "c", Seq: 11, Del: true},      // newer: applied
		{Key: "d", Seq: 12, Entry: ent("d")},
	})
	got, n, changed := applyOps(p, ops, 15)
	if n != 4 || !changed || got.Seq != 15 {
		t.Fatalf("n %d changed %v seq %d", n, changed, got.Seq)
	}
	if ks := keysOf(got.Entries); !slices.Equal(ks, []string{"a", "d"}) {
		t.Fatalf("entries %q", ks)
	}
	if _, _, changed := applyOps(got, ops, 15); changed {
		t.Fatal("applying the same ops again changed the page")
	}
	// Ops at or past High belong to the next page.
	q := page{ID: "0", High: "c", Entries: []Entry{ent("a")}}
	if _, n, _ := applyOps(q, ops, 15); n != 2 {
		t.Fatalf("consumed %d ops, want the 2 below c", n)
	}
}

func keysOf(es []Entry) []string {
	ks := make([]string, len(es))
	for i, e := range es {
		ks[i] = e.Key
	}
	return ks
}

func TestSplitKeepsLimitsAndLinks(t *testing.T) {
	p := page{ID: "0", Low: "", High: "zzz", Next: "right", Seq: 7}
	for i := range 5000 {
		p.Entries = append(p.Entries, ent(fmt.Sprintf("k%05d-%s", i, strings.Repeat("x", i%300))))
	}
	n := 0
	parts := split(p, defaultLimits, func() string { n++; return fmt.Sprint("s", n) })
	if len(parts) < 3 {
		t.Fatalf("%d parts", len(parts))
	}
	var all []Entry
	for i, q := range parts {
		if !fits(q, defaultLimits) {
			t.Fatalf("part %d does not fit", i)
		}
		b, err := encodePage(q)
		if err != nil || len(b) > maxPageBytes {
			t.Fatalf("part %d encodes to %d bytes (%v)", i, len(b), err)
		}
		if q.Seq != 7 || i > 0 && (q.Low != q.Entries[0].Key || parts[i-1].High != q.Low || parts[i-1].Next != q.ID) {
			t.Fatalf("part %d badly linked: %+v", i, q.ID)
		}
		all = append(all, q.Entries...)
	}
	last := parts[len(parts)-1]
	if parts[0].ID != "0" || parts[0].Low != "" || last.High != "zzz" || last.Next != "right" {
		t.Fatal("the ends of the split do not keep the page's range and link")
	}
	if !slices.EqualFunc(all, p.Entries, sameEntry) {
		t.Fatal("split lost or reordered entries")
	}
}

func TestPageEncoding(t *testing.T) {
	bad := "caf\xe9/\xff" // not UTF-8
	p := page{ID: "x1", Low: "a\xff", High: bad + "z", Next: "n", Seq: 42, Entries: []Entry{
		{Key: "a\xff\xfe", Size: 3, ETag: "abc", Modified: testTime},
		{Key: "b<&>\"\\\n\u2028日本", ETag: "d41d8cd98f00b204e9800998ecf8427e-2", Modified: testTime},
		{Key: bad, Size: 1 << 40},
	}}
	b, err := encodePage(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodePage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != p.ID || got.Low != p.Low || got.High != p.High || got.Next != p.Next || got.Seq != p.Seq ||
		!slices.EqualFunc(got.Entries, p.Entries, sameEntry) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, p)
	}
	if est := pageOverhead(p) + entryLen(p.Entries[0]) + entryLen(p.Entries[1]) + entryLen(p.Entries[2]); len(b) > est {
		t.Fatalf("encoded %d bytes, estimate %d is not an upper bound", len(b), est)
	}
	// Entries a crash could leave outside the range, or out of order, are dropped.
	q := page{ID: "y", Low: "b", High: "d", Entries: []Entry{ent("a"), ent("b"), ent("c"), ent("c"), ent("d")}}
	b, _ = encodePage(q)
	got, _ = decodePage(b)
	if ks := keysOf(got.Entries); !slices.Equal(ks, []string{"b", "c"}) {
		t.Fatalf("kept %q", ks)
	}
	if _, err := decodePage([]byte(`{"v":2}`)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong version: %v", err)
	}
	r := rootIndex{Pages: []rootRef{{ID: "0"}, {ID: "b", Low: bad}, {ID: "a", Low: "a"}}}
	rb, _ := encodeRoot(r)
	rt, err := decodeRoot(rb)
	if err != nil || len(rt.Pages) != 3 || rt.Pages[1].ID != "a" || rt.Pages[2].Low != bad {
		t.Fatalf("root round trip: %+v %v", rt, err)
	}
}

func TestLargeRootIsThinned(t *testing.T) {
	r := emptyRoot()
	var refs []rootRef
	for i := range 3000 {
		refs = append(refs, rootRef{ID: fmt.Sprintf("%016d", i), Low: fmt.Sprintf("%05d%s", i, strings.Repeat("k", 1000))})
	}
	r = r.merge(refs)
	b, err := encodeRoot(r)
	if err != nil || len(b) > maxRootBytes {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	rt, _ := decodeRoot(b)
	if rt.Pages[0].ID != firstPageID || len(rt.Pages) >= len(r.Pages) || len(rt.Pages) < 100 {
		t.Fatalf("thinned to %d pages", len(rt.Pages))
	}
}

// keyGen draws keys from a small alphabet with '/', unicode and long keys,
// so that prefixes, delimiters and overwrites all meet.
type keyGen struct{ rng *rand.Rand }

var pieces = []string{"a", "b", "/", "/", "a/", "é", "日本", "z", "-", "~", "\u007f", "ab/", "\U0001F600"}

func (g keyGen) key() string {
	if g.rng.IntN(50) == 0 {
		s := strings.Repeat(pieces[g.rng.IntN(len(pieces))], 1+g.rng.IntN(300))
		return s[:min(len(s), 1+g.rng.IntN(1088))] // long, maybe cut mid-rune
	}
	var b strings.Builder
	for range 1 + g.rng.IntN(5) {
		b.WriteString(pieces[g.rng.IntN(len(pieces))])
	}
	return b.String()
}

func (g keyGen) query(md refModel) Query {
	var q Query
	ks := md.keys()
	pick := func() string {
		if len(ks) > 0 && g.rng.IntN(3) > 0 {
			k := ks[g.rng.IntN(len(ks))]
			return k[:g.rng.IntN(len(k)+1)]
		}
		return g.key()
	}
	if g.rng.IntN(2) == 0 {
		q.Prefix = pick()
	}
	switch g.rng.IntN(4) {
	case 0, 1:
		q.Delimiter = "/"
	case 2:
		q.Delimiter = pieces[g.rng.IntN(len(pieces))]
	}
	if g.rng.IntN(2) == 0 {
		q.After = pick()
		if g.rng.IntN(3) == 0 && q.Delimiter != "" {
			if cp := commonPrefix(q.After, q.Prefix, q.Delimiter); cp != "" {
				q.After = cp // marker is a common prefix
			}
		}
	}
	q.MaxKeys = []int{0, 1, 2, 3, 7, 50}[g.rng.IntN(6)]
	return q
}

// TestPropertyIndexMatchesModel applies random batches of puts and deletes
// (with writes that lose to a simulated other writer) and checks the page
// invariants after each, then that listings, with a full and a stale root,
// equal the naive listing over the model, and that paging through with Next
// lists everything once.
func TestPropertyIndexMatchesModel(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			g := keyGen{rng}
			lim := limits{entries: 2 + rng.IntN(10), bytes: 16 << 10}
			m := newMemStore()
			m.conflict = []float64{0, 0, 0.3}[rng.IntN(3)]
			m.rng = rng
			md := refModel{}
			var pool []string
			seq := uint64(0)
			ids := 0
			newID := func() string { ids++; return fmt.Sprint("id", ids) }
			for range 40 {
				var ops []op
				for range 1 + rng.IntN(40) {
					seq++
					k := g.key()
					if len(pool) > 0 && rng.IntN(2) == 0 {
						k = pool[rng.IntN(len(pool))]
					}
					pool = append(pool, k)
					if rng.IntN(4) == 0 {
						ops = append(ops, op{Key: k, Seq: seq, Del: true})
					} else {
						e := ent(k)
						e.Size = int64(seq)
						ops = append(ops, op{Key: k, Seq: seq, Entry: e})
					}
				}
				md.apply(ops)
				if _, err := applyBatch(context.Background(), m, &m.root, normalize(ops), seq, lim, newID); err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, p := range m.chain(t, lim) {
					got = append(got, keysOf(p.Entries)...)
				}
				if want := md.keys(); !slices.Equal(got, want) {
					t.Fatalf("index holds %q, model %q", got, want)
				}
			}
			full := m.root
			for i := range 300 {
				q := g.query(md)
				if i%2 == 1 { // a stale root: the first page and a random few
					m.root = rootIndex{Pages: []rootRef{full.Pages[0]}}
					for _, r := range full.Pages[1:] {
						if rng.IntN(3) == 0 {
							m.root.Pages = append(m.root.Pages, r)
						}
					}
				} else {
					m.root = full
				}
				got, err := list(context.Background(), m, q)
				if err != nil {
					t.Fatal(err)
				}
				if want := naiveList(md, q); !sameResult(got, want) {
					t.Fatalf("query %#v:\n got %s\nwant %s", q, showResult(got), showResult(want))
				}
				// Page through to the end: the items are the unpaged listing's.
				all := naiveList(md, Query{Prefix: q.Prefix, Delimiter: q.Delimiter, After: q.After, MaxKeys: 1 << 30})
				var acc Result
				for pq, n := q, 0; ; n++ {
					if n > 10000 {
						t.Fatal("paging does not end")
					}
					r, err := list(context.Background(), m, pq)
					if err != nil {
						t.Fatal(err)
					}
					acc.Entries = append(acc.Entries, r.Entries...)
					acc.CommonPrefixes = append(acc.CommonPrefixes, r.CommonPrefixes...)
					if !r.Truncated {
						break
					}
					pq.After = r.Next
				}
				if !sameResult(acc, all) {
					t.Fatalf("paging %#v:\n got %s\nwant %s", q, showResult(acc), showResult(all))
				}
			}
		})
	}
}

// TestFormerWriterCannotUndo: a writer replaying old batches (a crash
// replay, or a former lease holder still running) after newer ones changes
// nothing.
func TestFormerWriterCannotUndo(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	g := keyGen{rng}
	m := newMemStore()
	lim := limits{entries: 4, bytes: 16 << 10}
	md := refModel{}
	var batches [][]op
	var ends []uint64
	seq := uint64(0)
	var pool []string
	for range 30 {
		var ops []op
		for range 1 + rng.IntN(20) {
			seq++
			k := g.key()
			if len(pool) > 0 && rng.IntN(2) == 0 {
				k = pool[rng.IntN(len(pool))]
			}
			pool = append(pool, k)
			ops = append(ops, op{Key: k, Seq: seq, Del: rng.IntN(3) == 0, Entry: ent(k)})
		}
		batches, ends = append(batches, ops), append(ends, seq)
		md.apply(ops)
	}
	ids := 0
	newID := func() string { ids++; return fmt.Sprint("id", ids) }
	newRoot, oldRoot := emptyRoot(), emptyRoot()
	// The new writer runs ahead; the former one replays from the start,
	// interleaved with it, on its own (stale) root.
	for i, b := range batches {
		if _, err := applyBatch(context.Background(), m, &newRoot, normalize(b), ends[i], lim, newID); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			j := i / 2
			if _, err := applyBatch(context.Background(), m, &oldRoot, normalize(batches[j]), ends[j], lim, newID); err != nil {
				t.Fatal(err)
			}
		}
	}
	var got []string
	for _, p := range m.chain(t, lim) {
		got = append(got, keysOf(p.Entries)...)
	}
	if want := md.keys(); !slices.Equal(got, want) {
		t.Fatalf("index holds %q, model %q", got, want)
	}
}
