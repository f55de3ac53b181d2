package listing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/benchenv"
)

// BenchmarkList100k lists an index of 100,000 keys through a real embedded
// JetStream: the first page of 1,000 (targets: <= 50 ms) and every page to
// the end (<= 2 s).
func BenchmarkList100k(b *testing.B) { benchList(b, 100_000) }

// BenchmarkList1M is BenchmarkList100k with 1,000,000 keys: a page should
// cost the same.
func BenchmarkList1M(b *testing.B) {
	if testing.Short() || benchenv.Quick() {
		b.Skip("1,000,000 keys take minutes to index: skipped under -short and REHOME_BENCH_QUICK")
	}
	benchList(b, 1_000_000)
}

// benchList populates n keys (written in key order, as a bulk load would,
// through the Indexer) and measures listings.
func benchList(b *testing.B, n int) {
	e := startKV(b)
	ctx := context.Background()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("bucket/data/%03d/object-%08d.bin", i/(n/100), i)
	}
	ix, stop := e.runIndexer(b)
	t0 := time.Now()
	last := e.putMany(b, keys, func(i int) int64 { return int64(i) })
	waitApplied(b, ix, last)
	stop()
	indexing := time.Since(t0)
	rt, _, err := kvStore{e.idx}.getRoot(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d keys written and indexed in %s (%.0f keys/s), %d pages", n, indexing.Round(time.Millisecond), float64(n)/indexing.Seconds(), len(rt.Pages))
	// r is a long-lived Reader (its decoded pages cached by revision); the
	// cold variants use a new Reader for each listing or walk.
	r := NewReader(e.idx)
	perOp := func(b *testing.B, unit string) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, unit)
	}

	b.Run("first-page", func(b *testing.B) {
		for b.Loop() {
			res, err := r.List(ctx, Query{MaxKeys: 1000})
			if err != nil || len(res.Entries) != 1000 || !res.Truncated {
				b.Fatalf("%d entries, %v", len(res.Entries), err)
			}
		}
		perOp(b, "ms/first-page")
	})
	b.Run("first-page-cold-reader", func(b *testing.B) {
		for b.Loop() {
			res, err := NewReader(e.idx).List(ctx, Query{MaxKeys: 1000})
			if err != nil || len(res.Entries) != 1000 {
				b.Fatalf("%d entries, %v", len(res.Entries), err)
			}
		}
		perOp(b, "ms/first-page")
	})
	b.Run("middle-page", func(b *testing.B) {
		after := keys[n/2]
		for b.Loop() {
			res, err := r.List(ctx, Query{After: after, MaxKeys: 1000})
			if err != nil || len(res.Entries) != 1000 {
				b.Fatalf("%d entries, %v", len(res.Entries), err)
			}
		}
		perOp(b, "ms/page")
	})
	walk := func(b *testing.B, fresh bool) {
		for b.Loop() {
			r := r
			if fresh {
				r = NewReader(e.idx)
			}
			total, q := 0, Query{MaxKeys: 1000}
			for {
				res, err := r.List(ctx, q)
				if err != nil {
					b.Fatal(err)
				}
				total += len(res.Entries)
				if !res.Truncated {
					break
				}
				q.After = res.Next
			}
			if total != n {
				b.Fatalf("listed %d of %d", total, n)
			}
		}
		perOp(b, "ms/all-pages")
	}
	b.Run("all-pages", func(b *testing.B) { walk(b, false) })
	b.Run("all-pages-cold-reader", func(b *testing.B) { walk(b, true) })
	b.Run("delimiter-100-prefixes", func(b *testing.B) {
		for b.Loop() {
			res, err := r.List(ctx, Query{Prefix: "bucket/data/", Delimiter: "/"})
			if err != nil || len(res.CommonPrefixes) != 100 {
				b.Fatalf("%d prefixes, %v", len(res.CommonPrefixes), err)
			}
		}
		perOp(b, "ms/list")
	})
}
