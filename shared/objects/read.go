package objects

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"

	"github.com/rehome/rehome/shared/erasure"
	"github.com/rehome/rehome/shared/model"
)

// span is one unit of an object's bytes as it is read back: a replicated
// chunk (one shard) or an erasure-coded stripe (its pieces).
type span struct {
	off, n int64
	refs   []model.ShardRef
}

// spans lays the manifest's shards out over the object's bytes, in order.
func spans(m model.Manifest) ([]span, *erasure.Codec, error) {
	if !m.Layout.Erasure() {
		out := make([]span, 0, len(m.Shards))
		var off int64
		for _, ref := range m.Shards {
			out = append(out, span{off: off, n: ref.Size, refs: []model.ShardRef{ref}})
			off += ref.Size
		}
		if off != m.Size {
			return nil, nil, fmt.Errorf("object %q: chunks add to %d bytes, manifest says %d", m.Key, off, m.Size)
		}
		return out, nil, nil
	}
	codec, err := erasure.New(m.Layout.K, m.Layout.M)
	if err != nil {
		return nil, nil, fmt.Errorf("object %q: %w", m.Key, err)
	}
	lengths := m.StripeBytes
	if len(lengths) == 0 {
		for _, n := range codec.Stripes(m.Size, int(m.ChunkSize)) {
			lengths = append(lengths, int64(n))
		}
	}
	out := make([]span, len(lengths))
	var off int64
	for i, n := range lengths {
		out[i] = span{off: off, n: n}
		off += n
	}
	if off != m.Size {
		return nil, nil, fmt.Errorf("object %q: stripes add to %d bytes, manifest says %d", m.Key, off, m.Size)
	}
	for _, ref := range m.Shards {
		if ref.Stripe < 0 || ref.Stripe >= len(out) || ref.Index < 0 || ref.Index >= m.Layout.K+m.Layout.M {
			return nil, nil, fmt.Errorf("object %q: manifest names piece %s outside the layout", m.Key, ref.ID)
		}
		out[ref.Stripe].refs = append(out[ref.Stripe].refs, ref)
	}
	return out, codec, nil
}

// Get writes the object's bytes to w in order, each chunk verified before it
// is written, trying every live replica of a chunk (or reconstructing a
// stripe from any K pieces) before giving up. The whole object's checksum is
// checked too where the manifest has one. It returns the manifest it read.
func (c *Client) Get(ctx context.Context, key string, w io.Writer) (model.Manifest, error) {
	m, err := c.Manifest(ctx, key)
	if err != nil {
		return m, err
	}
	whole := sha256.New()
	if err := c.Read(ctx, m, 0, m.Size, io.MultiWriter(w, whole)); err != nil {
		return m, err
	}
	if got := hex.EncodeToString(whole.Sum(nil)); m.SHA256 != "" && got != m.SHA256 {
		return m, fmt.Errorf("object %q: checksum %s, manifest says %s", key, got, m.SHA256)
	}
	return m, nil
}

// Read writes bytes [off, off+n) of the object m to w. Each chunk or stripe
// it touches is read whole and verified (its shards' checksums) before any
// of its bytes are written; up to Parallel units are fetched ahead. A range
// outside the object is an error. Read is safe for concurrent use.
func (c *Client) Read(ctx context.Context, m model.Manifest, off, n int64, w io.Writer) error {
	if off < 0 || n < 0 || off+n > m.Size {
		return fmt.Errorf("%w range: bytes %d+%d of a %d-byte object", model.ErrInvalid, off, n, m.Size)
	}
	all, codec, err := spans(m)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	first := sort.Search(len(all), func(i int) bool { return all[i].off+all[i].n > off })
	var todo []span
	for _, s := range all[first:] {
		if s.off >= off+n {
			break
		}
		todo = append(todo, s)
	}
	v, err := c.loadView(ctx)
	if err != nil {
		return err
	}
	fetch := func(ctx context.Context, s span) ([]byte, error) {
		if codec == nil {
			return c.readShard(ctx, v, s.refs[0])
		}
		pieces, err := c.readStripe(ctx, v, s.refs, m.Layout)
		if err != nil {
			return nil, fmt.Errorf("object %q stripe %d: %w", m.Key, s.refs[0].Stripe, err)
		}
		var buf bytes.Buffer
		buf.Grow(int(s.n))
		if err := codec.Join(&buf, pieces, int(s.n)); err != nil {
			return nil, fmt.Errorf("object %q stripe %d: %w", m.Key, s.refs[0].Stripe, err)
		}
		return buf.Bytes(), nil
	}
	ahead := max(1, c.Parallel)
	if codec != nil {
		ahead = max(1, c.Parallel/2) // a stripe is K chunks
	}
	return pipeline(ctx, todo, ahead, fetch, func(s span, data []byte) error {
		lo, hi := max(off, s.off)-s.off, min(off+n, s.off+s.n)-s.off
		if _, err := w.Write(data[lo:hi]); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	})
}

// Open returns a reader of bytes [off, off+n) of the object m, fed by Read
// on a goroutine: closing the reader early stops the read.
func (c *Client) Open(ctx context.Context, m model.Manifest, off, n int64) io.ReadCloser {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		defer cancel()
		pw.CloseWithError(c.Read(ctx, m, off, n, pw))
	}()
	return &cancelReader{PipeReader: pr, cancel: cancel}
}

type cancelReader struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (r *cancelReader) Close() error {
	r.cancel()
	return r.PipeReader.Close()
}

// pipeline fetches items with up to ahead fetches in flight and hands the
// results to emit in order. The first error stops it.
func pipeline[T any](ctx context.Context, items []T, ahead int, fetch func(context.Context, T) ([]byte, error), emit func(T, []byte) error) error {
	type result struct {
		data []byte
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]chan result, len(items))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	sem := make(chan struct{}, ahead)
	go func() {
		for i, it := range items {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func() {
				data, err := fetch(ctx, it)
				results[i] <- result{data, err}
			}()
		}
	}()
	for i, it := range items {
		var res result
		select {
		case res = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-sem
		if res.err != nil {
			return res.err
		}
		if err := emit(it, res.data); err != nil {
			return err
		}
	}
	return nil
}
