// Package erasure cuts objects into Reed-Solomon stripes and puts them back
// together: each stripe of up to K×PieceSize bytes becomes K data pieces and M
// parity pieces of equal size, any K of which rebuild the rest. It is shared by
// the client (put, degraded get) and the movers (rebuild), so both agree on the
// layout byte for byte. A Codec is safe for concurrent use.
package erasure

import (
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/reedsolomon"
)

// Codec encodes and reconstructs stripes of one k+m layout.
type Codec struct {
	k, m int
	enc  reedsolomon.Encoder
}

// New returns a codec for k data and m parity pieces (k >= 1, m >= 1, k+m <= 255).
func New(k, m int) (*Codec, error) {
	if k < 1 || m < 1 || k+m > 255 {
		return nil, fmt.Errorf("erasure: k=%d m=%d: want k >= 1, m >= 1, k+m <= 255", k, m)
	}
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("erasure: %w", err)
	}
	return &Codec{k: k, m: m, enc: enc}, nil
}

// K and M report the layout.
func (c *Codec) K() int { return c.k }

// M reports the number of parity pieces.
func (c *Codec) M() int { return c.m }

// PieceSize is the size of every piece of a stripe holding n data bytes: n/k
// rounded up, and at least 1 so that an empty stripe still has pieces.
func (c *Codec) PieceSize(n int) int { return max(1, (n+c.k-1)/c.k) }

// Stripes returns the data length of each stripe of an object of size bytes
// when a stripe holds at most k×piece bytes (the last one may be shorter; an
// empty object has one empty stripe).
func (c *Codec) Stripes(size int64, piece int) []int {
	per := int64(c.k * piece)
	if size == 0 {
		return []int{0}
	}
	out := make([]int, 0, (size+per-1)/per)
	for off := int64(0); off < size; off += per {
		out = append(out, int(min(per, size-off)))
	}
	return out
}

// Encode splits one stripe's data into k data pieces (zero-padded) and
// computes m parity pieces. The pieces do not alias data.
func (c *Codec) Encode(data []byte) ([][]byte, error) {
	ps := c.PieceSize(len(data))
	buf := make([]byte, ps*(c.k+c.m))
	copy(buf, data)
	pieces := make([][]byte, c.k+c.m)
	for i := range pieces {
		pieces[i] = buf[i*ps : (i+1)*ps : (i+1)*ps]
	}
	if err := c.enc.Encode(pieces); err != nil {
		return nil, fmt.Errorf("erasure: encode: %w", err)
	}
	return pieces, nil
}

// ErrTooFewPieces means fewer than k pieces of a stripe survive.
var ErrTooFewPieces = errors.New("erasure: fewer than k pieces")

// Reconstruct fills in the nil entries of pieces (len k+m) for which want is
// true (all nil entries when want is nil) from any k present pieces, all of
// equal size. It rebuilds only what is asked for.
func (c *Codec) Reconstruct(pieces [][]byte, want []bool) error {
	if len(pieces) != c.k+c.m {
		return fmt.Errorf("erasure: %d pieces, want %d", len(pieces), c.k+c.m)
	}
	have := 0
	for _, p := range pieces {
		if p != nil {
			have++
		}
	}
	if have < c.k {
		return fmt.Errorf("%w: %d of %d present", ErrTooFewPieces, have, c.k)
	}
	var err error
	if want == nil {
		err = c.enc.Reconstruct(pieces)
	} else {
		err = c.enc.ReconstructSome(pieces, want)
	}
	if err != nil {
		return fmt.Errorf("erasure: reconstruct: %w", err)
	}
	return nil
}

// Join writes the first n data bytes of a stripe to w, rebuilding missing data
// pieces from parity first when needed.
func (c *Codec) Join(w io.Writer, pieces [][]byte, n int) error {
	missing := false
	for i := 0; i < c.k; i++ {
		if pieces[i] == nil {
			missing = true
		}
	}
	if missing {
		want := make([]bool, c.k+c.m)
		for i := 0; i < c.k; i++ {
			want[i] = pieces[i] == nil
		}
		if err := c.Reconstruct(pieces, want); err != nil {
			return err
		}
	}
	for i := 0; i < c.k && n > 0; i++ {
		chunk := pieces[i][:min(n, len(pieces[i]))]
		if _, err := w.Write(chunk); err != nil {
			return fmt.Errorf("erasure: write: %w", err)
		}
		n -= len(chunk)
	}
	if n > 0 {
		return fmt.Errorf("erasure: stripe pieces hold %d bytes too few", n)
	}
	return nil
}
