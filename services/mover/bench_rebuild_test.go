package mover_test

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"
	"github.com/nats-io/nats.go"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/shared/erasure"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// BenchmarkRebuildVsReconstruct measures erasure-coded repair (SPEC §6:
// rebuild throughput >= 0.7x reedsolomon's own reconstruct on the same
// sizes). Each op is one rebuild task of a 4+2 stripe missing `lost` pieces,
// run end to end by a mover (default config: 4 workers) against real
// storage nodes in this process: task pulled from JetStream, K pieces read
// over HTTP and verified (SHA-256), the missing pieces reconstructed, PUT to
// spare nodes that verify and fsync them, one Done per piece published. The
// MB/s column is rebuilt bytes per second of that path.
//
// In the same run it times, on the same piece sizes and missing set,
// reedsolomon's Encoder.Reconstruct alone (rs-MB/s) and rehome's reconstruct
// step alone, erasure.Codec.Reconstruct (step-MB/s), and reports
// rehome/rs (the SPEC ratio: disk, HTTP and hashing against pure compute,
// a harsh comparison) and step/rs (the coding itself, expect ~1.0).
// read-B/rebuilt-B is the repair network cost from the mover's metrics,
// rehome_mover_bytes_read_total / rehome_mover_bytes_copied_total: K for one
// missing piece, K/2 when two are rebuilt in one pass.
func BenchmarkRebuildVsReconstruct(b *testing.B) {
	for _, bc := range []struct {
		piece int
		lost  []int
	}{
		{1 << 20, []int{1}},
		{4 << 20, []int{1}},
		{4 << 20, []int{1, 4}},
	} {
		b.Run(fmt.Sprintf("piece=%dMiB/lost=%d", bc.piece>>20, len(bc.lost)), func(b *testing.B) {
			benchRebuild(b, bc.piece, bc.lost)
		})
	}
}

func benchRebuild(b *testing.B, piece int, lost []int) {
	const k, m = 4, 2
	c := newCluster(b)
	holders := nodeNames("storage", k+m)
	spares := nodeNames("spare", 3)
	for _, n := range append(slices.Clone(holders), spares...) {
		c.storage(n)
	}
	s := c.putStripe("bench", randomBytes(b, k*piece), k, m, holders)
	for _, i := range lost {
		c.remove(s, i)
	}
	// Every task rebuilds the lost pieces of the same stripe under fresh ids,
	// onto the spares in turn.
	tasks := make([]*event.Task, b.N)
	for n := range tasks {
		targets := map[int]string{}
		for j, i := range lost {
			targets[i] = spares[(n+j)%len(spares)]
		}
		t := s.rebuildTask(fmt.Sprintf("task-%d", n), targets, nil)
		for j := range t.Rebuild {
			id := fmt.Sprintf("bench-%d-p%d", n, t.Rebuild[j].Index)
			t.Rebuild[j].Shard = id
			t.Stripe[t.Rebuild[j].Index].Shard = id
		}
		t.Shard = t.Rebuild[0].Shard
		tasks[n] = t
	}
	want := int64(b.N * len(lost))
	var done atomic.Int64
	all := make(chan struct{})
	sub, err := c.env.NC.Subscribe(event.DonePrefix+">", func(*nats.Msg) {
		if done.Add(1) == want {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	mv := c.mover(mover.Config{ID: "bench"})

	b.SetBytes(int64(piece * len(lost)))
	b.ResetTimer()
	start := time.Now()
	for _, t := range tasks {
		c.publish(t)
	}
	select {
	case <-all:
	case <-time.After(10 * time.Minute):
		b.Fatalf("%d of %d pieces rebuilt after 10 minutes", done.Load(), want)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	c.mu.Lock()
	failed := slices.Clone(c.failed)
	c.mu.Unlock()
	if len(failed) != 0 {
		b.Fatalf("%d rebuild attempts failed, first: %+v", len(failed), failed[0])
	}

	rebuiltMBs := float64(want) * float64(piece) / elapsed.Seconds() / 1e6
	rsMBs := reedsolomonRate(b, s, lost)
	stepMBs := stepRate(b, s, lost)
	reg := mv.Registry()
	read := metricstest.Value(b, reg, "rehome_mover_bytes_read_total")
	written := metricstest.Value(b, reg, "rehome_mover_bytes_copied_total")
	b.ReportMetric(rsMBs, "rs-MB/s")
	b.ReportMetric(stepMBs, "step-MB/s")
	b.ReportMetric(rebuiltMBs/rsMBs, "rehome/rs")
	b.ReportMetric(stepMBs/rsMBs, "step/rs")
	b.ReportMetric(read/written, "read-B/rebuilt-B")
}

// minTiming is how long each in-process reconstruct loop runs.
const minTiming = 500 * time.Millisecond

// rate runs op until minTiming has passed and returns rebuilt MB/s, each op
// rebuilding `rebuilt` bytes.
func rate(rebuilt int, op func()) float64 {
	op() // warm up: decode matrices, buffers
	n := 0
	start := time.Now()
	for time.Since(start) < minTiming {
		op()
		n++
	}
	return float64(n) * float64(rebuilt) / time.Since(start).Seconds() / 1e6
}

// reedsolomonRate times reedsolomon's own Reconstruct of the lost pieces of
// s, the survivors in memory and the output buffers reused.
func reedsolomonRate(b *testing.B, s *stripe, lost []int) float64 {
	enc, err := reedsolomon.New(s.k, s.m)
	if err != nil {
		b.Fatal(err)
	}
	shards := slices.Clone(s.pieces)
	out := make([][]byte, len(lost))
	for j := range out {
		out[j] = make([]byte, len(s.pieces[0]))
	}
	return rate(len(lost)*len(s.pieces[0]), func() {
		for j, i := range lost {
			shards[i] = out[j][:0]
		}
		if err := enc.Reconstruct(shards); err != nil {
			b.Fatal(err)
		}
	})
}

// stepRate times rehome's reconstruct step (erasure.Codec.Reconstruct asked
// for the lost pieces only) under the same conditions.
func stepRate(b *testing.B, s *stripe, lost []int) float64 {
	codec, err := erasure.New(s.k, s.m)
	if err != nil {
		b.Fatal(err)
	}
	shards := slices.Clone(s.pieces)
	want := make([]bool, s.k+s.m)
	out := make([][]byte, len(lost))
	for j, i := range lost {
		out[j] = make([]byte, len(s.pieces[0]))
		want[i] = true
	}
	return rate(len(lost)*len(s.pieces[0]), func() {
		for j, i := range lost {
			shards[i] = out[j][:0]
		}
		if err := codec.Reconstruct(shards, want); err != nil {
			b.Fatal(err)
		}
	})
}
