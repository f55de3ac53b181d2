package planner

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strings"
	"time"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Heal in place. The view records, per shard, the holders its entry lists
// whose disk lacks it: a node's inventory disagreed with the map (a
// replacement under the old identity, a partial disk), or the node reported
// the copy corrupt. Such a holder does not count as live for that shard, so
// the shard queues like any under-replicated one; its repair goes back onto
// that very holder (in place: no other node receives anything), unless the
// holder cannot take it. A shard already whole on other live holders (it was
// re-homed while the node was away) does not need the holder: it is dropped
// from the entry instead, and nothing is copied.

// healIncidentPrefix starts the incident of an in-place repair ("heal-<node>").
const healIncidentPrefix = "heal-"

// maxDropsPerRound bounds the entries one planning round drops a holder from.
const maxDropsPerRound = 256

// shaTag returns the first four bytes of a hex SHA-256 (0 if it is not hex).
func shaTag(sum string) uint32 {
	var b [4]byte
	if len(sum) < 8 {
		return 0
	}
	if _, err := hex.Decode(b[:], []byte(sum[:8])); err != nil {
		return 0
	}
	return binary.BigEndian.Uint32(b[:])
}

// isMissing reports whether holder r of shard h lacks it.
func (v *view) isMissing(h uint32, r nodeRef) bool {
	if v.rec(h).flags&flagMissing == 0 {
		return false
	}
	return slices.Contains(v.lacks[h], r)
}

// refreshShard re-queues h, and its whole stripe for a piece.
func (v *view) refreshShard(h uint32) {
	if g := v.group(h); g != nil {
		v.refreshStripe(g)
		return
	}
	v.refresh(h)
}

// markMissing records that holder r of shard h lacks it; it reports whether
// that is news (r must be listed in h's entry).
func (v *view) markMissing(h uint32, r nodeRef) bool {
	if !v.holds(h, r) || v.isMissing(h, r) {
		return false
	}
	v.lacks[h] = append(v.lacks[h], r)
	v.rec(h).flags |= flagMissing
	v.nodes[r].missing++
	v.refreshShard(h)
	return true
}

// clearMissing forgets that holder r of h lacks it (a copy landed back, or
// its inventory lists it again); it reports whether there was such a mark.
func (v *view) clearMissing(h uint32, r nodeRef) bool {
	if !v.isMissing(h, r) {
		return false
	}
	v.unmark(h, slices.Index(v.lacks[h], r))
	v.refreshShard(h)
	return true
}

// unmark removes the i-th mark of h, without re-queueing.
func (v *view) unmark(h uint32, i int) {
	ms := v.lacks[h]
	v.nodes[ms[i]].missing--
	ms = slices.Delete(ms, i, i+1)
	if len(ms) == 0 {
		delete(v.lacks, h)
		v.rec(h).flags &^= flagMissing
		return
	}
	v.lacks[h] = ms
}

// pruneMarks drops h's marks on nodes not in keep (nil: all), without
// re-queueing: the entry no longer lists them.
func (v *view) pruneMarks(h uint32, keep []nodeRef) {
	if v.rec(h).flags&flagMissing == 0 {
		return
	}
	for i := len(v.lacks[h]) - 1; i >= 0; i-- {
		if !slices.Contains(keep, v.lacks[h][i]) {
			v.unmark(h, i)
		}
	}
}

// marksOn returns the shards whose holder r lacks them, in handle order.
func (v *view) marksOn(r nodeRef) []uint32 {
	if v.nodes[r].missing == 0 {
		return nil
	}
	out := make([]uint32, 0, v.nodes[r].missing)
	for h, ms := range v.lacks {
		if slices.Contains(ms, r) {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// landedInPlace records a verified copy of h onto r, reported by task, when
// r is a holder that lacked it (or task is its in-place copy): the holder
// counts again, nothing is written to the map. It reports whether it was
// such a copy.
func (v *view) landedInPlace(h uint32, r nodeRef, task string) bool {
	if !v.holds(h, r) {
		return false
	}
	f := v.flights[h]
	ours := f != nil && f.inPlace && f.target == r && f.task == task
	if !ours && !v.isMissing(h, r) {
		return false
	}
	if ours {
		v.endFlight(h)
	}
	v.clearMissing(h, r)
	return true
}

// whole reports whether h has the live copies its layout needs without
// the holders that lack it (an erasure-coded piece: one live holder).
func (v *view) whole(h uint32) bool {
	live, _ := v.counts(h)
	return live >= v.layouts[v.rec(h).layout].Copies()
}

// dropDecision is a holder to remove from a shard's entry: its disk lacks
// the shard and the shard is whole without it.
type dropDecision struct {
	shard uint32
	id    string
	node  nodeRef
}

// drops lists up to n holders to drop (see dropDecision), by shard handle,
// skipping shards with a copy or a trim in flight.
func (v *view) drops(n int) []dropDecision {
	if len(v.lacks) == 0 || n <= 0 {
		return nil
	}
	var hs []uint32
	for h := range v.lacks {
		if v.flights[h] == nil && v.trims[h] == nil && v.whole(h) {
			hs = append(hs, h)
		}
	}
	slices.Sort(hs)
	var out []dropDecision
	for _, h := range hs {
		for _, r := range v.lacks[h] {
			if len(out) == n {
				return out
			}
			out = append(out, dropDecision{shard: h, id: v.ids.String(h), node: r})
		}
	}
	return out
}

// inPlaceAnswer is what inPlaceTarget found.
type inPlaceAnswer int

const (
	inPlaceNone inPlaceAnswer = iota // no holder lacking it can take it: re-home as usual
	inPlaceGo                        // copy it back onto the returned node now
	inPlaceWait                      // a holder lacking it will take it, not now
)

// inPlaceTarget chooses, for shard h of size bytes, the holder lacking it to
// copy it back onto: up or in maintenance (maintenance is the runbook's
// window for replacing a disk), with room below its capacity (it held the
// shard before; its heartbeat's used bytes and the bytes on their way
// count), below the round's write cap, and not the target of attempts that
// kept failing (relaxAfterAttempt). A suspect holder, or one at its cap,
// makes the shard wait; a full or failing one lets it be re-homed.
func (v *view) inPlaceTarget(h uint32, size int64, pc *planCtx) (nodeRef, inPlaceAnswer) {
	if v.rec(h).flags&flagMissing == 0 {
		return 0, inPlaceNone
	}
	rt := v.retries[h]
	wait := false
	for _, x := range v.lacks[h] {
		n := &v.nodes[x]
		switch st := n.effState(); st {
		case model.StateUp, model.StateMaintenance:
		case model.StateSuspect:
			wait = true
			continue
		default:
			continue
		}
		if rt != nil && rt.attempt >= relaxAfterAttempt && slices.Contains(rt.avoid, x) {
			continue
		}
		c := &pc.cands[x]
		if c.Full || c.CapacityBytes > 0 && n.hbUsed+c.PendingBytes+size > c.CapacityBytes {
			continue
		}
		if c.PendingTasks >= pc.maxIn {
			wait = true
			continue
		}
		return x, inPlaceGo
	}
	if wait {
		return 0, inPlaceWait
	}
	return 0, inPlaceNone
}

// decideInPlace plans the copy of replicated shard h back onto holder x,
// read from the least busy live holder (hs: the holders that have it).
func (v *view) decideInPlace(h uint32, x nodeRef, hs []int, pc *planCtx, id string, salt uint64) (decision, bool) {
	cands := pc.cands
	src, err := placement.ChooseSource(hs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt, TargetRack: cands[x].Rack})
	if err != nil {
		return decision{}, false
	}
	attempt, serial := v.nextTask(h)
	return decision{
		shard:    h,
		id:       id,
		sources:  append([]nodeRef{nodeRef(src)}, fallbackSources(hs, src, cands)...),
		target:   x,
		bytes:    v.rec(h).size,
		attempt:  attempt,
		serial:   serial,
		incident: healIncidentPrefix + v.nodes[x].id,
		inPlace:  true,
	}, true
}

// fallbackSources lists the live holders in hs other than src, up ones and
// the least busy first: where a mover reads when src fails.
func fallbackSources(hs []int, src int, cands []placement.Candidate) []nodeRef {
	others := make([]nodeRef, 0, len(hs))
	for _, x := range hs {
		if x != src && cands[x].State.Live() {
			others = append(others, nodeRef(x))
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
	return others
}

// inventoryCheck is one comparison of a node's inventory with the map: the
// shards the map placed on the node when it began, and those its pages
// showed with the right size and checksum.
type inventoryCheck struct {
	node    nodeRef
	ids     map[uint32]string // listed on the node at the start
	skip    map[uint32]bool   // with a copy back onto the node in flight at the start
	present map[uint32]bool
	bytes   map[uint32]int64
	boot    string // the boot id the node's pages carry
}

// startCheck snapshots the shards the map places on r (O(shards)).
func (v *view) startCheck(r nodeRef) *inventoryCheck {
	c := &inventoryCheck{node: r, ids: map[uint32]string{}, skip: map[uint32]bool{}, present: map[uint32]bool{}}
	limit := v.ids.Limit()
	for h := uint32(0); h < limit; h++ {
		if !v.ids.Valid(h) || !v.holds(h, r) {
			continue
		}
		c.ids[h] = v.ids.String(h)
		if f := v.flights[h]; f != nil && f.target == r {
			c.skip[h] = true
		}
	}
	return c
}

// checkPage notes the shards of one inventory page that the node holds as
// the map describes them (same size; same checksum: a replicated shard's
// first four bytes, an erasure-coded piece's whole).
func (v *view) checkPage(c *inventoryCheck, shards []control.InventoryShard) {
	for _, is := range shards {
		h, ok := v.ids.Lookup(is.ID)
		if !ok || c.ids[h] != is.ID {
			continue
		}
		s := v.rec(h)
		if is.Size != s.size {
			continue
		}
		if g := v.group(h); g != nil {
			if hex.EncodeToString(g.sums[s.index][:]) != strings.ToLower(is.SHA256) {
				continue
			}
		} else if len(is.SHA256) != 64 || shaTag(strings.ToLower(is.SHA256)) != s.tag {
			continue
		}
		c.present[h] = true
	}
}

// checkResult is what an inventory check found.
type checkResult struct {
	checked int      // shards the map placed on the node at the start
	missing []uint32 // still listed on it, and its disk lacks them
	present []uint32 // listed on it, marked lacking, and its disk has them
}

// endCheck compares the snapshot with the pages seen, against the map as it
// is now: a shard counts only if it is still listed on the node, and one
// whose copy back was in flight at the start is left alone. It changes
// nothing.
func (v *view) endCheck(c *inventoryCheck) checkResult {
	res := checkResult{checked: len(c.ids)}
	for h, id := range c.ids {
		if !v.ids.Valid(h) || v.ids.String(h) != id || !v.holds(h, c.node) {
			continue
		}
		switch {
		case c.present[h]:
			if v.isMissing(h, c.node) {
				res.present = append(res.present, h)
			}
		case !c.skip[h]:
			res.missing = append(res.missing, h)
		}
	}
	slices.Sort(res.missing)
	slices.Sort(res.present)
	return res
}

// applyCheck records a check's findings: marks what the node lacks and
// clears the marks of what it has.
func (v *view) applyCheck(r nodeRef, res checkResult) (marked int) {
	for _, h := range res.present {
		v.clearMissing(h, r)
	}
	for _, h := range res.missing {
		if v.markMissing(h, r) {
			marked++
		}
	}
	return marked
}

// healSummary is the reply to a heal of node r: what its marks amount to.
func (v *view) healSummary(r nodeRef, checked int) control.HealNodeReply {
	v.fresh()
	rep := control.HealNodeReply{Node: v.nodes[r].id, Checked: checked}
	for _, h := range v.marksOn(r) {
		rep.Missing++
		rep.MissingBytes += v.rec(h).size
		switch {
		case v.whole(h):
			rep.Dropped++
		case v.rec(h).bucket != 0:
			rep.Rebuilding++
		}
	}
	return rep
}

// healPlan is the dry run of healing node r, whose disk lacks missing (as
// an inventory check found, marked or not): per shard, the copy or rebuild
// that would put it back onto r (or, r being full, onto the node a repair
// would choose), from which holder; shards whole without r would be dropped
// and lost ones cannot be helped, so neither moves. It changes nothing; the
// estimate is the caller's.
func (v *view) healPlan(r nodeRef, missing []uint32, lim limits) control.HealPlan {
	v.fresh()
	cands := v.candidates()
	plan := control.HealPlan{Node: v.nodes[r].id, Moves: []control.PlannedMove{}}
	lacks := func(h uint32, x nodeRef) bool { return x == r || v.isMissing(h, x) }
	for _, h := range missing {
		s := v.rec(h)
		id := v.ids.String(h)
		salt := placement.Salt(id)
		move := control.PlannedMove{Shard: id, Target: v.nodes[r].id, TargetRack: v.nodes[r].rack, Bytes: s.size}
		var have, all []int // holders with a live copy; every holder
		for _, x := range v.holders(h) {
			all = append(all, int(x))
			if !lacks(h, x) && v.live(x) {
				have = append(have, int(x))
			}
		}
		fits := func() bool {
			c := cands[r]
			return !c.Full && (c.CapacityBytes <= 0 || v.nodes[r].hbUsed+c.PendingBytes+s.size <= c.CapacityBytes)
		}
		if g := v.group(h); g != nil {
			if len(have) > 0 {
				continue // dropped: another holder has the piece
			}
			var reads []readChoice
			for idx, p := range g.pieces {
				if p == noPiece || p == h {
					continue
				}
				for _, x := range v.liveHolders(p, -1) {
					if x == r {
						continue
					}
					c := readChoice{index: idx, holder: x, notUp: cands[x].State != model.StateUp, hash: placement.Salt(v.nodes[x].id)}
					reads = append(reads, c)
					break
				}
			}
			if len(reads) < g.k {
				continue // lost: the stripe cannot be rebuilt
			}
			best := reads[0]
			for _, c := range reads[1:] {
				if readLess(c, best, cands) {
					best = c
				}
			}
			move.Kind, move.Source, move.SourceRack = event.KindRebuild, v.nodes[best.holder].id, v.nodes[best.holder].rack
		} else {
			copies := v.layouts[s.layout].Copies()
			if len(have) >= copies || len(have) == 0 {
				continue // dropped, or lost
			}
			src, err := placement.ChooseSource(have, cands, placement.SourceOptions{Salt: salt, TargetRack: v.nodes[r].rack})
			if err != nil {
				continue
			}
			move.Kind, move.Source, move.SourceRack = event.KindCopy, v.nodes[src].id, v.nodes[src].rack
		}
		if !fits() {
			tg, err := placement.ChooseTarget(all, cands, placement.TargetOptions{Size: s.size, MaxFill: lim.maxFill, Salt: salt})
			if err != nil {
				move.Target, move.TargetRack = "", ""
			} else {
				move.Target, move.TargetRack = v.nodes[tg.Index].id, v.nodes[tg.Index].rack
			}
		}
		if move.Target == v.nodes[r].id {
			cands[r].PendingBytes += s.size
		}
		plan.Moves = append(plan.Moves, move)
		plan.Shards++
		plan.Bytes += s.size
	}
	slices.SortFunc(plan.Moves, func(a, b control.PlannedMove) int { return strings.Compare(a.Shard, b.Shard) })
	return plan
}

// singleCopy counts the shards one more loss would lose (replicated: one
// live copy; erasure-coded: stripes with exactly K live pieces) and the
// bytes that must be written to lift them all above that (a copy per
// shard, every missing piece of such a stripe).
func (v *view) singleCopy() (n int, bytes int64) {
	v.fresh()
	var stripes map[*stripeGroup]bool
	for _, h := range v.buckets[1] {
		bytes += v.rec(h).size
		if g := v.group(h); g != nil {
			if stripes[g] {
				continue
			}
			if stripes == nil {
				stripes = map[*stripeGroup]bool{}
			}
			stripes[g] = true
		}
		n++
	}
	return n, bytes
}

// etaOf is the time bytes take at rate (0 for none, -1 unknown).
func etaOf(bytes int64, rate float64) float64 {
	switch {
	case bytes == 0:
		return 0
	case rate > 0:
		return float64(bytes) / rate
	}
	return -1
}

// nodeProgress narrows progress to node r's in-place heal: the shards its
// entries list while its disk lacks them (lost ones apart), their bytes,
// those of them one more loss would lose, the copies writing to it, and the
// cluster's verified rate.
func (v *view) nodeProgress(r nodeRef, now time.Time, stallAfter time.Duration) event.Progress {
	p := v.progress(now, stallAfter)
	n := &v.nodes[r]
	out := event.Progress{
		Node: n.id, RateBytesPerSec: p.RateBytesPerSec, VerifiedBytes: p.VerifiedBytes, Shards: n.shards,
	}
	var single int64
	var stripes map[*stripeGroup]bool
	for _, h := range v.marksOn(r) {
		s := v.rec(h)
		if s.bucket == 0 {
			out.Lost++
			continue
		}
		out.UnderReplicated++
		out.BytesRemaining += s.size
		if s.bucket != 1 {
			continue
		}
		single += s.size
		if g := v.group(h); g != nil {
			if stripes[g] {
				continue
			}
			if stripes == nil {
				stripes = map[*stripeGroup]bool{}
			}
			stripes[g] = true
		}
		out.SingleCopy++
	}
	for _, f := range v.flights {
		if f.target == r {
			out.InFlight++
		}
	}
	if n.effState() == model.StateSuspect {
		out.SuspectNodes = 1
	}
	out.Stalled = p.Stalled && out.UnderReplicated > 0
	out.ETASeconds = etaOf(out.BytesRemaining, out.RateBytesPerSec)
	out.SingleCopyETASeconds = etaOf(single, out.RateBytesPerSec)
	return out
}

// reconcilesDue returns the live nodes whose inventory check is asked for
// and due at now, so that at most n checks run, and marks them reconciling.
func (v *view) reconcilesDue(now time.Time, n int) []nodeRef {
	for i := range v.nodes {
		if v.nodes[i].reconciling {
			n--
		}
	}
	var out []nodeRef
	for i := range v.nodes {
		nd := &v.nodes[i]
		if len(out) >= n {
			break
		}
		if !nd.needReconcile || nd.reconciling || !nd.registered || !nd.effState().Live() || now.Before(nd.reconcileAt) {
			continue
		}
		nd.reconciling = true
		out = append(out, nodeRef(i))
	}
	return out
}

// reconcileDone records the end of a check of r begun at generation gen:
// ok (or given up) clears the request unless a newer one came meanwhile;
// otherwise it is retried after a backoff, at most maxReconcileTries times.
func (v *view) reconcileDone(r nodeRef, gen int, ok bool, now time.Time) (gaveUp bool) {
	n := &v.nodes[r]
	n.reconciling = false
	if n.reconcileGen != gen {
		return false
	}
	if ok {
		n.needReconcile = false
		return false
	}
	n.reconcileTries++
	if n.reconcileTries >= maxReconcileTries {
		n.needReconcile = false
		return true
	}
	n.reconcileAt = now.Add(backoff(n.reconcileTries + 1))
	return false
}

// reconciled records that a check of r requested at generation gen
// succeeded outside the background checks (heal --node): unless a newer
// request came, or a background check runs, nothing is left to check.
func (v *view) reconciled(r nodeRef, gen int) {
	n := &v.nodes[r]
	if n.reconcileGen == gen && !n.reconciling {
		n.needReconcile = false
	}
}

// maxReconcileTries bounds the attempts at one inventory check.
const maxReconcileTries = 5

// reconcilePending reports whether a live holder of h awaits an inventory
// check (its copies may not be there: nothing is trimmed against them).
func (v *view) reconcilePending(h uint32) bool {
	for _, r := range v.holders(h) {
		n := &v.nodes[r]
		if (n.needReconcile || n.reconciling) && n.effState().Live() {
			return true
		}
	}
	return false
}
