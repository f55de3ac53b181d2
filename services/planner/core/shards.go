package core

import (
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/rehome/rehome/shared/model"
)

const (
	maxNodes      = 0xFFFF // nodeRef 0xFFFF is never issued
	inlineHolders = 5      // holders kept in the shard record; more spill to a map
	MaxHolders    = 64
	noBucket      = 0xFF
	pageBits      = 16
	pageSize      = 1 << pageBits
	maxLayouts    = 255
	// numBuckets holds every margin: live copies < Copies() <= 16 for a
	// replicated shard, M - missing + 1 <= M < moveBucket for a missing
	// piece, and moveBucket.
	numBuckets = noBucket
	// moveBucket, the last queue, holds whole shards with a copy that must
	// move (see drain.go): planned after every repair.
	moveBucket = numBuckets - 1
)

// Flags of a shard record.
const (
	FlagLostSent uint8 = 1 << iota // event.Lost published for this loss
	flagSurplus                    // listed in view.surplus
	flagMissing                    // a listed holder lacks it (see view.lacks)
)

// shard is one placement-map entry, 32 bytes. The id lives in the intern
// table; the checksum is re-read from the map when a task is issued.
type shard struct {
	size   int64
	stripe uint32
	// tag is, for an erasure-coded piece, a hash of its object id (it groups
	// the pieces of a stripe); for a replicated shard, the first four bytes
	// of its SHA-256 (an inventory check compares it).
	tag     uint32
	holders [inlineHolders]NodeRef
	nh      uint8 // number of holders (> inlineHolders: see view.spill)
	index   uint8
	layout  uint8 // index into view.layouts
	Flags   uint8
	bucket  uint8 // repair queue it sits in (see view.buckets), or noBucket
}

// Record returns the compact record of shard handle h (h must be valid).
func (v *View) Record(h uint32) *shard { return &v.pages[h>>pageBits][h&(pageSize-1)] }

func (v *View) holders(h uint32) []NodeRef {
	s := v.Record(h)
	if s.nh > inlineHolders {
		return v.spill[h]
	}
	return s.holders[:s.nh]
}

func (v *View) holds(h uint32, r NodeRef) bool { return slices.Contains(v.holders(h), r) }

func (v *View) liveCount(h uint32) int {
	live, _ := v.counts(h)
	return live
}

// counts returns how many holders of h are live and how many are up; a
// holder whose disk lacks the shard (missing) counts as neither.
func (v *View) counts(h uint32) (live, up int) {
	var miss []NodeRef
	if v.Record(h).Flags&flagMissing != 0 {
		miss = v.lacks[h]
	}
	for _, r := range v.holders(h) {
		if miss != nil && slices.Contains(miss, r) {
			continue
		}
		switch st := v.Nodes[r].EffState(); {
		case st == model.StateUp:
			live++
			up++
		case st.Live():
			live++
		}
	}
	return live, up
}

func (v *View) layoutIndex(l model.Layout) (uint8, error) {
	if i := slices.Index(v.layouts, l); i >= 0 {
		return uint8(i), nil
	}
	if len(v.layouts) >= maxLayouts {
		return 0, fmt.Errorf("%w distinct layouts", errTooMany)
	}
	v.layouts = append(v.layouts, l)
	return uint8(len(v.layouts) - 1), nil
}

func objHash(id string) uint32 {
	f := fnv.New32a()
	f.Write([]byte(id))
	return f.Sum32()
}

// UpsertPlacement adds or replaces a map entry (already validated). A copy
// in flight whose target now holds the shard is resolved; landed reports it
// (its capacity is free: plan again).
func (v *View) UpsertPlacement(p model.Placement) (landed bool, err error) {
	if len(p.Nodes) > MaxHolders {
		return false, fmt.Errorf("%w holders (%d) for shard %s", errTooMany, len(p.Nodes), p.Shard)
	}
	sum, err := v.checkEntry(p)
	if err != nil {
		return false, err
	}
	li, err := v.layoutIndex(p.Layout)
	if err != nil {
		return false, err
	}
	refs := make([]NodeRef, 0, len(p.Nodes))
	for _, id := range p.Nodes {
		r, err := v.Ref(id)
		if err != nil {
			return false, err
		}
		if !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	h, added := v.IDs.Intern(p.Shard)
	for int(h>>pageBits) >= len(v.pages) {
		v.pages = append(v.pages, make([]shard, pageSize))
	}
	s := v.Record(h)
	var was *StripeGroup // the stripe the piece was in
	var before []NodeRef // the holders it had
	if added {
		*s = shard{bucket: noBucket}
	} else {
		before = slices.Clone(v.holders(h))
		v.noteBucket(h, s.bucket, noBucket) // its size, layout or stripe may change
		was = v.unstripe(h)
		v.account(h, -1)
		delete(v.spill, h)
		v.pruneMarks(h, refs)
	}
	tag := shaTag(p.SHA256)
	if p.Layout.Erasure() {
		tag = objHash(p.ObjectID)
	}
	s.size, s.stripe, s.tag = p.Size, uint32(p.Stripe), tag
	s.index, s.layout, s.nh = uint8(p.Index), li, uint8(len(refs))
	if len(refs) > inlineHolders {
		v.spill[h] = refs
	} else {
		copy(s.holders[:], refs)
	}
	v.account(h, +1)
	v.reindex(h, before, refs)
	v.unlisted.changed(h, before, refs)
	var g *StripeGroup
	if p.Layout.Erasure() {
		g = v.enstripe(h, p, sum)
	}
	v.noteBucket(h, noBucket, s.bucket)
	for _, r := range refs {
		if len(v.removed) > 0 && v.removed[v.Nodes[r].ID] {
			v.MarkMissing(h, r) // a removed node's listing is dropped
		}
	}
	if f := v.Flights[h]; f != nil && !f.inPlace && v.holds(h, f.target) {
		v.EndFlight(h)
		landed = true
	}
	v.refresh(h)
	if was != g {
		v.refreshStripe(was)
	}
	v.refreshStripe(g)
	return landed, nil
}

// account adds (sign +1) or removes (-1) an entry's share of the node and
// object counters.
func (v *View) account(h uint32, sign int) {
	s := v.Record(h)
	for _, r := range v.holders(h) {
		v.Nodes[r].Shards += sign
		v.Nodes[r].Bytes += int64(sign) * s.size
	}
	if s.stripe == 0 && s.index == 0 {
		v.objects += sign
	}
}

// RemovePlacement drops a map entry; it reports whether it existed.
func (v *View) RemovePlacement(id string) bool {
	h, ok := v.IDs.Lookup(id)
	if !ok {
		return false
	}
	s := v.Record(h)
	v.flushPending() // no stale entry may outlive the handle
	v.unqueue(h)
	v.unsurplus(h)
	delete(v.shortSince, h)
	v.pruneMarks(h, nil)
	v.account(h, -1)
	for _, r := range v.holders(h) {
		v.indexRemove(r, h)
	}
	if f := v.Flights[h]; f != nil {
		v.noteUnmapped(id, f.Task) // its result is still to come
		v.EndFlight(h)
	}
	if v.Trims[h] != nil {
		v.EndTrim(h)
	}
	g := v.unstripe(h)
	delete(v.spill, h)
	delete(v.Retries, h)
	v.unlisted.forget(h)
	*s = shard{bucket: noBucket}
	v.IDs.Remove(h)
	v.refreshStripe(g)
	return true
}
