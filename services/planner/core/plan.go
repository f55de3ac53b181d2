package core

import (
	"cmp"
	"errors"
	"fmt"
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
type Limits struct {
	// perNodeIn and perNodeOut bound copies writing to and reading from one
	// node (a trim takes an out slot of the node it deletes from); a shard
	// with a single live copy may exceed both by one.
	PerNodeIn, PerNodeOut int
	// maxInFlight bounds copies and trims in flight cluster-wide.
	MaxInFlight int
	// maxFill skips targets whose disk would be fuller than this (0: no limit).
	MaxFill float64
	// bytes admits the bytes of copies (nil: no byte cap). Planning consumes
	// its tokens at the round's time; a copy it cannot admit yet ends the
	// round's copies (the riskiest shard keeps its place) and sets wait.
	Bytes *rate.Limiter
	// paused holds every new task and map change back (heal pause).
	Paused bool
}

// decision is one copy, or one rebuild of an erasure-coded stripe (rb set),
// the planner wants issued.
type Decision struct {
	Shard    uint32
	ID       string
	Sources  []NodeRef // chosen source(s) first, then the other live holders
	Target   NodeRef
	Bytes    int64 // a copy's size; the bytes a rebuild reads (K pieces)
	Attempt  int   // within the round (1..MaxAttempts)
	Serial   int   // task id number, unique per shard
	Margin   int   // copies the shard may still lose (0: one live copy left)
	Incident string
	Relaxed  bool
	RB       *rebuildPlan // set for a rebuild
	inPlace  bool         // a copy back onto a holder whose disk lacks the shard
}

// trimDecision is one surplus copy the planner wants removed.
type TrimDecision struct {
	Shard uint32
	ID    string
	Node  NodeRef
	bytes int64
}

// roundPlan is what one planning round decided.
type roundPlan struct {
	Copies []Decision
	Trims  []TrimDecision
	Drops  []DropDecision
	// wait is set when the byte cap held copies back: plan again after it.
	Wait time.Duration
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
func (v *View) Candidates() []placement.Candidate {
	cs := make([]placement.Candidate, len(v.Nodes))
	for i := range v.Nodes {
		n := &v.Nodes[i]
		capacity := n.hbCapacity
		if capacity <= 0 {
			capacity = n.capacity
		}
		cs[i] = placement.Candidate{
			ID:            n.ID,
			Rack:          n.Rack,
			State:         n.EffState(),
			UsedBytes:     n.Bytes,
			OtherBytes:    max(n.hbUsed-n.Bytes, 0),
			CapacityBytes: capacity,
			PendingBytes:  n.inBytes + n.allocBytes,
			PendingTasks:  n.inTasks,
			Reads:         n.outTasks,
			Returning:     n.returning,
			Full:          n.hbFull || n.hbReadOnly,
			Leaving:       n.Draining,
		}
	}
	return cs
}

// incident names what made shard h lose copies: its first down holder's id
// and the time it went down (unix ms).
func (v *View) incident(h uint32) string {
	for _, r := range v.holders(h) {
		n := &v.Nodes[r]
		if !n.EffState().Live() {
			var ms int64
			if !n.Since.IsZero() {
				ms = n.Since.UnixMilli()
			}
			return n.ID + "-" + strconv.FormatInt(ms, 10)
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
func (v *View) Round(now time.Time, lim Limits) roundPlan {
	v.fresh()
	var out roundPlan
	if lim.Paused {
		return out
	}
	out.Drops = v.drops(maxDropsPerRound)
	budget := lim.MaxInFlight - v.copyFlights - len(v.Trims)
	if budget <= 0 {
		return out
	}
	cands := v.Candidates()
	pc := planCtx{now: now, lim: lim, cands: cands, planned: map[*StripeGroup]bool{}}
	pc.rackOf, pc.racks = rackIndex(cands)
copies:
	for b := 1; b < len(v.buckets); b++ {
		if len(v.buckets[b]) == 0 {
			continue
		}
		pc.maxIn, pc.maxOut = lim.PerNodeIn, lim.PerNodeOut
		if b == 1 { // one live copy left: may exceed a node's caps by one
			pc.maxIn++
			pc.maxOut++
		}
		pc.busy = map[uint64]int64{}
		freeIn := 0 // write slots left on possible targets: none left, nothing to plan
		for i, c := range cands {
			if c.State == model.StateUp || (c.State == model.StateMaintenance && v.Nodes[i].Missing > 0) {
				freeIn += max(pc.maxIn-c.PendingTasks, 0)
			}
		}
		for _, h := range v.buckets[b] {
			if budget == 0 || freeIn <= 0 {
				break
			}
			var (
				d  Decision
				ok bool
			)
			mv, moving := v.Moves[h]
			switch {
			case b == moveBucket && moving:
				d, ok = v.decideMove(h, mv, &pc)
			case !v.layouts[v.Record(h).layout].Erasure():
				d, ok = v.decide(h, &pc)
			case b == moveBucket:
				d, ok = v.decidePieceMove(h, &pc)
			default:
				d, ok = v.decideRebuild(h, &pc)
			}
			if !ok {
				continue
			}
			if lim.Bytes != nil {
				if wait := admit(lim.Bytes, now, d.Bytes); wait > 0 {
					out.Wait = wait
					break copies
				}
			}
			d.Margin = b - 1
			if b == moveBucket && !moving {
				d.Margin, d.Incident = v.liveCount(h)-1, v.drainIncident(h)
			}
			out.Copies = append(out.Copies, d)
			budget--
			if rp := d.RB; rp != nil {
				pc.planned[rp.Group] = true
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
			src, tg := d.Sources[0], d.Target
			cands[src].Reads++
			cands[tg].PendingTasks++
			cands[tg].PendingBytes += d.Bytes
		}
		if budget == 0 {
			break
		}
	}
	if budget > 0 {
		out.Trims = v.planTrims(&pc, budget)
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
func (v *View) planTrims(pc *planCtx, budget int) []TrimDecision {
	n := len(v.surplus)
	if n == 0 {
		return nil
	}
	var out []TrimDecision
	if v.trimCursor >= n {
		v.trimCursor = 0
	}
	scan := min(n, maxTrimScan)
	for k := 0; k < scan && len(out) < budget; k++ {
		h := v.surplus[(v.trimCursor+k)%n]
		if v.Flights[h] != nil || v.Trims[h] != nil || v.reconcilePending(h) {
			continue
		}
		hs := v.holderBuf[:0]
		for _, x := range v.holders(h) {
			if !v.IsMissing(h, x) {
				hs = append(hs, int(x))
			}
		}
		v.holderBuf = hs
		s := v.Record(h)
		id := v.IDs.String(h)
		var (
			x   int
			err error
		)
		if mv, ok := v.Moves[h]; ok && slices.Contains(hs, int(mv.from)) && pc.cands[mv.from].State == model.StateUp {
			x = int(mv.from) // the rebalanced copy leaves
		} else if g := v.Group(h); g != nil {
			if g.RB != nil || pc.planned[g] {
				continue // a rebuild of the stripe may be reading this piece
			}
			x, err = placement.ChooseSurplusPiece(hs, pc.cands, v.stripeRacks(g, h), g.m, placement.Salt(id))
		} else {
			x, err = placement.ChooseSurplus(hs, pc.cands, v.layouts[s.layout].Copies(), placement.Salt(id))
		}
		if err != nil || pc.cands[x].Reads >= pc.lim.PerNodeOut {
			continue
		}
		pc.cands[x].Reads++
		out = append(out, TrimDecision{Shard: h, ID: id, Node: NodeRef(x), bytes: s.size})
	}
	v.trimCursor = (v.trimCursor + scan) % n
	return out
}

// planCtx is the state of one planning round.
type planCtx struct {
	now           time.Time
	lim           Limits
	maxIn, maxOut int // the caps of the bucket being planned
	cands         []placement.Candidate
	rackOf        []int
	racks         int
	// busy maps a set of racks holding live copies (bit mask) to the smallest
	// shard size for which every target outside those racks was busy.
	busy map[uint64]int64
	// planned holds the stripes a rebuild was planned for this round.
	planned map[*StripeGroup]bool
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
func (v *View) decide(h uint32, pc *planCtx) (Decision, bool) {
	now, lim, cands := pc.now, pc.lim, pc.cands
	if v.Flights[h] != nil {
		return Decision{}, false
	}
	s := v.Record(h)
	r := v.Retries[h]
	if r != nil && now.Before(r.notBefore) {
		return Decision{}, false
	}
	// A copy being trimmed from a node is neither read nor re-made there
	// until its delete task is done.
	trimmed := -1
	if tf := v.Trims[h]; tf != nil {
		trimmed = int(tf.Node)
	}
	var lacking []int // listed holders whose disk lacks it: never sources, never new targets
	hs := v.holderBuf[:0]
	for _, x := range v.holders(h) {
		switch {
		case int(x) == trimmed:
		case s.Flags&flagMissing != 0 && v.IsMissing(h, x):
			lacking = append(lacking, int(x))
		default:
			hs = append(hs, int(x))
		}
	}
	v.holderBuf = hs
	id := v.IDs.String(h)
	salt := placement.Salt(id)
	switch x, ans := v.inPlaceTarget(h, s.size, pc); ans {
	case inPlaceWait:
		return Decision{}, false
	case inPlaceGo:
		return v.decideInPlace(h, x, hs, pc, id, salt)
	}
	if _, err := placement.ChooseSource(hs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt}); err != nil {
		return Decision{}, false
	}
	// The new copy's holders-to-be: without copies leaving a draining node,
	// whose racks are free for it.
	stay := hs
	if v.draining > 0 || len(v.Moves) > 0 {
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
			return Decision{}, false
		}
	}
	opt := placement.TargetOptions{Size: s.size, MaxTasks: pc.maxIn, Salt: salt, MaxFill: lim.MaxFill}
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
	if len(opt.Exclude) > len(exclude) && (err != nil || (tg.RackRelaxed && r.Attempt < relaxAfterAttempt)) {
		// Avoiding the failed targets would break the rack rule (or leaves
		// nothing): retry them, until relaxAfterAttempt failures.
		opt.Exclude = exclude
		if tg2, err2 := placement.ChooseTarget(stay, cands, opt); err2 == nil && (!tg2.RackRelaxed || err != nil) {
			tg, err = tg2, nil
		} else if err == nil && tg.RackRelaxed && r.Attempt < relaxAfterAttempt && errors.Is(err2, placement.ErrBusy) {
			return Decision{}, false // the rack-keeping target is busy: wait for it
		}
	}
	if err != nil {
		if memo && errors.Is(err, placement.ErrRackBusy) {
			if min, ok := pc.busy[mask]; !ok || s.size < min {
				pc.busy[mask] = s.size
			}
		}
		return Decision{}, false
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
		return Decision{}, false
	}
	attempt, serial := v.nextTask(h)
	return Decision{
		Shard:    h,
		ID:       id,
		Sources:  append([]NodeRef{NodeRef(src)}, fallbackSources(hs, src, cands)...),
		Target:   NodeRef(tg.Index),
		Bytes:    s.size,
		Attempt:  attempt,
		Serial:   serial,
		Incident: v.incident(h),
		Relaxed:  tg.RackRelaxed,
	}, true
}

// taskID names the task of a decision: shard-target-serial (the serial is
// the attempt number until a shard is parked or an id is found used).
func (v *View) TaskID(d Decision) string {
	return d.ID + "-" + v.Nodes[d.Target].ID + "-" + strconv.Itoa(d.Serial)
}

// reserve records a round's copies and trims as in flight (before their
// tasks are published, so nothing plans them twice); a failed publish calls
// endFlight or endTrim.
func (v *View) Reserve(p roundPlan, now time.Time, timeout time.Duration) {
	for _, d := range p.Copies {
		if d.RB != nil {
			v.reserveRebuild(d, now, timeout)
			continue
		}
		v.startFlight(d.Shard, &Flight{
			Task: v.TaskID(d), target: d.Target, source: d.Sources[0], bytes: d.Bytes,
			attempt: d.Attempt, serial: d.Serial, Deadline: now.Add(timeout), incident: d.Incident,
			inPlace: d.inPlace,
		})
	}
	for _, t := range p.Trims {
		v.startTrim(t.Shard, &trimFlight{Node: t.Node, Deadline: now.Add(timeout)})
	}
}

// failFlight ends flight f of shard h as a failed attempt; for
// a piece of a rebuild, every piece of its task still open. When it was the
// last attempt of its round it returns the report to publish.
func (v *View) FailFlight(h uint32, f *Flight, cause string, now time.Time, avoid bool) *event.Failed {
	// A copy back in place that failed leaves its target lacking the shard
	// (a planner that took over knows it only from the task).
	type back struct {
		h uint32
		r NodeRef
	}
	var backs []back
	if f.RB != nil {
		for _, p := range v.OpenPieces(f.RB) {
			if pf := v.Flights[p]; pf.inPlace {
				backs = append(backs, back{p, pf.target})
			}
		}
	} else if f.inPlace {
		backs = append(backs, back{h, f.target})
	}
	defer func() {
		for _, b := range backs {
			v.MarkMissing(b.h, b.r)
		}
	}()
	kind := event.KindCopy
	if f.RB != nil {
		kind = event.KindRebuild
		if pieces := v.OpenPieces(f.RB); len(pieces) > 0 {
			h = pieces[0]
		}
		if !v.failedRebuild(f.RB, now, avoid) {
			return nil
		}
	} else {
		v.EndFlight(h)
		if !v.failed(h, f.target, f.attempt, f.serial, now, avoid) {
			return nil
		}
	}
	r := v.Retries[h]
	return &event.Failed{
		Task: f.Task, Incident: f.incident, Shard: v.IDs.String(h), Kind: kind,
		Target: v.Nodes[f.target].ID, Attempt: f.attempt, Final: true, RetryAt: r.notBefore.UTC(),
		Error: fmt.Sprintf("repair failed %d times in a row (last: %s); retrying from attempt 1 at %s",
			f.attempt, cause, r.notBefore.UTC().Format(time.RFC3339)),
	}
}

// expired returns the shards whose copy passed its deadline (one piece per
// rebuild task), and those whose trim did.
func (v *View) Expired(now time.Time) (copies, trims []uint32) {
	var rbs map[*rebuildFlight]bool
	for h, f := range v.Flights {
		if !now.After(f.Deadline) {
			continue
		}
		if f.RB != nil {
			if rbs[f.RB] {
				continue
			}
			if rbs == nil {
				rbs = map[*rebuildFlight]bool{}
			}
			rbs[f.RB] = true
		}
		copies = append(copies, h)
	}
	for h, t := range v.Trims {
		if now.After(t.Deadline) {
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

// totals counts under-replicated and lost shards, the bytes still to copy
// or rebuild, and the degraded stripes.
func (v *View) Totals() totals {
	v.fresh()
	t := totals{Shards: v.IDs.Len(), Objects: v.objects, InFlight: v.copyFlights + len(v.Trims), Surplus: len(v.surplus),
		Stripes: v.stripeCount}
	var degraded map[*StripeGroup]bool
	stripe := func(h uint32) {
		if g := v.Group(h); g != nil && !degraded[g] {
			if degraded == nil {
				degraded = map[*StripeGroup]bool{}
			}
			degraded[g] = true
		}
	}
	for b := 1; b < moveBucket; b++ {
		for _, h := range v.buckets[b] {
			s := v.Record(h)
			t.UnderReplicated++
			if l := v.layouts[s.layout]; l.Erasure() {
				t.BytesRemaining += s.size
				stripe(h)
			} else {
				t.BytesRemaining += s.size * int64(l.Copies()-b) // bucket b: b live copies
			}
		}
	}
	t.moving = len(v.buckets[moveBucket])
	for _, h := range v.buckets[0] {
		t.Lost++
		if v.layouts[v.Record(h).layout].Erasure() {
			stripe(h)
		}
	}
	t.StripesDegraded = len(degraded)
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

// idleSince is the later of the last verified copy and the start of the work.
func (v *View) IdleSince() time.Time {
	if v.lastVerified.After(v.WorkSince) {
		return v.lastVerified
	}
	return v.WorkSince
}

// progress is the heal state at now.
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

// clusterStatus answers CtlStatus: registered nodes (and unregistered ones
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
