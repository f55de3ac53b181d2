package core

import (
	"errors"
	"strconv"

	"github.com/rehome/rehome/services/planner/placement"
)

// Candidates renders every known node for the placement functions; the slice
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

// survivorSalt is placement.SurvivorSalt of the live holders among hs.
func survivorSalt(hs []int, cands []placement.Candidate) uint64 {
	ids := make([]string, 0, len(hs))
	for _, x := range hs {
		if cands[x].State.Live() {
			ids = append(ids, cands[x].ID)
		}
	}
	return placement.SurvivorSalt(ids)
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

// repairFillBand is the width of the fill bands a repair's targets are
// ranked by (placement.TargetOptions.FillBand): nodes within one percentage
// point of fill count as equally filled, and the one writing fewest copies
// wins. Ranked by exact fill, the emptiest nodes took every repair up to
// their write slots while most survivors sat idle, so a node's loss took
// twice the copy time on 1,000 nodes (rehome sim --restore).
const repairFillBand = 0.01

// decide chooses target and source for shard h, if it needs and can get a
// copy now. A holder whose disk lacks the shard gets it back when it can
// (inPlaceTarget); otherwise the target comes first (placement.ChooseTarget:
// racks without a live copy, room below maxFill, balanced by bytes and
// writes, fills within repairFillBand counted equal, never a node the entry
// lists); the source is then the least busy
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
	opt := placement.TargetOptions{Size: s.size, MaxTasks: pc.maxIn, Salt: salt, MaxFill: lim.MaxFill, FillBand: repairFillBand}
	if v.pol.Copysets {
		opt.Sticky, opt.Salt = true, survivorSalt(stay, cands)
	}
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
	if len(opt.Exclude) > len(exclude) && (err != nil || (tg.RackRelaxed && !r.relaxable())) {
		// Avoiding the failed targets would break the rack rule (or leaves
		// nothing): retry them, until relaxAfterAttempt failures not for
		// want of a source (retry.relaxable).
		opt.Exclude = exclude
		if tg2, err2 := placement.ChooseTarget(stay, cands, opt); err2 == nil && (!tg2.RackRelaxed || err != nil) {
			tg, err = tg2, nil
		} else if err == nil && tg.RackRelaxed && !r.relaxable() && errors.Is(err2, placement.ErrBusy) {
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
	src, err := chooseSource(r, srcs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt, TargetRack: cands[tg.Index].Rack})
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
