// Package listing keeps an ordered index of object keys in the JetStream KV
// bucket bus.BucketIndex, so that a page of an S3 listing costs the same
// with a million keys as with a thousand.
//
// The index is a chain of pages, B-link style (Lehman and Yao): each page
// ("p.<id>") holds the entries whose keys lie in its range [low, high), sorted
// in UTF-8 byte order, and names its right neighbour. A root ("root") lists
// the pages with their low keys; it is only a hint: a reader or the writer
// that lands on a page whose high is not above the key it wants follows the
// next links, so a stale root (a crash between a split and the root write)
// costs reads, never correctness. Pages only split, never merge: a page left
// empty by deletes stays in the chain and readers step over it. A page's low
// never changes, so every root ever written stays true.
//
// The Indexer (indexer.go) is the only writer: it follows the objects
// bucket's stream and applies its puts and deletes to the pages with one
// compare-and-set write per touched page. The Reader (index_kv.go) answers
// S3-style listings from the pages. This file holds the decisions, free of
// NATS: merging a batch into a page, splitting, finding a page, and the S3
// listing walk.
package listing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Entry is one object in the index: what an S3 listing shows of it. ETag is
// the manifest's (hex, without quotes); Modified is the manifest's creation
// time to the millisecond, in UTC.
type Entry struct {
	Key      string
	Size     int64
	ETag     string
	Modified time.Time
}

// Query asks for one page of an S3 listing (ListObjects semantics).
//
// Keys are those that start with Prefix and sort after After (the V1
// marker, or V2's start-after or continuation token), in UTF-8 byte order.
// With a Delimiter, the keys that contain it after the prefix are rolled up
// into one common prefix each (the key up to and including the first
// delimiter after Prefix); a common prefix counts toward MaxKeys like a key.
// A common prefix is listed if any of its keys sorts after After, except
// when After is that very common prefix: so passing back Result.Next resumes
// right after the last item, whether it was a key or a common prefix.
// MaxKeys <= 0 means DefaultMaxKeys; larger values are not capped here (S3
// caps them at 1,000: the gateway's business).
type Query struct {
	Prefix    string
	Delimiter string
	After     string
	MaxKeys   int
}

// Result is one page of a listing: the keys and the common prefixes, each in
// byte order. Truncated says that more items follow; then Next is the last
// item returned (a key or a common prefix), to pass as the next Query.After.
type Result struct {
	Entries        []Entry
	CommonPrefixes []string
	Truncated      bool
	Next           string
}

// DefaultMaxKeys is the page size of a Query without MaxKeys, as in S3.
const DefaultMaxKeys = 1000

// ErrCorrupt reports an index whose pages do not fit together (a link to a
// page whose range does not start where the previous one ended, a page that
// does not decode).
var ErrCorrupt = errors.New("listing: index corrupt")

// Layout of the index bucket.
const (
	// pagePrefix starts every page's KV key: "p.<id>".
	pagePrefix = "p."
	// firstPageID names the leftmost page (low ""), which the writer creates
	// first and never replaces, so a reader without a root starts there.
	firstPageID = "0"
	rootKey     = "root"
	cursorKey   = "cursor"
	// formatVersion is the "v" of pages and roots.
	formatVersion = 1
)

// Page limits: a page splits when it holds more than maxPageEntries entries
// or its JSON would exceed maxPageBytes. Split pieces are filled to
// splitFill of either limit, leaving room to grow.
const (
	maxPageEntries = 2000
	maxPageBytes   = 256 << 10
	maxRootBytes   = 512 << 10
)

// limits are the split thresholds; tests shrink them to get many pages.
type limits struct {
	entries int
	bytes   int
}

var defaultLimits = limits{entries: maxPageEntries, bytes: maxPageBytes}

// page is one node of the chain: entries with Low <= Key < High (High ""
// is +infinity), Next the page to the right ("" for the last). Seq is the
// highest objects-stream sequence reflected in the page: every operation on
// a key in its range up to Seq is applied, so a writer replaying older
// operations (after a crash, or a former writer still running) skips them.
type page struct {
	ID      string
	Low     string
	High    string
	Next    string
	Seq     uint64
	Entries []Entry
}

// covers reports whether key lies in the page's range.
func (p *page) covers(key string) bool {
	return key >= p.Low && (p.High == "" || key < p.High)
}

// find returns the index of the first entry whose key is >= key.
func (p *page) find(key string) int {
	return sort.Search(len(p.Entries), func(i int) bool { return p.Entries[i].Key >= key })
}

// pageKey is the KV key of page id.
func pageKey(id string) string { return pagePrefix + id }

// rootRef names a page and its low key in the root.
type rootRef struct {
	ID  string
	Low string
}

// rootIndex is the root: pages in order of their low keys. Any subset of
// the pages that holds the first is a correct root; a fuller one saves
// link hops.
type rootIndex struct {
	Pages []rootRef
}

// emptyRoot is the root of an index that has only its first page.
func emptyRoot() rootIndex { return rootIndex{Pages: []rootRef{{ID: firstPageID}}} }

// locate returns the id of the page to start from for key: the listed page
// with the greatest low <= key.
func (r *rootIndex) locate(key string) string {
	i := sort.Search(len(r.Pages), func(i int) bool { return r.Pages[i].Low > key }) - 1
	if i < 0 {
		return firstPageID
	}
	return r.Pages[i].ID
}

// merge returns r with refs added (by id, kept in order of low).
func (r rootIndex) merge(refs []rootRef) rootIndex {
	if len(refs) == 0 {
		return r
	}
	seen := make(map[string]bool, len(r.Pages))
	out := slices.Clone(r.Pages)
	for _, p := range out {
		seen[p.ID] = true
	}
	for _, p := range refs {
		if !seen[p.ID] {
			seen[p.ID] = true
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b rootRef) int { return strings.Compare(a.Low, b.Low) })
	return rootIndex{Pages: out}
}

// op is one change from the objects stream: a put (Entry) or a delete of
// Key, at stream sequence Seq.
type op struct {
	Key   string
	Seq   uint64
	Del   bool
	Entry Entry
}

// normalize sorts ops by key and keeps the last (highest sequence) of each
// key: the state at the end of the batch.
func normalize(ops []op) []op {
	out := slices.Clone(ops)
	slices.SortStableFunc(out, func(a, b op) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	n := 0
	for i := range out {
		if n > 0 && out[n-1].Key == out[i].Key {
			out[n-1] = out[i]
			continue
		}
		out[n] = out[i]
		n++
	}
	return out[:n]
}

// applyOps merges into p the leading ops (sorted, one per key, the first
// in p's range) whose keys lie below p.High, and returns the new page, how
// many ops it consumed, and whether anything changed. An op whose sequence
// is not above p.Seq is already reflected and skipped. upto is the last
// sequence of the batch: every op for p's range up to upto is in ops, so
// the new page reflects upto.
func applyOps(p page, ops []op, upto uint64) (page, int, bool) {
	n := len(ops)
	if p.High != "" {
		n = sort.Search(len(ops), func(i int) bool { return ops[i].Key >= p.High })
	}
	mine := ops[:n]
	out := p
	out.Entries = make([]Entry, 0, len(p.Entries)+len(mine))
	changed := false
	i := 0
	for _, o := range mine {
		for i < len(p.Entries) && p.Entries[i].Key < o.Key {
			out.Entries = append(out.Entries, p.Entries[i])
			i++
		}
		exists := i < len(p.Entries) && p.Entries[i].Key == o.Key
		if o.Seq <= p.Seq {
			continue // already reflected; the existing entry (if any) is copied on
		}
		switch {
		case o.Del && exists:
			i++
			changed = true
		case o.Del:
		case exists:
			if !sameEntry(p.Entries[i], o.Entry) {
				changed = true
			}
			out.Entries = append(out.Entries, o.Entry)
			i++
		default:
			out.Entries = append(out.Entries, o.Entry)
			changed = true
		}
	}
	out.Entries = append(out.Entries, p.Entries[i:]...)
	if changed {
		out.Seq = max(p.Seq, upto)
	}
	return out, n, changed
}

// sameEntry reports whether a and b hold the same values.
func sameEntry(a, b Entry) bool {
	return a.Key == b.Key && a.Size == b.Size && a.ETag == b.ETag && a.Modified.Equal(b.Modified)
}

// jsonLen is an upper bound of the length of s as a JSON string (quotes
// included), or of its base64 form when s is not valid UTF-8.
func jsonLen(s string) int {
	n := 2
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == '"' || c == '\\':
			n += 6
		case c >= 0x80:
			n += 2
		default:
			n++
		}
	}
	return n
}

// entryLen bounds the encoded length of e in a page (comma included).
func entryLen(e Entry) int {
	// {"k":…,"size":…,"etag":…,"mod":…}, with 20 digits for each number.
	return jsonLen(e.Key) + jsonLen(e.ETag) + 2*20 + 32
}

// pageOverhead bounds the encoded length of p without its entries.
func pageOverhead(p page) int {
	return 160 + jsonLen(p.ID) + jsonLen(p.Next) + jsonLen(p.Low) + jsonLen(p.High)
}

// fits reports whether p is within lim.
func fits(p page, lim limits) bool {
	if len(p.Entries) > lim.entries {
		return false
	}
	n := pageOverhead(p)
	for _, e := range p.Entries {
		n += entryLen(e)
		if n > lim.bytes {
			return false
		}
	}
	return true
}

// split cuts p into pages within lim. The first keeps p's id and low; the
// others get ids from newID and lows from their first keys; they are chained
// in order, the last taking p's high and next. A page within lim comes back
// alone. The pieces are filled to about 3/4 of the limits, evenly.
func split(p page, lim limits, newID func() string) []page {
	if fits(p, lim) {
		return []page{p}
	}
	overhead := pageOverhead(p) + 2*(jsonLen(p.Low)+jsonLen(p.High))
	total := 0
	for _, e := range p.Entries {
		total += entryLen(e)
	}
	fillEntries := max(1, lim.entries*3/4)
	fillBytes := max(1, (lim.bytes-overhead)*3/4)
	k := max((len(p.Entries)+fillEntries-1)/fillEntries, (total+fillBytes-1)/fillBytes, 2)
	perEntries := (len(p.Entries) + k - 1) / k
	perBytes := (total + k - 1) / k
	var pieces [][]Entry
	start, bytes := 0, 0
	for i, e := range p.Entries {
		l := entryLen(e)
		if i > start && (i-start >= perEntries || bytes+l > perBytes) {
			pieces = append(pieces, p.Entries[start:i])
			start, bytes = i, 0
		}
		bytes += l
	}
	pieces = append(pieces, p.Entries[start:])
	out := make([]page, len(pieces))
	for i, es := range pieces {
		out[i] = page{ID: p.ID, Low: p.Low, Seq: p.Seq, Entries: es}
		if i > 0 {
			out[i].ID = newID()
			out[i].Low = es[0].Key
			out[i-1].High = out[i].Low
			out[i-1].Next = out[i].ID
		}
	}
	out[len(out)-1].High = p.High
	out[len(out)-1].Next = p.Next
	return out
}

// errConflict is a compare-and-set write that lost: the page changed since
// it was read. The writer reads it again and retries.
var errConflict = errors.New("listing: page changed since read")

// pageStore is the storage applyBatch writes through: the KV bucket, or a
// map in tests.
type pageStore interface {
	// getPage returns page id and its revision.
	getPage(ctx context.Context, id string) (page, uint64, error)
	// createPage stores a new page; it fails if the id exists.
	createPage(ctx context.Context, p page) error
	// updatePage replaces the page at revision rev, or fails with an error
	// that wraps errConflict if it is no longer at rev.
	updatePage(ctx context.Context, p page, rev uint64) error
	// dropPage removes a page no other page links to (best effort).
	dropPage(ctx context.Context, id string)
}

// locatePage returns the page whose range holds key, starting from the
// root hint and following next links, with its revision and the number of
// links followed.
func locatePage(ctx context.Context, st pageStore, rt *rootIndex, key string) (page, uint64, int, error) {
	p, rev, err := st.getPage(ctx, rt.locate(key))
	hops := 0
	for err == nil && !p.covers(key) {
		if p.High == "" || key < p.Low || p.Next == "" {
			return page{}, 0, hops, fmt.Errorf("%w: page %s [%q, %q) cannot lead to %q", ErrCorrupt, p.ID, p.Low, p.High, key)
		}
		p, rev, err = st.getPage(ctx, p.Next)
		hops++
	}
	return p, rev, hops, err
}

// applyBatch applies ops (normalized: sorted, one per key) to the pages in
// st, with one compare-and-set write per page it changes (plus one create
// per page a split adds). upto is the last stream sequence of the batch. A
// write that loses to another writer reads the page again and retries, so
// no op is lost; ops already reflected in a page (sequence <= its Seq) are
// skipped, so applying a batch twice is harmless. The pages it adds go into
// rt (the caller writes the root); its stats say what it did.
func applyBatch(ctx context.Context, st pageStore, rt *rootIndex, ops []op, upto uint64, lim limits, newID func() string) (batchStats, error) {
	var bs batchStats
	for len(ops) > 0 {
		if err := ctx.Err(); err != nil {
			return bs, err
		}
		p, rev, hops, err := locatePage(ctx, st, rt, ops[0].Key)
		bs.Hops += hops
		if err != nil {
			return bs, err
		}
		np, n, changed := applyOps(p, ops, upto)
		if changed {
			parts := split(np, lim, newID)
			if err := writeParts(ctx, st, parts, rev); err != nil {
				if errors.Is(err, errConflict) {
					bs.Conflicts++
					continue // read the page again and redo these ops
				}
				return bs, err
			}
			bs.Writes++
			var refs []rootRef
			for _, q := range parts[1:] {
				refs = append(refs, rootRef{ID: q.ID, Low: q.Low})
			}
			*rt = rt.merge(refs)
			bs.Added = append(bs.Added, refs...)
		}
		ops = ops[n:]
	}
	return bs, nil
}

// batchStats says what applyBatch did: pages written and added, writes
// lost to another writer (and redone), links followed past the root.
type batchStats struct {
	Writes    int
	Added     []rootRef
	Conflicts int
	Hops      int
}

// writeParts writes a page and the right pages a split made of it: the new
// pages first (nothing links to them yet), then the page itself with
// compare-and-set, which links them in. If that write fails the new pages
// are dropped again.
func writeParts(ctx context.Context, st pageStore, parts []page, rev uint64) error {
	var created []string
	drop := func() {
		for _, id := range created {
			st.dropPage(ctx, id)
		}
	}
	for _, q := range parts[1:] {
		if err := st.createPage(ctx, q); err != nil {
			drop()
			return fmt.Errorf("create page %s: %w", q.ID, err)
		}
		created = append(created, q.ID)
	}
	if err := st.updatePage(ctx, parts[0], rev); err != nil {
		drop()
		return fmt.Errorf("update page %s: %w", parts[0].ID, err)
	}
	return nil
}

// pageSource is what the listing walk reads: the page for a key (through
// the root, following links) and a page by id (a next link).
type pageSource interface {
	seek(ctx context.Context, key string) (*page, error)
	page(ctx context.Context, id string) (*page, error)
}

// commonPrefix returns the common prefix key rolls up into under prefix and
// delim: key up to and including the first delim after prefix, or "".
func commonPrefix(key, prefix, delim string) string {
	if delim == "" || !strings.HasPrefix(key, prefix) {
		return ""
	}
	i := strings.Index(key[len(prefix):], delim)
	if i < 0 {
		return ""
	}
	return key[:len(prefix)+i+len(delim)]
}

// successor returns the least string greater than every string that starts
// with s, and false if there is none (s is all 0xff bytes).
func successor(s string) (string, bool) {
	b := []byte(strings.TrimRight(s, "\xff"))
	if len(b) == 0 {
		return "", false
	}
	b[len(b)-1]++
	return string(b), true
}

// startKey returns the least key a query may list, and false if none can.
func startKey(q Query) (string, bool) {
	pos := q.Prefix
	if q.After == "" {
		return pos, true
	}
	if a := q.After + "\x00"; a > pos { // the least string after After
		pos = a
	}
	if q.Delimiter != "" && commonPrefix(q.After, q.Prefix, q.Delimiter) == q.After {
		// After is a common prefix: resume after all of its keys.
		s, ok := successor(q.After)
		if !ok {
			return "", false
		}
		pos = max(pos, s)
	}
	return pos, true
}

// list walks the pages for one page of a listing. After a common prefix it
// seeks to the first key past it (through the root when that key lies
// beyond the current page), so the keys under a prefix are never scanned.
func list(ctx context.Context, src pageSource, q Query) (Result, error) {
	limit := q.MaxKeys
	if limit <= 0 {
		limit = DefaultMaxKeys
	}
	var res Result
	pos, ok := startKey(q)
	if !ok {
		return res, nil
	}
	p, err := src.seek(ctx, pos)
	if err != nil {
		return Result{}, err
	}
	i := p.find(pos)
	count := 0
	for {
		if i >= len(p.Entries) {
			if p.High == "" || p.Next == "" {
				break
			}
			np, err := src.page(ctx, p.Next)
			if err != nil {
				return Result{}, err
			}
			if np.Low != p.High {
				return Result{}, fmt.Errorf("%w: page %s ends at %q, its next %s starts at %q", ErrCorrupt, p.ID, p.High, np.ID, np.Low)
			}
			p, i = np, np.find(pos)
			continue
		}
		e := p.Entries[i]
		if !strings.HasPrefix(e.Key, q.Prefix) {
			break // past every key with the prefix (keys here are >= Prefix)
		}
		if count == limit {
			res.Truncated = true
			break
		}
		count++
		cp := commonPrefix(e.Key, q.Prefix, q.Delimiter)
		if cp == "" {
			res.Entries = append(res.Entries, e)
			res.Next = e.Key
			i++
			continue
		}
		res.CommonPrefixes = append(res.CommonPrefixes, cp)
		res.Next = cp
		if pos, ok = successor(cp); !ok {
			break
		}
		if !p.covers(pos) {
			if p, err = src.seek(ctx, pos); err != nil {
				return Result{}, err
			}
		}
		i = p.find(pos)
	}
	if !res.Truncated {
		res.Next = ""
	}
	return res, nil
}

// wireEntry is an entry in a page's JSON. A key that is not valid UTF-8
// (JSON would mangle it) goes in KB, base64, instead of K.
type wireEntry struct {
	K    string `json:"k,omitempty"`
	KB   []byte `json:"kb,omitempty"`
	Size int64  `json:"size"`
	ETag string `json:"etag,omitempty"`
	Mod  int64  `json:"mod"`
}

// wirePage is a page's JSON ("mod" in unix milliseconds).
type wirePage struct {
	V       int         `json:"v"`
	ID      string      `json:"id"`
	Low     string      `json:"low"`
	LowB    []byte      `json:"low_b,omitempty"`
	High    string      `json:"high"`
	HighB   []byte      `json:"high_b,omitempty"`
	Next    string      `json:"next"`
	Seq     uint64      `json:"seq"`
	Entries []wireEntry `json:"entries"`
}

type wireRef struct {
	ID   string `json:"id"`
	Low  string `json:"low"`
	LowB []byte `json:"low_b,omitempty"`
}

type wireRoot struct {
	V     int       `json:"v"`
	Pages []wireRef `json:"pages"`
}

// toWire splits a key into its JSON string or, if not valid UTF-8, bytes.
func toWire(s string) (string, []byte) {
	if utf8.ValidString(s) {
		return s, nil
	}
	return "", []byte(s)
}

func fromWire(s string, b []byte) string {
	if b != nil {
		return string(b)
	}
	return s
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// encodePage returns p's JSON.
func encodePage(p page) ([]byte, error) {
	w := wirePage{V: formatVersion, ID: p.ID, Next: p.Next, Seq: p.Seq, Entries: make([]wireEntry, len(p.Entries))}
	w.Low, w.LowB = toWire(p.Low)
	w.High, w.HighB = toWire(p.High)
	for i, e := range p.Entries {
		we := wireEntry{Size: e.Size, ETag: e.ETag}
		if !e.Modified.IsZero() {
			we.Mod = e.Modified.UnixMilli()
		}
		we.K, we.KB = toWire(e.Key)
		w.Entries[i] = we
	}
	b, err := marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode page %s: %w", p.ID, err)
	}
	return b, nil
}

// decodePage parses a page's JSON. Entries outside the page's range or out
// of order (what a crash or a bug could leave) are dropped.
func decodePage(b []byte) (page, error) {
	var w wirePage
	if err := json.Unmarshal(b, &w); err != nil {
		return page{}, fmt.Errorf("%w: page: %w", ErrCorrupt, err)
	}
	if w.V != formatVersion {
		return page{}, fmt.Errorf("%w: page %s: version %d", ErrCorrupt, w.ID, w.V)
	}
	p := page{ID: w.ID, Low: fromWire(w.Low, w.LowB), High: fromWire(w.High, w.HighB), Next: w.Next, Seq: w.Seq,
		Entries: make([]Entry, 0, len(w.Entries))}
	for _, we := range w.Entries {
		e := Entry{Key: fromWire(we.K, we.KB), Size: we.Size, ETag: we.ETag}
		if we.Mod != 0 {
			e.Modified = time.UnixMilli(we.Mod).UTC()
		}
		if !p.covers(e.Key) || len(p.Entries) > 0 && p.Entries[len(p.Entries)-1].Key >= e.Key {
			continue
		}
		p.Entries = append(p.Entries, e)
	}
	return p, nil
}

// encodeRoot returns r's JSON. A root too large for one value is thinned
// (every other page dropped, the first kept) until it fits: any subset
// holding the first page is still a correct root.
func encodeRoot(r rootIndex) ([]byte, error) {
	refs := r.Pages
	for {
		w := wireRoot{V: formatVersion, Pages: make([]wireRef, len(refs))}
		for i, p := range refs {
			w.Pages[i].ID = p.ID
			w.Pages[i].Low, w.Pages[i].LowB = toWire(p.Low)
		}
		b, err := marshal(w)
		if err != nil {
			return nil, fmt.Errorf("encode root: %w", err)
		}
		if len(b) <= maxRootBytes || len(refs) <= 1 {
			return b, nil
		}
		thin := make([]rootRef, 0, (len(refs)+1)/2)
		for i := 0; i < len(refs); i += 2 {
			thin = append(thin, refs[i])
		}
		refs = thin
	}
}

// decodeRoot parses a root's JSON; it always starts with the first page.
func decodeRoot(b []byte) (rootIndex, error) {
	var w wireRoot
	if err := json.Unmarshal(b, &w); err != nil {
		return rootIndex{}, fmt.Errorf("%w: root: %w", ErrCorrupt, err)
	}
	if w.V != formatVersion {
		return rootIndex{}, fmt.Errorf("%w: root: version %d", ErrCorrupt, w.V)
	}
	refs := make([]rootRef, 0, len(w.Pages))
	for _, p := range w.Pages {
		refs = append(refs, rootRef{ID: p.ID, Low: fromWire(p.Low, p.LowB)})
	}
	return emptyRoot().merge(refs), nil
}
