package core

import (
	"math"
	"slices"
	"time"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/model"
	"golang.org/x/time/rate"
)

// Limits are the repair throttles of a planning round.
type Limits struct {
	// PerNodeIn and perNodeOut bound copies writing to and reading from one
	// node (a trim takes an out slot of the node it deletes from); a shard
	// with a single live copy may exceed both by one.
	PerNodeIn, PerNodeOut int
	// MaxInFlight bounds copies and trims in flight cluster-wide.
	MaxInFlight int
	// MaxFill skips targets whose disk would be fuller than this (0: no limit).
	MaxFill float64
	// Bytes admits the bytes of copies (nil: no byte cap). Planning consumes
	// its tokens at the round's time; a copy it cannot admit yet ends the
	// round's copies (the riskiest shard keeps its place) and sets wait.
	Bytes *rate.Limiter
	// Paused holds every new task and map change back (heal pause).
	Paused bool
	// Batch is the most shards one copy task carries (0 or 1: one each);
	// see batch.go for which shards join and how a batch is throttled.
	Batch int
}

// Decision is one copy, or one rebuild of an erasure-coded stripe (rb set),
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
	// Background marks a rebalancing move: nothing is at risk, so its
	// task asks storage nodes to pace it hardest (event.ClassBackground).
	Background bool
	RB         *rebuildPlan // set for a rebuild
	inPlace    bool         // a copy back onto a holder whose disk lacks the shard
	batch      *batchFlight // the batch it travels in (nil: alone)
}

// TrimDecision is one surplus copy the planner wants removed.
type TrimDecision struct {
	Shard uint32
	ID    string
	Node  NodeRef
	bytes int64
}

// Plan is what one planning round decided: copies and rebuilds to issue,
// surplus copies to trim, holders lacking their copy to drop from entries.
type Plan struct {
	Copies []Decision
	Trims  []TrimDecision
	Drops  []DropDecision
	// Wait is set when the byte cap held copies back: plan again after it.
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

// Round derives the work to issue now. Copies and rebuilds first:
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
// inventory check), each taking a trim slot of its node (TrimsPerNode). A shard a holder
// lacks goes back onto that holder (see inPlaceTarget); holders lacking a
// shard that is whole without them are dropped from its entry (drops, not
// bound by the task limits). While lim.paused it plans nothing. It does not
// change the view (see reserve) but consumes lim.bytes tokens.
func (v *View) Round(now time.Time, lim Limits) Plan {
	v.fresh()
	var out Plan
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
		misses := 0 // shards looked at in vain once only batches with room were left
		for _, h := range v.buckets[b] {
			fresh := budget > 0 && freeIn > 0
			if !fresh && (!pc.batchRoom() || misses >= batchScan*lim.Batch) {
				break
			}
			var (
				d      Decision
				ok     bool
				joined bool
			)
			mv, moving := v.Moves[h]
			erasure := v.layouts[v.Record(h).layout].Erasure()
			switch {
			case !fresh && (moving && b == moveBucket || erasure):
			case b == moveBucket && moving:
				d, ok = v.decideMove(h, mv, &pc)
			case !erasure:
				d, joined, ok = v.decideCopy(h, &pc, fresh)
			case b == moveBucket:
				d, ok = v.decidePieceMove(h, &pc)
			default:
				d, ok = v.decideRebuild(h, &pc)
			}
			if !ok {
				if !fresh {
					misses++
				}
				continue
			}
			if lim.Bytes != nil {
				if wait := admit(lim.Bytes, now, d.Bytes); wait > 0 {
					if joined {
						d.batch.shards--
						d.batch.bytes -= d.Bytes
					}
					out.Wait = wait
					break copies
				}
			}
			d.Margin = b - 1
			if b == moveBucket && !moving {
				d.Margin, d.Incident = v.liveCount(h)-1, v.drainIncident(h)
			}
			out.Copies = append(out.Copies, d)
			if joined { // travels in a batch already charged
				cands[d.Target].PendingBytes += d.Bytes
				continue
			}
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
		if budget == 0 && !pc.batchRoom() {
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

// TrimsPerNode bounds the surplus copies being deleted from one node at
// once. A delete is a small metadata operation, not a stream: trims have
// their own slots, so a node's deletes do not hold up the copies read from
// it (a drained node's copies go as fast as they land elsewhere).
const TrimsPerNode = 8

// planTrims picks up to budget surplus copies to remove, scanning at most
// maxTrimScan surplus shards from the cursor on, at most TrimsPerNode per
// node in flight.
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
	planned := map[NodeRef]int{} // trims this round, per node
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
		if err != nil || v.Nodes[x].trimTasks+planned[NodeRef(x)] >= TrimsPerNode {
			continue
		}
		planned[NodeRef(x)]++
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
	// forming holds the batches started this round.
	forming []*batchFlight
}

// batchScan bounds the shards a round looks at per shard of batch room
// once only batches with room are left (no slot or budget for new tasks).
const batchScan = 4

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

// TakeoverGate holds a planner that just took over back from planning while
// results handed to the previous acting planner are unacknowledged (they
// come back after the consumer's AckWait): re-planning those shards would
// duplicate copies already made. The zero gate is open.
type TakeoverGate struct {
	until time.Time
}

// Close holds planning back until until at most.
func (g *TakeoverGate) Close(until time.Time) { g.until = until }

// Open reports whether planning may go on at now, given how many results
// are pending (known false: the count could not be read). Once open it
// stays open until closed again.
func (g *TakeoverGate) Open(now time.Time, pending uint64, known bool) bool {
	if g.until.IsZero() {
		return true
	}
	if now.Before(g.until) && (!known || pending > 0) {
		return false
	}
	g.until = time.Time{}
	return true
}

// Until is the time the gate opens at the latest (zero: open).
func (g *TakeoverGate) Until() time.Time { return g.until }
