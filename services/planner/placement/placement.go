// Package placement holds the planner's pure placement decisions: where the
// replicas of a new shard go (Allocate), which node receives a lost replica
// (ChooseTarget), which holder it is read from (ChooseSource) and which
// surplus copy is removed (ChooseSurplus); and their erasure-coded
// counterparts for the pieces of k+m stripes (AllocateStripes,
// ChooseRebuildTargets, ChooseSurplusPiece). Nothing here
// does I/O or keeps state; every function is deterministic in its arguments and
// safe for concurrent use on distinct inputs.
package placement

import (
	"errors"
	"fmt"
	"iter"
	"math"

	"github.com/rehome/rehome/shared/model"
)

// Errors returned by the choosers. ErrBusy means a choice exists but every
// eligible node is at its throttle: try again later rather than relaxing a rule.
var (
	ErrNotEnoughNodes = errors.New("not enough live nodes")
	ErrNoTarget       = errors.New("no eligible target node")
	ErrNoSource       = errors.New("no live holder to read from")
	ErrBusy           = errors.New("every eligible node is busy")
	ErrNoSurplus      = errors.New("no surplus copy")
	// ErrRackBusy (an ErrBusy) says the nodes in racks without a live copy
	// exist but are all busy: it depends only on those racks, so a caller may
	// remember it for other shards whose live copies sit in the same racks
	// and that are at least as large.
	ErrRackBusy = fmt.Errorf("%w in the racks without a live copy", ErrBusy)
)

// unknownCapacity stands in for a capacity nobody reported, so that fill
// still orders nodes by bytes.
const unknownCapacity = 1 << 40

// Candidate is one node as the placement functions see it.
type Candidate struct {
	ID    string
	Rack  string
	State model.State
	// UsedBytes is what the node stores now; CapacityBytes its size (0: unknown).
	UsedBytes     int64
	CapacityBytes int64
	// PendingBytes is what has been assigned to the node and is not yet in
	// UsedBytes (allocations being written, copies in flight).
	PendingBytes int64
	// OtherBytes is disk space taken beyond UsedBytes (other data, a disk
	// shared with other nodes): it reduces the room left, not the load.
	OtherBytes int64
	// PendingTasks counts copies being written to the node now.
	PendingTasks int
	// Reads counts copies being read from the node now (and, in the planner,
	// surplus deletions running on it).
	Reads int
	// Returning marks a node that was down and came back: among equally
	// placed surplus copies, its copy is the one removed.
	Returning bool
	// Full marks a node that refuses new shards (it reports its disk full
	// or read-only): it has room for nothing, whatever its bytes say, so it
	// is never a target; it stays a source.
	Full bool
	// Leaving marks a node being drained: its copies are moving away, so
	// it is never a target (it stays a source), and among surplus copies its
	// copy is the first removed.
	Leaving bool
}

// Shard is one shard to place: its id (which also salts tie-breaks) and size.
type Shard struct {
	ID   string
	Size int64
}

// Load is the node's bytes used plus bytes on their way to it.
func (c Candidate) Load() int64 { return c.UsedBytes + c.PendingBytes }

// Fill is Load over capacity (an unknown capacity counts as 1 TiB).
func (c Candidate) Fill() float64 {
	capacity := c.CapacityBytes
	if capacity <= 0 {
		capacity = unknownCapacity
	}
	return float64(c.Load()) / float64(capacity)
}

// DiskFill is the share of the node's disk taken: what it stores, what is on
// its way to it and what others take (OtherBytes), over capacity (0 when the
// capacity is unknown).
func (c Candidate) DiskFill() float64 {
	if c.CapacityBytes <= 0 {
		return 0
	}
	return float64(c.Load()+c.OtherBytes) / float64(c.CapacityBytes)
}

// fits reports whether size more bytes fit: never on a Full or Leaving node, always
// when the capacity is unknown.
func (c Candidate) fits(size int64) bool {
	return !c.Full && !c.Leaving && (c.CapacityBytes <= 0 || c.Load()+c.OtherBytes+size <= c.CapacityBytes)
}

// fitsBelow reports whether size more bytes fit while keeping the disk fill
// at most maxFill (0 or >= 1: up to the capacity); never on a Full node.
func (c Candidate) fitsBelow(size int64, maxFill float64) bool {
	if c.Full || c.Leaving || maxFill <= 0 || maxFill >= 1 || c.CapacityBytes <= 0 {
		return c.fits(size)
	}
	return float64(c.Load()+c.OtherBytes+size) <= maxFill*float64(c.CapacityBytes)
}

// Salt derives the tie-break salt of a shard id.
func Salt(id string) uint64 { return hash64(id) }

func hash64(s string) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix scrambles a node's hash with a shard's salt (splitmix64 finaliser), so
// ties between equally loaded nodes fall differently for every shard: no
// fixed groups of nodes share all their shards.
func mix(salt, node uint64) uint64 {
	z := salt ^ node
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// ranker orders candidates for one shard.
type ranker struct {
	cands []Candidate
	hash  []uint64 // per candidate: hash64(ID)
	salt  uint64
	// sticky orders by the salted hash alone (TargetOptions.Sticky).
	sticky bool
	// band, when positive, compares fills by band (TargetOptions.FillBand).
	band float64
}

func newRanker(cands []Candidate) *ranker {
	r := &ranker{cands: cands, hash: make([]uint64, len(cands))}
	for i := range cands {
		r.hash[i] = hash64(cands[i].ID)
	}
	return r
}

// less orders candidates i and j by fill (by band of fill when r.band is
// set), then bytes on their way to it (every shard counts, batched or not),
// then in-flight writes, then a per-shard hash, then id (sticky: by the
// hash, then id).
func (r *ranker) less(i, j int) bool {
	a, b := &r.cands[i], &r.cands[j]
	if fa, fb := r.fill(a), r.fill(b); fa != fb && !r.sticky {
		return fa < fb
	}
	if a.PendingBytes != b.PendingBytes && !r.sticky {
		return a.PendingBytes < b.PendingBytes
	}
	if a.PendingTasks != b.PendingTasks && !r.sticky {
		return a.PendingTasks < b.PendingTasks
	}
	if ha, hb := mix(r.salt, r.hash[i]), mix(r.salt, r.hash[j]); ha != hb {
		return ha < hb
	}
	return a.ID < b.ID
}

// fill is c's fill, or the number of its fill band when r.band is set.
func (r *ranker) fill(c *Candidate) float64 {
	if r.band > 0 {
		return math.Floor(c.Fill() / r.band)
	}
	return c.Fill()
}

// rackIndex maps every candidate to a dense rack number, racks numbered in
// the order the candidates first name them.
func rackIndex(cands []Candidate) (idx []int, racks int) {
	return rackIndexIn(cands, func(yield func(int) bool) {
		for i := range cands {
			if !yield(i) {
				return
			}
		}
	})
}

// rackIndexIn is rackIndex with racks numbered in the order the candidates
// of order (every index once) first name them.
func rackIndexIn(cands []Candidate, order iter.Seq[int]) (idx []int, racks int) {
	seen := make(map[string]int)
	idx = make([]int, len(cands))
	for i := range order {
		r, ok := seen[cands[i].Rack]
		if !ok {
			r = len(seen)
			seen[cands[i].Rack] = r
		}
		idx[i] = r
	}
	return idx, len(seen)
}

// Allocate picks rf distinct up nodes for each shard and returns, per shard,
// indexes into cands. Racks are distinct while racks allow, then spread as
// evenly as possible; within that the least filled node wins, ties broken by
// a hash of shard and node ids (deterministic, and different per shard so
// that no fixed groups of nodes share their shards). Each choice counts as
// pending bytes for the next, so one call balances many shards. cands is not
// modified. It fails with ErrNotEnoughNodes when fewer than rf nodes are up,
// or when no node has room.
func Allocate(cands []Candidate, rf int, shards []Shard) ([][]int, error) {
	if rf < 1 {
		return nil, fmt.Errorf("allocate: rf %d: %w", rf, model.ErrInvalid)
	}
	up := 0
	for _, c := range cands {
		if c.State == model.StateUp {
			up++
		}
	}
	if up < rf {
		return nil, fmt.Errorf("allocate %d replicas: %d nodes up: %w", rf, up, ErrNotEnoughNodes)
	}
	work := make([]Candidate, len(cands))
	copy(work, cands)
	rk := newRanker(work)
	rackOf, nracks := rackIndex(work)
	rackUse := make([]int, nracks)
	chosen := make([]bool, len(work))
	out := make([][]int, len(shards))
	flat := make([]int, len(shards)*rf)
	for s, sh := range shards {
		size := sh.Size
		rk.salt = hash64(sh.ID)
		picks := flat[s*rf : (s+1)*rf : (s+1)*rf]
		clear(rackUse)
		for r := 0; r < rf; r++ {
			best := -1
			for i := range work {
				c := &work[i]
				if c.State != model.StateUp || chosen[i] || !c.fits(size) {
					continue
				}
				if best < 0 {
					best = i
					continue
				}
				ru, rb := rackUse[rackOf[i]], rackUse[rackOf[best]]
				if ru < rb || (ru == rb && rk.less(i, best)) {
					best = i
				}
			}
			if best < 0 {
				for _, p := range picks[:r] {
					chosen[p] = false
				}
				return nil, fmt.Errorf("allocate %d replicas of %d bytes: only %d nodes up with room: %w", rf, size, r, ErrNotEnoughNodes)
			}
			picks[r] = best
			chosen[best] = true
			rackUse[rackOf[best]]++
			work[best].PendingBytes += size
		}
		for _, p := range picks {
			chosen[p] = false
		}
		out[s] = picks
	}
	return out, nil
}

// TargetOptions narrows ChooseTarget.
type TargetOptions struct {
	// Size is the shard's size: a node without room for it is skipped.
	Size int64
	// MaxTasks skips nodes already writing this many copies (0: no limit).
	MaxTasks int
	// Exclude lists candidate indexes not to choose (e.g. a target that failed).
	Exclude []int
	// MaxFill skips nodes whose disk fill (DiskFill, counting this shard)
	// would exceed it (0: only the capacity limits). A node skipped for fill
	// is not a valid target: when every node of the racks without a live copy
	// is skipped, the rack rule is relaxed.
	MaxFill float64
	// Salt varies tie-breaks per shard (Salt(shard id)).
	Salt uint64
	// FillBand, when positive, ranks nodes whose fills fall in the same band
	// of this width (0.01: whole percentage points) as equally filled, so
	// that in-flight writes decide among them: a repair spreads its copies
	// over idle nodes rather than stacking them on the emptiest disk for a
	// difference of a few shards (0: the exact fill decides).
	FillBand float64
	// Sticky ranks the eligible nodes by a hash of Salt alone, fill and
	// in-flight writes ignored (room still counts). Under copyset placement,
	// with Salt = SurvivorSalt(the live holders' ids), every shard that lost
	// the same node of the same copyset goes to the same target; while that
	// target is at MaxTasks the answer is ErrRackBusy (wait), never another.
	Sticky bool
}

// Target is ChooseTarget's answer.
type Target struct {
	// Index into the candidates.
	Index int
	// RackRelaxed is set when every eligible node shares a rack with a
	// surviving copy, so the rack rule was dropped.
	RackRelaxed bool
}

// ChooseTarget picks the node that receives a new copy of a shard held by
// holders (indexes into cands, live or not). The target is up, holds no copy
// (even a dead one), is not excluded, has room below MaxFill, and sits in a rack holding no
// live copy where such a node exists; among those the least filled wins (fill
// counts in-flight bytes), then the one writing fewest copies, then by id.
// When only rack-sharing nodes exist it picks among them, fewest live copies
// in the rack first, and says so. When eligible nodes exist but all are at
// MaxTasks it returns ErrBusy (ErrRackBusy when the rack rule held) instead
// of relaxing; with none at all, ErrNoTarget.
func ChooseTarget(holders []int, cands []Candidate, opt TargetOptions) (Target, error) {
	ts := newTargetScan(holders, opt.Exclude, cands, opt.Salt)
	ts.rk.sticky, ts.rk.band = opt.Sticky, opt.FillBand
	liveInRack := make([]int, ts.nracks)
	for _, h := range holders {
		if h >= 0 && h < len(cands) && cands[h].State.Live() {
			liveInRack[ts.rackOf[h]]++
		}
	}
	return ts.pick(liveInRack, 1, opt.Size, opt.MaxFill, opt.MaxTasks)
}

// targetScan is the candidate scan ChooseTarget and ChooseRebuildTargets
// share: which nodes are ruled out, how racks are numbered, and the ranking.
type targetScan struct {
	cands  []Candidate
	skip   []bool
	rk     *ranker
	rackOf []int
	nracks int
}

// newTargetScan rules out the holders and the excluded nodes.
func newTargetScan(holders, exclude []int, cands []Candidate, salt uint64) *targetScan {
	ts := &targetScan{cands: cands, skip: make([]bool, len(cands)), rk: newRanker(cands)}
	ts.rk.salt = salt
	for _, list := range [][]int{holders, exclude} {
		for _, h := range list {
			if h >= 0 && h < len(cands) {
				ts.skip[h] = true
			}
		}
	}
	ts.rackOf, ts.nracks = rackIndex(cands)
	return ts
}

// pick returns the best up node not ruled out that fits size below maxFill:
// one whose rack holds fewer than limit of inRack (the rack rule), the best
// ranked; else, relaxing the rule, the one whose rack holds fewest, saying
// so. Nodes at maxTasks are passed over: if the rule could have held it
// answers ErrRackBusy, if only relaxed nodes exist ErrBusy; with no node at
// all, ErrNoTarget. Sticky ranking never passes over its first choice: when
// that node is busy the answer is ErrRackBusy.
func (ts *targetScan) pick(inRack []int, limit int, size int64, maxFill float64, maxTasks int) (Target, error) {
	var (
		best, bestRelaxed   = -1, -1
		bestAny             = -1 // the best strict node, busy or not
		strictSeen, anySeen bool
	)
	for i := range ts.cands {
		c := &ts.cands[i]
		if ts.skip[i] || c.State != model.StateUp || !c.fitsBelow(size, maxFill) {
			continue
		}
		strict := inRack[ts.rackOf[i]] < limit
		anySeen = true
		strictSeen = strictSeen || strict
		// Among strict nodes, a rack holding fewer of the stripe's pieces
		// first (replicas: every strict rack holds none), then rk's order.
		better := func(b int) bool {
			ri, rb := inRack[ts.rackOf[i]], inRack[ts.rackOf[b]]
			return ri < rb || (ri == rb && ts.rk.less(i, b))
		}
		if strict && (bestAny < 0 || better(bestAny)) {
			bestAny = i
		}
		if maxTasks > 0 && c.PendingTasks >= maxTasks {
			continue
		}
		if strict && (best < 0 || better(best)) {
			best = i
		}
		if bestRelaxed < 0 {
			bestRelaxed = i
			continue
		}
		if better(bestRelaxed) {
			bestRelaxed = i
		}
	}
	switch {
	case ts.rk.sticky && bestAny >= 0 && best != bestAny:
		return Target{}, ErrRackBusy // the sticky target is busy: wait for it
	case best >= 0:
		return Target{Index: best}, nil
	case strictSeen:
		return Target{}, ErrRackBusy
	case bestRelaxed >= 0:
		return Target{Index: bestRelaxed, RackRelaxed: true}, nil
	case anySeen:
		return Target{}, ErrBusy
	}
	return Target{}, ErrNoTarget
}

// SourceOptions narrows ChooseSource.
type SourceOptions struct {
	// MaxReads skips holders already reading this many copies (0: no limit).
	MaxReads int
	// Salt varies tie-breaks per shard (Salt(shard id)).
	Salt uint64
	// TargetRack is the rack of the node the copy goes to ("": unknown):
	// among equally busy holders, one in that rack (the nearest) is read.
	TargetRack string
}

// sourceKey orders holders as ChooseSource prefers them (smaller first).
type sourceKey struct {
	reads, far, writes int
	hash               uint64
}

func (a sourceKey) less(b sourceKey) bool {
	switch {
	case a.reads != b.reads:
		return a.reads < b.reads
	case a.far != b.far:
		return a.far < b.far
	case a.writes != b.writes:
		return a.writes < b.writes
	}
	return a.hash < b.hash
}

// ChooseSource picks the holder a copy is read from: an up holder reading
// fewest copies, then the nearest to the target (same rack as
// opt.TargetRack: racks are the only distance known), then writing fewest,
// then by a per-shard hash; a suspect or maintenance holder only when no
// holder is up. Holders at MaxReads are skipped; if that leaves none of the
// preferred kind it returns ErrBusy. With no live holder at all it returns
// ErrNoSource.
func ChooseSource(holders []int, cands []Candidate, opt SourceOptions) (int, error) {
	key := func(h int) sourceKey {
		c := &cands[h]
		far := 1
		if opt.TargetRack != "" && c.Rack == opt.TargetRack {
			far = 0
		}
		return sourceKey{reads: c.Reads, far: far, writes: c.PendingTasks, hash: mix(opt.Salt, hash64(c.ID))}
	}
	pick := func(want func(model.State) bool) (int, bool) {
		best, seen := -1, false
		var bk sourceKey
		for _, h := range holders {
			if h < 0 || h >= len(cands) || !want(cands[h].State) {
				continue
			}
			seen = true
			if opt.MaxReads > 0 && cands[h].Reads >= opt.MaxReads {
				continue
			}
			if k := key(h); best < 0 || k.less(bk) {
				best, bk = h, k
			}
		}
		return best, seen
	}
	if i, seen := pick(func(s model.State) bool { return s == model.StateUp }); seen {
		if i < 0 {
			return -1, ErrBusy
		}
		return i, nil
	}
	if i, seen := pick(func(s model.State) bool { return s.Live() && s != model.StateUp }); seen {
		if i < 0 {
			return -1, ErrBusy
		}
		return i, nil
	}
	return -1, ErrNoSource
}

// ChooseSurplus picks the copy to remove from a shard whose up holders
// outnumber copies (the copies its layout needs): the worst placed up holder,
// judged in this order: it is Leaving, then its rack holds another live copy, then its disk is
// the fullest (DiskFill), then it is a returning node, then by a per-shard
// hash (salt) and id. Only up holders are removed, so the shard keeps at
// least copies up holders (and every suspect or maintenance holder). It
// returns ErrNoSurplus when up holders do not exceed copies.
func ChooseSurplus(holders []int, cands []Candidate, copies int, salt uint64) (int, error) {
	up := 0
	for _, h := range holders {
		if h >= 0 && h < len(cands) && cands[h].State == model.StateUp {
			up++
		}
	}
	if up <= copies {
		return -1, ErrNoSurplus
	}
	sharesRack := func(h int) bool {
		for _, o := range holders {
			if o != h && o >= 0 && o < len(cands) && cands[o].State.Live() && cands[o].Rack == cands[h].Rack {
				return true
			}
		}
		return false
	}
	return worstUpHolder(holders, cands, salt, sharesRack), nil
}

// worstUpHolder returns the up holder it is best to drop: a Leaving node's
// first, then misplaced (the caller's rule), then on the fullest disk, then a returning node, then
// by a per-shard hash (salt) and id; -1 when no holder is up.
func worstUpHolder(holders []int, cands []Candidate, salt uint64, misplaced func(int) bool) int {
	worse := func(a, b int) bool { // a is the worse holder to keep
		if la, lb := cands[a].Leaving, cands[b].Leaving; la != lb {
			return la
		}
		if ma, mb := misplaced(a), misplaced(b); ma != mb {
			return ma
		}
		if fa, fb := cands[a].DiskFill(), cands[b].DiskFill(); fa != fb {
			return fa > fb
		}
		if ra, rb := cands[a].Returning, cands[b].Returning; ra != rb {
			return ra
		}
		if ha, hb := mix(salt, hash64(cands[a].ID)), mix(salt, hash64(cands[b].ID)); ha != hb {
			return ha < hb
		}
		return cands[a].ID < cands[b].ID
	}
	best := -1
	for _, h := range holders {
		if h < 0 || h >= len(cands) || cands[h].State != model.StateUp {
			continue
		}
		if best < 0 || worse(h, best) {
			best = h
		}
	}
	return best
}
