package listing

import (
	"encoding/json"
	"sort"
)

// Page is one page of the index (KV key "p.<id>"): entries sorted by key,
// all with Low <= key < High (High "" is +infinity); Next is the page to
// the right ("" for the last). Entries outside [Low, High), which a crash in
// the middle of a split can leave behind, are ignored by readers.
type Page struct {
	V       int     `json:"v"`
	ID      string  `json:"id"`
	Low     string  `json:"low"`
	High    string  `json:"high,omitempty"`
	Next    string  `json:"next,omitempty"`
	Entries []Entry `json:"entries"`
}

// Root lists the pages by their low key (KV key "root"). It may lag behind a
// split; readers then reach the new page through Next.
type Root struct {
	V     int       `json:"v"`
	Pages []RootRef `json:"pages"`
}

// RootRef is one page in the root.
type RootRef struct {
	ID  string `json:"id"`
	Low string `json:"low"`
}

// Split thresholds: a page splits above maxEntries entries or maxPageBytes
// of JSON (keys may be 1 KiB long; a KV value must stay well under 1 MiB).
const (
	maxEntries   = 2000
	maxPageBytes = 256 << 10
)

// covers reports whether key falls in the page's range.
func (p *Page) covers(key string) bool {
	return key >= p.Low && (p.High == "" || key < p.High)
}

// find returns the index of the first entry >= key.
func (p *Page) find(key string) int {
	return sort.Search(len(p.Entries), func(i int) bool { return p.Entries[i].Key >= key })
}

// upsert puts e in place (replacing an entry with the same key).
func (p *Page) upsert(e Entry) {
	i := p.find(e.Key)
	if i < len(p.Entries) && p.Entries[i].Key == e.Key {
		p.Entries[i] = e
		return
	}
	p.Entries = append(p.Entries, Entry{})
	copy(p.Entries[i+1:], p.Entries[i:])
	p.Entries[i] = e
}

// remove drops key's entry if any.
func (p *Page) remove(key string) {
	if i := p.find(key); i < len(p.Entries) && p.Entries[i].Key == key {
		p.Entries = append(p.Entries[:i], p.Entries[i+1:]...)
	}
}

// prune drops entries outside the page's range (left by an interrupted split).
func (p *Page) prune() {
	kept := p.Entries[:0]
	for _, e := range p.Entries {
		if p.covers(e.Key) {
			kept = append(kept, e)
		}
	}
	p.Entries = kept
}

// oversized reports whether the page must split.
func (p *Page) oversized() bool {
	if len(p.Entries) > maxEntries {
		return true
	}
	if len(p.Entries) < 2 {
		return false
	}
	b, _ := json.Marshal(p)
	return len(b) > maxPageBytes
}

// split cuts p in two at its middle entry: p keeps the left half, the new
// page (id newID) the right; links and bounds are set on both.
func (p *Page) split(newID string) *Page {
	mid := len(p.Entries) / 2
	right := &Page{V: 1, ID: newID, Low: p.Entries[mid].Key, High: p.High, Next: p.Next}
	right.Entries = append([]Entry(nil), p.Entries[mid:]...)
	p.Entries = p.Entries[:mid:mid]
	p.High, p.Next = right.Low, right.ID
	return right
}

// locate returns the index in r.Pages of the page whose range should hold
// key according to the root (the last page with Low <= key).
func (r *Root) locate(key string) int {
	i := sort.Search(len(r.Pages), func(i int) bool { return r.Pages[i].Low > key })
	return max(i-1, 0)
}

// insert adds a page reference after a split, keeping the root sorted.
func (r *Root) insert(ref RootRef) {
	i := sort.Search(len(r.Pages), func(i int) bool { return r.Pages[i].Low >= ref.Low })
	if i < len(r.Pages) && r.Pages[i].Low == ref.Low {
		r.Pages[i] = ref
		return
	}
	r.Pages = append(r.Pages, RootRef{})
	copy(r.Pages[i+1:], r.Pages[i:])
	r.Pages[i] = ref
}
