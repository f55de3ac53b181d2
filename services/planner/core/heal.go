package core

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"fmt"
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

// IsMissing reports whether holder r of shard h lacks it.
func (v *View) IsMissing(h uint32, r NodeRef) bool {
	if v.Record(h).Flags&flagMissing == 0 {
		return false
	}
	return slices.Contains(v.lacks[h], r)
}

// refreshShard re-queues h, and its whole stripe for a piece.
func (v *View) refreshShard(h uint32) {
	if g := v.Group(h); g != nil {
		v.refreshStripe(g)
		return
	}
	v.refresh(h)
}

// MarkMissing records that holder r of shard h lacks it; it reports whether
// that is news (r must be listed in h's entry).
func (v *View) MarkMissing(h uint32, r NodeRef) bool {
	if !v.holds(h, r) || v.IsMissing(h, r) {
		return false
	}
	v.lacks[h] = append(v.lacks[h], r)
	v.Record(h).Flags |= flagMissing
	v.Nodes[r].Missing++
	v.refreshShard(h)
	return true
}

// clearMissing forgets that holder r of h lacks it (a copy landed back, or
// its inventory lists it again); it reports whether there was such a mark.
func (v *View) clearMissing(h uint32, r NodeRef) bool {
	if !v.IsMissing(h, r) {
		return false
	}
	v.unmark(h, slices.Index(v.lacks[h], r))
	v.refreshShard(h)
	return true
}

// unmark removes the i-th mark of h, without re-queueing.
func (v *View) unmark(h uint32, i int) {
	ms := v.lacks[h]
	v.Nodes[ms[i]].Missing--
	ms = slices.Delete(ms, i, i+1)
	if len(ms) == 0 {
		delete(v.lacks, h)
		v.Record(h).Flags &^= flagMissing
		return
	}
	v.lacks[h] = ms
}

// pruneMarks drops h's marks on nodes not in keep (nil: all), without
// re-queueing: the entry no longer lists them.
func (v *View) pruneMarks(h uint32, keep []NodeRef) {
	if v.Record(h).Flags&flagMissing == 0 {
		return
	}
	for i := len(v.lacks[h]) - 1; i >= 0; i-- {
		if !slices.Contains(keep, v.lacks[h][i]) {
			v.unmark(h, i)
		}
	}
}

// MarksOn returns the shards whose holder r lacks them, in handle order.
func (v *View) MarksOn(r NodeRef) []uint32 {
	if v.Nodes[r].Missing == 0 {
		return nil
	}
	out := make([]uint32, 0, v.Nodes[r].Missing)
	for h, ms := range v.lacks {
		if slices.Contains(ms, r) {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// LandedInPlace records a verified copy of h onto r, reported by task, when
// r is a holder that lacked it (or task is its in-place copy): the holder
// counts again, nothing is written to the map. It reports whether it was
// such a copy.
func (v *View) LandedInPlace(h uint32, r NodeRef, task string) bool {
	if !v.holds(h, r) {
		return false
	}
	f := v.Flights[h]
	ours := f != nil && f.inPlace && f.target == r && f.Task == task
	if !ours && !v.IsMissing(h, r) {
		return false
	}
	if ours {
		v.EndFlight(h)
	}
	v.clearMissing(h, r)
	return true
}

// whole reports whether h has the live copies its layout needs without
// the holders that lack it (an erasure-coded piece: one live holder).
func (v *View) whole(h uint32) bool {
	live, _ := v.counts(h)
	return live >= v.layouts[v.Record(h).layout].Copies()
}

// DropDecision is a holder to remove from a shard's entry: its disk lacks
// the shard and the shard is whole without it.
type DropDecision struct {
	Shard uint32
	ID    string
	Node  NodeRef
}

// drops lists up to n holders to drop (see dropDecision), by shard handle,
// skipping shards with a copy or a trim in flight.
func (v *View) drops(n int) []DropDecision {
	if len(v.lacks) == 0 || n <= 0 {
		return nil
	}
	var hs []uint32
	for h := range v.lacks {
		if v.Flights[h] == nil && v.Trims[h] == nil && v.whole(h) {
			hs = append(hs, h)
		}
	}
	slices.Sort(hs)
	var out []DropDecision
	for _, h := range hs {
		for _, r := range v.lacks[h] {
			if len(out) == n {
				return out
			}
			out = append(out, DropDecision{Shard: h, ID: v.IDs.String(h), Node: r})
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
// kept failing (retry.relaxable). A suspect holder, or one at its cap,
// makes the shard wait; a full or failing one lets it be re-homed.
func (v *View) inPlaceTarget(h uint32, size int64, pc *planCtx) (NodeRef, inPlaceAnswer) {
	if v.Record(h).Flags&flagMissing == 0 {
		return 0, inPlaceNone
	}
	rt := v.Retries[h]
	wait := false
	for _, x := range v.lacks[h] {
		n := &v.Nodes[x]
		switch st := n.EffState(); st {
		case model.StateUp, model.StateMaintenance:
		case model.StateSuspect:
			wait = true
			continue
		default:
			continue
		}
		if rt != nil && rt.relaxable() && slices.Contains(rt.avoid, x) {
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
func (v *View) decideInPlace(h uint32, x NodeRef, hs []int, pc *planCtx, id string, salt uint64) (Decision, bool) {
	cands := pc.cands
	src, err := chooseSource(v.Retries[h], hs, cands, placement.SourceOptions{MaxReads: pc.maxOut, Salt: salt, TargetRack: cands[x].Rack})
	if err != nil {
		return Decision{}, false
	}
	attempt, serial := v.nextTask(h)
	return Decision{
		Shard:    h,
		ID:       id,
		Sources:  append([]NodeRef{NodeRef(src)}, fallbackSources(hs, src, cands)...),
		Target:   x,
		Bytes:    v.Record(h).size,
		Attempt:  attempt,
		Serial:   serial,
		Incident: healIncidentPrefix + v.Nodes[x].ID,
		inPlace:  true,
	}, true
}

// chooseSource is placement.ChooseSource over the holders hs, preferring
// those that were not the first source of an attempt that no source could
// serve (r.badSrcs; r nil: none failed), then those that failed so longest
// ago: the sources rotate while attempts fail for want of one.
func chooseSource(r *retry, hs []int, cands []placement.Candidate, opt placement.SourceOptions) (int, error) {
	if r != nil {
		fresh := make([]int, 0, len(hs))
		for k := range r.badSrcs { // allow the k sources that failed longest ago
			fresh = fresh[:0]
			for _, x := range hs {
				if !slices.Contains(r.badSrcs[k:], NodeRef(x)) {
					fresh = append(fresh, x)
				}
			}
			if len(fresh) == 0 {
				continue
			}
			if src, err := placement.ChooseSource(fresh, cands, opt); err == nil {
				return src, nil
			}
		}
	}
	return placement.ChooseSource(hs, cands, opt)
}

// fallbackSources lists the live holders in hs other than src, up ones and
// the least busy first: where a mover reads when src fails.
func fallbackSources(hs []int, src int, cands []placement.Candidate) []NodeRef {
	others := make([]NodeRef, 0, len(hs))
	for _, x := range hs {
		if x != src && cands[x].State.Live() {
			others = append(others, NodeRef(x))
		}
	}
	slices.SortStableFunc(others, func(a, b NodeRef) int {
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
	node    NodeRef
	ids     map[uint32]string // listed on the node at the start
	skip    map[uint32]bool   // with a copy back onto the node in flight at the start
	present map[uint32]bool
	bytes   map[uint32]int64
	Boot    string // the boot id the node's pages carry
}

// StartCheck snapshots the shards the map places on r (O(shards on r)).
func (v *View) StartCheck(r NodeRef) *inventoryCheck {
	c := &inventoryCheck{node: r, ids: map[uint32]string{}, skip: map[uint32]bool{}, present: map[uint32]bool{}}
	for h := range v.shardsOn(r) {
		c.ids[h] = v.IDs.String(h)
		if f := v.Flights[h]; f != nil && f.target == r {
			c.skip[h] = true
		}
	}
	return c
}

// CheckPage notes the shards of one inventory page that the node holds as
// the map describes them (same size; same checksum: a replicated shard's
// first four bytes, an erasure-coded piece's whole).
func (v *View) CheckPage(c *inventoryCheck, shards []control.InventoryShard) {
	for _, is := range shards {
		h, ok := v.IDs.Lookup(is.ID)
		if !ok || c.ids[h] != is.ID {
			continue
		}
		s := v.Record(h)
		if is.Size != s.size {
			continue
		}
		if g := v.Group(h); g != nil {
			if hex.EncodeToString(g.sums[s.index][:]) != strings.ToLower(is.SHA256) {
				continue
			}
		} else if len(is.SHA256) != 64 || shaTag(strings.ToLower(is.SHA256)) != s.tag {
			continue
		}
		c.present[h] = true
	}
}

// CheckResult is what an inventory check found.
type CheckResult struct {
	Checked int      // shards the map placed on the node at the start
	Missing []uint32 // still listed on it, and its disk lacks them
	Present []uint32 // listed on it, marked lacking, and its disk has them
}

// EndCheck compares the snapshot with the pages seen, against the map as it
// is now: a shard counts only if it is still listed on the node, and one
// whose copy back was in flight at the start is left alone. It changes
// nothing.
func (v *View) EndCheck(c *inventoryCheck) CheckResult {
	res := CheckResult{Checked: len(c.ids)}
	for h, id := range c.ids {
		if !v.IDs.Valid(h) || v.IDs.String(h) != id || !v.holds(h, c.node) {
			continue
		}
		switch {
		case c.present[h]:
			if v.IsMissing(h, c.node) {
				res.Present = append(res.Present, h)
			}
		case !c.skip[h]:
			res.Missing = append(res.Missing, h)
		}
	}
	slices.Sort(res.Missing)
	slices.Sort(res.Present)
	return res
}

// ApplyCheck records a check's findings: marks what the node lacks and
// clears the marks of what it has.
func (v *View) ApplyCheck(r NodeRef, res CheckResult) (marked int) {
	for _, h := range res.Present {
		v.clearMissing(h, r)
	}
	for _, h := range res.Missing {
		if v.MarkMissing(h, r) {
			marked++
		}
	}
	return marked
}

// HealSummary is the reply to a heal of node r: what its marks amount to.
func (v *View) HealSummary(r NodeRef, checked int) control.HealNodeReply {
	v.fresh()
	rep := control.HealNodeReply{Node: v.Nodes[r].ID, Checked: checked}
	for _, h := range v.MarksOn(r) {
		rep.Missing++
		rep.MissingBytes += v.Record(h).size
		switch {
		case v.whole(h):
			rep.Dropped++
		case v.Record(h).bucket != 0:
			rep.Rebuilding++
		}
	}
	return rep
}

// HealPlan is the dry run of healing node r, whose disk lacks missing (as
// an inventory check found, marked or not): per shard, the copy or rebuild
// that would put it back onto r (or, r being full, onto the node a repair
// would choose), from which holder; shards whole without r would be dropped
// and lost ones cannot be helped, so neither moves. It changes nothing; the
// estimate is the caller's.
func (v *View) HealPlan(r NodeRef, missing []uint32, lim Limits) control.HealPlan {
	v.fresh()
	cands := v.Candidates()
	plan := control.HealPlan{Node: v.Nodes[r].ID, Moves: []control.PlannedMove{}}
	lacks := func(h uint32, x NodeRef) bool { return x == r || v.IsMissing(h, x) }
	for _, h := range missing {
		s := v.Record(h)
		id := v.IDs.String(h)
		salt := placement.Salt(id)
		move := control.PlannedMove{Shard: id, Target: v.Nodes[r].ID, TargetRack: v.Nodes[r].Rack, Bytes: s.size}
		var have, all []int // holders with a live copy; every holder
		for _, x := range v.holders(h) {
			all = append(all, int(x))
			if !lacks(h, x) && v.Live(x) {
				have = append(have, int(x))
			}
		}
		fits := func() bool {
			c := cands[r]
			return !c.Full && (c.CapacityBytes <= 0 || v.Nodes[r].hbUsed+c.PendingBytes+s.size <= c.CapacityBytes)
		}
		if g := v.Group(h); g != nil {
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
					c := readChoice{index: idx, holder: x, notUp: cands[x].State != model.StateUp, hash: placement.Salt(v.Nodes[x].ID)}
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
			move.Kind, move.Source, move.SourceRack = event.KindRebuild, v.Nodes[best.holder].ID, v.Nodes[best.holder].Rack
		} else {
			copies := v.layouts[s.layout].Copies()
			if len(have) >= copies || len(have) == 0 {
				continue // dropped, or lost
			}
			src, err := placement.ChooseSource(have, cands, placement.SourceOptions{Salt: salt, TargetRack: v.Nodes[r].Rack})
			if err != nil {
				continue
			}
			move.Kind, move.Source, move.SourceRack = event.KindCopy, v.Nodes[src].ID, v.Nodes[src].Rack
		}
		if !fits() {
			tg, err := placement.ChooseTarget(all, cands, placement.TargetOptions{Size: s.size, MaxFill: lim.MaxFill, Salt: salt})
			if err != nil {
				move.Target, move.TargetRack = "", ""
			} else {
				move.Target, move.TargetRack = v.Nodes[tg.Index].ID, v.Nodes[tg.Index].Rack
			}
		}
		if move.Target == v.Nodes[r].ID {
			cands[r].PendingBytes += s.size
		}
		plan.Moves = append(plan.Moves, move)
		plan.Shards++
		plan.Bytes += s.size
	}
	slices.SortFunc(plan.Moves, func(a, b control.PlannedMove) int { return strings.Compare(a.Shard, b.Shard) })
	return plan
}

// SingleCopy counts the shards one more loss would lose (replicated: one
// live copy; erasure-coded: stripes with exactly K live pieces) and the
// bytes that must be written to lift them all above that (a copy per
// shard, every missing piece of such a stripe).
func (v *View) SingleCopy() (n int, bytes int64) {
	v.fresh()
	var stripes map[*StripeGroup]bool
	for _, h := range v.buckets[1] {
		bytes += v.Record(h).size
		if g := v.Group(h); g != nil {
			if stripes[g] {
				continue
			}
			if stripes == nil {
				stripes = map[*StripeGroup]bool{}
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

// NodeProgress narrows progress to node r's in-place heal: the shards its
// entries list while its disk lacks them (lost ones apart), their bytes,
// those of them one more loss would lose, the copies writing to it, and the
// cluster's verified rate.
func (v *View) NodeProgress(r NodeRef, now time.Time, stallAfter time.Duration) event.Progress {
	p := v.Progress(now, stallAfter)
	inFlight := 0
	for _, f := range v.Flights {
		if f.target == r {
			inFlight++
		}
	}
	return v.nodeProgress(r, p, v.MarksOn(r), inFlight)
}

// nodeProgress is node r's in-place heal given the cluster's progress p,
// the shards r lacks (marks) and the copies writing to r.
func (v *View) nodeProgress(r NodeRef, p event.Progress, marks []uint32, inFlight int) event.Progress {
	n := &v.Nodes[r]
	out := event.Progress{
		Node: n.ID, RateBytesPerSec: p.RateBytesPerSec, VerifiedBytes: p.VerifiedBytes, Shards: n.Shards,
		InFlight: inFlight,
	}
	var single int64
	var stripes map[*StripeGroup]bool
	for _, h := range marks {
		s := v.Record(h)
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
		if g := v.Group(h); g != nil {
			if stripes[g] {
				continue
			}
			if stripes == nil {
				stripes = map[*StripeGroup]bool{}
			}
			stripes[g] = true
		}
		out.SingleCopy++
	}
	if n.EffState() == model.StateSuspect {
		out.SuspectNodes = 1
	}
	out.Stalled = p.Stalled && out.UnderReplicated > 0
	out.ETASeconds = etaOf(out.BytesRemaining, out.RateBytesPerSec)
	out.SingleCopyETASeconds = etaOf(single, out.RateBytesPerSec)
	return out
}

// ReconcilesDue returns the live nodes whose inventory check is asked for
// and due at now, so that at most n checks run, and marks them reconciling.
func (v *View) ReconcilesDue(now time.Time, n int) []NodeRef {
	for i := range v.Nodes {
		if v.Nodes[i].Reconciling {
			n--
		}
	}
	var out []NodeRef
	for i := range v.Nodes {
		nd := &v.Nodes[i]
		if len(out) >= n {
			break
		}
		if !nd.NeedReconcile || nd.Reconciling || !nd.Registered || !nd.EffState().Live() || now.Before(nd.reconcileAt) {
			continue
		}
		nd.Reconciling = true
		out = append(out, NodeRef(i))
	}
	return out
}

// ReconcileDone records the end of a check of r begun at generation gen:
// ok (or given up) clears the request unless a newer one came meanwhile;
// otherwise it is retried after a backoff, at most maxReconcileTries times.
func (v *View) ReconcileDone(r NodeRef, gen int, ok bool, now time.Time) (gaveUp bool) {
	n := &v.Nodes[r]
	n.Reconciling = false
	if n.ReconcileGen != gen {
		return false
	}
	if ok {
		n.NeedReconcile = false
		return false
	}
	n.reconcileTries++
	if n.reconcileTries >= maxReconcileTries {
		n.NeedReconcile = false
		return true
	}
	n.reconcileAt = now.Add(backoff(n.reconcileTries + 1))
	return false
}

// Reconciled records that a check of r requested at generation gen
// succeeded outside the background checks (heal --node): unless a newer
// request came, or a background check runs, nothing is left to check.
func (v *View) Reconciled(r NodeRef, gen int) {
	n := &v.Nodes[r]
	if n.ReconcileGen == gen && !n.Reconciling {
		n.NeedReconcile = false
	}
}

// maxReconcileTries bounds the attempts at one inventory check.
const maxReconcileTries = 5

// reconcilePending reports whether a live holder of h awaits an inventory
// check (its copies may not be there: nothing is trimmed against them).
func (v *View) reconcilePending(h uint32) bool {
	for _, r := range v.holders(h) {
		n := &v.Nodes[r]
		if (n.NeedReconcile || n.Reconciling) && n.EffState().Live() {
			return true
		}
	}
	return false
}

// Estimate is how long writing bytes onto node takes: at the rate repairs
// were verified recently, or, with none, PerNodeIn copies at once at a
// nominal 200 MB/s each (or the global byte cap, if lower). It says which.
func Estimate(bytes int64, rate float64, perNodeIn int, capBytes int64, node string) (float64, string) {
	if bytes <= 0 {
		return 0, "nothing to move"
	}
	if rate > 0 {
		return float64(bytes) / rate, fmt.Sprintf("the verified repair rate of the last 20 s, %.0f B/s", rate)
	}
	per := float64(max(perNodeIn, 1)) * nominalCopyRate
	throttle := fmt.Sprintf("no recent repairs: %d copies at a time into %s (per-node-in) at a nominal 200 MB/s each", max(perNodeIn, 1), node)
	if capBytes > 0 && float64(capBytes) < per {
		per = float64(capBytes)
		throttle = fmt.Sprintf("no recent repairs: the global byte cap of %d B/s", capBytes)
	}
	return float64(bytes) / per, throttle
}

// nominalCopyRate is the copy speed a heal plan assumes when no repair was
// verified recently: 200 MB/s per copy.
const nominalCopyRate = 200e6

// DropEntry decides whether drop d may still go ahead against the shard's
// entry p as just read from the map: the shard is the one decided on, its
// holder still lacks it with no copy of it in flight, the entry still lists
// the holder, and the layout's copies stay live without it. It returns the
// entry without the holder.
func (v *View) DropEntry(d DropDecision, p model.Placement) (model.Placement, bool) {
	node := v.Nodes[d.Node].ID
	ok := v.IDs.Valid(d.Shard) && v.IDs.String(d.Shard) == d.ID && v.IsMissing(d.Shard, d.Node) &&
		v.Flights[d.Shard] == nil && slices.Contains(p.Nodes, node)
	live := 0
	for _, n := range p.Nodes {
		if r, known := v.NodeIndex[n]; known && n != node && v.Live(r) && !v.IsMissing(d.Shard, r) {
			live++
		}
	}
	if !ok || live < p.Layout.Copies() {
		return p, false
	}
	p.Nodes = slices.DeleteFunc(slices.Clone(p.Nodes), func(n string) bool { return n == node })
	return p, true
}
