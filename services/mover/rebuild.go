package mover

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/rehome/rehome/shared/erasure"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/shardapi"
)

// rebuilt is what one attempt at a rebuild task did, piece by piece.
type rebuilt struct {
	sources []string      // holders whose pieces were read and verified, in the order they arrived
	read    int64         // bytes read from holders, failed and corrupt reads included
	pieces  []pieceResult // one per piece of Task.Rebuild, in its order
}

// pieceResult is the fate of one piece to rebuild.
type pieceResult struct {
	written int64 // bytes sent to the target that verified and kept them
	present bool  // the target already held the piece with its checksum: nothing written
	err     error // nil when the target now holds the piece, verified
}

// written sums the bytes written to targets.
func (r rebuilt) written() int64 {
	var n int64
	for _, p := range r.pieces {
		n += p.written
	}
	return n
}

// err returns nil when every piece is on its target, else a *rebuildError
// listing the pieces that are not, in task order.
func (r rebuilt) err(t event.Task) error {
	var failed []pieceFailure
	for i, p := range r.pieces {
		if p.err != nil {
			failed = append(failed, pieceFailure{piece: t.Rebuild[i], err: p.err})
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &rebuildError{failures: failed, of: len(r.pieces)}
}

// pieceFailure is why one piece could not be put on its target.
type pieceFailure struct {
	piece event.Piece
	err   error
}

// rebuildError reports the pieces of a rebuild task that are not on their
// targets. Classify deems it transient when any piece's failure is.
type rebuildError struct {
	failures []pieceFailure
	of       int
}

func (e *rebuildError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d pieces not rebuilt", len(e.failures), e.of)
	// Pieces that failed for one reason (e.g. the stripe could not be read)
	// are listed together, the reason once.
	for i := 0; i < len(e.failures); {
		msg := e.failures[i].err.Error()
		j := i
		var names []string
		for ; j < len(e.failures) && e.failures[j].err.Error() == msg; j++ {
			names = append(names, e.failures[j].piece.Shard+" on "+e.failures[j].piece.Node)
		}
		fmt.Fprintf(&b, "; %s: %s", strings.Join(names, ", "), msg)
		i = j
	}
	return b.String()
}

// Unwrap exposes every piece's error to errors.Is and errors.As.
func (e *rebuildError) Unwrap() []error {
	errs := make([]error, len(e.failures))
	for i, f := range e.failures {
		errs[i] = f.err
	}
	return errs
}

// first is the first piece that failed: the one a Failed event names.
func (e *rebuildError) first() event.Piece { return e.failures[0].piece }

// stripeError reports that fewer than K pieces of a stripe could be read and
// verified. It unwraps to a *sourcesError, so Classify deems it permanent
// only when every holder tried served wrong bytes (or there was none to try).
type stripeError struct {
	got, need int
	sources   *sourcesError
}

func (e *stripeError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: read %d of the %d pieces needed", erasure.ErrTooFewPieces, e.got, e.need)
	for _, f := range e.sources.failures {
		fmt.Fprintf(&b, "; %s: %s", f.node, f.err)
	}
	return b.String()
}

// Unwrap exposes the holders' failures and erasure.ErrTooFewPieces.
func (e *stripeError) Unwrap() []error { return []error{erasure.ErrTooFewPieces, e.sources} }

// checkStripe rejects a rebuild task (already valid per event.Task.Validate)
// whose pieces cannot be one stripe: pieces of different sizes, a piece to
// rebuild that disagrees with its stripe entry, or an index asked for twice.
// Errors wrap event.ErrMalformed. It is a pure function.
func checkStripe(t event.Task) error {
	size := t.Stripe[0].Size
	for _, p := range t.Stripe {
		if p.Size != size {
			return fmt.Errorf("%w: stripe pieces of %d and %d bytes", event.ErrMalformed, size, p.Size)
		}
	}
	seen := make([]bool, len(t.Stripe))
	for _, p := range t.Rebuild {
		s := t.Stripe[p.Index]
		if s.Shard != p.Shard || s.Size != p.Size || !strings.EqualFold(s.SHA256, p.SHA256) {
			return fmt.Errorf("%w: piece %s to rebuild disagrees with stripe piece %d (%s)", event.ErrMalformed, p.Shard, p.Index, s.Shard)
		}
		if seen[p.Index] {
			return fmt.Errorf("%w: piece %d to rebuild twice", event.ErrMalformed, p.Index)
		}
		seen[p.Index] = true
	}
	return nil
}

// readOrder returns the stripe indices of the held pieces in the order a
// rebuild tries to read them: holders with the fewest reads in flight (busy)
// first, then those listed in sources in their order, then the other holders
// by index. It is a pure function of its arguments.
func readOrder(stripe []event.Piece, sources []string, busy func(node string) int) []int {
	rank := func(node string) int {
		if i := slices.Index(sources, node); i >= 0 {
			return i
		}
		return len(sources)
	}
	var order []int
	for i, p := range stripe {
		if p.Node != "" {
			order = append(order, i)
		}
	}
	load := make(map[string]int, len(order))
	for _, i := range order {
		load[stripe[i].Node] = busy(stripe[i].Node)
	}
	slices.SortStableFunc(order, func(a, b int) int {
		na, nb := stripe[a].Node, stripe[b].Node
		return cmp.Or(cmp.Compare(load[na], load[nb]), cmp.Compare(rank(na), rank(nb)))
	})
	return order
}

// readLoad counts the piece reads this mover has in flight per node, so that
// rebuilds spread their reads over the least busy holders. It is safe for
// concurrent use.
type readLoad struct {
	mu sync.Mutex
	n  map[string]int
}

func newReadLoad() *readLoad { return &readLoad{n: map[string]int{}} }

// busy returns the reads in flight from node.
func (l *readLoad) busy(node string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[node]
}

// start counts one read from node until the returned function is called.
func (l *readLoad) start(node string) (done func()) {
	l.mu.Lock()
	l.n[node]++
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.n[node]--; l.n[node] <= 0 {
			delete(l.n, node)
		}
	}
}

// codecs caches one erasure codec per k+m layout (a codec also caches its
// decode matrices). It is safe for concurrent use.
type codecs struct {
	mu sync.Mutex
	m  map[[2]int]*erasure.Codec
}

func newCodecs() *codecs { return &codecs{m: map[[2]int]*erasure.Codec{}} }

// get returns the codec of the k+m layout, making it on first use.
func (c *codecs) get(k, m int) (*erasure.Codec, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cd, ok := c.m[[2]int{k, m}]; ok {
		return cd, nil
	}
	cd, err := erasure.New(k, m)
	if err != nil {
		return nil, err
	}
	c.m[[2]int{k, m}] = cd
	return cd, nil
}

// buffers recycles piece buffers from one rebuild to the next. It is safe for
// concurrent use.
type buffers struct{ pool sync.Pool }

// get returns a buffer of length n (contents undefined).
func (b *buffers) get(n int) []byte {
	if p, ok := b.pool.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

// put hands a buffer back; nobody may use it afterwards.
func (b *buffers) put(buf []byte) {
	if cap(buf) > 0 {
		b.pool.Put(&buf)
	}
}

// fencedReader serves a buffer to an upload until fence is called; from then
// on it serves nothing, so the buffer can be reused even though the HTTP
// client may go on reading a request body after it has its answer.
type fencedReader struct {
	mu     sync.Mutex
	r      bytes.Reader
	fenced bool
}

func newFencedReader(b []byte) *fencedReader {
	f := &fencedReader{}
	f.r.Reset(b)
	return f
}

// Read implements io.Reader.
func (f *fencedReader) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fenced {
		return 0, errors.New("upload body already released")
	}
	return f.r.Read(p)
}

// fence stops every later Read; it returns once no Read is running.
func (f *fencedReader) fence() {
	f.mu.Lock()
	f.fenced = true
	f.mu.Unlock()
}

// rebuild makes every piece of t.Rebuild present on its target, verified.
// It reads K pieces of the stripe from their holders in parallel (least busy
// first; a holder that fails is replaced by another while enough remain),
// reconstructs only the pieces that are missing from their targets, and
// uploads them in parallel, each target verifying the checksum before it
// keeps anything. The pieces read are not hashed on the way: a corrupt one
// makes the reconstructed pieces wrong (every input byte weighs on every
// output byte of an MDS code), which their targets refuse; then the pieces
// read are hashed, each holder of a bad one is asked to verify its copy
// (confirmCorrupt: it quarantines and reports the damage), and the stripe is
// rebuilt once more, verifying every piece as it is read and replacing bad
// ones. It is idempotent: a target already holding its piece with that
// checksum counts as done without a write. The result says, piece by piece,
// what happened; the error is nil when every piece is on its target, else a
// *rebuildError. t must have passed decodeTask. Safe for concurrent use.
func (e executor) rebuild(ctx context.Context, t event.Task) (rebuilt, error) {
	out, suspect := e.rebuildPass(ctx, t, false)
	if suspect {
		read := out.read
		out, _ = e.rebuildPass(ctx, t, true)
		out.read += read
	}
	return out, out.err(t)
}

// rebuildPass is one attempt of rebuild, hashing the pieces it reads as they
// arrive when verify is set. Without verify, suspect reports that a target
// refused a reconstructed piece's checksum: the inputs were hashed and their
// bad holders told (blame), and the pass must be run again with verify.
func (e executor) rebuildPass(ctx context.Context, t event.Task, verify bool) (out rebuilt, suspect bool) {
	out = rebuilt{pieces: make([]pieceResult, len(t.Rebuild))}
	addrs := e.probeTargets(ctx, t.Rebuild, out.pieces)
	var todo []int
	for i, p := range out.pieces {
		if p.err == nil && !p.present {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return out, false
	}
	failAll := func(err error) (rebuilt, bool) {
		for _, i := range todo {
			out.pieces[i].err = err
		}
		return out, false
	}
	codec, err := e.codecs.get(t.K, t.M)
	if err != nil {
		return failAll(fmt.Errorf("%w: %w", event.ErrMalformed, err))
	}
	size := int(t.Stripe[0].Size)
	pieces := make([][]byte, t.K+t.M)
	var inputs []int // indices of the pieces read
	defer func() {
		for _, p := range pieces {
			e.bufs.put(p)
		}
	}()
	if size > 0 { // reedsolomon needs bytes; empty pieces are rebuilt as empty
		var srcs []string
		out.read, srcs, err = e.gather(ctx, t, pieces, verify)
		out.sources = srcs
		if err != nil {
			return failAll(err)
		}
		for i, p := range pieces {
			if p != nil {
				inputs = append(inputs, i)
			}
		}
		want := make([]bool, t.K+t.M)
		for _, i := range todo {
			if idx := t.Rebuild[i].Index; pieces[idx] == nil {
				// An empty slice with room: reedsolomon writes the piece into it.
				pieces[idx] = e.bufs.get(size)[:0]
				want[idx] = true
			}
		}
		if err := codec.Reconstruct(pieces, want); err != nil {
			return failAll(err)
		}
	}
	var wg sync.WaitGroup
	for _, i := range todo {
		p := t.Rebuild[i]
		wg.Go(func() {
			var data []byte
			if size > 0 {
				data = pieces[p.Index][:size]
			}
			if err := e.upload(ctx, addrs[i], p, data); err != nil {
				out.pieces[i].err = &targetError{node: p.Node, err: err}
				return
			}
			out.pieces[i].written = p.Size
		})
	}
	wg.Wait()
	if verify {
		return out, false
	}
	for _, i := range todo {
		if errors.Is(out.pieces[i].err, shardapi.ErrChecksum) {
			e.blame(ctx, t, pieces, inputs)
			return out, true
		}
	}
	return out, false
}

// blame hashes the pieces read (indices inputs of pieces) and has the holder
// of each one that does not match its checksum verify its copy (see
// confirmCorrupt), so that damage on its disk is quarantined and reported
// and the next pass reads that piece from elsewhere. Holders that cannot be
// reached are left to the next pass.
func (e executor) blame(ctx context.Context, t event.Task, pieces [][]byte, inputs []int) {
	for _, i := range inputs {
		p := t.Stripe[i]
		sum := sha256.Sum256(pieces[i][:p.Size])
		if strings.EqualFold(hex.EncodeToString(sum[:]), p.SHA256) {
			continue
		}
		if addr, err := e.nodes.Addr(ctx, p.Node); err == nil {
			_ = e.confirmCorrupt(ctx, addr, p.Shard, p.SHA256, errCorrupt)
		}
	}
}

// probeTargets resolves each piece's target and asks it, in parallel,
// whether it already holds the piece. It marks res[i] present, or failed (a
// target that cannot be reached or holds other bytes under that id), and
// returns the targets' addresses.
func (e executor) probeTargets(ctx context.Context, rebuild []event.Piece, res []pieceResult) []string {
	addrs := make([]string, len(rebuild))
	var wg sync.WaitGroup
	for i, p := range rebuild {
		wg.Go(func() {
			addr, err := e.nodes.Addr(ctx, p.Node)
			if err != nil {
				res[i].err = &targetError{node: p.Node, err: err}
				return
			}
			addrs[i] = addr
			info, err := e.shards.Head(ctx, addr, p.Shard)
			switch {
			case err == nil && strings.EqualFold(info.SHA256, p.SHA256):
				res[i].present = true
			case err == nil:
				res[i].err = &targetError{node: p.Node, err: fmt.Errorf("%w (sha256 %.12s, want %.12s)", errConflict, info.SHA256, p.SHA256)}
			case !errors.Is(err, shardapi.ErrNotFound):
				res[i].err = &targetError{node: p.Node, err: err}
			}
		})
	}
	wg.Wait()
	return addrs
}

// gather fills pieces (len K+M) with K pieces of the stripe, each read in
// full (and verified against its SHA256 when verify is set), reading from K holders at a time in
// readOrder and replacing each one that fails by the next. It returns the
// bytes read (failed reads included) and the holders read from. The buffers
// it leaves in pieces come from e.bufs, also on error; the caller hands them
// back. The error is a *stripeError when fewer than K pieces could be read.
func (e executor) gather(ctx context.Context, t event.Task, pieces [][]byte, verify bool) (read int64, sources []string, err error) {
	order := readOrder(t.Stripe, t.Sources, e.load.busy)
	size := int(t.Stripe[0].Size)
	type result struct {
		idx int
		buf []byte
		n   int64
		err error
	}
	results := make(chan result)
	next, inFlight, got := 0, 0, 0
	start := func() {
		idx := order[next]
		next++
		inFlight++
		buf := e.bufs.get(size)
		go func() {
			n, err := e.readPiece(ctx, t.Stripe[idx], buf, verify)
			results <- result{idx: idx, buf: buf, n: n, err: err}
		}()
	}
	for next < len(order) && inFlight < t.K {
		start()
	}
	failed := &sourcesError{}
	for inFlight > 0 {
		r := <-results
		inFlight--
		read += r.n
		p := t.Stripe[r.idx]
		if r.err != nil {
			e.bufs.put(r.buf)
			failed.failures = append(failed.failures, sourceFailure{node: p.Node, err: fmt.Errorf("piece %d (%s): %w", p.Index, p.Shard, r.err)})
			if next < len(order) {
				start()
			}
			continue
		}
		pieces[r.idx] = r.buf
		sources = append(sources, p.Node)
		got++
	}
	if got < t.K {
		return read, sources, &stripeError{got: got, need: t.K, sources: failed}
	}
	return read, sources, nil
}

// readPiece reads piece p in full from its holder into buf (len p.Size),
// verifying it against p.SHA256 when verify is set, and returns the bytes
// read. A holder announcing other bytes yields an error wrapping errCorrupt,
// and so does one serving other bytes (when verified) unless it then
// verifies its copy clean (confirmCorrupt).
func (e executor) readPiece(ctx context.Context, p event.Piece, buf []byte, verify bool) (int64, error) {
	defer e.load.start(p.Node)()
	addr, err := e.nodes.Addr(ctx, p.Node)
	if err != nil {
		return 0, err
	}
	body, info, err := e.shards.Get(ctx, addr, p.Shard)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if info.SHA256 != "" && !strings.EqualFold(info.SHA256, p.SHA256) {
		return 0, fmt.Errorf("%w: holder has sha256 %.12s, want %.12s", errCorrupt, info.SHA256, p.SHA256)
	}
	if info.Size > 0 && info.Size != p.Size {
		return 0, fmt.Errorf("%w: holder has %d bytes, want %d", errCorrupt, info.Size, p.Size)
	}
	if !verify {
		n, err := io.ReadFull(body, buf)
		if err != nil {
			return int64(n), fmt.Errorf("read piece %s: %w", p.Shard, err)
		}
		return int64(n), nil
	}
	v := newVerifier(body, p.Size, p.SHA256)
	if _, err := io.ReadFull(v, buf); err != nil {
		if errors.Is(err, errCorrupt) { // the holder sent its disk's bytes unverified: have it check them
			err = e.confirmCorrupt(ctx, addr, p.Shard, p.SHA256, err)
		}
		return v.n, err
	}
	return v.n, nil
}

// upload puts data, the rebuilt piece p, on its target at addr, which
// verifies p.SHA256 and makes it durable before answering.
func (e executor) upload(ctx context.Context, addr string, p event.Piece, data []byte) error {
	if len(data) == 0 {
		// An empty body must go out as NoBody to keep Content-Length: 0.
		return e.shards.Put(ctx, addr, p.Shard, p.SHA256, 0, http.NoBody)
	}
	body := newFencedReader(data)
	defer body.fence()
	return e.shards.Put(ctx, addr, p.Shard, p.SHA256, int64(len(data)), body)
}
