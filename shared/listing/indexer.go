package listing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/model"
)

// batchSize bounds the manifest writes applied in one pass.
const batchSize = 4096

// Indexer keeps the index in step with the objects bucket: it reads the
// bucket's stream from its cursor, applies each batch of puts and deletes to
// the pages (one compare-and-set write per page touched), then moves the
// cursor. Applying is idempotent, so a crash between the two replays a batch
// harmlessly. Run it in one process at a time (the acting planner); a
// compare-and-set conflict with a former writer is retried, never lost.
type Indexer struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.Mutex
	applied uint64
	changed chan struct{} // closed and replaced when applied moves
}

// NewIndexer returns an indexer of the objects bucket into the index bucket.
func NewIndexer(js jetstream.JetStream, log *slog.Logger) *Indexer {
	return &Indexer{js: js, log: log, changed: make(chan struct{})}
}

// WaitApplied blocks until every objects-stream message up to seq is in
// the index, or ctx ends. Safe for concurrent use.
func (ix *Indexer) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		ix.mu.Lock()
		done, ch := ix.applied >= seq, ix.changed
		ix.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("listing index at %d, waiting for %d: %w", ix.appliedSeq(), seq, ctx.Err())
		}
	}
}

func (ix *Indexer) appliedSeq() uint64 {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.applied
}

func (ix *Indexer) advance(seq uint64) {
	ix.mu.Lock()
	if seq > ix.applied {
		ix.applied = seq
		close(ix.changed)
		ix.changed = make(chan struct{})
	}
	ix.mu.Unlock()
}

// Run indexes until ctx ends (then it returns nil). It blocks.
func (ix *Indexer) Run(ctx context.Context) error {
	kv, err := ix.js.KeyValue(ctx, bus.BucketIndex)
	if err != nil {
		return fmt.Errorf("open %s: %w", bus.BucketIndex, err)
	}
	for ctx.Err() == nil {
		err := ix.follow(ctx, kv)
		if ctx.Err() != nil {
			return nil
		}
		ix.log.Warn("listing index: restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// follow consumes the objects stream from the cursor and applies it.
func (ix *Indexer) follow(ctx context.Context, kv jetstream.KeyValue) error {
	cur, err := readCursor(ctx, kv)
	if err != nil {
		return err
	}
	ix.advance(cur)
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if cur > 0 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: cur + 1}
	}
	stream := "KV_" + bus.BucketObjects
	cons, err := ix.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("consume %s: %w", stream, err)
	}
	w := &writer{ctx: ctx, kv: kv}
	for ctx.Err() == nil {
		// Block for the first message, then take what else is there at once:
		// a lone commit is indexed in a round trip, a burst in batches.
		var ops []op
		var last uint64
		for _, fetch := range []func() (jetstream.MessageBatch, error){
			func() (jetstream.MessageBatch, error) { return cons.Fetch(1, jetstream.FetchMaxWait(time.Second)) },
			func() (jetstream.MessageBatch, error) { return cons.FetchNoWait(batchSize) },
		} {
			batch, err := fetch()
			if err != nil {
				return fmt.Errorf("fetch %s: %w", stream, err)
			}
			for msg := range batch.Messages() {
				md, err := msg.Metadata()
				if err != nil {
					continue
				}
				last = md.Sequence.Stream
				if o, ok := ix.decode(msg); ok {
					ops = append(ops, o)
				}
			}
			if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
				return fmt.Errorf("fetch %s: %w", stream, err)
			}
			if last == 0 {
				break // nothing arrived within the wait
			}
		}
		if last == 0 {
			continue // nothing new
		}
		if err := w.apply(ops); err != nil {
			return err
		}
		if err := writeCursor(ctx, kv, last); err != nil {
			return err
		}
		ix.advance(last)
	}
	return nil
}

// op is one change to the index: an upsert, or a delete when del.
type op struct {
	e   Entry
	del bool
}

// decode turns one objects-stream message into an op.
func (ix *Indexer) decode(msg jetstream.Msg) (op, bool) {
	enc := strings.TrimPrefix(msg.Subject(), "$KV."+bus.BucketObjects+".")
	key, err := model.ObjectKeyFromKV(enc)
	if err != nil {
		ix.log.Warn("listing index: skipping a manifest with an undecodable key", "subject", msg.Subject())
		return op{}, false
	}
	switch msg.Headers().Get("KV-Operation") {
	case "DEL", "PURGE":
		return op{e: Entry{Key: key}, del: true}, true
	}
	var m model.Manifest
	if err := json.Unmarshal(msg.Data(), &m); err != nil {
		ix.log.Warn("listing index: manifest undecodable, indexed with no size", "key", key, "err", err)
	}
	return op{e: Entry{Key: key, Size: m.Size, ETag: m.ETag, Modified: m.Created}}, true
}

// readCursor returns the last stream sequence applied (0: none).
func readCursor(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	e, err := kv.Get(ctx, cursorKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read listing cursor: %w", err)
	}
	n, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("listing cursor is corrupt: %w", err)
	}
	return n, nil
}

func writeCursor(ctx context.Context, kv jetstream.KeyValue, seq uint64) error {
	if _, err := kv.Put(ctx, cursorKey, []byte(strconv.FormatUint(seq, 10))); err != nil {
		return fmt.Errorf("write listing cursor: %w", err)
	}
	return nil
}

// writer applies ops to the pages in the KV.
type writer struct {
	ctx context.Context
	kv  jetstream.KeyValue
}

// apply writes a batch: the last op per key wins; keys are grouped by the
// page that holds them; each page is read, changed, split as needed and
// written with compare-and-set (a conflict re-reads and retries).
func (w *writer) apply(ops []op) error {
	last := make(map[string]op, len(ops))
	for _, o := range ops {
		last[o.e.Key] = o
	}
	keys := make([]string, 0, len(last))
	for k := range last {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for len(keys) > 0 {
		n, err := w.applyPage(keys, last)
		if err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}

// applyPage applies the ops of the leading keys that fall in one page and
// returns how many it applied.
func (w *writer) applyPage(keys []string, ops map[string]op) (int, error) {
	for try := 0; ; try++ {
		root, rootRev, err := readRoot(w.ctx, w.kv)
		if err != nil {
			return 0, err
		}
		p, rev, err := seekPage(w.ctx, w.kv, root, keys[0])
		if err != nil {
			return 0, err
		}
		p.prune()
		n := 0
		for n < len(keys) && p.covers(keys[n]) {
			if o := ops[keys[n]]; o.del {
				p.remove(o.e.Key)
			} else {
				p.upsert(o.e)
			}
			n++
		}
		err = w.write(root, rootRev, p, rev)
		if err == nil {
			return n, nil
		}
		if !conflict(err) || try >= 20 {
			return 0, err
		}
	}
}

func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// write stores p (split first while it is oversized): new right pages are
// created first, then p is updated at rev, then the root, so a crash leaves
// at worst an unreferenced page or a stale root, never a lost key.
func (w *writer) write(root Root, rootRev uint64, p *Page, rev uint64) error {
	var created []*Page
	for p.oversized() {
		right := p.split(strings.ReplaceAll(uuid.NewString(), "-", ""))
		for right.oversized() { // a page of very long keys: keep halving
			created = append(created, right.split(strings.ReplaceAll(uuid.NewString(), "-", "")))
		}
		created = append(created, right)
	}
	for _, np := range created {
		if err := putPage(w.ctx, w.kv, np, 0, true); err != nil {
			return err
		}
	}
	if err := putPage(w.ctx, w.kv, p, rev, rev == 0); err != nil {
		return err
	}
	if len(created) == 0 && rootRev != 0 {
		return nil
	}
	for _, np := range created {
		root.insert(RootRef{ID: np.ID, Low: np.Low})
	}
	body, err := json.Marshal(root)
	if err != nil {
		return err
	}
	if rootRev == 0 {
		_, err = w.kv.Create(w.ctx, rootKey, body)
	} else {
		_, err = w.kv.Update(w.ctx, rootKey, body, rootRev)
	}
	if err != nil && !conflict(err) {
		return fmt.Errorf("write listing root: %w", err)
	}
	// A root conflict means another writer moved it: the pages are written
	// and linked, readers reach them through the links; the next split
	// rewrites the root from a fresh read.
	return nil
}

// putPage writes one page: Create when create, else Update at rev.
func putPage(ctx context.Context, kv jetstream.KeyValue, p *Page, rev uint64, create bool) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if create {
		_, err = kv.Create(ctx, pagePre+p.ID, body)
	} else {
		_, err = kv.Update(ctx, pagePre+p.ID, body, rev)
	}
	if err != nil {
		return fmt.Errorf("write listing page %s: %w", p.ID, err)
	}
	return nil
}
