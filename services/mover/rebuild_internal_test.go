package mover

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rehome/rehome/shared/event"
)

func TestReadOrder(t *testing.T) {
	held := func(nodes ...string) []event.Piece {
		out := make([]event.Piece, len(nodes))
		for i, n := range nodes {
			out[i] = event.Piece{Index: i, Node: n}
		}
		return out
	}
	idle := func(string) int { return 0 }
	cases := []struct {
		name    string
		stripe  []event.Piece
		sources []string
		busy    func(string) int
		want    []int
	}{
		{"index order without preferences", held("a", "b", "c", "d", "e", "f"), nil, idle, []int{0, 1, 2, 3, 4, 5}},
		{"missing pieces are never read", held("a", "", "c", "", "e", "f"), nil, idle, []int{0, 2, 4, 5}},
		{"named sources first, in their order", held("a", "b", "c", "d", "e", "f"), []string{"f", "c"}, idle, []int{5, 2, 0, 1, 3, 4}},
		{"sources not holding a piece are ignored", held("a", "b", "c"), []string{"zz", "c"}, idle, []int{2, 0, 1}},
		{"least busy before named", held("a", "b", "c", "d"), []string{"a", "b"},
			func(n string) int { return map[string]int{"a": 2, "b": 1}[n] }, []int{2, 3, 1, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := readOrder(c.stripe, c.sources, c.busy); !slices.Equal(got, c.want) {
				t.Fatalf("readOrder = %v, want %v", got, c.want)
			}
		})
	}
	// Property: a permutation of the held pieces, whatever the preferences.
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 200; trial++ {
		n := 2 + rng.IntN(20)
		stripe := make([]event.Piece, n)
		var want []int
		for i := range stripe {
			stripe[i].Index = i
			if rng.IntN(3) > 0 {
				stripe[i].Node = fmt.Sprintf("n%d", i)
				want = append(want, i)
			}
		}
		var sources []string
		for range rng.IntN(n) {
			sources = append(sources, fmt.Sprintf("n%d", rng.IntN(n+3)))
		}
		got := readOrder(stripe, sources, func(string) int { return rng.IntN(3) })
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("readOrder over %v picked %v, want each held piece once: %v", stripe, got, want)
		}
	}
}

func TestRebuildErrorNamesEveryPieceAndEachReasonOnce(t *testing.T) {
	unreadable := errors.New("stripe unreadable")
	e := &rebuildError{of: 3, failures: []pieceFailure{
		{piece: event.Piece{Shard: "s-p0", Node: "x"}, err: unreadable},
		{piece: event.Piece{Shard: "s-p4", Node: "y"}, err: unreadable},
		{piece: event.Piece{Shard: "s-p5", Node: "z"}, err: errConflict},
	}}
	want := "3 of 3 pieces not rebuilt; s-p0 on x, s-p4 on y: stripe unreadable; s-p5 on z: " + errConflict.Error()
	if got := e.Error(); got != want {
		t.Fatalf("Error() = %q\nwant      %q", got, want)
	}
	if e.first().Shard != "s-p0" || !errors.Is(e, errConflict) || !errors.Is(e, unreadable) {
		t.Fatal("first piece or wrapped errors wrong")
	}
	r := rebuilt{pieces: []pieceResult{{written: 5}, {present: true}, {err: unreadable}}}
	tk := event.Task{Rebuild: []event.Piece{{Shard: "a"}, {Shard: "b"}, {Shard: "c", Node: "n"}}}
	var rb *rebuildError
	if err := r.err(tk); !errors.As(err, &rb) || len(rb.failures) != 1 || rb.first().Shard != "c" || r.written() != 5 {
		t.Fatalf("err = %v, written %d: want piece c alone failed and 5 bytes written", err, r.written())
	}
	if err := (rebuilt{pieces: []pieceResult{{present: true}}}).err(tk); err != nil {
		t.Fatalf("all present: err = %v", err)
	}
}

func TestFencedReaderStopsAtTheFence(t *testing.T) {
	f := newFencedReader([]byte("hello world"))
	b := make([]byte, 5)
	if n, err := f.Read(b); n != 5 || err != nil || string(b) != "hello" {
		t.Fatalf("Read = %d %v %q", n, err, b)
	}
	f.fence()
	if n, err := f.Read(b); n != 0 || err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("Read after fence = %d, %v: want an error that is not EOF (the upload must not look complete)", n, err)
	}
}

func TestReadLoadCountsReadsInFlight(t *testing.T) {
	l := newReadLoad()
	var wg sync.WaitGroup
	dones := make(chan func(), 100)
	for range 100 {
		wg.Go(func() { dones <- l.start("a") })
	}
	wg.Wait()
	if got := l.busy("a"); got != 100 {
		t.Fatalf("busy = %d, want 100", got)
	}
	close(dones)
	for d := range dones {
		d()
	}
	if got := l.busy("a"); got != 0 || len(l.n) != 0 {
		t.Fatalf("busy = %d after every read ended (map %v)", got, l.n)
	}
}

func TestBuffersAreReusedAndSized(t *testing.T) {
	var b buffers
	for _, n := range []int{10, 1 << 20, 3, 0} {
		buf := b.get(n)
		if len(buf) != n {
			t.Fatalf("get(%d) has length %d", n, len(buf))
		}
		b.put(buf)
	}
	if c, err := newCodecs().get(4, 2); err != nil || c.K() != 4 || c.M() != 2 {
		t.Fatalf("codec 4+2: %v", err)
	}
	cs := newCodecs()
	a, _ := cs.get(4, 2)
	if again, _ := cs.get(4, 2); again != a {
		t.Fatal("codec not cached")
	}
	if _, err := cs.get(0, 2); err == nil || !strings.Contains(err.Error(), "k=0") {
		t.Fatalf("codec 0+2: %v", err)
	}
}
