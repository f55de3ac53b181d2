package planner

import (
	"cmp"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// limits are the repair throttles of a planning round.
type limits struct {
	// perNodeIn and perNodeOut bound copies writing to and reading from one
	// node (a trim takes an out slot of the node it deletes from); a shard
	// with a single live copy may exceed both by one.
	perNodeIn, perNodeOut int
	// maxInFlight bounds copies and trims in flight cluster-wide.
	maxInFlight int
	// maxFill skips targets whose disk would be fuller than this (0: no limit).
	maxFill float64
	// bytes admits the bytes of copies (nil: no byte cap). Planning consumes
	// its tokens at the round's time; a copy it cannot admit yet ends the
	// round's copies (the riskiest shard keeps its place) and sets wait.
	bytes *rate.Limiter
	// paused holds every new task and map change back (heal pause).
	paused bool
}

// decision is one copy, or one rebuild of an erasure-coded stripe (rb set),
// the planner wants issued.
type decision struct {
	shard    uint32
	id       string
	sources  []nodeRef // chosen source(s) first, then the other live holders
	target   nodeRef
	bytes    int64 // a copy's size; the bytes a rebuild reads (K pieces)
	attempt  int   // within the round (1..MaxAttempts)
	serial   int   // task id number, unique per shard
	margin   int   // copies the shard may still lose (0: one live copy left)
	incident string
	relaxed  bool
	rb       *rebuildPlan // set for a rebuild
	inPlace  bool         // a copy back onto a holder whose disk lacks the shard
}

// trimDecision is one surplus copy the planner wants removed.
type trimDecision struct {
	shard uint32
	id    string
	node  nodeRef
	bytes int64
}

// roundPlan is what one planning round decided.
type roundPlan struct {
	copies []decision
	trims  []trimDecision
	drops  []dropDecision
	// wait is set when the byte cap held copies back: plan again after it.
	wait time.Duration
}

// incidentNone names the repair of shards that lack copies without any
// holder being down (an object committed with fewer acknowledged copies).
const incidentNone = "partial-write"

// relaxAfterAttempt is the attempt from which a shard whose rack-keeping
// targets keep failing may go to a rack that already holds a copy.
const relaxAfterAttempt = 3

// maxTrimScan bounds the surplus entries one round looks at, so a large
// surplus (a big node returning) costs a bounded time per round; the scan
// resumes where the previous one stopped.
const maxTrimScan = 4096

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
			Returning:     n.returning,
			Full:          n.hbFull || n.hbReadOnly,
			Leaving:       n.draining,
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

// round derives the work to issue now. Copies and rebuilds first:
// under-replicated shards and missing erasure-coded pieces by risk (fewest
// copies or pieces beyond the minimum, then first seen short earliest, then
// id), skipping those in flight, backing off or parked, within the
// per-source, per-target, global and byte limits; a shard with one live copy
// (a stripe with K live pieces) may use one slot beyond a node's caps. A
// missing piece plans one rebuild for its whole stripe (see decideRebuild):
// it takes an in slot on each target, an out slot on each of the K holders
// it reads, one unit of the global limit, and K pieces' bytes of the byte
// cap. Then, with what the
// global limit leaves, surplus copies to trim (one per shard, none while a
// copy of the shard is in flight, nor while a live holder awaits an
// inventory check), each taking an out slot of its node. A shard a holder
// lacks goes back onto that holder (see inPlaceTarget); holders lacking a
// shard that is whole without them are dropped from its entry (drops, not
// bound by the task limits). While lim.paused it plans nothing. It does not
// change the view (see reserve) but consumes lim.bytes tokens.
func (v *view) round(now time.Time, lim limits) roundPlan {
	v.fresh()
	var out roundPlan
	if lim.paused {
		return out
	}
	out.drops = v.drops(maxDropsPerRound)
	budget := lim.maxInFlight - v.copyFlights - len(v.trims)
	if budget <= 0 {
		return out
	}
	cands := v.candidates()
	pc := planCtx{now: now, lim: lim, cands: cands, planned: map[*stripeGroup]bool{}}
	pc.rackOf, pc.racks = rackIndex(cands)
copies:
	for b := 1; b < len(v.buckets); b++ {
		if len(v.buckets[b]) == 0 {
			continue
		}
		pc.maxIn, pc.maxOut = lim.perNodeIn, lim.perNodeOut
		if b == 1 { // one live copy left: may exceed a node's caps by one
			pc.maxIn++
			pc.maxOut++
		}
		pc.busy = map[uint64]int64{}
		freeIn := 0 // write slots left on possible targets: none left, nothing to plan
		for i, c := range cands {
			if c.State == model.StateUp || (c.State == model.StateMaintenance && v.nodes[i].missing > 0) {
				freeIn += max(pc.maxIn-c.PendingTasks, 0)
			}
		}
		for _, h := range v.buckets[b] {
			if budget == 0 || freeIn <= 0 {
				break
			}
			var (
				d  decision
				ok bool
			)
			mv, moving := v.moves[h]
			switch {
			case b == moveBucket && moving:
				d, ok = v.decideMove(h, mv, &pc)
			case !v.layouts[v.rec(h).layout].Erasure():
				d, ok = v.decide(h, &pc)
			case b == moveBucket:
				d, ok = v.decidePieceMove(h, &pc)
			default:
				d, ok = v.decideRebuild(h, &pc)
			}
			if !ok {
				continue
			}
			if lim.bytes != nil {
				if wait := admit(lim.bytes, now, d.bytes); wait > 0 {
					out.wait = wait
					break copies
				}
			}
			d.margin = b - 1
			if b == moveBucket && !moving {
				d.margin, d.incident = v.liveCount(h)-1, v.drainIncident(h)
			}
			out.copies = append(out.copies, d)
			budget--
			if rp := d.rb; rp != nil {
				pc.planned[rp.group] = true
				for _, r := range rp.reads {
					cands[r].Reads++
				}
				for _, tg := range rp.targets {
					cands[tg].PendingTasks++
					cands[tg].PendingBytes += rp.size
				}
				freeIn -= len(rp.targets)
				continue
			}
			freeIn--
			src, tg := d.sources[0], d.target
			cands[src].Reads++
			cands[tg].PendingTasks++
			cands[tg].PendingBytes += d.bytes
		}
		if budget == 0 {
			break
		}
	}
	if budget > 0 {
		out.trims = v.planTrims(&pc, budget)
	}
	return out
}

// admit takes n bytes from the limiter at now, or reports how long until it
// could (taking nothing). A shard larger than the burst raises the burst to
// its size: one shard is the smallest unit a copy moves.
func admit(l *rate.Limiter, now time.Time, n int64) time.Duration {
	if n <= 0 {
		return 0
	}
	k := int(min(n, int64(math.MaxInt32)))
	if k > l.Burst() {
		l.SetBurstAt(now, k)
	}
	r := l.ReserveN(now, k)
	if !r.OK() {
		return time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// planTrims picks up to budget surplus copies to remove, scanning at most
// maxTrimScan surplus shards from the cursor on.
func (v *view) planTrims(pc *planCtx, budget int) []trimDecision {
	n := len(v.surplus)
	if n == 0 {
		return nil
	}
	var out []trimDecision
	if v.trimCursor >= n {
		v.trimCursor = 0
	}
	scan := min(n, maxTrimScan)
	for k := 0; k < scan && len(out) < budget; k++ {
		h := v.surplus[(v.trimCursor+k)%n]
		if v.flights[h] != nil || v.trims[h] != nil || v.reconcilePending(h) {
			continue
		}
		hs := v.holderBuf[:0]
		for _, x := range v.holders(h) {
			if !v.isMissing(h, x) {
				hs = append(hs, int(x))
			}
		}
		v.holderBuf = hs
		s := v.rec(h)
		id := v.ids.String(h)
		var (
			x   int
			err error
		)
		if mv, ok := v.moves[h]; ok && slices.Contains(hs, int(mv.from)) && pc.cands[mv.from].State == model.StateUp {
			x = int(mv.from) // the rebalanced copy leaves
		} else if g := v.group(h); g != nil {
			if g.rb != nil || pc.planned[g] {
				continue // a rebuild of the stripe may be reading this piece
			}
			x, err = placement.ChooseSurplusPiece(hs, pc.cands, v.stripeRacks(g, h), g.m, placement.Salt(id))
		} else {
			x, err = placement.ChooseSurplus(hs, pc.cands, v.layouts[s.layout].Copies(), placement.Salt(id))
		}
		if err != nil || pc.cands[x].Reads >= pc.lim.perNodeOut {
			continue
		}
		pc.cands[x].Reads++
		out = append(out, trimDecision{shard: h, id: id, node: nodeRef(x), bytes: s.size})
	}
	v.trimCursor = (v.trimCursor + scan) % n
	return out
}

// planCtx is the state of one planning round.
type planCtx struct {
	now           time.Time
	lim           limits
	maxIn, maxOut int // the caps of the bucket being planned
	cands         []placement.Candidate
	rackOf        []int
	racks         int
	// busy maps a set of racks holding live copies (bit mask) to the smallest
	// shard size for which every target outside those racks was busy.
	busy map[uint64]int64
	// planned holds the stripes a rebuild was planned for this round.
	planned map[*stripeGroup]bool
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

// decide chooses target and source for shard h, if it needs and can get a
// copy now. A holder whose disk lacks the shard gets it back when it can
// (inPlaceTarget); otherwise the target comes first (placement.ChooseTarget:
// racks without a live copy, room below maxFill, balanced by bytes and
// writes, never a node the entry lists); the source is then the least busy
// live holder that has it, nearest the target's rack.
func (v *view) decide(h uint32, pc *planCtx) (decision, bool) {
	now, lim, cands := pc.now, pc.lim, pc.cands
	if v.flights[h] != nil {
		return decision{}, false
	}
	s := v.rec(h)
	r := v.retries[h]
	if r != nil && now.Before(r.notBefore) {
		return decision{}, false
	}
	// A copy being trimmed from a node is neither read nor re-made there
	// until its delete task is done.
	trimmed := -1
	if tf := v.trims[h]; tf != nil {
		trimmed = int(tf.node)
	}
	var lacking []int // listed holders whose disk lacks it: never sources, never new targets
	hs := v.holderBuf[:0]
	for _, x := range v.holders(h) {
		switch {
		case int(x) == trimmed:
		case s.flags&flagMissing != 0 && v.isMissing(h, x):
			lacking = append(lacking, int(x))
		default:
			hs = append(hs, int(x))
		}
	}
	v.holderBuf = hs
	id := v.ids.String(h)
	salt := placement.Salt(id)
	switch x, ans := v.inPlaceTarget(h, s.size, pc); ans {
	case inPlaceWait:
		return decision{}, false
	case inPlaceGo:
		return v.decideInPlace(h, x, hs, pc, id, salt)
	}
	if _, err := placement.ChooseSource(hs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt}); err != nil {
		return decision{}, false
	}
	// The new copy's holders-to-be: without copies leaving a draining node,
	// whose racks are free for it.
	stay := hs
	if v.draining > 0 || len(v.moves) > 0 {
		stay = v.staying(h, hs)
	}
	// Skip the search when targets outside these racks were all busy for a
	// shard no larger than this one in this round.
	mask, memo := uint64(0), r == nil && trimmed < 0 && lacking == nil && pc.racks <= 64
	if memo {
		for _, x := range stay {
			if cands[x].State.Live() {
				mask |= 1 << pc.rackOf[x]
			}
		}
		if min, ok := pc.busy[mask]; ok && s.size >= min {
			return decision{}, false
		}
	}
	opt := placement.TargetOptions{Size: s.size, MaxTasks: pc.maxIn, Salt: salt, MaxFill: lim.maxFill}
	exclude := lacking
	if trimmed >= 0 {
		exclude = append(exclude, trimmed)
	}
	if r != nil {
		for _, a := range r.avoid {
			opt.Exclude = append(opt.Exclude, int(a))
		}
	}
	opt.Exclude = append(opt.Exclude, exclude...)
	tg, err := placement.ChooseTarget(stay, cands, opt)
	if len(opt.Exclude) > len(exclude) && (err != nil || (tg.RackRelaxed && r.attempt < relaxAfterAttempt)) {
		// Avoiding the failed targets would break the rack rule (or leaves
		// nothing): retry them, until relaxAfterAttempt failures.
		opt.Exclude = exclude
		if tg2, err2 := placement.ChooseTarget(stay, cands, opt); err2 == nil && (!tg2.RackRelaxed || err != nil) {
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
	// Read from a staying holder where one can serve: a leaving node's out
	// slots are better spent on the trims that empty it.
	srcs := hs
	if len(stay) > 0 && len(stay) < len(hs) {
		if _, err := placement.ChooseSource(stay, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt}); err == nil {
			srcs = stay
		}
	}
	src, err := placement.ChooseSource(srcs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt, TargetRack: cands[tg.Index].Rack})
	if err != nil {
		return decision{}, false
	}
	attempt, serial := v.nextTask(h)
	return decision{
		shard:    h,
		id:       id,
		sources:  append([]nodeRef{nodeRef(src)}, fallbackSources(hs, src, cands)...),
		target:   nodeRef(tg.Index),
		bytes:    s.size,
		attempt:  attempt,
		serial:   serial,
		incident: v.incident(h),
		relaxed:  tg.RackRelaxed,
	}, true
}

// taskID names the task of a decision: shard-target-serial (the serial is
// the attempt number until a shard is parked or an id is found used).
func (v *view) taskID(d decision) string {
	return d.id + "-" + v.nodes[d.target].id + "-" + strconv.Itoa(d.serial)
}

// reserve records a round's copies and trims as in flight (before their
// tasks are published, so nothing plans them twice); a failed publish calls
// endFlight or endTrim.
func (v *view) reserve(p roundPlan, now time.Time, timeout time.Duration) {
	for _, d := range p.copies {
		if d.rb != nil {
			v.reserveRebuild(d, now, timeout)
			continue
		}
		v.startFlight(d.shard, &flight{
			task: v.taskID(d), target: d.target, source: d.sources[0], bytes: d.bytes,
			attempt: d.attempt, serial: d.serial, deadline: now.Add(timeout), incident: d.incident,
			inPlace: d.inPlace,
		})
	}
	for _, t := range p.trims {
		v.startTrim(t.shard, &trimFlight{node: t.node, deadline: now.Add(timeout)})
	}
}

// expired returns the shards whose copy passed its deadline (one piece per
// rebuild task), and those whose trim did.
func (v *view) expired(now time.Time) (copies, trims []uint32) {
	var rbs map[*rebuildFlight]bool
	for h, f := range v.flights {
		if !now.After(f.deadline) {
			continue
		}
		if f.rb != nil {
			if rbs[f.rb] {
				continue
			}
			if rbs == nil {
				rbs = map[*rebuildFlight]bool{}
			}
			rbs[f.rb] = true
		}
		copies = append(copies, h)
	}
	for h, t := range v.trims {
		if now.After(t.deadline) {
			trims = append(trims, h)
		}
	}
	slices.Sort(copies)
	slices.Sort(trims)
	return copies, trims
}

// lostToAnnounce returns lost shards (bucket 0: replicated shards without
// a live copy, every piece of a stripe missing more than M) not yet
// announced (at most n).
func (v *view) lostToAnnounce(n int) []uint32 {
	v.fresh()
	var out []uint32
	for _, h := range v.buckets[0] {
		if len(out) == n {
			break
		}
		if v.rec(h).flags&flagLostSent == 0 {
			out = append(out, h)
		}
	}
	return out
}

// totals are the redundancy numbers of status and progress. Erasure-coded
// pieces count as shards: a piece missing a live holder in a recoverable
// stripe is under-replicated, every piece of an unrecoverable stripe is lost.
type totals struct {
	shards, objects, underReplicated, lost int
	bytesRemaining                         int64
	inFlight                               int // copy and rebuild tasks, and trims
	surplus                                int // shards awaiting a trim
	moving                                 int // shards with a copy to move off a draining node
	stripes                                int // erasure-coded stripes
	stripesDegraded                        int // of which missing at least one piece (lost ones too)
}

// totals counts under-replicated and lost shards, the bytes still to copy
// or rebuild, and the degraded stripes.
func (v *view) totals() totals {
	v.fresh()
	t := totals{shards: v.ids.Len(), objects: v.objects, inFlight: v.copyFlights + len(v.trims), surplus: len(v.surplus),
		stripes: v.stripeCount}
	var degraded map[*stripeGroup]bool
	stripe := func(h uint32) {
		if g := v.group(h); g != nil && !degraded[g] {
			if degraded == nil {
				degraded = map[*stripeGroup]bool{}
			}
			degraded[g] = true
		}
	}
	for b := 1; b < moveBucket; b++ {
		for _, h := range v.buckets[b] {
			s := v.rec(h)
			t.underReplicated++
			if l := v.layouts[s.layout]; l.Erasure() {
				t.bytesRemaining += s.size
				stripe(h)
			} else {
				t.bytesRemaining += s.size * int64(l.Copies()-b) // bucket b: b live copies
			}
		}
	}
	t.moving = len(v.buckets[moveBucket])
	for _, h := range v.buckets[0] {
		t.lost++
		if v.layouts[v.rec(h).layout].Erasure() {
			stripe(h)
		}
	}
	t.stripesDegraded = len(degraded)
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
	single, singleBytes := v.singleCopy()
	return event.Progress{
		SingleCopy:           single,
		SingleCopyETASeconds: etaOf(singleBytes, rate),
		SuspectNodes:         suspects,
		UnderReplicated:      t.underReplicated,
		Lost:                 t.lost,
		BytesRemaining:       t.bytesRemaining,
		RateBytesPerSec:      rate,
		ETASeconds:           eta,
		Stalled:              stalled,
		InFlight:             t.inFlight,
		VerifiedBytes:        v.verified,
		Shards:               t.shards,
	}
}

// clusterStatus answers CtlStatus: registered nodes (and unregistered ones
// still named by the map) sorted by rack then id, with totals.
func (v *view) clusterStatus() control.ClusterStatus {
	t := v.totals()
	st := control.ClusterStatus{
		Shards: t.shards, Objects: t.objects, UnderReplicated: t.underReplicated,
		Lost: t.lost, BytesRemaining: t.bytesRemaining, InFlight: t.inFlight,
		Stripes: t.stripes, StripesDegraded: t.stripesDegraded,
		Nodes: []control.NodeStatus{},
	}
	for i := range v.nodes {
		n := &v.nodes[i]
		if !n.registered && n.shards == 0 || v.removed[n.id] {
			continue
		}
		capacity := n.hbCapacity
		if capacity <= 0 {
			capacity = n.capacity
		}
		ns := control.NodeStatus{
			ID: n.id, Rack: n.rack, State: n.effState(), Addr: n.addr,
			Shards: n.shards, Bytes: n.bytes, UsedBytes: n.hbUsed, CapacityBytes: capacity,
			Flaps: n.flaps, GraceMS: n.graceMS, Full: n.hbFull, ReadOnly: n.hbReadOnly,
			Draining: n.draining,
		}
		if n.draining && ns.State == model.StateUp {
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
