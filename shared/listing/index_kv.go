package listing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// KV keys of the index bucket (bus.BucketIndex).
const (
	rootKey   = "root"
	cursorKey = "cursor"
	pagePre   = "p."
	firstPage = "0"
)

// maxHops bounds the right-links a seek follows (a root can lag by a few
// splits at most; a cycle would be a bug, not a hang).
const maxHops = 64

// Reader answers listings from the index. It is safe for concurrent use;
// each List reads the root and the pages it walks (a few KV gets).
type Reader struct {
	kv jetstream.KeyValue
}

// NewReader reads the index in kv (the bus.BucketIndex bucket).
func NewReader(kv jetstream.KeyValue) *Reader { return &Reader{kv: kv} }

// List answers one listing page (see walk for the semantics).
func (r *Reader) List(ctx context.Context, q Query) (Result, error) {
	c, err := r.cursor(ctx)
	if err != nil {
		return Result{}, err
	}
	return walk(c, q)
}

// Empty reports whether no key starts with prefix.
func (r *Reader) Empty(ctx context.Context, prefix string) (bool, error) {
	c, err := r.cursor(ctx)
	if err != nil {
		return false, err
	}
	if err := c.seek(prefix); err != nil {
		return false, err
	}
	e, ok, err := c.next()
	if err != nil {
		return false, err
	}
	return !ok || !strings.HasPrefix(e.Key, prefix), nil
}

func (r *Reader) cursor(ctx context.Context) (*kvCursor, error) {
	root, _, err := readRoot(ctx, r.kv)
	if err != nil {
		return nil, err
	}
	return &kvCursor{ctx: ctx, kv: r.kv, root: root}, nil
}

// readRoot returns the root and its revision; a missing root is an index
// with one empty page (revision 0).
func readRoot(ctx context.Context, kv jetstream.KeyValue) (Root, uint64, error) {
	root := Root{V: 1, Pages: []RootRef{{ID: firstPage}}}
	e, err := kv.Get(ctx, rootKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return root, 0, nil
	}
	if err != nil {
		return root, 0, fmt.Errorf("read listing root: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &root); err != nil || len(root.Pages) == 0 {
		return root, 0, fmt.Errorf("listing root is corrupt: %v", err)
	}
	return root, e.Revision(), nil
}

// readPage returns page id and its revision; a missing page is empty
// (revision 0) with the widest range (only the first page may be missing:
// before the first write).
func readPage(ctx context.Context, kv jetstream.KeyValue, id string) (*Page, uint64, error) {
	e, err := kv.Get(ctx, pagePre+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &Page{V: 1, ID: id}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read listing page %s: %w", id, err)
	}
	var p Page
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, 0, fmt.Errorf("listing page %s is corrupt: %w", id, err)
	}
	return &p, e.Revision(), nil
}

// seekPage returns the page holding key: the root's guess, then right-links
// while key lies beyond the page's range.
func seekPage(ctx context.Context, kv jetstream.KeyValue, root Root, key string) (*Page, uint64, error) {
	p, rev, err := readPage(ctx, kv, root.Pages[root.locate(key)].ID)
	for hops := 0; err == nil && p.High != "" && key >= p.High && p.Next != ""; hops++ {
		if hops == maxHops {
			return nil, 0, fmt.Errorf("listing page %s: no page holds %.40q after %d links", p.ID, key, maxHops)
		}
		p, rev, err = readPage(ctx, kv, p.Next)
	}
	return p, rev, err
}

// kvCursor walks the pages in the KV.
type kvCursor struct {
	ctx  context.Context
	kv   jetstream.KeyValue
	root Root
	page *Page
	i    int
}

func (c *kvCursor) seek(k string) error {
	p, _, err := seekPage(c.ctx, c.kv, c.root, k)
	if err != nil {
		return err
	}
	c.page, c.i = p, p.find(k)
	return nil
}

func (c *kvCursor) next() (Entry, bool, error) {
	for hops := 0; ; {
		for c.i < len(c.page.Entries) {
			e := c.page.Entries[c.i]
			c.i++
			if c.page.covers(e.Key) {
				return e, true, nil
			}
		}
		if c.page.Next == "" {
			return Entry{}, false, nil
		}
		if hops++; hops > 1000000 {
			return Entry{}, false, errors.New("listing: page chain does not end")
		}
		p, _, err := readPage(c.ctx, c.kv, c.page.Next)
		if err != nil {
			return Entry{}, false, err
		}
		c.page, c.i = p, 0
	}
}
