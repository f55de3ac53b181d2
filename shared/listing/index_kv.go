package listing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvStore keeps pages in the index bucket (the pageStore of the Indexer,
// and what the Reader reads).
type kvStore struct {
	kv jetstream.KeyValue
}

// getPage reads page id. The first page not existing yet (no indexer has
// run) reads as the empty first page at revision 0.
func (s kvStore) getPage(ctx context.Context, id string) (page, uint64, error) {
	return s.getPageVia(ctx, id, nil)
}

// getPageVia is getPage with a cache of decoded pages (nil: none), which
// saves decoding a page whose revision did not change.
func (s kvStore) getPageVia(ctx context.Context, id string, c *pageCache) (page, uint64, error) {
	e, err := s.kv.Get(ctx, pageKey(id))
	if err != nil {
		if id == firstPageID && errors.Is(err, jetstream.ErrKeyNotFound) {
			return page{ID: firstPageID}, 0, nil
		}
		return page{}, 0, fmt.Errorf("listing: read page %s: %w", id, err)
	}
	if p, ok := c.get(id, e.Revision()); ok {
		return p, e.Revision(), nil
	}
	p, err := decodePage(e.Value())
	if err != nil {
		return page{}, 0, fmt.Errorf("listing: read page %s: %w", id, err)
	}
	if p.ID != id {
		return page{}, 0, fmt.Errorf("%w: page %s says it is %s", ErrCorrupt, id, p.ID)
	}
	c.put(id, e.Revision(), p)
	return p, e.Revision(), nil
}

// pageCacheSize bounds a Reader's cache of decoded pages (each at most
// maxPageEntries entries).
const pageCacheSize = 128

// pageCache keeps decoded pages by id and revision: a page is still read
// from the bucket every time (so a listing is never staler than the bucket),
// but not decoded again while its revision stays. Safe for concurrent use;
// a nil cache caches nothing.
type pageCache struct {
	mu    sync.Mutex
	pages map[string]cachedPage
}

type cachedPage struct {
	rev uint64
	p   page
}

func (c *pageCache) get(id string, rev uint64) (page, bool) {
	if c == nil {
		return page{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cp, ok := c.pages[id]
	return cp.p, ok && cp.rev == rev
}

func (c *pageCache) put(id string, rev uint64, p page) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pages == nil {
		c.pages = make(map[string]cachedPage)
	}
	if _, ok := c.pages[id]; !ok && len(c.pages) >= pageCacheSize {
		for k := range c.pages { // evict one, whichever the map yields
			delete(c.pages, k)
			break
		}
	}
	c.pages[id] = cachedPage{rev: rev, p: p}
}

func (s kvStore) createPage(ctx context.Context, p page) error {
	b, err := encodePage(p)
	if err != nil {
		return err
	}
	_, err = s.kv.Create(ctx, pageKey(p.ID), b)
	return err
}

// updatePage writes p at revision rev (revision 0: create it).
func (s kvStore) updatePage(ctx context.Context, p page, rev uint64) error {
	b, err := encodePage(p)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = s.kv.Create(ctx, pageKey(p.ID), b)
	} else {
		_, err = s.kv.Update(ctx, pageKey(p.ID), b, rev)
	}
	if isConflict(err) {
		return fmt.Errorf("%w: %w", errConflict, err)
	}
	return err
}

func (s kvStore) dropPage(ctx context.Context, id string) {
	_ = s.kv.Delete(ctx, pageKey(id))
}

// isConflict reports a compare-and-set write that lost.
func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// getRoot reads the root and its revision; a missing root is the root of
// the first page alone, at revision 0.
func (s kvStore) getRoot(ctx context.Context) (rootIndex, uint64, error) {
	e, err := s.kv.Get(ctx, rootKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return emptyRoot(), 0, nil
	}
	if err != nil {
		return rootIndex{}, 0, fmt.Errorf("listing: read root: %w", err)
	}
	r, err := decodeRoot(e.Value())
	if err != nil {
		return rootIndex{}, 0, fmt.Errorf("listing: read root: %w", err)
	}
	return r, e.Revision(), nil
}

// rootRefresh is the least time between two reloads of a Reader's root.
const rootRefresh = time.Second

// Reader answers listings from the index bucket. It is safe for concurrent
// use. It caches the root and reloads it (at most once per second) when a
// lookup had to follow links past it; listings are correct whatever the
// root's age, since pages are found through their links.
type Reader struct {
	store kvStore
	cache pageCache

	mu       sync.Mutex
	root     *rootIndex
	loadedAt time.Time
}

// NewReader returns a Reader of the index bucket kv (bus.BucketIndex). It
// does no I/O.
func NewReader(kv jetstream.KeyValue) *Reader {
	return &Reader{store: kvStore{kv: kv}}
}

// List returns one page of the listing q asks for (see Query for the
// semantics), in key byte order. Its cost depends on the page size and on
// how many common prefixes it returns, not on the number of keys in the
// index. An index that no indexer has written yet lists nothing. It only
// reads and may be called concurrently.
func (r *Reader) List(ctx context.Context, q Query) (Result, error) {
	res, err := list(ctx, readerSource{r}, q)
	if err != nil {
		return Result{}, fmt.Errorf("listing: list %q: %w", q.Prefix, err)
	}
	return res, nil
}

// Empty reports whether no key starts with prefix (an S3 bucket with no
// object: prefix "<bucket>/").
func (r *Reader) Empty(ctx context.Context, prefix string) (bool, error) {
	res, err := r.List(ctx, Query{Prefix: prefix, MaxKeys: 1})
	if err != nil {
		return false, err
	}
	return len(res.Entries) == 0, nil
}

// Get returns the entry of key, and false if the index does not hold it.
func (r *Reader) Get(ctx context.Context, key string) (Entry, bool, error) {
	p, err := r.seek(ctx, key)
	if err != nil {
		return Entry{}, false, fmt.Errorf("listing: get %q: %w", key, err)
	}
	if i := p.find(key); i < len(p.Entries) && p.Entries[i].Key == key {
		return p.Entries[i], true, nil
	}
	return Entry{}, false, nil
}

// currentRoot returns the cached root, loading it the first time, and again
// when stale says the last one missed pages and the last load is old enough.
func (r *Reader) currentRoot(ctx context.Context, stale bool) (*rootIndex, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.root != nil && (!stale || time.Since(r.loadedAt) < rootRefresh) {
		return r.root, nil
	}
	rt, _, err := r.store.getRoot(ctx)
	if err != nil {
		if r.root != nil {
			return r.root, nil // a stale root is still a correct one
		}
		return nil, err
	}
	r.root, r.loadedAt = &rt, time.Now()
	return r.root, nil
}

// seek returns the page whose range holds key.
func (r *Reader) seek(ctx context.Context, key string) (*page, error) {
	rt, err := r.currentRoot(ctx, false)
	if err != nil {
		return nil, err
	}
	p, _, hops, err := locatePage(ctx, readerStore{r}, rt, key)
	if err != nil {
		return nil, err
	}
	if hops > 0 {
		_, _ = r.currentRoot(ctx, true)
	}
	return &p, nil
}

// readerSource is the listing walk's view of a Reader.
type readerSource struct{ r *Reader }

func (s readerSource) seek(ctx context.Context, key string) (*page, error) { return s.r.seek(ctx, key) }

func (s readerSource) page(ctx context.Context, id string) (*page, error) {
	p, _, err := s.r.store.getPageVia(ctx, id, &s.r.cache)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// readerStore is the Reader's kvStore reading through its page cache.
type readerStore struct{ r *Reader }

func (s readerStore) getPage(ctx context.Context, id string) (page, uint64, error) {
	return s.r.store.getPageVia(ctx, id, &s.r.cache)
}

func (s readerStore) createPage(context.Context, page) error { return errReadOnly }

func (s readerStore) updatePage(context.Context, page, uint64) error { return errReadOnly }

func (s readerStore) dropPage(context.Context, string) {}

var errReadOnly = errors.New("listing: the reader does not write")
