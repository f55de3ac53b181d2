package listing

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/model"
)

// kvEnv is a real JetStream with the buckets, and the objects and index
// buckets at hand.
type kvEnv struct {
	*bustest.Env
	objs, idx jetstream.KeyValue
}

func startKV(t testing.TB) *kvEnv {
	t.Helper()
	env := bustest.Start(t) // runs bus.Ensure: every bucket exists
	ctx := context.Background()
	objs, err := env.JS.KeyValue(ctx, bus.BucketObjects)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := env.JS.KeyValue(ctx, bus.BucketIndex)
	if err != nil {
		t.Fatal(err)
	}
	return &kvEnv{Env: env, objs: objs, idx: idx}
}

var created = time.Date(2026, 3, 1, 12, 0, 0, 123_000_000, time.UTC)

func manifestJSON(t testing.TB, key string, size int64) []byte {
	t.Helper()
	b, err := json.Marshal(model.Manifest{V: model.Version, Key: key, ID: "obj", Size: size, ChunkSize: 1 << 22,
		ETag: fmt.Sprintf("etag-%d", size), Created: created})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantEntry(key string, size int64) Entry {
	return Entry{Key: key, Size: size, ETag: fmt.Sprintf("etag-%d", size), Modified: created}
}

// putMany writes a manifest for each key straight into the objects stream
// (what kv.Put does), many in flight at once, and returns the last sequence.
func (e *kvEnv) putMany(t testing.TB, keys []string, size func(i int) int64) uint64 {
	t.Helper()
	var last uint64
	for start := 0; start < len(keys); start += 2000 {
		var futs []jetstream.PubAckFuture
		for i := start; i < min(start+2000, len(keys)); i++ {
			f, err := e.JS.PublishAsync(objectsSubjectPrefix+model.ObjectKVKey(keys[i]), manifestJSON(t, keys[i], size(i)))
			if err != nil {
				t.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case ack := <-f.Ok():
				last = max(last, ack.Sequence)
			case err := <-f.Err():
				t.Fatal(err)
			case <-time.After(30 * time.Second):
				t.Fatal("no ack in 30 s")
			}
		}
	}
	return last
}

// lastSeq returns the objects stream's last sequence (after a Delete,
// which does not return its revision).
func (e *kvEnv) lastSeq(t testing.TB) uint64 {
	t.Helper()
	st, err := e.JS.Stream(context.Background(), objectsStream)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// runIndexer starts an Indexer and returns it with a stop function that
// waits for Run to return (also called at cleanup).
func (e *kvEnv) runIndexer(t testing.TB) (*Indexer, func()) {
	t.Helper()
	ix := NewIndexer(e.JS, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return ix, stop
}

func waitApplied(t testing.TB, ix *Indexer, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ix.WaitApplied(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// listAll pages through a listing 1,000 items at a time.
func listAll(t testing.TB, r *Reader, q Query) ([]Entry, []string) {
	t.Helper()
	var es []Entry
	var cps []string
	for n := 0; ; n++ {
		res, err := r.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Entries)+len(res.CommonPrefixes) > max(q.MaxKeys, DefaultMaxKeys) || n > 100000 {
			t.Fatal("listing does not page")
		}
		es = append(es, res.Entries...)
		cps = append(cps, res.CommonPrefixes...)
		if !res.Truncated {
			return es, cps
		}
		q.After = res.Next
	}
}

func TestIndexerPutsOverwritesDeletes(t *testing.T) {
	e := startKV(t)
	ctx := context.Background()
	ix, _ := e.runIndexer(t)
	r := NewReader(e.idx)
	if empty, err := r.Empty(ctx, ""); err != nil || !empty {
		t.Fatalf("a new index: empty %v, %v", empty, err)
	}
	keys := []string{"a/1", "a/2", "b", "c/x/y", "日本/語", "/lead", "trail/"}
	var rev uint64
	for i, k := range keys {
		var err error
		if rev, err = e.objs.Put(ctx, model.ObjectKVKey(k), manifestJSON(t, k, int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitApplied(t, ix, rev)
	es, _ := listAll(t, r, Query{})
	var want []Entry
	for i, k := range keys {
		want = append(want, wantEntry(k, int64(i)))
	}
	slices.SortFunc(want, func(a, b Entry) int { return compareKeys(a.Key, b.Key) })
	if !slices.EqualFunc(es, want, sameEntry) {
		t.Fatalf("listed %+v\nwant %+v", es, want)
	}
	_, cps := listAll(t, r, Query{Delimiter: "/"})
	if !slices.Equal(cps, []string{"/", "a/", "c/", "trail/", "日本/"}) {
		t.Fatalf("common prefixes %q", cps)
	}

	// Overwrite, delete, purge, and a manifest that does not decode.
	if rev, _ = e.objs.Put(ctx, model.ObjectKVKey("a/1"), manifestJSON(t, "a/1", 99)); rev == 0 {
		t.Fatal("put failed")
	}
	if err := e.objs.Delete(ctx, model.ObjectKVKey("b")); err != nil {
		t.Fatal(err)
	}
	if err := e.objs.Purge(ctx, model.ObjectKVKey("c/x/y")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.objs.Put(ctx, model.ObjectKVKey("junk"), []byte("not a manifest")); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, ix, e.lastSeq(t))
	if got, ok, err := r.Get(ctx, "a/1"); err != nil || !ok || !sameEntry(got, wantEntry("a/1", 99)) {
		t.Fatalf("overwritten a/1: %+v %v %v", got, ok, err)
	}
	for _, k := range []string{"b", "c/x/y"} {
		if _, ok, err := r.Get(ctx, k); err != nil || ok {
			t.Fatalf("deleted %s still listed (%v)", k, err)
		}
	}
	if got, ok, _ := r.Get(ctx, "junk"); !ok || got.Size != 0 || got.Modified.IsZero() {
		t.Fatalf("undecodable manifest: %+v %v", got, ok)
	}
	if empty, _ := r.Empty(ctx, "c/"); !empty {
		t.Fatal("c/ should be empty")
	}
	if empty, _ := r.Empty(ctx, "a/"); empty {
		t.Fatal("a/ should not be empty")
	}
}

func compareKeys(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestWaitAppliedMakesThePutVisible: read-after-write, with no polling.
func TestWaitAppliedMakesThePutVisible(t *testing.T) {
	e := startKV(t)
	ctx := context.Background()
	ix, _ := e.runIndexer(t)
	r := NewReader(e.idx)
	for i := range 50 {
		k := fmt.Sprintf("raw/%03d", i)
		rev, err := e.objs.Put(ctx, model.ObjectKVKey(k), manifestJSON(t, k, int64(i)))
		if err != nil {
			t.Fatal(err)
		}
		waitApplied(t, ix, rev)
		if _, ok, err := r.Get(ctx, k); err != nil || !ok {
			t.Fatalf("%s not visible after WaitApplied(%d): %v", k, rev, err)
		}
		res, err := r.List(ctx, Query{Prefix: "raw/", After: fmt.Sprintf("raw/%03d", i-1)})
		if err != nil || len(res.Entries) != 1 || res.Entries[0].Key != k {
			t.Fatalf("list after put: %s %v", showResult(res), err)
		}
	}
	// A deadline ends the wait for a sequence nobody writes.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := ix.WaitApplied(wctx, 1<<40); err == nil {
		t.Fatal("WaitApplied returned for a sequence never written")
	}
}

// TestWaitAppliedAfterPurgedMessage: a sequence whose message is gone from
// the stream still ends the wait.
func TestWaitAppliedAfterPurgedMessage(t *testing.T) {
	e := startKV(t)
	ctx := context.Background()
	rev, err := e.objs.Put(ctx, model.ObjectKVKey("gone"), manifestJSON(t, "gone", 1))
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.JS.Stream(ctx, objectsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(objectsSubjectPrefix+model.ObjectKVKey("gone"))); err != nil {
		t.Fatal(err)
	}
	ix, _ := e.runIndexer(t)
	waitApplied(t, ix, rev)
}

// kvModel is what the objects bucket holds: key -> size.
type kvModel map[string]int64

func (m kvModel) sorted() []Entry {
	var es []Entry
	for k, s := range m {
		es = append(es, wantEntry(k, s))
	}
	slices.SortFunc(es, func(a, b Entry) int { return compareKeys(a.Key, b.Key) })
	return es
}

func checkAll(t *testing.T, r *Reader, m kvModel) {
	t.Helper()
	es, _ := listAll(t, r, Query{})
	if want := m.sorted(); !slices.EqualFunc(es, want, sameEntry) {
		t.Fatalf("listed %d entries, want %d (first difference at %d)", len(es), len(want), firstDiff(es, want))
	}
}

func firstDiff(a, b []Entry) int {
	for i := range min(len(a), len(b)) {
		if !sameEntry(a[i], b[i]) {
			return i
		}
	}
	return min(len(a), len(b))
}

// writeRandom puts n random keys (and deletes some earlier ones) and
// records them in m.
func (e *kvEnv) writeRandom(t *testing.T, rng *rand.Rand, m kvModel, n int) uint64 {
	t.Helper()
	keys := make([]string, n)
	sizes := make([]int64, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%c/%05d/%x", 'a'+rng.IntN(6), rng.IntN(20000), rng.IntN(16))
		sizes[i] = rng.Int64N(1 << 30)
	}
	last := e.putMany(t, keys, func(i int) int64 { return sizes[i] })
	for i, k := range keys {
		m[k] = sizes[i]
	}
	ctx := context.Background()
	for k := range m {
		if rng.IntN(10) == 0 {
			if err := e.objs.Delete(ctx, model.ObjectKVKey(k)); err != nil {
				t.Fatal(err)
			}
			delete(m, k)
		}
	}
	return max(last, e.lastSeq(t))
}

// TestIndexerRestartLosesNothing stops the indexer in the middle of the
// stream and starts a new one: it resumes from the cursor.
func TestIndexerRestartLosesNothing(t *testing.T) {
	e := startKV(t)
	rng := rand.New(rand.NewPCG(1, 1))
	m := kvModel{}
	last := e.writeRandom(t, rng, m, 6000)
	ix, stop := e.runIndexer(t)
	bustest.Eventually(t, 30*time.Second, "the first indexer applies something", func() bool { return ix.Applied() > 0 })
	stop()
	t.Logf("stopped at %d of %d", ix.Applied(), last)
	last = e.writeRandom(t, rng, m, 3000)
	ix2, _ := e.runIndexer(t)
	waitApplied(t, ix2, last)
	checkAll(t, NewReader(e.idx), m)
}

// TestTwoIndexersAtOnce: a former lease holder still running beside the new
// one; their compare-and-set writes conflict and nothing is lost.
func TestTwoIndexersAtOnce(t *testing.T) {
	e := startKV(t)
	rng := rand.New(rand.NewPCG(2, 2))
	m := kvModel{}
	a, _ := e.runIndexer(t)
	b, _ := e.runIndexer(t)
	var last uint64
	for range 4 {
		last = e.writeRandom(t, rng, m, 1500)
	}
	waitApplied(t, a, last)
	waitApplied(t, b, last)
	checkAll(t, NewReader(e.idx), m)
}

// TestManyKeysAndStaleRoot indexes 20,000 keys (many splits), lists them
// all in pages and by prefix, then replaces the root with stale ones: the
// listings stay complete.
func TestManyKeysAndStaleRoot(t *testing.T) {
	e := startKV(t)
	ctx := context.Background()
	n := 20000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("dir%02d/file-%06d", i%40, i)
	}
	rand.New(rand.NewPCG(3, 3)).Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	m := kvModel{}
	for i, k := range keys {
		m[k] = int64(i)
	}
	ix, stop := e.runIndexer(t)
	last := e.putMany(t, keys, func(i int) int64 { return int64(i) })
	waitApplied(t, ix, last)
	stop()

	r := NewReader(e.idx)
	checkAll(t, r, m)
	rt, _, err := kvStore{e.idx}.getRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rt.Pages) < 10 {
		t.Fatalf("%d pages: expected splits", len(rt.Pages))
	}
	_, cps := listAll(t, r, Query{Delimiter: "/"})
	if len(cps) != 40 || cps[0] != "dir00/" || cps[39] != "dir39/" {
		t.Fatalf("common prefixes %q", cps)
	}
	es, _ := listAll(t, r, Query{Prefix: "dir07/"})
	if len(es) != n/40 {
		t.Fatalf("dir07/ lists %d", len(es))
	}

	stale := []rootIndex{
		emptyRoot(), // the first page only
		{Pages: slices.DeleteFunc(slices.Clone(rt.Pages), func(p rootRef) bool { return p.ID != firstPageID && p.Low > "dir10" && p.Low < "dir30" })},
	}
	for i, sr := range stale {
		b, err := encodeRoot(sr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.idx.Put(ctx, rootKey, b); err != nil {
			t.Fatal(err)
		}
		r := NewReader(e.idx)
		checkAll(t, r, m)
		if _, cps := listAll(t, r, Query{Delimiter: "/"}); len(cps) != 40 {
			t.Fatalf("stale root %d: %d common prefixes", i, len(cps))
		}
		if es, _ := listAll(t, r, Query{Prefix: "dir21/", After: "dir21/file-010000"}); len(es) == 0 {
			t.Fatalf("stale root %d: nothing after the marker", i)
		}
	}
	if err := e.idx.Delete(ctx, rootKey); err != nil {
		t.Fatal(err)
	}
	checkAll(t, NewReader(e.idx), m)
}
