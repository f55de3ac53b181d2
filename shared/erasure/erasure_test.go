package erasure_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/rehome/rehome/shared/erasure"
)

// TestRoundTripWithAnyMissingSet is the property: for random sizes (including
// 0, 1, k-1 and odd tails) and every layout tried, an object split into
// stripes, encoded, with up to m pieces of each stripe dropped at random, joins
// back to the same bytes; with more than m dropped it says so.
func TestRoundTripWithAnyMissingSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	layouts := [][2]int{{4, 2}, {1, 1}, {2, 1}, {6, 3}, {10, 4}}
	sizes := []int{0, 1, 3, 4097, 65536, 100003}
	for i := 0; i < 40; i++ {
		sizes = append(sizes, rng.IntN(300_000))
	}
	for _, l := range layouts {
		c, err := erasure.New(l[0], l[1])
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range append(sizes, l[0]-1) {
			data := make([]byte, size)
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			piece := 1 + rng.IntN(20_000)
			var out bytes.Buffer
			off := 0
			for _, n := range c.Stripes(int64(size), piece) {
				pieces, err := c.Encode(data[off : off+n])
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range pieces {
					if len(p) != c.PieceSize(n) {
						t.Fatalf("%v size %d: piece of %d bytes, want %d", l, size, len(p), c.PieceSize(n))
					}
				}
				drop := rng.IntN(l[1] + 1)
				for _, idx := range rng.Perm(len(pieces))[:drop] {
					pieces[idx] = nil
				}
				if err := c.Join(&out, pieces, n); err != nil {
					t.Fatalf("%v size %d dropping %d: %v", l, size, drop, err)
				}
				off += n
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("%v size %d: bytes differ after join", l, size)
			}
		}
	}
}

func TestReconstructSomeRebuildsOnlyWhatIsAsked(t *testing.T) {
	c, _ := erasure.New(4, 2)
	pieces, err := c.Encode(bytes.Repeat([]byte("rehome"), 1000))
	if err != nil {
		t.Fatal(err)
	}
	orig := make([][]byte, len(pieces))
	for i := range pieces {
		orig[i] = bytes.Clone(pieces[i])
	}
	pieces[1], pieces[5] = nil, nil
	want := []bool{false, false, false, false, false, true}
	if err := c.Reconstruct(pieces, want); err != nil {
		t.Fatal(err)
	}
	if pieces[1] != nil {
		t.Fatal("rebuilt a piece that was not asked for")
	}
	if !bytes.Equal(pieces[5], orig[5]) {
		t.Fatal("rebuilt parity differs")
	}
	pieces[0], pieces[2] = nil, nil
	if err := c.Reconstruct(pieces, nil); !errors.Is(err, erasure.ErrTooFewPieces) {
		t.Fatalf("3 of 6 pieces: want ErrTooFewPieces, got %v", err)
	}
}

func TestLayoutBounds(t *testing.T) {
	for _, l := range [][2]int{{0, 1}, {1, 0}, {200, 56}, {-1, 2}} {
		if _, err := erasure.New(l[0], l[1]); err == nil {
			t.Errorf("%v accepted", l)
		}
	}
}
