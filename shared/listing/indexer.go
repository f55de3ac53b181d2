package listing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/model"
)

// The objects bucket's stream, which the Indexer follows.
const (
	objectsStream        = "KV_" + bus.BucketObjects
	objectsSubjectPrefix = "$KV." + bus.BucketObjects + "."
)

// Consumption tuning.
const (
	// maxBatch caps the stream messages applied in one batch.
	maxBatch = 4096
	// idleWait is how long the Indexer waits for a message before it checks
	// whether a waiter asks for a sequence the stream no longer holds.
	idleWait = 500 * time.Millisecond
	// drainWait is how long it waits for a message the stream said is
	// pending before it applies the batch it has.
	drainWait = 100 * time.Millisecond
	// maxBackoff bounds the pause between restarts after an error.
	maxBackoff = 5 * time.Second
)

// Indexer keeps the index bucket in step with the objects bucket: the only
// writer of the index (the acting planner runs it). It follows the objects
// bucket's stream from the cursor it stored, applies puts and deletes in
// batches (one compare-and-set write per page a batch changes, then the
// root if pages split, then the cursor). Applying is idempotent: after a
// crash it replays from the cursor, and a page skips operations it already
// reflects, so a former writer still running cannot undo newer changes. A
// write that loses to another writer is read again and retried: no update
// is lost. Its methods are safe for concurrent use; Run runs once at a time.
type Indexer struct {
	js    jetstream.JetStream
	log   *slog.Logger
	lim   limits
	newID func() string

	running atomic.Bool

	mu       sync.Mutex
	applied  uint64        // last objects-stream sequence reflected in the index
	advanced chan struct{} // closed (and replaced) when applied grows
	want     uint64        // highest sequence a WaitApplied waits for

	// Run's own state.
	store     kvStore
	root      rootIndex
	rootRev   uint64
	rootDirty bool
	cursorRev uint64
	cursor    uint64
}

// NewIndexer returns an Indexer writing through js; log may be nil (then
// slog.Default()). It does no I/O.
func NewIndexer(js jetstream.JetStream, log *slog.Logger) *Indexer {
	if log == nil {
		log = slog.Default()
	}
	return &Indexer{
		js:       js,
		log:      log.With("component", "listing-indexer"),
		lim:      defaultLimits,
		newID:    newPageID,
		advanced: make(chan struct{}),
	}
}

// newPageID returns a random 16-hex-digit page id.
func newPageID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run indexes until ctx ends, then returns nil. It blocks. Errors on the way
// (bus unavailable, a write that fails) are logged and retried with backoff,
// restarting from the last applied sequence. It fails at once only if the
// Indexer is already running.
func (ix *Indexer) Run(ctx context.Context) error {
	if !ix.running.CompareAndSwap(false, true) {
		return errors.New("listing: indexer already running")
	}
	defer ix.running.Store(false)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := ix.start(ctx)
		if err == nil {
			err = ix.consume(ctx, func() { backoff = 100 * time.Millisecond })
		}
		if ctx.Err() != nil {
			break
		}
		ix.log.Warn("listing indexer restarts", "err", err, "applied", ix.Applied(), "after", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
	return nil
}

// Applied returns the last objects-stream sequence the index reflects.
func (ix *Indexer) Applied() uint64 {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.applied
}

// WaitApplied blocks until the index reflects objects-stream sequence seq
// (the revision a KV Create, Update, Put or Delete on the objects bucket
// returned), so that a listing after it sees that change; or until ctx
// ends, with ctx's error. It needs Run going (in this process) to return.
func (ix *Indexer) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		ix.mu.Lock()
		applied, ch := ix.applied, ix.advanced
		if applied < seq {
			ix.want = max(ix.want, seq)
		}
		ix.mu.Unlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("listing: wait for objects sequence %d (applied %d): %w", seq, applied, ctx.Err())
		}
	}
}

// advance records that the index reflects everything up to seq.
func (ix *Indexer) advance(seq uint64) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if seq > ix.applied {
		ix.applied = seq
		close(ix.advanced)
		ix.advanced = make(chan struct{})
	}
}

// start opens the index bucket, reads the cursor and the root, and creates
// the first page if no indexer ever did.
func (ix *Indexer) start(ctx context.Context) error {
	kv, err := ix.js.KeyValue(ctx, bus.BucketIndex)
	if err != nil {
		return fmt.Errorf("listing: open bucket %s: %w", bus.BucketIndex, err)
	}
	ix.store = kvStore{kv: kv}
	cur, rev, err := ix.readCursor(ctx)
	if err != nil {
		return err
	}
	ix.cursor, ix.cursorRev = cur, rev
	ix.advance(cur)
	if _, rev, err := ix.store.getPage(ctx, firstPageID); err != nil {
		return err
	} else if rev == 0 {
		err := ix.store.updatePage(ctx, page{ID: firstPageID}, 0)
		if err != nil && !errors.Is(err, errConflict) {
			return fmt.Errorf("listing: create the first page: %w", err)
		}
	}
	rt, rev, err := ix.store.getRoot(ctx)
	if err != nil {
		return err
	}
	if ix.rootDirty {
		rt = rt.merge(ix.root.Pages)
	}
	ix.root, ix.rootRev = rt, rev
	return nil
}

// readCursor returns the stored cursor and its revision (0, 0 if none).
func (ix *Indexer) readCursor(ctx context.Context) (uint64, uint64, error) {
	e, err := ix.store.kv.Get(ctx, cursorKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("listing: read cursor: %w", err)
	}
	n, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: cursor %q", ErrCorrupt, e.Value())
	}
	return n, e.Revision(), nil
}

// consume follows the objects stream from the sequence after the applied
// one and applies it batch by batch until ctx ends or an error. ok is
// called after each applied batch.
func (ix *Indexer) consume(ctx context.Context, ok func()) error {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{objectsSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    ix.Applied() + 1,
	}
	cons, err := ix.js.OrderedConsumer(ctx, objectsStream, cfg)
	if err != nil {
		return fmt.Errorf("listing: consume %s: %w", objectsStream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("listing: consume %s: %w", objectsStream, err)
	}
	defer it.Stop()
	batch := make([]jetstream.Msg, 0, maxBatch)
	for {
		m, err := nextMsg(ctx, it, idleWait)
		if errors.Is(err, errIdle) {
			if err := ix.idle(ctx); err != nil && ctx.Err() == nil {
				ix.log.Warn("listing indexer: check the stream's end", "err", err)
			}
			continue
		}
		if err != nil {
			return err
		}
		batch = append(batch[:0], m)
		for len(batch) < maxBatch && pending(m) > 0 {
			if m, err = nextMsg(ctx, it, drainWait); errors.Is(err, errIdle) {
				break
			} else if err != nil {
				return err
			}
			batch = append(batch, m)
		}
		if err := ix.apply(ctx, batch); err != nil {
			return err
		}
		ok()
	}
}

// errIdle is a wait for the next message that timed out.
var errIdle = errors.New("listing: no message")

// nextMsg returns the next message, errIdle after wait without one, or
// ctx's error.
func nextMsg(ctx context.Context, it jetstream.MessagesContext, wait time.Duration) (jetstream.Msg, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := it.Next(jetstream.NextContext(wctx))
	switch {
	case err == nil:
		return m, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case wctx.Err() != nil:
		return nil, errIdle
	}
	return nil, fmt.Errorf("listing: next message: %w", err)
}

// pending returns how many messages the stream held after m when it was
// delivered.
func pending(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.NumPending
}

// idle runs when no message came for a while. If a waiter wants a sequence
// beyond the applied one, the message may be gone from the stream (purged),
// so the applied sequence moves up to the next message the stream still
// holds, or to its end.
func (ix *Indexer) idle(ctx context.Context) error {
	ix.mu.Lock()
	applied, want := ix.applied, ix.want
	ix.mu.Unlock()
	if want <= applied {
		return nil
	}
	st, err := ix.js.Stream(ctx, objectsStream)
	if err != nil {
		return err
	}
	last := st.CachedInfo().State.LastSeq
	m, err := st.GetMsg(ctx, applied+1, jetstream.WithGetMsgSubject(objectsSubjectPrefix+">"))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		ix.advance(last)
	case err != nil:
		return err
	case m.Sequence > applied+1:
		ix.advance(m.Sequence - 1)
	}
	return nil
}

// apply indexes one batch of stream messages, then writes the root (if
// pages were added) and the cursor, then marks the batch applied.
func (ix *Indexer) apply(ctx context.Context, batch []jetstream.Msg) error {
	ops := make([]op, 0, len(batch))
	var upto uint64
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("listing: message metadata: %w", err)
		}
		upto = max(upto, md.Sequence.Stream)
		if o, ok := ix.toOp(m, md); ok {
			ops = append(ops, o)
		}
	}
	ops = normalize(ops)
	bs, err := applyBatch(ctx, ix.store, &ix.root, ops, upto, ix.lim, ix.newID)
	if len(bs.Added) > 0 {
		ix.rootDirty = true
	}
	if bs.Conflicts > 0 {
		ix.log.Info("listing indexer: page writes lost to another writer, redone", "conflicts", bs.Conflicts, "upto", upto)
	}
	if err != nil {
		return fmt.Errorf("listing: apply sequences to %d: %w", upto, err)
	}
	ix.log.Debug("listing indexer: batch applied", "messages", len(batch), "upto", upto, "writes", bs.Writes, "added", len(bs.Added), "hops", bs.Hops)
	if ix.rootDirty {
		if err := ix.writeRoot(ctx); err != nil {
			ix.log.Warn("listing indexer: write root (a stale root is only slower)", "err", err)
		}
	}
	if err := ix.writeCursor(ctx, upto); err != nil {
		ix.log.Warn("listing indexer: write cursor (a restart replays more)", "err", err, "seq", upto)
	}
	ix.advance(upto)
	return nil
}

// toOp turns a message of the objects stream into an index operation. A
// key that does not decode is logged and skipped; a manifest that does not
// decode is logged and indexed with size 0.
func (ix *Indexer) toOp(m jetstream.Msg, md *jetstream.MsgMetadata) (op, bool) {
	seq := md.Sequence.Stream
	kvKey, found := strings.CutPrefix(m.Subject(), objectsSubjectPrefix)
	key, err := model.ObjectKeyFromKV(kvKey)
	if !found || err != nil || key == "" {
		ix.log.Warn("listing indexer: skip a message whose subject names no key", "subject", m.Subject(), "seq", seq)
		return op{}, false
	}
	h := m.Headers()
	if kop := h.Get("KV-Operation"); kop == "DEL" || kop == "PURGE" || h.Get(jetstream.MarkerReasonHeader) != "" {
		return op{Key: key, Seq: seq, Del: true}, true
	}
	e := Entry{Key: key, Modified: md.Timestamp}
	var man model.Manifest
	if err := json.Unmarshal(m.Data(), &man); err != nil {
		ix.log.Warn("listing indexer: manifest does not decode; indexed with size 0", "key", key, "seq", seq, "err", err)
	} else {
		e.Size, e.ETag = man.Size, man.ETag
		if !man.Created.IsZero() {
			e.Modified = man.Created
		}
	}
	e.Modified = time.UnixMilli(e.Modified.UnixMilli()).UTC() // what a page keeps
	return op{Key: key, Seq: seq, Entry: e}, true
}

// writeRoot stores the in-memory root with compare-and-set; on a conflict
// it merges the stored root in and tries again.
func (ix *Indexer) writeRoot(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		b, err := encodeRoot(ix.root)
		if err != nil {
			return err
		}
		var rev uint64
		if ix.rootRev == 0 {
			rev, err = ix.store.kv.Create(ctx, rootKey, b)
		} else {
			rev, err = ix.store.kv.Update(ctx, rootKey, b, ix.rootRev)
		}
		if err == nil {
			ix.rootRev, ix.rootDirty = rev, false
			return nil
		}
		if !isConflict(err) || attempt == 10 {
			return fmt.Errorf("listing: write root: %w", err)
		}
		stored, rev, err := ix.store.getRoot(ctx)
		if err != nil {
			return err
		}
		ix.root, ix.rootRev = stored.merge(ix.root.Pages), rev
	}
}

// writeCursor stores seq as the cursor unless the stored one is already
// further (another writer got ahead): the cursor never goes back.
func (ix *Indexer) writeCursor(ctx context.Context, seq uint64) error {
	for attempt := 0; ; attempt++ {
		if ix.cursor >= seq && ix.cursorRev != 0 {
			return nil
		}
		b := []byte(strconv.FormatUint(seq, 10))
		var rev uint64
		var err error
		if ix.cursorRev == 0 {
			rev, err = ix.store.kv.Create(ctx, cursorKey, b)
		} else {
			rev, err = ix.store.kv.Update(ctx, cursorKey, b, ix.cursorRev)
		}
		if err == nil {
			ix.cursor, ix.cursorRev = seq, rev
			return nil
		}
		if !isConflict(err) || attempt == 10 {
			return fmt.Errorf("listing: write cursor: %w", err)
		}
		if ix.cursor, ix.cursorRev, err = ix.readCursor(ctx); err != nil {
			return err
		}
	}
}
