package mover

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readers wraps a source the ways a network body may deliver it.
var readers = map[string]func(io.Reader) io.Reader{
	"whole":    func(r io.Reader) io.Reader { return r },
	"one byte": iotest.OneByteReader,
	"halves":   iotest.HalfReader,
	"data+EOF": iotest.DataErrReader,
}

func TestVerifierPassesMatchingBytesExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 7, 4096, 100_003} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		for name, wrap := range readers {
			// A longer source must not leak bytes past size.
			src := wrap(bytes.NewReader(append(append([]byte{}, data...), "trailing"...)))
			v := newVerifier(src, int64(size), shaHex(data))
			got, err := io.ReadAll(v)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("size %d %s: got %d bytes, err %v; want the %d bytes intact", size, name, len(got), err, size)
			}
			if v.n != int64(size) || !v.verified {
				t.Fatalf("size %d %s: n=%d verified=%v", size, name, v.n, v.verified)
			}
		}
	}
}

func TestVerifierWithholdsTheEndOfWrongBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 50; trial++ {
		size := 1 + rng.IntN(50_000)
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		want := shaHex(data)
		bad := append([]byte{}, data...)
		bad[rng.IntN(size)] ^= 1 << rng.IntN(8)
		for name, wrap := range readers {
			v := newVerifier(wrap(bytes.NewReader(bad)), int64(size), want)
			got, err := io.ReadAll(v)
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("size %d %s: err %v, want errCorrupt", size, name, err)
			}
			// The reader downstream (the upload) never sees a full body.
			if len(got) >= size {
				t.Fatalf("size %d %s: %d bytes passed on despite the mismatch", size, name, len(got))
			}
			if _, err := v.Read(make([]byte, 10)); !errors.Is(err, errCorrupt) {
				t.Fatalf("later Read: %v, want the same error", err)
			}
		}
	}
}

func TestVerifierFailsShortAndBrokenSources(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 1000)
	v := newVerifier(bytes.NewReader(data[:600]), 1000, shaHex(data))
	got, err := io.ReadAll(v)
	if !errors.Is(err, errCorrupt) || len(got) >= 1000 {
		t.Fatalf("short source: %d bytes, err %v", len(got), err)
	}
	boom := errors.New("connection reset")
	v = newVerifier(io.MultiReader(bytes.NewReader(data[:300]), iotest.ErrReader(boom)), 1000, shaHex(data))
	got, err = io.ReadAll(v)
	if !errors.Is(err, boom) || errors.Is(err, errCorrupt) || len(got) >= 1000 {
		t.Fatalf("broken source: %d bytes, err %v (want the read error, not corruption)", len(got), err)
	}
}
