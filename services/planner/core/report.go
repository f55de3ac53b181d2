package core

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// LostToAnnounce returns lost shards (bucket 0: replicated shards without
// a live copy, every piece of a stripe missing more than M) not yet
// announced (at most n).
func (v *View) LostToAnnounce(n int) []uint32 {
	v.fresh()
	var out []uint32
	for _, h := range v.buckets[0] {
		if len(out) == n {
			break
		}
		if v.Record(h).Flags&FlagLostSent == 0 {
			out = append(out, h)
		}
	}
	return out
}

// totals are the redundancy numbers of status and progress. Erasure-coded
// pieces count as shards: a piece missing a live holder in a recoverable
// stripe is under-replicated, every piece of an unrecoverable stripe is lost.
type totals struct {
	Shards, Objects, UnderReplicated, Lost int
	BytesRemaining                         int64
	InFlight                               int // copy and rebuild tasks, and trims
	Surplus                                int // shards awaiting a trim
	moving                                 int // shards with a copy to move off a draining node
	Stripes                                int // erasure-coded stripes
	StripesDegraded                        int // of which missing at least one piece (lost ones too)
}

// Totals counts under-replicated and lost shards, the bytes still to copy
// or rebuild, and the degraded stripes.
func (v *View) Totals() totals {
	v.fresh()
	t := totals{Shards: v.IDs.Len(), Objects: v.objects, InFlight: v.copyFlights + len(v.Trims), Surplus: len(v.surplus),
		Stripes: v.stripeCount}
	for b := 1; b < moveBucket; b++ {
		t.UnderReplicated += len(v.buckets[b]) + v.pendingCount[b]
		// bucket b: b live copies of a replicated shard, one piece to rebuild
		t.BytesRemaining += v.qt.sizeCopies[b] - int64(b)*v.qt.size[b] + v.qt.pieceSize[b]
	}
	t.moving = len(v.buckets[moveBucket]) + v.pendingCount[moveBucket]
	t.Lost = len(v.buckets[0]) + v.pendingCount[0]
	t.StripesDegraded = v.qt.degraded
	return t
}

// observe updates the stall clock and reports whether the heal is stalled:
// work remains and nothing was verified for stallAfter since it appeared.
func (v *View) observe(t totals, now time.Time, stallAfter time.Duration) bool {
	if t.UnderReplicated == 0 {
		v.WorkSince = time.Time{}
		return false
	}
	if v.WorkSince.IsZero() {
		v.WorkSince = now
	}
	return now.Sub(v.IdleSince()) >= stallAfter
}

// IdleSince is the later of the last verified copy and the start of the work.
func (v *View) IdleSince() time.Time {
	if v.lastVerified.After(v.WorkSince) {
		return v.lastVerified
	}
	return v.WorkSince
}

// Progress is the heal state at now.
func (v *View) Progress(now time.Time, stallAfter time.Duration) event.Progress {
	t := v.Totals()
	stalled := v.observe(t, now, stallAfter)
	rate := v.Rate.PerSecond(now, v.WorkSince)
	eta := 0.0
	switch {
	case t.BytesRemaining == 0:
	case rate > 0:
		eta = float64(t.BytesRemaining) / rate
	default:
		eta = -1
	}
	suspects := 0
	for i := range v.Nodes {
		if v.Nodes[i].Shards > 0 && v.Nodes[i].EffState() == model.StateSuspect {
			suspects++
		}
	}
	single, singleBytes := v.SingleCopy()
	return event.Progress{
		SingleCopy:           single,
		SingleCopyETASeconds: etaOf(singleBytes, rate),
		SuspectNodes:         suspects,
		UnderReplicated:      t.UnderReplicated,
		Lost:                 t.Lost,
		BytesRemaining:       t.BytesRemaining,
		RateBytesPerSec:      rate,
		ETASeconds:           eta,
		Stalled:              stalled,
		InFlight:             t.InFlight,
		VerifiedBytes:        v.verified,
		Shards:               t.Shards,
	}
}

// ClusterStatus answers CtlStatus: registered nodes (and unregistered ones
// still named by the map) sorted by rack then id, with totals.
func (v *View) ClusterStatus() control.ClusterStatus {
	t := v.Totals()
	st := control.ClusterStatus{
		Shards: t.Shards, Objects: t.Objects, UnderReplicated: t.UnderReplicated,
		Lost: t.Lost, BytesRemaining: t.BytesRemaining, InFlight: t.InFlight,
		Stripes: t.Stripes, StripesDegraded: t.StripesDegraded,
		Nodes: []control.NodeStatus{},
	}
	for i := range v.Nodes {
		n := &v.Nodes[i]
		if !n.Registered && n.Shards == 0 || v.removed[n.ID] {
			continue
		}
		capacity := n.hbCapacity
		if capacity <= 0 {
			capacity = n.capacity
		}
		ns := control.NodeStatus{
			ID: n.ID, Rack: n.Rack, State: n.EffState(), Addr: n.Addr,
			Shards: n.Shards, Bytes: n.Bytes, UsedBytes: n.hbUsed, CapacityBytes: capacity,
			Flaps: n.flaps, GraceMS: n.graceMS, Full: n.hbFull, ReadOnly: n.hbReadOnly,
			Draining: n.Draining,
		}
		if n.Draining && ns.State == model.StateUp {
			ns.State = model.StateDraining
		}
		if capacity > 0 {
			ns.Fill = float64(n.hbUsed) / float64(capacity)
		}
		st.Nodes = append(st.Nodes, ns)
	}
	slices.SortFunc(st.Nodes, func(a, b control.NodeStatus) int {
		return cmp.Or(cmp.Compare(a.Rack, b.Rack), cmp.Compare(a.ID, b.ID))
	})
	return st
}

// LostIDs returns up to n lost shards not yet announced, by id.
func (v *View) LostIDs(n int) []string {
	hs := v.LostToAnnounce(n)
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = v.IDs.String(h)
	}
	return ids
}

// LostSent records that the loss of shard id was announced: it is not
// announced again until the shard recovers a copy and is lost anew.
func (v *View) LostSent(id string) {
	if h, ok := v.IDs.Lookup(id); ok && v.Record(h).bucket == 0 {
		v.Record(h).Flags |= FlagLostSent
	}
}

// IncidentTrace returns the traceparent of the down verdict that opened
// incident inc ("" if unknown).
func (v *View) IncidentTrace(inc string) string {
	for i := range v.Nodes {
		n := &v.Nodes[i]
		if n.TraceParent != "" && !n.Since.IsZero() && inc == n.ID+"-"+strconv.FormatInt(n.Since.UnixMilli(), 10) {
			return n.TraceParent
		}
	}
	return ""
}
