// Package listing keeps object keys in byte order in JetStream KV, so that a
// page of an S3 listing costs the same with a million keys as with a
// thousand. The index is a chain of pages (B-link style: each page knows its
// key range and the page to its right) plus a root listing the pages by
// their low key; the acting planner's Indexer is its only writer and derives
// it from the objects bucket's stream (level-triggered: it resumes from a
// cursor after a crash and applying twice is harmless). Readers seek through
// the root and follow links, so a stale root costs a hop, never a key.
//
// walk.go holds the S3 listing walk, pure; pages.go the page decisions,
// pure; index_kv.go and indexer.go the bus adapters.
package listing

import (
	"strings"
	"time"
)

// Entry is one object in the index.
type Entry struct {
	Key      string    `json:"k"`
	Size     int64     `json:"s"`
	ETag     string    `json:"e,omitempty"`
	Modified time.Time `json:"m"`
}

// Query is one S3 listing request over full object keys. After is the
// marker (exclusive); MaxKeys counts entries and common prefixes together.
type Query struct {
	Prefix, Delimiter, After string
	MaxKeys                  int
}

// Result is one page: Next is the marker to continue after (the last key or
// common prefix returned) when Truncated.
type Result struct {
	Entries        []Entry
	CommonPrefixes []string
	Truncated      bool
	Next           string
}

// cursor iterates over the index in key order. seek positions it at the
// first entry >= k; next returns entries in order (ok false at the end).
type cursor interface {
	seek(k string) error
	next() (e Entry, ok bool, err error)
}

// successor returns the smallest string greater than every string with
// prefix p ("" when there is none: p is all 0xff bytes).
func successor(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// walk answers q over c with S3's semantics: keys after q.After with prefix
// q.Prefix, in byte order; with a delimiter, keys sharing the part of their
// name up to the first delimiter after the prefix roll up into one common
// prefix, and the walk seeks past all of them (it never reads the keys under
// a common prefix). A common prefix at or before the marker is not returned
// again.
func walk(c cursor, q Query) (Result, error) {
	var res Result
	if q.MaxKeys <= 0 {
		return res, nil
	}
	start := q.Prefix
	if q.After >= start {
		start = q.After + "\x00" // strictly after the marker
	}
	if err := c.seek(start); err != nil {
		return res, err
	}
	count := 0
	for {
		e, ok, err := c.next()
		if err != nil {
			return res, err
		}
		if !ok || !strings.HasPrefix(e.Key, q.Prefix) {
			return res, nil
		}
		item, isPrefix := e.Key, false
		if q.Delimiter != "" {
			if i := strings.Index(e.Key[len(q.Prefix):], q.Delimiter); i >= 0 {
				item, isPrefix = e.Key[:len(q.Prefix)+i+len(q.Delimiter)], true
			}
		}
		if isPrefix && item <= q.After {
			if err := c.seek(successor(item)); err != nil {
				return res, err
			}
			if successor(item) == "" {
				return res, nil
			}
			continue
		}
		if count == q.MaxKeys {
			res.Truncated = true
			return res, nil
		}
		count++
		res.Next = item
		if !isPrefix {
			res.Entries = append(res.Entries, e)
			continue
		}
		res.CommonPrefixes = append(res.CommonPrefixes, item)
		next := successor(item)
		if next == "" {
			return res, nil
		}
		if err := c.seek(next); err != nil {
			return res, err
		}
	}
}
