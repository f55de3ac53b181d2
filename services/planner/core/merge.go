package core

import (
	"cmp"
	"slices"
	"strings"
)

// Refreshing a node's shards (a verdict) in two halves, so that the lock a
// caller keeps around the view is held for the decisions and not for the
// sorting. With View.DeferMerges set, refreshNode decides each shard's queue
// under the caller's lock as before, but leaves the shards newly short out
// of their queues, pending (flagPending, counted in Totals), instead of
// sorting them into place. The caller takes them (TakePending) before
// letting go of the lock, sorts them without it (PendingMerge.Sort touches
// nothing of the view: the keys are copied, and ids in the intern table are
// never overwritten), and merges them under the lock again (MergePending).
//
// Correct under changes in between, level-triggered: any change of a
// pending shard's queue (unpend) clears its flag, and the path that
// changed it queues it itself, so the merge skips it; a rescan clears every
// flag. While one batch is out, refreshes merge in place as without
// DeferMerges, so a handle freed and reused in between never carries the
// flag of a stale entry. Pending shards no caller took are merged in place
// by the next reader of the queues (fresh) or a removal.

// flagPending marks a shard in a bucket (s.bucket) but not yet in that
// bucket's queue: it waits in View.pending or in a PendingMerge taken out.
const flagPending uint8 = 1 << 3

// pendingAdd is a shard newly short, with its queue-order key copied.
type pendingAdd struct {
	since int64
	id    string
	h     uint32
	b     uint8
}

// PendingMerge is a batch of shards newly short that a refresh left out of
// their queues (see TakePending).
type PendingMerge struct {
	adds   []pendingAdd
	sorted bool
}

// Len is the number of shards in the batch.
func (p *PendingMerge) Len() int { return len(p.adds) }

// defer leaves shard h, newly in bucket b, out of its queue until a merge.
func (v *View) deferAdd(h uint32, b uint8) {
	s := v.Record(h)
	s.Flags |= flagPending
	v.pendingCount[b]++
	v.pending = append(v.pending, pendingAdd{since: v.shortSince[h], id: v.IDs.String(h), h: h, b: b})
}

// unpend clears the pending flag of a shard whose queue changes: whoever
// moves it queues it, and the merge skips it.
func (v *View) unpend(s *shard) {
	if s.Flags&flagPending != 0 {
		s.Flags &^= flagPending
		v.pendingCount[s.bucket]--
	}
}

// deferring reports whether a refresh leaves its newly short shards pending.
func (v *View) deferring() bool { return v.DeferMerges && !v.outstanding }

// TakePending hands over the shards the refreshes since the last call left
// pending (nil: none). The caller must give the batch back to MergePending
// (sorted or not) under the same lock; until then refreshes merge in place.
func (v *View) TakePending() *PendingMerge {
	if len(v.pending) == 0 {
		return nil
	}
	p := &PendingMerge{adds: v.pending}
	v.pending = nil
	v.outstanding = true
	return p
}

// Sort puts the batch in queue order (by bucket, then first seen short,
// then id). It reads only the batch: call it without the view's lock.
func (p *PendingMerge) Sort() {
	slices.SortFunc(p.adds, func(a, b pendingAdd) int {
		return cmp.Or(cmp.Compare(a.b, b.b), cmp.Compare(a.since, b.since), strings.Compare(a.id, b.id))
	})
	p.sorted = true
}

// MergePending merges a batch from TakePending into the queues: each shard
// still pending in the bucket it was left for joins that queue in order;
// the others were queued (or dropped) by whatever changed them since.
func (v *View) MergePending(p *PendingMerge) {
	if p == nil {
		return
	}
	v.outstanding = false
	if !p.sorted {
		p.Sort()
	}
	var add []uint32
	for i, e := range p.adds {
		s := v.Record(e.h)
		if v.IDs.Valid(e.h) && s.Flags&flagPending != 0 && s.bucket == e.b {
			s.Flags &^= flagPending
			v.pendingCount[e.b]--
			add = append(add, e.h)
		}
		if last := i == len(p.adds)-1; (last || p.adds[i+1].b != e.b) && len(add) > 0 {
			v.buckets[e.b] = v.mergeInto(v.buckets[e.b], add)
			add = add[:0]
		}
	}
}

// flushPending merges, in place, the shards left pending that no caller
// took.
func (v *View) flushPending() {
	if p := v.TakePending(); p != nil {
		v.MergePending(p)
	}
}
