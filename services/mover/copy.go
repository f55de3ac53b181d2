package mover

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/shardapi"
)

// shardStore is the part of the storage protocol the mover uses
// (*shardapi.Client implements it).
type shardStore interface {
	Head(ctx context.Context, addr, id string) (shardapi.Info, error)
	Get(ctx context.Context, addr, id string) (io.ReadCloser, shardapi.Info, error)
	Put(ctx context.Context, addr, id, sha string, size int64, body io.Reader) error
	Delete(ctx context.Context, addr, id string) error
}

// addrBook resolves a node id to its shard API address at the time of the call.
type addrBook interface {
	Addr(ctx context.Context, node string) (string, error)
}

// outcome is what a successful task did.
type outcome struct {
	source  string // node the bytes came from ("" when nothing was copied)
	copied  int64  // bytes streamed to the target
	read    int64  // bytes read from sources, failed attempts included
	present bool   // the target already held the shard
}

// executor runs one task against the storage nodes. Its only state is shared
// bookkeeping (codecs, piece buffers, reads in flight per node), each safe for
// concurrent use, so an executor is safe for concurrent use.
type executor struct {
	shards shardStore
	nodes  addrBook
	codecs *codecs
	bufs   *buffers
	load   *readLoad
}

func newExecutor(shards shardStore, nodes addrBook) executor {
	return executor{shards: shards, nodes: nodes, codecs: newCodecs(), bufs: &buffers{}, load: newReadLoad()}
}

// copy makes the task's target hold the shard, verified against its SHA256.
// It is idempotent: a target already holding the shard with that checksum is
// success without a write. Sources are tried in order; a source failing (down,
// missing the shard, serving wrong bytes) moves on to the next, a target
// failing ends the attempt.
func (e executor) copy(ctx context.Context, t event.Task) (outcome, error) {
	dst, err := e.nodes.Addr(ctx, t.Target)
	if err != nil {
		return outcome{}, fmt.Errorf("target %s: %w", t.Target, err)
	}
	info, err := e.shards.Head(ctx, dst, t.Shard)
	switch {
	case err == nil && strings.EqualFold(info.SHA256, t.SHA256):
		return outcome{present: true}, nil
	case err == nil:
		return outcome{}, fmt.Errorf("target %s: %w (sha256 %.12s, want %.12s)", t.Target, errConflict, info.SHA256, t.SHA256)
	case !errors.Is(err, shardapi.ErrNotFound):
		return outcome{}, fmt.Errorf("target %s: %w", t.Target, err)
	}
	failed := &sourcesError{}
	var read int64
	for _, src := range t.Sources {
		if src == t.Target {
			continue
		}
		n, srcErr, dstErr := e.copyFrom(ctx, src, dst, t)
		read += n
		switch {
		case srcErr == nil && dstErr == nil:
			return outcome{source: src, copied: n, read: read}, nil
		case ctx.Err() != nil:
			return outcome{read: read}, fmt.Errorf("copy from %s: %w", src, ctx.Err())
		case srcErr == nil:
			return outcome{read: read}, fmt.Errorf("target %s: %w", t.Target, dstErr)
		}
		failed.failures = append(failed.failures, sourceFailure{node: src, err: srcErr})
	}
	return outcome{read: read}, failed
}

// copyFrom streams the shard from src into dst without buffering it, hashing
// what it reads. It returns the bytes read and says whose fault a failure was:
// srcErr when the source could not serve matching bytes (the upload is then
// cut short, so the target keeps nothing), dstErr when the target refused or
// could not be reached.
func (e executor) copyFrom(ctx context.Context, src, dst string, t event.Task) (n int64, srcErr, dstErr error) {
	srcAddr, err := e.nodes.Addr(ctx, src)
	if err != nil {
		return 0, err, nil
	}
	body, info, err := e.shards.Get(ctx, srcAddr, t.Shard)
	if err != nil {
		return 0, err, nil
	}
	defer body.Close()
	if info.SHA256 != "" && !strings.EqualFold(info.SHA256, t.SHA256) {
		return 0, fmt.Errorf("%w: source holds sha256 %.12s, want %.12s", errCorrupt, info.SHA256, t.SHA256), nil
	}
	if info.Size > 0 && info.Size != t.Bytes {
		return 0, fmt.Errorf("%w: source holds %d bytes, want %d", errCorrupt, info.Size, t.Bytes), nil
	}
	v := newVerifier(body, t.Bytes, t.SHA256)
	var upload io.Reader = v
	if t.Bytes == 0 {
		// An empty body must go out as NoBody to keep Content-Length: 0.
		if _, err := v.Read(nil); !errors.Is(err, io.EOF) {
			return 0, err, nil
		}
		upload = http.NoBody
	}
	err = e.shards.Put(ctx, dst, t.Shard, t.SHA256, t.Bytes, upload)
	if v.err != nil {
		return v.n, v.err, nil
	}
	if err != nil {
		return v.n, nil, err
	}
	return v.n, nil, nil
}

// delete removes the task's shard from its target; an absent shard is success.
func (e executor) delete(ctx context.Context, t event.Task) error {
	dst, err := e.nodes.Addr(ctx, t.Target)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Target, err)
	}
	if err := e.shards.Delete(ctx, dst, t.Shard); err != nil {
		return fmt.Errorf("target %s: %w", t.Target, err)
	}
	return nil
}

// verifier passes exactly size bytes of r through while hashing them. It
// checks the SHA-256 before handing out the last bytes, so on a mismatch the
// reader of the stream (the upload) never sees a complete body. A short or
// broken source and a mismatch are remembered in err and returned from every
// later Read. Not safe for concurrent use.
type verifier struct {
	r        io.Reader
	h        hash.Hash
	want     string
	size, n  int64
	verified bool
	err      error
}

func newVerifier(r io.Reader, size int64, sha string) *verifier {
	return &verifier{r: r, h: sha256.New(), want: strings.ToLower(sha), size: size}
}

// Read implements io.Reader.
func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.n == v.size {
		if !v.verified {
			if v.err = v.verify(); v.err != nil {
				return 0, v.err
			}
		}
		return 0, io.EOF
	}
	if rem := v.size - v.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n == v.size {
		if v.err = v.verify(); v.err != nil {
			return 0, v.err
		}
		return n, nil
	}
	switch {
	case errors.Is(err, io.EOF):
		v.err = fmt.Errorf("%w: source ended after %d of %d bytes", errCorrupt, v.n, v.size)
		return 0, v.err
	case err != nil:
		v.err = fmt.Errorf("read source after %d of %d bytes: %w", v.n, v.size, err)
		return 0, v.err
	}
	return n, nil
}

func (v *verifier) verify() error {
	v.verified = true
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
		return fmt.Errorf("%w: source bytes hash to %.12s, want %.12s", errCorrupt, got, v.want)
	}
	return nil
}
