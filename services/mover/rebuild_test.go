package mover_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/erasure"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// stripe is one erasure-coded stripe written to storage nodes, piece i on
// holders[i].
type stripe struct {
	k, m    int
	name    string
	data    []byte
	pieces  [][]byte
	holders []string
}

func (s *stripe) id(i int) string { return fmt.Sprintf("%s-p%d", s.name, i) }

// putStripe encodes data as one k+m stripe and writes piece i to holders[i].
func (c *cluster) putStripe(name string, data []byte, k, m int, holders []string) *stripe {
	c.t.Helper()
	codec, err := erasure.New(k, m)
	if err != nil {
		c.t.Fatal(err)
	}
	pieces, err := codec.Encode(data)
	if err != nil {
		c.t.Fatal(err)
	}
	s := &stripe{k: k, m: m, name: name, data: data, pieces: pieces, holders: holders}
	for i, p := range pieces {
		c.put(holders[i], s.id(i), p)
	}
	return s
}

// remove deletes piece i from its holder, as a lost disk would.
func (c *cluster) remove(s *stripe, i int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.shards.Delete(ctx, c.nodes[s.holders[i]].Addr(), s.id(i)); err != nil {
		c.t.Fatal(err)
	}
}

// rot flips one byte of piece i in its holder's shard file, behind the
// storage node's back (a silent disk error). The file is found by name under
// the node's directory; the piece's bytes end the file.
func (c *cluster) rot(s *stripe, i int) {
	c.t.Helper()
	id := s.id(i)
	var path string
	err := filepath.WalkDir(c.dirs[s.holders[i]], func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == id {
			path = p
		}
		return err
	})
	if err != nil || path == "" {
		c.t.Fatalf("shard file of %s on %s not found: %v", id, s.holders[i], err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		c.t.Fatal(err)
	}
	off := st.Size() - int64(len(s.pieces[i])/2) - 1
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		c.t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		c.t.Fatal(err)
	}
}

// rebuildTask asks for the pieces of targets (index -> target node); the
// pieces in gone are not held by anyone any more (their holders are left out
// of the stripe list). Sources lists the holders the task names.
func (s *stripe) rebuildTask(id string, targets map[int]string, gone []int, sources ...string) *event.Task {
	t := &event.Task{Task: id, Incident: "inc-ec", Kind: event.KindRebuild, K: s.k, M: s.m, Sources: sources}
	for i, p := range s.pieces {
		piece := event.Piece{Shard: s.id(i), Index: i, Size: int64(len(p)), SHA256: shaHex(p)}
		if _, rebuild := targets[i]; !rebuild && !slices.Contains(gone, i) {
			piece.Node = s.holders[i]
		}
		t.Stripe = append(t.Stripe, piece)
	}
	idx := make([]int, 0, len(targets))
	for i := range targets {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		p := t.Stripe[i]
		p.Node = targets[i]
		t.Rebuild = append(t.Rebuild, p)
	}
	r := t.Rebuild[0]
	t.Shard, t.Target, t.Bytes, t.SHA256 = r.Shard, r.Node, r.Size, r.SHA256
	return t
}

// joinFrom reads piece i of s from nodes[i] (skipping "") and decodes the
// stripe's data, as a degraded read would.
func (c *cluster) joinFrom(s *stripe, nodes []string) []byte {
	c.t.Helper()
	codec, err := erasure.New(s.k, s.m)
	if err != nil {
		c.t.Fatal(err)
	}
	pieces := make([][]byte, s.k+s.m)
	for i, n := range nodes {
		if n != "" {
			pieces[i] = c.read(n, s.id(i))
		}
	}
	var buf bytes.Buffer
	if err := codec.Join(&buf, pieces, len(s.data)); err != nil {
		c.t.Fatal(err)
	}
	return buf.Bytes()
}

func (c *cluster) written(node string) float64 {
	return metricstest.Value(c.t, c.nodes[node].Registry(), "rehome_storage_bytes_written_total")
}

func nodeNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i+1)
	}
	return out
}

func TestRebuildPutsMissingPiecesBackByteIdentical(t *testing.T) {
	c := newCluster(t)
	holders := nodeNames("storage", 6)
	for _, n := range append(slices.Clone(holders), "spare-1", "spare-2") {
		c.storage(n)
	}
	m := c.mover(mover.Config{ID: "m1"})

	var wantRead, wantWritten float64
	tasks := 0
	for _, size := range []int{1, 4097, 5_000_003} {
		for _, lost := range [][]int{{1}, {0, 5}} {
			name := fmt.Sprintf("s%d-lost%d", size, len(lost))
			fail := func(format string, args ...any) { t.Helper(); t.Fatalf(name+": "+format, args...) }
			s := c.putStripe(name, randomBytes(t, size), 4, 2, holders)
			targets := map[int]string{}
			for j, i := range lost {
				c.remove(s, i)
				targets[i] = fmt.Sprintf("spare-%d", j+1)
			}
			task := s.rebuildTask("task-"+name, targets, nil)
			c.publish(task)
			bustest.Eventually(t, timeout, name+": one done event per piece", func() bool { return len(c.doneFor(task.Task)) == len(lost) })

			pieceSize := int64(len(s.pieces[0]))
			var readFrom []string
			for _, d := range c.doneFor(task.Task) {
				i := slices.IndexFunc(task.Rebuild, func(p event.Piece) bool { return p.Shard == d.Shard })
				if i < 0 || d.Target != task.Rebuild[i].Node || d.Kind != event.KindRebuild || d.Bytes != pieceSize || d.Incident != "inc-ec" {
					fail("done event %+v does not match a piece to rebuild (%+v)", d, task.Rebuild)
				}
				readFrom = strings.Split(d.Source, ",")
			}
			// K distinct holders read, none of them a lost piece's.
			if slices.Sort(readFrom); len(slices.Compact(readFrom)) != 4 {
				fail("source %v: want 4 distinct holders", readFrom)
			}
			for _, i := range lost {
				if slices.Contains(readFrom, holders[i]) {
					fail("read from %s, whose piece was lost", holders[i])
				}
				if got := c.read(targets[i], s.id(i)); !bytes.Equal(got, s.pieces[i]) {
					fail("%s holds %d bytes for piece %d, want the %d original bytes", targets[i], len(got), i, len(s.pieces[i]))
				}
			}
			if f := c.failedFor(task.Task); len(f) != 0 {
				fail("failed events for a rebuild that worked: %+v", f)
			}
			// The object reads back through the rebuilt pieces, decoding
			// from parity too.
			nodes := slices.Clone(holders)
			for i, n := range targets {
				nodes[i] = n
			}
			for _, drop := range [][2]int{{0, 1}, {2, 3}} {
				n := slices.Clone(nodes)
				n[drop[0]], n[drop[1]] = "", ""
				if got := c.joinFrom(s, n); !bytes.Equal(got, s.data) {
					fail("object read back without pieces %v differs from what was written", drop)
				}
			}
			wantRead += float64(4 * pieceSize)
			wantWritten += float64(int64(len(lost)) * pieceSize)
			tasks++
		}
	}
	c.waitQueueEmpty()
	reg := m.Registry()
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "rebuild", "result", "done"); got != float64(tasks) {
		t.Fatalf("rebuild tasks done = %v, want %d", got, tasks)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_bytes_read_total"); got != wantRead {
		t.Fatalf("bytes read = %v, want %v (K pieces per stripe)", got, wantRead)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_bytes_copied_total"); got != wantWritten {
		t.Fatalf("bytes written = %v, want %v (the rebuilt pieces)", got, wantWritten)
	}
}

func TestRebuildSkipsCorruptPiecesAndReadsAnother(t *testing.T) {
	c := newCluster(t)
	holders := nodeNames("storage", 6)
	for _, n := range append(slices.Clone(holders), "spare-1") {
		c.storage(n)
	}
	c.mover(mover.Config{ID: "m1"})

	// Stripe a: piece 1 lost, piece 2 rotted on disk (the holder cuts the
	// transfer). Stripe b: piece 4 lost, piece 0's holder keeps other bytes
	// under its id. The bad holders are listed first, so they are tried.
	a := c.putStripe("a", randomBytes(t, 1<<20+5), 4, 2, holders)
	c.remove(a, 1)
	c.rot(a, 2)
	b := c.putStripe("b", randomBytes(t, 300_001), 4, 2, holders)
	c.remove(b, 4)
	c.remove(b, 0)
	c.put(holders[0], b.id(0), randomBytes(t, len(b.pieces[0])))

	for _, tc := range []struct {
		s         *stripe
		lost, bad int
	}{{a, 1, 2}, {b, 4, 0}} {
		task := tc.s.rebuildTask("task-"+tc.s.name, map[int]string{tc.lost: "spare-1"}, nil, tc.s.holders[tc.bad])
		c.publish(task)
		bustest.Eventually(t, timeout, "rebuild of "+tc.s.name+" done", func() bool { return len(c.doneFor(task.Task)) == 1 })
		d := c.doneFor(task.Task)[0]
		srcs := strings.Split(d.Source, ",")
		if len(srcs) != 4 || slices.Contains(srcs, tc.s.holders[tc.bad]) {
			t.Fatalf("stripe %s rebuilt from %v: want the 4 good holders, not %s", tc.s.name, srcs, tc.s.holders[tc.bad])
		}
		if got := c.read("spare-1", tc.s.id(tc.lost)); !bytes.Equal(got, tc.s.pieces[tc.lost]) {
			t.Fatalf("stripe %s: spare-1 holds %d bytes, want the original piece", tc.s.name, len(got))
		}
		if f := c.failedFor(task.Task); len(f) != 0 {
			t.Fatalf("failed events %+v", f)
		}
	}
	// The rotted piece was found out and quarantined on its holder (it is
	// rebuilt from there like any lost piece); the other bytes under b's id
	// are intact, merely not the piece.
	if got := c.read(holders[2], a.id(2)); got != nil {
		t.Fatalf("%s still serves the rotted piece (%d bytes)", holders[2], len(got))
	}
	if got := c.read(holders[0], b.id(0)); got == nil {
		t.Fatalf("%s lost the consistent shard it held", holders[0])
	}
	c.waitQueueEmpty()
}

func TestRebuildWithFewerThanKReadablePiecesFailsAndWritesNothing(t *testing.T) {
	c := newCluster(t)
	holders := nodeNames("storage", 6)
	for _, n := range append(slices.Clone(holders), "spare-1", "spare-2") {
		c.storage(n)
	}
	dead := c.watchDead()
	m := c.mover(mover.Config{ID: "m1", MaxDeliver: 3})

	// Two pieces lost, and a third holder lost its piece too since the plan
	// (a 404 may heal: retried until MaxDeliver).
	s := c.putStripe("gone", randomBytes(t, 2<<20+1), 4, 2, holders)
	c.remove(s, 0)
	c.remove(s, 3)
	c.remove(s, 5)
	task := s.rebuildTask("task-gone", map[int]string{0: "spare-1", 3: "spare-2"}, nil)
	c.publish(task)
	bustest.Eventually(t, timeout, "three failed attempts", func() bool { return len(c.failedFor(task.Task)) == 3 })
	for i, f := range c.failedFor(task.Task) {
		if f.Attempt != i+1 || f.Final != (i == 2) || f.Shard != s.id(0) || f.Target != "spare-1" || f.Kind != event.KindRebuild ||
			!strings.Contains(f.Error, "3 of the 4 pieces") {
			t.Fatalf("failed event %d = %+v, want attempt %d naming piece 0 on spare-1, final only on the last", i, f, i+1)
		}
	}
	c.waitQueueEmpty()
	bustest.Eventually(t, timeout, "dead letter", func() bool { return dead.count() == 1 })

	// Two lost and a third corrupt: no retry can help, given up at once.
	r := c.putStripe("rotten", randomBytes(t, 100_000), 4, 2, holders)
	c.remove(r, 1)
	c.remove(r, 2)
	c.remove(r, 3)
	c.put(holders[3], r.id(3), randomBytes(t, len(r.pieces[3])))
	task2 := r.rebuildTask("task-rotten", map[int]string{1: "spare-1", 2: "spare-2"}, nil)
	c.publish(task2)
	bustest.Eventually(t, timeout, "final failure", func() bool { return len(c.failedFor(task2.Task)) == 1 })
	if f := c.failedFor(task2.Task)[0]; !f.Final || f.Attempt != 1 {
		t.Fatalf("failed event = %+v, want final at the first attempt", f)
	}
	c.waitQueueEmpty()

	for _, n := range []string{"spare-1", "spare-2"} {
		if got := c.written(n); got != 0 {
			t.Fatalf("%s wrote %v bytes for stripes that cannot be rebuilt", n, got)
		}
	}
	if len(c.doneFor(task.Task))+len(c.doneFor(task2.Task)) != 0 {
		t.Fatal("done events for rebuilds that failed")
	}
	reg := m.Registry()
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "rebuild", "result", "retry"); got != 2 {
		t.Fatalf("retry metric = %v, want 2", got)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "rebuild", "result", "failed"); got != 2 {
		t.Fatalf("failed metric = %v, want 2", got)
	}
}

func TestRebuildRedeliveredWritesNothingTwice(t *testing.T) {
	c := newCluster(t)
	holders := nodeNames("storage", 6)
	for _, n := range append(slices.Clone(holders), "spare-1", "spare-2") {
		c.storage(n)
	}
	m := c.mover(mover.Config{ID: "m1"})
	s := c.putStripe("again", randomBytes(t, 1<<20), 4, 2, holders)
	c.remove(s, 2)
	c.remove(s, 4)
	task := s.rebuildTask("task-again", map[int]string{2: "spare-1", 4: "spare-2"}, nil)

	c.publish(task)
	bustest.Eventually(t, timeout, "first pass", func() bool { return len(c.doneFor(task.Task)) == 2 })
	written := c.written("spare-1") + c.written("spare-2")
	if want := float64(2 * len(s.pieces[0])); written != want {
		t.Fatalf("targets wrote %v bytes, want %v", written, want)
	}
	read := metricstest.Value(t, m.Registry(), "rehome_mover_bytes_read_total")

	c.publish(task) // as after a lost ack
	bustest.Eventually(t, timeout, "second pass", func() bool { return len(c.doneFor(task.Task)) == 4 })
	for _, d := range c.doneFor(task.Task)[2:] {
		if d.Source != "" || d.Bytes != int64(len(s.pieces[0])) {
			t.Fatalf("second done = %+v, want no source (nothing read) and the piece's bytes", d)
		}
	}
	c.waitQueueEmpty()
	if got := c.written("spare-1") + c.written("spare-2"); got != written {
		t.Fatalf("targets wrote again: %v bytes, want still %v", got, written)
	}
	reg := m.Registry()
	if got := metricstest.Value(t, reg, "rehome_mover_bytes_read_total"); got != read {
		t.Fatalf("bytes read went from %v to %v on a redelivery", read, got)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "rebuild", "result", "already_present"); got != 1 {
		t.Fatalf("already_present = %v, want 1", got)
	}
	for _, i := range []int{2, 4} {
		if got := c.read(task.Rebuild[slices.IndexFunc(task.Rebuild, func(p event.Piece) bool { return p.Index == i })].Node, s.id(i)); !bytes.Equal(got, s.pieces[i]) {
			t.Fatalf("piece %d lost on the second pass", i)
		}
	}
}

func TestRebuildReportsPiecesDoneAndRetriesTheRest(t *testing.T) {
	c := newCluster(t)
	holders := nodeNames("storage", 6)
	for _, n := range append(slices.Clone(holders), "spare-1") {
		c.storage(n)
	}
	c.register("spare-gone", deadAddr(t))
	c.mover(mover.Config{ID: "m1", MaxDeliver: 2})
	s := c.putStripe("half", randomBytes(t, 777_777), 4, 2, holders)
	c.remove(s, 1)
	c.remove(s, 3)
	task := s.rebuildTask("task-half", map[int]string{1: "spare-1", 3: "spare-gone"}, nil)
	c.publish(task)

	bustest.Eventually(t, timeout, "two failed attempts", func() bool { return len(c.failedFor(task.Task)) == 2 })
	for i, f := range c.failedFor(task.Task) {
		if f.Shard != s.id(3) || f.Target != "spare-gone" || f.Final != (i == 1) {
			t.Fatalf("failed event %d = %+v, want piece 3 on spare-gone, final only on the last", i, f)
		}
	}
	c.waitQueueEmpty()
	done := c.doneFor(task.Task)
	if len(done) != 2 {
		t.Fatalf("%d done events, want one per attempt for the piece that made it", len(done))
	}
	if d := done[0]; d.Shard != s.id(1) || d.Target != "spare-1" || len(strings.Split(d.Source, ",")) != 4 {
		t.Fatalf("done = %+v, want piece 1 on spare-1 read from 4 holders", d)
	}
	if got := c.read("spare-1", s.id(1)); !bytes.Equal(got, s.pieces[1]) {
		t.Fatal("spare-1 does not hold piece 1")
	}
	if got := c.written("spare-1"); got != float64(len(s.pieces[1])) {
		t.Fatalf("spare-1 wrote %v bytes, want one piece", got)
	}
}

// The mover reads at most the pieces it needs: with every holder healthy a
// rebuild reads exactly K pieces even when more are listed.
func TestRebuildReadsKPiecesFromNamedSourcesFirst(t *testing.T) {
	c := newCluster(t)
	holders := nodeNames("storage", 6)
	for _, n := range append(slices.Clone(holders), "spare-1") {
		c.storage(n)
	}
	c.mover(mover.Config{ID: "m1"})
	s := c.putStripe("pick", randomBytes(t, 40_000), 4, 2, holders)
	c.remove(s, 0)
	task := s.rebuildTask("task-pick", map[int]string{0: "spare-1"}, nil, holders[5], holders[4], holders[3], holders[2])
	c.publish(task)
	bustest.Eventually(t, timeout, "done", func() bool { return len(c.doneFor(task.Task)) == 1 })
	got := strings.Split(c.doneFor(task.Task)[0].Source, ",")
	slices.Sort(got)
	if want := []string{holders[2], holders[3], holders[4], holders[5]}; !slices.Equal(got, want) {
		t.Fatalf("read from %v, want the named sources %v", got, want)
	}
	if !bytes.Equal(c.read("spare-1", s.id(0)), s.pieces[0]) {
		t.Fatal("spare-1 does not hold piece 0")
	}
}
