package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/rehome/rehome/shared/shardapi"
)

// BenchmarkPut measures verified, durable shard writes of 4 MiB over loopback.
func BenchmarkPut(b *testing.B) {
	n := startAPI(b, nodeOpts{})
	c := shardapi.New("")
	body := data(1, 4<<20)
	sha := sum(body)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := c.Put(context.Background(), n.addr, fmt.Sprintf("b%d", i), sha, int64(len(body)), bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet measures verified shard reads of 4 MiB over loopback.
func BenchmarkGet(b *testing.B) {
	n := startAPI(b, nodeOpts{})
	c := shardapi.New("")
	body := data(1, 4<<20)
	if err := c.Put(context.Background(), n.addr, "g", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rc, _, err := c.Get(context.Background(), n.addr, "g")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
}
