package core

import (
	"encoding/hex"
	"fmt"
	"math"
	"slices"

	"github.com/rehome/rehome/shared/model"
)

// Erasure-coded stripes in the view. Each piece of a k+m stripe is its own
// placement entry (and shard record, Copies() == 1); the view groups the
// pieces of one stripe so that a piece's risk, its repair and its trim can be
// judged against the whole stripe. Risk shares the replicated scale: a
// stripe's margin is its pieces with a live holder minus K (the pieces it may
// still lose), like a replicated shard's live copies minus 1.

// noPiece marks a stripe index the map holds no entry for (yet).
const noPiece = ^uint32(0)

// stripeKey finds a stripe's group: a hash of the object id, the stripe
// number and the layout. Groups sharing a key (hash collisions) are told apart
// by their object id.
type stripeKey struct {
	obj, stripe uint32
	layout      uint8
}

// StripeGroup is one erasure-coded stripe: its pieces' handles and checksums
// by index, and the rebuild in flight for it, if any.
type StripeGroup struct {
	obj     string
	k, m    int
	pieces  []uint32   // by index: the piece's handle, or noPiece
	sums    [][32]byte // by index: the piece's SHA-256
	present int        // indexes with an entry
	queued  int        // pieces in a repair bucket below the move bucket (see queueTally)
	RB      *rebuildFlight
}

// rebuildFlight is one rebuild task in flight: it reconstructs pieces (each
// with its own flight, holding its target's in slot) from the K pieces it
// reads on reads (one out slot each, held until every piece is resolved). It
// counts once against the global in-flight limit.
type rebuildFlight struct {
	Task   string
	serial int
	group  *StripeGroup
	pieces []uint32  // the pieces it rebuilds
	reads  []NodeRef // the holders it reads (K; a node twice if it holds two read pieces)
	open   int       // pieces not resolved yet
}

// stripeKeyOf returns the stripe key of an entry.
func stripeKeyOf(objectID string, stripe int, layout uint8) stripeKey {
	return stripeKey{obj: objHash(objectID), stripe: uint32(stripe), layout: layout}
}

// checkEntry rejects an entry the compact records cannot hold, and for an
// erasure-coded piece one that names no object, sits outside the layout, has
// a checksum that is not hex, or claims a stripe index another shard holds.
// It returns the piece's checksum.
func (v *View) checkEntry(p model.Placement) ([32]byte, error) {
	var sum [32]byte
	if p.Stripe < 0 || int64(p.Stripe) > math.MaxUint32 || p.Index < 0 || p.Index > 254 {
		return sum, fmt.Errorf("%w placement %s: stripe %d or index %d out of range", model.ErrInvalid, p.Shard, p.Stripe, p.Index)
	}
	l := p.Layout
	if !l.Erasure() {
		return sum, nil
	}
	if p.ObjectID == "" || p.Index >= l.K+l.M {
		return sum, fmt.Errorf("%w placement %s: an %s piece needs an object id and an index below %d", model.ErrInvalid, p.Shard, l, l.K+l.M)
	}
	if _, err := hex.Decode(sum[:], []byte(p.SHA256)); err != nil {
		return sum, fmt.Errorf("%w placement %s: checksum: %w", model.ErrInvalid, p.Shard, err)
	}
	li := slices.Index(v.layouts, l)
	if li < 0 {
		return sum, nil // no stripe of this layout yet
	}
	if g := v.findGroup(stripeKeyOf(p.ObjectID, p.Stripe, uint8(li)), p.ObjectID); g != nil {
		if h := g.pieces[p.Index]; h != noPiece && v.IDs.String(h) != p.Shard {
			return sum, fmt.Errorf("%w placement %s: stripe %d index %d of object %s is shard %s", model.ErrInvalid,
				p.Shard, p.Stripe, p.Index, p.ObjectID, v.IDs.String(h))
		}
	}
	return sum, nil
}

// findGroup returns the group of object obj under key, or nil.
func (v *View) findGroup(key stripeKey, obj string) *StripeGroup {
	for _, g := range v.stripes[key] {
		if g.obj == obj {
			return g
		}
	}
	return nil
}

// Group returns the stripe group of piece h (nil for a replicated shard).
func (v *View) Group(h uint32) *StripeGroup {
	s := v.Record(h)
	if !v.layouts[s.layout].Erasure() {
		return nil
	}
	for _, g := range v.stripes[stripeKey{s.tag, s.stripe, s.layout}] {
		if int(s.index) < len(g.pieces) && g.pieces[s.index] == h {
			return g
		}
	}
	return nil
}

// enstripe adds piece h (its record already filled in from p) to its
// stripe's group, creating the group on its first piece.
func (v *View) enstripe(h uint32, p model.Placement, sum [32]byte) *StripeGroup {
	s := v.Record(h)
	key := stripeKey{s.tag, s.stripe, s.layout}
	g := v.findGroup(key, p.ObjectID)
	if g == nil {
		n := p.Layout.K + p.Layout.M
		g = &StripeGroup{obj: p.ObjectID, k: p.Layout.K, m: p.Layout.M, pieces: make([]uint32, n), sums: make([][32]byte, n)}
		for i := range g.pieces {
			g.pieces[i] = noPiece
		}
		v.stripes[key] = append(v.stripes[key], g)
		v.stripeCount++
	}
	if g.pieces[s.index] == noPiece {
		g.present++
	}
	g.pieces[s.index] = h
	g.sums[s.index] = sum
	return g
}

// unstripe takes piece h out of its group (dropping the group with its last
// piece) and returns the group (nil if h was in none).
func (v *View) unstripe(h uint32) *StripeGroup {
	g := v.Group(h)
	if g == nil {
		return nil
	}
	s := v.Record(h)
	g.pieces[s.index] = noPiece
	g.present--
	if g.present == 0 {
		key := stripeKey{s.tag, s.stripe, s.layout}
		gs := v.stripes[key]
		for i, x := range gs {
			if x == g {
				gs = append(gs[:i], gs[i+1:]...)
				break
			}
		}
		if len(gs) == 0 {
			delete(v.stripes, key)
		} else {
			v.stripes[key] = gs
		}
		v.stripeCount--
	}
	return g
}

// missing counts the stripe's pieces that have an entry but no live holder.
// Pieces without an entry (an object being committed or deleted) count
// neither way.
func (v *View) missing(g *StripeGroup) int {
	n := 0
	for _, p := range g.pieces {
		if p != noPiece && v.liveCount(p) == 0 {
			n++
		}
	}
	return n
}

// pieceBucket is the repair queue of a piece of group g with live and up
// holders (see wantBucket): a piece of a stripe missing more than M pieces
// is lost (bucket 0, live or not); a missing piece of a recoverable stripe
// queues at margin M - missing (bucket margin+1); a piece with a live holder
// is healthy, with surplus when more than one holder is up, unless all its
// live holders are being drained (moveBucket).
func (v *View) pieceBucket(g *StripeGroup, h uint32, live, up int) (uint8, bool) {
	missing := v.missing(g)
	switch {
	case missing > g.m:
		return 0, false
	case live > 0:
		if (v.draining > 0 || len(v.Moves) > 0) && live == v.leavingCount(h) {
			return moveBucket, up > 1 // its only live holders are leaving (drained or rebalanced)
		}
		return noBucket, up > 1
	}
	return uint8(g.m - missing + 1), false
}

// refreshStripe re-queues every piece of g (a piece's change moves its
// siblings' margin).
func (v *View) refreshStripe(g *StripeGroup) {
	if g == nil {
		return
	}
	for _, p := range g.pieces {
		if p != noPiece {
			v.refresh(p)
		}
	}
}

// liveHolders returns h's live holders, up ones first, leaving out skip
// (a node whose copy is being deleted; -1: none) and holders whose disk
// lacks the shard.
func (v *View) liveHolders(h uint32, skip int) []NodeRef {
	var up, other []NodeRef
	for _, r := range v.holders(h) {
		if int(r) == skip {
			continue
		}
		if v.IsMissing(h, r) {
			continue
		}
		switch st := v.Nodes[r].EffState(); {
		case st == model.StateUp:
			up = append(up, r)
		case st.Live():
			other = append(other, r)
		}
	}
	return append(up, other...)
}

// stripeRacks counts, per rack, g's pieces with a live holder there (a piece
// once per rack), leaving out piece except.
func (v *View) stripeRacks(g *StripeGroup, except uint32) map[string]int {
	out := make(map[string]int, g.k+g.m)
	var seen []string
	for _, p := range g.pieces {
		if p == noPiece || p == except {
			continue
		}
		seen = seen[:0]
		for _, r := range v.holders(p) {
			n := &v.Nodes[r]
			if !n.EffState().Live() || slices.Contains(seen, n.Rack) || v.IsMissing(p, r) {
				continue
			}
			seen = append(seen, n.Rack)
			out[n.Rack]++
		}
	}
	return out
}
