package clustertest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/clustertest"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/objects"
)

// The tests of shared/objects live here: Put needs a planner to allocate
// and commit, and the planner (a service) depends on the shared module.

// client is an objects client on c with the given chunk size (0: default).
func client(t *testing.T, c *clustertest.Cluster, chunk int64) *objects.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.Ctx, 10*time.Second)
	defer cancel()
	oc, err := objects.New(ctx, c.Env.NC, c.Env.JS, c.Shards())
	if err != nil {
		t.Fatal(err)
	}
	if chunk > 0 {
		oc.ChunkSize = chunk
	}
	return oc
}

// payload is n seeded pseudo-random bytes.
func payload(n int64, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// roundTrip puts data under key with layout, checks the manifest's shard
// count and reads it back whole, byte-identical; it returns the manifest.
func roundTrip(t *testing.T, oc *objects.Client, key string, data []byte, l model.Layout, wantShards int) model.Manifest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := oc.Put(ctx, key, bytes.NewReader(data), int64(len(data)), objects.PutOptions{Layout: l})
	if err != nil {
		t.Fatalf("put %s (%d bytes, %s): %v", key, len(data), l, err)
	}
	if len(m.Shards) != wantShards {
		t.Errorf("%s: %d bytes in %s made %d shards, want %d", key, len(data), l, len(m.Shards), wantShards)
	}
	want := sha256.Sum256(data)
	if got, err := oc.Manifest(ctx, key); err != nil || got.Size != int64(len(data)) || len(got.Shards) != wantShards {
		t.Fatalf("%s: committed manifest size %d, %d shards, %v", key, got.Size, len(got.Shards), err)
	}
	var out bytes.Buffer
	if _, err := oc.Get(ctx, key, &out); err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if got := sha256.Sum256(out.Bytes()); got != want || out.Len() != len(data) {
		t.Fatalf("get %s: %d bytes, sha256 %x; put %d bytes, sha256 %x", key, out.Len(), got[:8], len(data), want[:8])
	}
	return m
}

// readRange checks bytes [off, off+n) of m against data.
func readRange(t *testing.T, oc *objects.Client, m model.Manifest, data []byte, off, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := oc.Read(ctx, m, off, n, &out); err != nil {
		t.Fatalf("read %s bytes %d+%d: %v", m.Key, off, n, err)
	}
	if !bytes.Equal(out.Bytes(), data[off:off+n]) {
		t.Fatalf("read %s bytes %d+%d: not the bytes put", m.Key, off, n)
	}
}

func ceilDiv(a, b int64) int { return int(max(1, (a+b-1)/b)) }

// TestObjectsRoundTripAtBoundaries: replicated objects at and around the
// default 4 MiB chunk, and 4+2 erasure-coded ones at and around a stripe
// (K chunks), come back byte-identical, with one shard per chunk (rf) or
// K+M per stripe (ec), and a ranged read across a boundary returns exactly
// those bytes.
func TestObjectsRoundTripAtBoundaries(t *testing.T) {
	c := clustertest.Start(t, 6, 3)

	t.Run("rf3 default chunk", func(t *testing.T) {
		oc := client(t, c, 0)
		chunk := int64(model.DefaultChunkSize)
		if oc.ChunkSize != chunk {
			t.Fatalf("client chunk %d, want the default %d", oc.ChunkSize, chunk)
		}
		rf3 := model.Layout{RF: 3}
		for _, n := range []int64{0, 1, chunk - 1, chunk, chunk + 1, 2*chunk + 1} {
			data := payload(n, 1)
			m := roundTrip(t, oc, fmt.Sprintf("rf3-%d", n), data, rf3, ceilDiv(n, chunk))
			if n == 2*chunk+1 {
				readRange(t, oc, m, data, chunk-10, 20)     // across the first boundary
				readRange(t, oc, m, data, chunk-1, chunk+2) // a whole chunk and one byte each side
				readRange(t, oc, m, data, 2*chunk, 1)       // the last chunk's one byte
			}
		}
	})

	t.Run("ec4+2 small chunk", func(t *testing.T) {
		const chunk = 64 << 10
		oc := client(t, c, chunk)
		ec := model.Layout{K: 4, M: 2}
		stripe := int64(ec.K) * chunk
		for _, n := range []int64{0, 1, chunk + 1, stripe - 1, stripe, stripe + 1, 3*stripe + 7} {
			data := payload(n, 2)
			m := roundTrip(t, oc, fmt.Sprintf("ec-%d", n), data, ec, ceilDiv(n, stripe)*(ec.K+ec.M))
			if n == 3*stripe+7 {
				readRange(t, oc, m, data, stripe-100, 200)      // across a stripe boundary
				readRange(t, oc, m, data, chunk-3, 6)           // across pieces inside a stripe
				readRange(t, oc, m, data, stripe/2, 2*stripe+1) // spanning three stripes
				readRange(t, oc, m, data, 3*stripe, 7)          // the short last stripe
			}
		}
	})

	t.Run("ec4+2 default chunk", func(t *testing.T) {
		oc := client(t, c, 0)
		ec := model.Layout{K: 4, M: 2}
		stripe := int64(ec.K) * model.DefaultChunkSize
		data := payload(stripe+1, 3)
		m := roundTrip(t, oc, "ec-default", data, ec, 2*(ec.K+ec.M))
		readRange(t, oc, m, data, stripe-5, 6)
	})
}
