package planner

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// limits are the repair throttles.
type limits struct {
	perNodeIn, perNodeOut, maxInFlight int
}

// decision is one copy the planner wants issued.
type decision struct {
	shard    uint32
	id       string
	sources  []nodeRef // chosen source first, then the other live holders
	target   nodeRef
	bytes    int64
	attempt  int
	incident string
	relaxed  bool
}

// incidentNone names the repair of shards that lack copies without any
// holder being down (an object committed with fewer acknowledged copies).
const incidentNone = "partial-write"

// relaxAfterAttempt is the attempt from which a shard whose rack-keeping
// targets keep failing may go to a rack that already holds a copy.
const relaxAfterAttempt = 3

// candidates renders every known node for the placement functions; the slice
// index is the nodeRef. A node's load is the bytes the map places on it (the
// planner's own, always current account); what its heartbeat reports beyond
// that (other data, or a disk shared with other nodes) only reduces its room.
func (v *view) candidates() []placement.Candidate {
	cs := make([]placement.Candidate, len(v.nodes))
	for i := range v.nodes {
		n := &v.nodes[i]
		capacity := n.hbCapacity
		if capacity <= 0 {
			capacity = n.capacity
		}
		cs[i] = placement.Candidate{
			ID:            n.id,
			Rack:          n.rack,
			State:         n.effState(),
			UsedBytes:     n.bytes,
			OtherBytes:    max(n.hbUsed-n.bytes, 0),
			CapacityBytes: capacity,
			PendingBytes:  n.inBytes + n.allocBytes,
			PendingTasks:  n.inTasks,
			Reads:         n.outTasks,
		}
	}
	return cs
}

// incident names what made shard h lose copies: its first down holder's id
// and the time it went down (unix ms).
func (v *view) incident(h uint32) string {
	for _, r := range v.holders(h) {
		n := &v.nodes[r]
		if !n.effState().Live() {
			var ms int64
			if !n.since.IsZero() {
				ms = n.since.UnixMilli()
			}
			return n.id + "-" + strconv.FormatInt(ms, 10)
		}
	}
	return incidentNone
}

// plan derives the copies to issue now: under-replicated shards, fewest live
// copies first then by shard id, skipping those in flight or backing off,
// within the per-source, per-target and global limits. It does not change
// the view (see reserve).
func (v *view) plan(now time.Time, lim limits) []decision {
	v.fresh()
	budget := lim.maxInFlight - v.copyFlights
	if budget <= 0 {
		return nil
	}
	cands := v.candidates()
	freeIn := 0 // write slots left on up nodes: none left, nothing to plan
	for _, c := range cands {
		if c.State == model.StateUp {
			freeIn += max(lim.perNodeIn-c.PendingTasks, 0)
		}
	}
	var out []decision
	pc := planCtx{now: now, lim: lim, cands: cands, busy: map[uint64]int64{}}
	pc.rackOf, pc.racks = rackIndex(cands)
	for live := 1; live < len(v.buckets); live++ {
		for _, h := range v.buckets[live] {
			if budget == 0 || freeIn == 0 {
				return out
			}
			if d, ok := v.decide(h, &pc); ok {
				out = append(out, d)
				budget--
				freeIn--
				src, tg := d.sources[0], d.target
				cands[src].Reads++
				cands[tg].PendingTasks++
				cands[tg].PendingBytes += d.bytes
			}
		}
	}
	return out
}

// planCtx is the state of one planning round.
type planCtx struct {
	now    time.Time
	lim    limits
	cands  []placement.Candidate
	rackOf []int
	racks  int
	// busy maps a set of racks holding live copies (bit mask) to the smallest
	// shard size for which every target outside those racks was busy.
	busy map[uint64]int64
}

// rackIndex numbers the candidates' racks.
func rackIndex(cands []placement.Candidate) ([]int, int) {
	ids := map[string]int{}
	out := make([]int, len(cands))
	for i, c := range cands {
		r, ok := ids[c.Rack]
		if !ok {
			r = len(ids)
			ids[c.Rack] = r
		}
		out[i] = r
	}
	return out, len(ids)
}

// decide chooses source and target for shard h, if it needs and can get a
// copy now.
func (v *view) decide(h uint32, pc *planCtx) (decision, bool) {
	now, lim, cands := pc.now, pc.lim, pc.cands
	if v.flights[h] != nil {
		return decision{}, false
	}
	s := v.rec(h)
	if v.layouts[s.layout].Erasure() {
		return decision{}, false // erasure-coded rebuilds are not planned yet
	}
	r := v.retries[h]
	if r != nil && now.Before(r.notBefore) {
		return decision{}, false
	}
	hs := v.holderBuf[:0]
	for _, x := range v.holders(h) {
		hs = append(hs, int(x))
	}
	v.holderBuf = hs
	id := v.ids.String(h)
	salt := placement.Salt(id)
	src, err := placement.ChooseSource(hs, cands, placement.SourceOptions{MaxReads: lim.perNodeOut, Salt: salt})
	if err != nil {
		return decision{}, false
	}
	// Skip the search when targets outside these racks were all busy for a
	// shard no larger than this one in this round.
	mask, memo := uint64(0), r == nil && pc.racks <= 64
	if memo {
		for _, x := range hs {
			if cands[x].State.Live() {
				mask |= 1 << pc.rackOf[x]
			}
		}
		if min, ok := pc.busy[mask]; ok && s.size >= min {
			return decision{}, false
		}
	}
	opt := placement.TargetOptions{Size: s.size, MaxTasks: lim.perNodeIn, Salt: salt}
	if r != nil {
		for _, a := range r.avoid {
			opt.Exclude = append(opt.Exclude, int(a))
		}
	}
	tg, err := placement.ChooseTarget(hs, cands, opt)
	if len(opt.Exclude) > 0 && (err != nil || (tg.RackRelaxed && r.attempt < relaxAfterAttempt)) {
		// Avoiding the failed targets would break the rack rule (or leaves
		// nothing): retry them, until relaxAfterAttempt failures.
		opt.Exclude = nil
		if tg2, err2 := placement.ChooseTarget(hs, cands, opt); err2 == nil && (!tg2.RackRelaxed || err != nil) {
			tg, err = tg2, nil
		} else if err == nil && tg.RackRelaxed && r.attempt < relaxAfterAttempt && errors.Is(err2, placement.ErrBusy) {
			return decision{}, false // the rack-keeping target is busy: wait for it
		}
	}
	if err != nil {
		if memo && errors.Is(err, placement.ErrRackBusy) {
			if min, ok := pc.busy[mask]; !ok || s.size < min {
				pc.busy[mask] = s.size
			}
		}
		return decision{}, false
	}
	sources := []nodeRef{nodeRef(src)}
	others := make([]nodeRef, 0, len(hs))
	for _, x := range v.holders(h) {
		if int(x) != src && cands[x].State.Live() {
			others = append(others, x)
		}
	}
	slices.SortStableFunc(others, func(a, b nodeRef) int {
		ua, ub := cands[a].State == model.StateUp, cands[b].State == model.StateUp
		if ua != ub {
			if ua {
				return -1
			}
			return 1
		}
		return cmp.Compare(cands[a].Reads, cands[b].Reads)
	})
	return decision{
		shard:    h,
		id:       id,
		sources:  append(sources, others...),
		target:   nodeRef(tg.Index),
		bytes:    s.size,
		attempt:  v.nextAttempt(h),
		incident: v.incident(h),
		relaxed:  tg.RackRelaxed,
	}, true
}

// taskID names the task of a decision: shard-target-attempt.
func (v *view) taskID(d decision) string {
	return d.id + "-" + v.nodes[d.target].id + "-" + strconv.Itoa(d.attempt)
}

// reserve records decisions as in flight (before their tasks are published,
// so nothing plans them twice); a failed publish calls endFlight.
func (v *view) reserve(ds []decision, now time.Time, timeout time.Duration) {
	for _, d := range ds {
		v.startFlight(d.shard, &flight{
			task: v.taskID(d), target: d.target, source: d.sources[0], bytes: d.bytes,
			attempt: d.attempt, deadline: now.Add(timeout), incident: d.incident,
		})
	}
}

// expired returns the shards whose task passed its deadline.
func (v *view) expired(now time.Time) []uint32 {
	var out []uint32
	for h, f := range v.flights {
		if now.After(f.deadline) {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// lostToAnnounce returns lost shards not yet announced (at most n).
func (v *view) lostToAnnounce(n int) []uint32 {
	v.fresh()
	missing := v.stripeMissing()
	var out []uint32
	for _, h := range v.buckets[0] {
		if len(out) == n {
			break
		}
		if v.rec(h).flags&flagLostSent == 0 && v.isLost(h, missing) {
			out = append(out, h)
		}
	}
	return out
}

// stripeKey groups the pieces of one erasure-coded stripe.
type stripeKey struct {
	obj, stripe uint32
	layout      uint8
}

// stripeMissing counts, per erasure-coded stripe, its pieces without a live
// holder (nil when there are none).
func (v *view) stripeMissing() map[stripeKey]int {
	var missing map[stripeKey]int
	for _, h := range v.buckets[0] {
		s := v.rec(h)
		if !v.layouts[s.layout].Erasure() {
			continue
		}
		if missing == nil {
			missing = make(map[stripeKey]int)
		}
		missing[stripeKey{s.objHash, s.stripe, s.layout}]++
	}
	return missing
}

// isLost reports whether a shard of bucket 0 cannot be recovered: a
// replicated shard without a live copy, or a piece of a stripe missing more
// than M pieces.
func (v *view) isLost(h uint32, missing map[stripeKey]int) bool {
	s := v.rec(h)
	l := v.layouts[s.layout]
	return !l.Erasure() || missing[stripeKey{s.objHash, s.stripe, s.layout}] > l.M
}

// totals are the redundancy numbers of status and progress.
type totals struct {
	shards, objects, underReplicated, lost int
	bytesRemaining                         int64
	inFlight                               int
}

// totals counts under-replicated and lost shards and the bytes still to copy.
func (v *view) totals() totals {
	v.fresh()
	t := totals{shards: v.ids.Len(), objects: v.objects, inFlight: v.copyFlights}
	for live := 1; live < len(v.buckets); live++ {
		for _, h := range v.buckets[live] {
			s := v.rec(h)
			t.underReplicated++
			t.bytesRemaining += s.size * int64(v.layouts[s.layout].Copies()-live)
		}
	}
	missing := v.stripeMissing()
	for _, h := range v.buckets[0] {
		if v.isLost(h, missing) {
			t.lost++
			continue
		}
		s := v.rec(h)
		t.underReplicated++
		t.bytesRemaining += s.size
	}
	return t
}

// observe updates the stall clock and reports whether the heal is stalled:
// work remains and nothing was verified for stallAfter since it appeared.
func (v *view) observe(t totals, now time.Time, stallAfter time.Duration) bool {
	if t.underReplicated == 0 {
		v.workSince = time.Time{}
		return false
	}
	if v.workSince.IsZero() {
		v.workSince = now
	}
	return now.Sub(v.idleSince()) >= stallAfter
}

// idleSince is the later of the last verified copy and the start of the work.
func (v *view) idleSince() time.Time {
	if v.lastVerified.After(v.workSince) {
		return v.lastVerified
	}
	return v.workSince
}

// progress is the heal state at now.
func (v *view) progress(now time.Time, stallAfter time.Duration) event.Progress {
	t := v.totals()
	stalled := v.observe(t, now, stallAfter)
	rate := v.rate.perSecond(now, v.workSince)
	eta := 0.0
	switch {
	case t.bytesRemaining == 0:
	case rate > 0:
		eta = float64(t.bytesRemaining) / rate
	default:
		eta = -1
	}
	suspects := 0
	for i := range v.nodes {
		if v.nodes[i].shards > 0 && v.nodes[i].effState() == model.StateSuspect {
			suspects++
		}
	}
	return event.Progress{
		SuspectNodes:    suspects,
		UnderReplicated: t.underReplicated,
		Lost:            t.lost,
		BytesRemaining:  t.bytesRemaining,
		RateBytesPerSec: rate,
		ETASeconds:      eta,
		Stalled:         stalled,
		InFlight:        t.inFlight,
		VerifiedBytes:   v.verified,
		Shards:          t.shards,
	}
}

// clusterStatus answers CtlStatus: registered nodes (and unregistered ones
// still named by the map) sorted by rack then id, with totals.
func (v *view) clusterStatus() control.ClusterStatus {
	t := v.totals()
	st := control.ClusterStatus{
		Shards: t.shards, Objects: t.objects, UnderReplicated: t.underReplicated,
		Lost: t.lost, BytesRemaining: t.bytesRemaining, InFlight: t.inFlight,
		Nodes: []control.NodeStatus{},
	}
	for i := range v.nodes {
		n := &v.nodes[i]
		if !n.registered && n.shards == 0 {
			continue
		}
		capacity := n.hbCapacity
		if capacity <= 0 {
			capacity = n.capacity
		}
		ns := control.NodeStatus{
			ID: n.id, Rack: n.rack, State: n.effState(), Addr: n.addr,
			Shards: n.shards, Bytes: n.bytes, UsedBytes: n.hbUsed, CapacityBytes: capacity,
			Flaps: n.flaps, GraceMS: n.graceMS,
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
