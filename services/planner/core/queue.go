package core

import (
	"cmp"
	"encoding/binary"
	"slices"
	"strings"
)

// wantBucket is the repair queue a shard belongs in (noBucket: healthy) and
// whether it has surplus up holders.
func (v *View) wantBucket(h uint32) (bucket uint8, surplus bool) {
	s := v.Record(h)
	live, up := v.counts(h)
	if v.layouts[s.layout].Erasure() {
		if g := v.Group(h); g != nil {
			return v.pieceBucket(g, h, live, up)
		}
	}
	copies := v.layouts[s.layout].Copies()
	if live >= copies {
		if (v.draining > 0 || len(v.Moves) > 0) && live-v.leavingCount(h) < copies {
			return moveBucket, up > copies
		}
		return noBucket, up > copies
	}
	return uint8(live), false
}

// refresh moves one shard to the queue its holders call for.
func (v *View) refresh(h uint32) {
	if v.Loading || v.NeedRescan {
		v.NeedRescan = true
		return
	}
	s := v.Record(h)
	want, surplus := v.wantBucket(h)
	if surplus {
		v.ensurplus(h)
	} else {
		v.unsurplus(h)
	}
	if want != 0 {
		s.Flags &^= FlagLostSent
	}
	if want == noBucket {
		delete(v.Retries, h)
	}
	if want == s.bucket {
		return
	}
	v.unqueue(h)
	if want == noBucket {
		delete(v.shortSince, h)
		return
	}
	if _, ok := v.shortSince[h]; !ok {
		v.shortSince[h] = v.clock().UnixNano()
	}
	b := v.buckets[want]
	i := v.search(b, h)
	v.buckets[want] = slices.Insert(b, i, h)
	v.noteBucket(h, noBucket, want)
	s.bucket = want
}

// unqueue takes a shard out of its repair queue (its shortSince stays).
func (v *View) unqueue(h uint32) {
	s := v.Record(h)
	if s.bucket == noBucket {
		return
	}
	b := v.buckets[s.bucket]
	if i := v.search(b, h); i < len(b) && b[i] == h {
		v.buckets[s.bucket] = slices.Delete(b, i, i+1)
	}
	v.unpend(s)
	v.noteBucket(h, s.bucket, noBucket)
	s.bucket = noBucket
}

// queueOrder orders two queued shards: first seen short earlier first, then by id.
func (v *View) queueOrder(a, b uint32) int {
	if c := cmp.Compare(v.shortSince[a], v.shortSince[b]); c != 0 {
		return c
	}
	return strings.Compare(v.IDs.String(a), v.IDs.String(b))
}

// search returns where h sits (or would sit) in a bucket in queue order.
func (v *View) search(b []uint32, h uint32) int {
	i, _ := slices.BinarySearchFunc(b, h, v.queueOrder)
	return i
}

// ensurplus lists h among the shards with surplus copies.
func (v *View) ensurplus(h uint32) {
	s := v.Record(h)
	if s.Flags&flagSurplus != 0 {
		return
	}
	s.Flags |= flagSurplus
	i, _ := slices.BinarySearch(v.surplus, h)
	v.surplus = slices.Insert(v.surplus, i, h)
}

// unsurplus takes h off the surplus list.
func (v *View) unsurplus(h uint32) {
	s := v.Record(h)
	if s.Flags&flagSurplus == 0 {
		return
	}
	s.Flags &^= flagSurplus
	if i, ok := slices.BinarySearch(v.surplus, h); ok {
		v.surplus = slices.Delete(v.surplus, i, i+1)
	}
}

// queued is a shard of a repair queue with its sort key, while sorting.
type queued struct {
	since  int64
	prefix uint64 // the id's first 8 bytes (idPrefix): decides most ties on since
	h      uint32
}

// queuedKey is h's sort key, first seen short at since.
func (v *View) queuedKey(since int64, h uint32) queued {
	return queued{since: since, prefix: idPrefix(v.IDs.String(h)), h: h}
}

// idPrefix is the first 8 bytes of id, big-endian, zero-padded: ids whose
// prefixes differ compare as their prefixes do, so a sort compares whole
// ids only when the prefixes are equal. (At 300 k shards short at once, all
// seen short in the same instant, string comparisons took 2/3 of planning
// a node loss.)
func idPrefix(id string) uint64 {
	var b [8]byte
	copy(b[:], id)
	return binary.BigEndian.Uint64(b[:])
}

// Rescan rebuilds every repair queue and the surplus list from the map and
// node states: the level-triggered heart of the planner. O(shards) plus
// sorting the queues. A shard short before keeps the time it was first seen
// short; one newly short gets the clock's now.
func (v *View) Rescan() {
	v.rescans++
	now := v.clock().UnixNano()
	v.NeedRescan = false
	for i := range v.buckets {
		v.buckets[i] = v.buckets[i][:0]
	}
	v.qt = queueTally{}
	for _, gs := range v.stripes {
		for _, g := range gs {
			g.queued = 0
		}
	}
	v.surplus = v.surplus[:0]
	v.pending, v.pendingCount = nil, [numBuckets]int{}
	sorting := make([][]queued, len(v.buckets))
	limit := v.IDs.Limit()
	for h := uint32(0); h < limit; h++ {
		if !v.IDs.Valid(h) {
			continue
		}
		v.visits++
		s := v.Record(h)
		s.Flags &^= flagPending
		want, surplus := v.wantBucket(h)
		s.bucket = want
		v.noteBucket(h, noBucket, want)
		if want != 0 {
			s.Flags &^= FlagLostSent
		}
		if surplus {
			s.Flags |= flagSurplus
			v.surplus = append(v.surplus, h)
		} else {
			s.Flags &^= flagSurplus
		}
		if want == noBucket {
			if len(v.Retries) > 0 {
				delete(v.Retries, h)
			}
			continue
		}
		since, ok := v.shortSince[h]
		if !ok {
			since = now
			v.shortSince[h] = now
		}
		sorting[want] = append(sorting[want], v.queuedKey(since, h))
	}
	for h := range v.shortSince {
		if !v.IDs.Valid(h) || v.Record(h).bucket == noBucket {
			delete(v.shortSince, h)
		}
	}
	for i, q := range sorting {
		slices.SortFunc(q, v.queuedOrder)
		b := v.buckets[i]
		for _, e := range q {
			b = append(b, e.h)
		}
		v.buckets[i] = b
	}
	if v.trimCursor > len(v.surplus) {
		v.trimCursor = 0
	}
}

// Rescans counts the full rescans done so far: a caller timing a call
// compares it before and after to tell whether the call rescanned.
func (v *View) Rescans() int { return v.rescans }

// fresh brings the queues up to date after liveness changes.
func (v *View) fresh() {
	if v.NeedRescan && !v.Loading {
		v.Rescan()
	}
	v.flushPending()
}

// queueTally holds running sums over the repair queue, by bucket, so that
// status and progress cost O(buckets), not O(shards short).
type queueTally struct {
	sizeCopies [numBuckets]int64 // Σ size × copies of the replicated shards
	size       [numBuckets]int64 // Σ size of the replicated shards
	pieceSize  [numBuckets]int64 // Σ size of the erasure-coded pieces
	degraded   int               // stripes with a piece in a bucket below moveBucket
}

// noteBucket moves shard h's share of the tallies from bucket from to
// bucket to (either noBucket: none); call it with the shard's size, layout
// and stripe as they are while it sits in the buckets.
func (v *View) noteBucket(h uint32, from, to uint8) {
	if from == to {
		return
	}
	if from != noBucket {
		v.tally(h, from, -1)
	}
	if to != noBucket {
		v.tally(h, to, +1)
	}
}

func (v *View) tally(h uint32, b uint8, sign int64) {
	s := v.Record(h)
	l := v.layouts[s.layout]
	if !l.Erasure() {
		v.qt.sizeCopies[b] += sign * s.size * int64(l.Copies())
		v.qt.size[b] += sign * s.size
		return
	}
	v.qt.pieceSize[b] += sign * s.size
	if b == moveBucket {
		return
	}
	if g := v.Group(h); g != nil {
		was := g.queued
		g.queued += int(sign)
		switch {
		case was == 0 && g.queued > 0:
			v.qt.degraded++
		case was > 0 && g.queued == 0:
			v.qt.degraded--
		}
	}
}

// queuedOrder orders queued shards with their keys: first seen short
// earlier first, then by id (queueOrder's order).
func (v *View) queuedOrder(a, b queued) int {
	if c := cmp.Compare(a.since, b.since); c != 0 {
		return c
	}
	if c := cmp.Compare(a.prefix, b.prefix); c != 0 {
		return c
	}
	return strings.Compare(v.IDs.String(a.h), v.IDs.String(b.h))
}
