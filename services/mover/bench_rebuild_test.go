package mover_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/benchenv"
	"github.com/rehome/rehome/shared/erasure"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// BenchmarkRebuildStripes measures erasure-coded repair after a node loss
// (SPEC §11: rebuild throughput >= 0.7x an in-process rebuild of the same
// stripes from the same piece files). A 4+2 layout over 6 holders, piece i
// of stripe s on holder (i+s) mod 6, so losing `lost` holders loses a
// different piece index in each stripe; every op publishes one rebuild task
// per stripe at once and a mover (default config: 4 workers) rebuilds them
// concurrently against real storage nodes in this process: K pieces read
// over HTTP (repair GETs, sent from disk) and verified (SHA-256), the
// missing pieces reconstructed, PUT to spare nodes that verify and fsync
// them, one Done per piece. MB/s is rebuilt bytes per second of that path,
// from the first task published to the last Done.
//
// inproc-MB/s, in the same op (run just before and just after rehome's
// round, their mean counted), is the baseline: the same stripes rebuilt in
// this process from the same piece files at the mover's parallelism: read
// K surviving piece files from the holders' data directories, reconstruct
// the missing pieces, hash each (SHA-256, checked), write it to a temp file,
// fsync, rename, fsync the directory.
//
// Informative, same run: reedsolomon's Encoder.Reconstruct alone on one
// stripe in memory (rs-MB/s) and rehome's reconstruct step alone,
// erasure.Codec.Reconstruct (step-MB/s): the coding itself, expect ~1.0.
// read-B/rebuilt-B is the repair network cost from the mover's metrics,
// rehome_mover_bytes_read_total / rehome_mover_bytes_copied_total: K for one
// missing piece, K/2 when two are rebuilt in one pass. 32 stripes per op
// (REHOME_BENCH_QUICK: 8; REHOME_BENCH_STRIPES overrides).
func BenchmarkRebuildStripes(b *testing.B) {
	stripes := 32
	if benchenv.Quick() {
		stripes = 8
	}
	stripes = benchenv.Int("REHOME_BENCH_STRIPES", stripes)
	for _, bc := range []struct {
		piece int
		lost  int
	}{
		{1 << 20, 1},
		{4 << 20, 1},
		{4 << 20, 2},
	} {
		b.Run(fmt.Sprintf("piece=%dMiB/lost=%d", bc.piece>>20, bc.lost), func(b *testing.B) {
			benchRebuild(b, bc.piece, bc.lost, stripes)
		})
	}
}

// spareCount is how many nodes the rebuilt pieces go to.
const spareCount = 3

func benchRebuild(b *testing.B, piece, lost, count int) {
	const k, m = 4, 2
	c := newCluster(b)
	holders := nodeNames("storage", k+m)
	spares := nodeNames("spare", spareCount)
	for _, n := range append(slices.Clone(holders), spares...) {
		c.storage(n)
	}
	stripes := make([]*stripe, count)
	for s := range stripes {
		on := make([]string, k+m)
		for i := range on {
			on[i] = holders[(i+s)%len(holders)]
		}
		stripes[s] = c.putStripe(fmt.Sprintf("bench-s%d", s), randomBytes(b, k*piece), k, m, on)
	}
	// The lost holders are the first `lost`: in stripe s they held pieces
	// (h-s) mod 6. Their pieces are deleted, as a dead disk would lose them.
	lostIdx := make([][]int, count)
	for s, st := range stripes {
		for h := range lost {
			i := ((h-s)%(k+m) + k + m) % (k + m)
			lostIdx[s] = append(lostIdx[s], i)
			c.remove(st, i)
		}
		slices.Sort(lostIdx[s])
	}
	mv := c.mover(mover.Config{ID: "bench"})
	workers := mover.DefaultConfig().Workers
	var done atomic.Int64
	var round chan struct{}
	var want atomic.Int64
	sub, err := c.env.NC.Subscribe(event.DonePrefix+">", func(*nats.Msg) {
		if done.Add(1) == want.Load() {
			close(round)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	rebuilt := int64(count * lost * piece)
	var rehomeTime, baseTime time.Duration
	b.SetBytes(rebuilt)
	b.ResetTimer()
	for n := range b.N {
		// Each op rebuilds every stripe's lost pieces under fresh ids,
		// onto the spares in turn.
		tasks := make([]*event.Task, count)
		for s, st := range stripes {
			targets := map[int]string{}
			for j, i := range lostIdx[s] {
				targets[i] = spares[(s+j)%len(spares)]
			}
			t := st.rebuildTask(fmt.Sprintf("task-%d-%d", n, s), targets, nil)
			for j := range t.Rebuild {
				id := fmt.Sprintf("bench-%d-s%d-p%d", n, s, t.Rebuild[j].Index)
				t.Rebuild[j].Shard = id
				t.Stripe[t.Rebuild[j].Index].Shard = id
			}
			t.Shard = t.Rebuild[0].Shard
			tasks[s] = t
		}
		// The baseline runs just before and just after rehome's round and
		// counts their mean: on a shared machine the disk's pace drifts,
		// and neither side should always get the quieter moment.
		b.StopTimer()
		before := inProcessRebuild(b, c, stripes, lostIdx, workers)
		b.StartTimer()
		round = make(chan struct{})
		want.Add(int64(count * lost))
		start := time.Now()
		for _, t := range tasks {
			c.publish(t)
		}
		select {
		case <-round:
		case <-time.After(10 * time.Minute):
			b.Fatalf("%d of %d pieces rebuilt after 10 minutes", done.Load(), want.Load())
		}
		rehomeTime += time.Since(start)
		b.StopTimer()
		baseTime += (before + inProcessRebuild(b, c, stripes, lostIdx, workers)) / 2
		b.StartTimer()
	}
	b.StopTimer()
	c.mu.Lock()
	failed := slices.Clone(c.failed)
	c.mu.Unlock()
	if len(failed) != 0 {
		b.Fatalf("%d rebuild attempts failed, first: %+v", len(failed), failed[0])
	}
	total := float64(b.N) * float64(rebuilt) / 1e6
	rehomeMBs, baseMBs := total/rehomeTime.Seconds(), total/baseTime.Seconds()
	rsMBs := reedsolomonRate(b, stripes[0], lostIdx[0])
	stepMBs := stepRate(b, stripes[0], lostIdx[0])
	reg := mv.Registry()
	read := metricstest.Value(b, reg, "rehome_mover_bytes_read_total")
	written := metricstest.Value(b, reg, "rehome_mover_bytes_copied_total")
	b.ReportMetric(rehomeMBs, "MB/s")
	b.ReportMetric(baseMBs, "inproc-MB/s")
	b.ReportMetric(rehomeMBs/baseMBs, "rehome/inproc")
	b.ReportMetric(rsMBs, "rs-MB/s")
	b.ReportMetric(stepMBs, "step-MB/s")
	b.ReportMetric(read/written, "read-B/rebuilt-B")
	b.Logf("%d stripes 4+2 of %d MiB pieces, %d lost each, rebuilt %d times: rehome %.1f MB/s (mover, %d workers), in-process rebuild from the same piece files %.1f MB/s at the same parallelism: %.2f; decode step %.0f MB/s vs reedsolomon %.0f MB/s (informative)",
		len(stripes), piece>>20, lost, b.N, rehomeMBs, workers, baseMBs, rehomeMBs/baseMBs, stepMBs, rsMBs)
}

// inProcessRebuild rebuilds the lost pieces of every stripe from the piece
// files the holders keep, par stripes at a time, into a scratch directory
// (read K, reconstruct, hash and check, write a temp file, fsync, rename,
// fsync the directory), and returns the time it took.
func inProcessRebuild(b *testing.B, c *cluster, stripes []*stripe, lostIdx [][]int, par int) time.Duration {
	b.Helper()
	out := b.TempDir()
	for d := range spareCount {
		if err := os.Mkdir(filepath.Join(out, strconv.Itoa(d)), 0o750); err != nil {
			b.Fatal(err)
		}
	}
	codec, err := erasure.New(stripes[0].k, stripes[0].m)
	if err != nil {
		b.Fatal(err)
	}
	// Buffers are reused across stripes, as the mover reuses its own.
	size := len(stripes[0].pieces[0])
	bufs := sync.Pool{New: func() any { b := make([]byte, size); return &b }}
	var g errgroup.Group
	g.SetLimit(par)
	start := time.Now()
	for s, st := range stripes {
		g.Go(func() error {
			pieces := make([][]byte, st.k+st.m)
			var held []*[]byte
			defer func() {
				for _, bp := range held {
					bufs.Put(bp)
				}
			}()
			buf := func() []byte {
				bp := bufs.Get().(*[]byte)
				held = append(held, bp)
				return *bp
			}
			want := make([]bool, st.k+st.m)
			for _, i := range lostIdx[s] {
				want[i] = true
			}
			read := 0
			for i := range pieces {
				if want[i] || read == st.k {
					continue
				}
				p := buf()
				if err := readPieceFile(filepath.Join(c.dirs[st.holders[i]], "shards", st.id(i)[:2], st.id(i)), p); err != nil {
					return err
				}
				pieces[i] = p
				read++
			}
			for _, i := range lostIdx[s] {
				pieces[i] = buf()[:0]
			}
			if err := codec.Reconstruct(pieces, want); err != nil {
				return err
			}
			for j, i := range lostIdx[s] {
				// One directory per spare node, as rehome spreads its writes.
				dir := filepath.Join(out, strconv.Itoa((s+j)%spareCount))
				if err := writeDurable(dir, fmt.Sprintf("%s-%d", st.id(i), time.Now().UnixNano()), pieces[i], shaHex(st.pieces[i])); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("in-process rebuild: %v", err)
	}
	return time.Since(start)
}

// readPieceFile reads the piece bytes of a shard file, as the store keeps
// it (a header, then the bytes), into buf (len: the piece's size).
func readPieceFile(path string, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.ReadAt(buf, disk.HeaderSize)
	if err == io.EOF {
		err = nil
	}
	return err
}

// writeDurable hashes data and checks it against sha, writes it to a temp
// file in dir, fsyncs it, renames it to name and fsyncs dir.
func writeDurable(dir, name string, data []byte, sha string) error {
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != sha {
		return fmt.Errorf("%s: rebuilt bytes do not match", name)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
