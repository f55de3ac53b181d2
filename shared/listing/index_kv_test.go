package listing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/listing"
	"github.com/rehome/rehome/shared/model"
)

type fixture struct {
	t       testing.TB
	env     *bustest.Env
	objects jetstream.KeyValue
	reader  *listing.Reader
}

func newFixture(t testing.TB) *fixture {
	env := bustest.Start(t)
	ctx := context.Background()
	objects, err := env.JS.KeyValue(ctx, bus.BucketObjects)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := env.JS.KeyValue(ctx, bus.BucketIndex)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, env: env, objects: objects, reader: listing.NewReader(idx)}
}

// indexer runs an indexer until the returned stop is called.
func (f *fixture) indexer() (*listing.Indexer, func()) {
	ix := listing.NewIndexer(f.env.JS, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("indexer Run: %v", err)
		}
	}
	f.t.Cleanup(func() { cancel() })
	return ix, stop
}

// put writes a manifest for key and returns its stream sequence.
func (f *fixture) put(key string, size int64) uint64 {
	body, _ := json.Marshal(model.Manifest{V: 1, Key: key, Size: size, ETag: fmt.Sprintf("etag-%d", size), Created: time.Now().UTC()})
	rev, err := f.objects.Put(context.Background(), model.ObjectKVKey(key), body)
	if err != nil {
		f.t.Fatal(err)
	}
	return rev
}

func (f *fixture) del(key string) {
	if err := f.objects.Delete(context.Background(), model.ObjectKVKey(key)); err != nil {
		f.t.Fatal(err)
	}
}

// all lists every key under prefix, page by page.
func (f *fixture) all(prefix string, page int) []string {
	var out []string
	q := listing.Query{Prefix: prefix, MaxKeys: page}
	for {
		res, err := f.reader.List(context.Background(), q)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, e := range res.Entries {
			out = append(out, e.Key)
		}
		if !res.Truncated {
			return out
		}
		q.After = res.Next
	}
}

func wait(t testing.TB, ix *listing.Indexer, seq uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ix.WaitApplied(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

func TestIndexListsInByteOrderThroughSplitsDeletesAndRestarts(t *testing.T) {
	f := newFixture(t)
	ix, stop := f.indexer()
	const n = 5000
	var last uint64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				seq := f.put(fmt.Sprintf("b/k%05d", n-1-i), int64(i))
				mu.Lock()
				last = max(last, seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wait(t, ix, last)
	got := f.all("b/", 777)
	if len(got) != n {
		t.Fatalf("listed %d keys, want %d", len(got), n)
	}
	for i, k := range got {
		if want := fmt.Sprintf("b/k%05d", i); k != want {
			t.Fatalf("key %d is %s, want %s", i, k, want)
		}
	}
	stop() // a restart resumes from the cursor
	for i := 0; i < n; i += 2 {
		f.del(fmt.Sprintf("b/k%05d", i))
	}
	seq := f.put("a-first", 1)
	ix, stop = f.indexer()
	defer stop()
	wait(t, ix, seq)
	got = f.all("b/", 1000)
	if len(got) != n/2 || got[0] != "b/k00001" {
		t.Fatalf("after deletes and a restart: %d keys, first %v", len(got), got[:min(1, len(got))])
	}
	empty, err := f.reader.Empty(context.Background(), "b/k00000")
	if err != nil || !empty {
		t.Errorf("Empty(deleted key) = %v, %v", empty, err)
	}
	if empty, _ := f.reader.Empty(context.Background(), "b/"); empty {
		t.Error("Empty(b/) = true with keys in it")
	}
}

func TestIndexReadAfterWrite(t *testing.T) {
	f := newFixture(t)
	ix, stop := f.indexer()
	defer stop()
	for i := range 50 {
		key := fmt.Sprintf("bucket/ünï cödé %d/x", i)
		wait(t, ix, f.put(key, 1))
		res, err := f.reader.List(context.Background(), listing.Query{Prefix: key, MaxKeys: 10})
		if err != nil || len(res.Entries) != 1 || res.Entries[0].Key != key || res.Entries[0].ETag != "etag-1" {
			t.Fatalf("right after put %d: %+v, %v", i, res, err)
		}
	}
}
