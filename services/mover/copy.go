package mover

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
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
	Pull(ctx context.Context, addr, id, source, sha string, size int64) (created bool, err error)
	Verify(ctx context.Context, addr, id string) (shardapi.Info, error)
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

// copy makes the task's target hold the shard, verified against its SHA256,
// by asking the target to pull it from a source (Client.Pull): the bytes go
// from the source's disk to the target's in one network crossing and are
// hashed once, by the target, before they count. It is idempotent: a target
// already holding the shard with that checksum answers success without a
// read. Sources are tried in order; a source failing (down, missing the
// shard, serving wrong bytes) moves on to the next, a target failing ends
// the attempt.
func (e executor) copy(ctx context.Context, t event.Task) (outcome, error) {
	dst, err := e.nodes.Addr(ctx, t.Target)
	if err != nil {
		return outcome{}, &targetError{node: t.Target, err: err}
	}
	failed := &sourcesError{}
	var read int64
	for _, src := range t.Sources {
		if src == t.Target {
			continue
		}
		srcAddr, err := e.nodes.Addr(ctx, src)
		if err != nil {
			failed.failures = append(failed.failures, sourceFailure{node: src, err: err})
			continue
		}
		created, err := e.shards.Pull(ctx, dst, t.Shard, srcAddr, t.SHA256, t.Bytes)
		switch {
		case err == nil && !created:
			return outcome{present: true, read: read}, nil
		case err == nil:
			read += t.Bytes
			return outcome{source: src, copied: t.Bytes, read: read}, nil
		case ctx.Err() != nil:
			return outcome{read: read}, fmt.Errorf("copy from %s: %w", src, ctx.Err())
		case errors.Is(err, shardapi.ErrSourceCorrupt):
			read += t.Bytes
			err = e.confirmCorrupt(ctx, srcAddr, t.Shard, t.SHA256, err)
		case errors.Is(err, shardapi.ErrSource):
		case errors.Is(err, shardapi.ErrConflict):
			return outcome{read: read}, &targetError{node: t.Target, err: fmt.Errorf("%w: %w", errConflict, err)}
		default:
			return outcome{read: read}, &targetError{node: t.Target, err: err}
		}
		failed.failures = append(failed.failures, sourceFailure{node: src, err: err})
	}
	return outcome{read: read}, failed
}

// confirmCorrupt asks the source at addr to verify shard id, which should
// hash to sha, after the bytes it sent failed that check downstream (cause).
// The source re-reads its copy and, if the damage is on its disk,
// quarantines and reports it (the planner then rebuilds or re-homes it). The
// result wraps errCorrupt (a permanent failure of that source) unless the
// source verifies a copy with that very checksum: then the bytes were
// damaged on the way and the failure is transient.
func (e executor) confirmCorrupt(ctx context.Context, addr, id, sha string, cause error) error {
	info, err := e.shards.Verify(ctx, addr, id)
	switch {
	case err != nil:
		return fmt.Errorf("%w: the bytes hash to another checksum: %w (the source's own check: %w)", errCorrupt, cause, err)
	case !strings.EqualFold(info.SHA256, sha):
		return fmt.Errorf("%w: the source holds sha256 %.12s, want %.12s: %w", errCorrupt, info.SHA256, sha, cause)
	}
	return fmt.Errorf("bytes damaged in transit (the source verified its copy): %w", cause)
}

// delete removes the task's shard from its target; an absent shard is success.
func (e executor) delete(ctx context.Context, t event.Task) error {
	dst, err := e.nodes.Addr(ctx, t.Target)
	if err != nil {
		return &targetError{node: t.Target, err: err}
	}
	if err := e.shards.Delete(ctx, dst, t.Shard); err != nil {
		return &targetError{node: t.Target, err: err}
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
