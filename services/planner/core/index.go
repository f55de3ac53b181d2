package core

import (
	"slices"
)

// The node → shards index: byNode[r] lists, ascending, the handles of the
// shards whose entry names node r, so that what concerns one node (its
// verdict, its inventory check, its drain) costs that node's shards, not
// the whole map. 4 bytes per holder of every entry.

// indexAdd records that shard h's entry names node r.
func (v *View) indexAdd(r NodeRef, h uint32) {
	for int(r) >= len(v.byNode) {
		v.byNode = append(v.byNode, nil)
	}
	l := v.byNode[r]
	if n := len(l); n == 0 || l[n-1] < h { // the common case while loading
		v.byNode[r] = append(l, h)
		return
	}
	if i, found := slices.BinarySearch(l, h); !found {
		v.byNode[r] = slices.Insert(l, i, h)
	}
}

// indexRemove records that shard h's entry no longer names node r.
func (v *View) indexRemove(r NodeRef, h uint32) {
	if int(r) >= len(v.byNode) {
		return
	}
	l := v.byNode[r]
	if i, found := slices.BinarySearch(l, h); found {
		v.byNode[r] = slices.Delete(l, i, i+1)
	}
}

// reindex moves shard h in the index from the holders before to after.
func (v *View) reindex(h uint32, before, after []NodeRef) {
	for _, r := range before {
		if !slices.Contains(after, r) {
			v.indexRemove(r, h)
		}
	}
	for _, r := range after {
		if !slices.Contains(before, r) {
			v.indexAdd(r, h)
		}
	}
}

// shardsOn yields the handles of the shards whose entry lists node r, in
// handle order. The caller must not change the map while iterating.
func (v *View) shardsOn(r NodeRef) func(func(uint32) bool) {
	return func(yield func(uint32) bool) {
		if int(r) >= len(v.byNode) {
			return
		}
		for _, h := range v.byNode[r] {
			v.visits++
			if !yield(h) {
				return
			}
		}
	}
}

// Visits counts the shard records examined so far by rescans, by the
// refresh of one node's shards and by per-node walks (inventory checks,
// drains): a measure of work that tests compare before and after a call,
// where timing would be flaky.
func (v *View) Visits() int64 { return v.visits }

// refreshNode brings the repair queue up to date for the shards on node r,
// after something about r changed (its verdict, its registration, its
// drain): those shards, and every piece of a stripe with a piece on r. With
// a rescan pending (or while loading) it leaves the work to that rescan.
func (v *View) refreshNode(r NodeRef) {
	if v.Loading || v.NeedRescan {
		v.NeedRescan = true
		return
	}
	var (
		batch  []uint32
		groups map[*StripeGroup]bool
	)
	for h := range v.shardsOn(r) {
		g := v.Group(h)
		if g == nil {
			batch = append(batch, h)
			continue
		}
		if groups[g] {
			continue
		}
		if groups == nil {
			groups = map[*StripeGroup]bool{}
		}
		groups[g] = true
		for _, p := range g.pieces {
			if p != noPiece {
				batch = append(batch, p)
			}
		}
	}
	v.refreshBatch(batch)
}

// refreshBatch moves each shard of hs to the queue its holders call for,
// as refresh does one by one, but touching each queue once: a queue loses
// the shards that left it in one pass, and gains the new ones in one merge.
func (v *View) refreshBatch(hs []uint32) {
	if len(hs) == 0 {
		return
	}
	now := v.clock().UnixNano()
	var (
		adds         = map[uint8][]uint32{}
		left         = map[uint8]bool{}
		surplusAdd   []uint32
		surplusLeave bool
	)
	for _, h := range hs {
		v.visits++
		s := v.Record(h)
		want, surplus := v.wantBucket(h)
		switch {
		case surplus && s.Flags&flagSurplus == 0:
			s.Flags |= flagSurplus
			surplusAdd = append(surplusAdd, h)
		case !surplus && s.Flags&flagSurplus != 0:
			s.Flags &^= flagSurplus
			surplusLeave = true
		}
		if want != 0 {
			s.Flags &^= FlagLostSent
		}
		if want == noBucket {
			delete(v.Retries, h)
		}
		if want == s.bucket {
			continue
		}
		if s.bucket != noBucket {
			left[s.bucket] = true
		}
		v.unpend(s)
		v.noteBucket(h, s.bucket, want)
		s.bucket = want
		if want == noBucket {
			delete(v.shortSince, h)
			continue
		}
		if _, ok := v.shortSince[h]; !ok {
			v.shortSince[h] = now
		}
		if v.deferring() {
			v.deferAdd(h, want)
			continue
		}
		adds[want] = append(adds[want], h)
	}
	for b := range left {
		v.buckets[b] = slices.DeleteFunc(v.buckets[b], func(h uint32) bool { return v.Record(h).bucket != b })
	}
	for b, add := range adds {
		v.buckets[b] = v.mergeQueue(v.buckets[b], add)
	}
	if surplusLeave {
		v.surplus = slices.DeleteFunc(v.surplus, func(h uint32) bool { return v.Record(h).Flags&flagSurplus == 0 })
	}
	if len(surplusAdd) > 0 {
		slices.Sort(surplusAdd)
		v.surplus = mergeSorted(v.surplus, surplusAdd)
	}
	if v.trimCursor > len(v.surplus) {
		v.trimCursor = 0
	}
}

// mergeQueue merges add (shards not in q) into queue q, keeping queue
// order. Shards newly short sort last, so the usual case is an append.
func (v *View) mergeQueue(q, add []uint32) []uint32 {
	// Sort on keys read once (a comparison reading shortSince would look
	// the map up twice), as Rescan does.
	keys := make([]queued, len(add))
	for i, h := range add {
		keys[i] = v.queuedKey(v.shortSince[h], h)
	}
	slices.SortFunc(keys, v.queuedOrder)
	for i, k := range keys {
		add[i] = k.h
	}
	return v.mergeInto(q, add)
}

// mergeInto merges add (shards not in q, in queue order) into queue q.
func (v *View) mergeInto(q, add []uint32) []uint32 {
	if len(q) == 0 || v.queueOrder(q[len(q)-1], add[0]) < 0 {
		return append(q, add...)
	}
	out := make([]uint32, 0, len(q)+len(add))
	i := 0
	for _, h := range add {
		j := i + v.search(q[i:], h)
		out = append(out, q[i:j]...)
		out = append(out, h)
		i = j
	}
	return append(out, q[i:]...)
}

// mergeSorted merges ascending b (no element in a) into ascending a.
func mergeSorted(a, b []uint32) []uint32 {
	if len(a) == 0 || a[len(a)-1] < b[0] {
		return append(a, b...)
	}
	out := make([]uint32, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if a[i] < b[j] {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}
