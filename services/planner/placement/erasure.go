package placement

import (
	"errors"
	"fmt"

	"github.com/rehome/rehome/shared/model"
)

// Erasure-coded placement: the pieces of a k+m stripe each live on their own
// node, and a rack should hold at most m of them, so that losing a whole rack
// leaves at least k pieces: the stripe stays readable and rebuildable.

// AllocateStripes places the pieces of new erasure-coded stripes of a k+m
// layout: stripes[s] lists the pieces of stripe s (at most k+m) and the
// answer's [s][i] is the candidate index of piece i. The pieces of one stripe
// go to distinct up nodes with room, each to a rack holding fewest of the
// stripe's pieces so far: one per rack where racks are k+m or more (a rack's
// loss costs one piece), as even as possible otherwise (at most m per rack
// once there are (k+m)/m racks); among those nodes the least filled wins
// (fill counts pending bytes, and every choice adds to them, so one call
// balances many stripes), ties broken by a hash of piece and node ids. cands
// is not modified.
//
// It fails with a model.ErrInvalid error when fewer than k+m nodes are up
// ("ec 4+2 needs 6 live nodes, 5 are up"), or a stripe has more than k+m
// pieces; with ErrNotEnoughNodes when too few up nodes have room.
func AllocateStripes(cands []Candidate, k, m int, stripes [][]Shard) ([][]int, error) {
	if err := (model.Layout{K: k, M: m}).Validate(); err != nil {
		return nil, err
	}
	up := 0
	for _, c := range cands {
		if c.State == model.StateUp {
			up++
		}
	}
	if up < k+m {
		return nil, fmt.Errorf("%w: ec %d+%d needs %d live nodes, %d are up", model.ErrInvalid, k, m, k+m, up)
	}
	work := make([]Candidate, len(cands))
	copy(work, cands)
	rk := newRanker(work)
	rackOf, nracks := rackIndex(work)
	rackUse := make([]int, nracks)
	chosen := make([]bool, len(work))
	out := make([][]int, len(stripes))
	for s, pieces := range stripes {
		if len(pieces) > k+m {
			return nil, fmt.Errorf("%w: stripe %d has %d pieces, ec %d+%d has %d", model.ErrInvalid, s, len(pieces), k, m, k+m)
		}
		picks := make([]int, len(pieces))
		clear(rackUse)
		for p, sh := range pieces {
			rk.salt = hash64(sh.ID)
			best, bestUse := -1, 0
			for i := range work {
				c := &work[i]
				if c.State != model.StateUp || chosen[i] || !c.fits(sh.Size) {
					continue
				}
				use := rackUse[rackOf[i]] // the stripe's pieces in i's rack so far
				if best < 0 || use < bestUse || (use == bestUse && rk.less(i, best)) {
					best, bestUse = i, use
				}
			}
			if best < 0 {
				for _, x := range picks[:p] {
					chosen[x] = false
				}
				return nil, fmt.Errorf("allocate stripe %d of ec %d+%d: only %d up nodes have room for %d-byte pieces: %w",
					s, k, m, p, sh.Size, ErrNotEnoughNodes)
			}
			picks[p] = best
			chosen[best] = true
			rackUse[rackOf[best]]++
			work[best].PendingBytes += sh.Size
		}
		for _, x := range picks {
			chosen[x] = false
		}
		out[s] = picks
	}
	return out, nil
}

// RebuildOptions narrows ChooseRebuildTargets.
type RebuildOptions struct {
	// M is the layout's parity count: at most M pieces of the stripe per rack
	// where racks allow.
	M int
	// Size is the size of one piece: a node without room for it is skipped.
	Size int64
	// MaxTasks skips nodes already writing this many copies (0: no limit).
	MaxTasks int
	// MaxFill skips nodes whose disk fill, counting the piece, would exceed
	// it (0: only the capacity limits).
	MaxFill float64
	// Exclude lists candidate indexes not to choose (failed targets, nodes
	// still deleting a piece of the stripe).
	Exclude []int
	// Salt varies tie-breaks per stripe (Salt of its first missing piece).
	Salt uint64
	// FillBand is TargetOptions.FillBand for the pieces' targets.
	FillBand float64
}

// ChooseRebuildTargets picks one target for each of n missing pieces of an
// erasure-coded stripe. holders lists every node named by any piece of the
// stripe, live or not: none of them is chosen, nor is a node twice. rackPieces
// counts, per rack, the stripe's pieces with a live holder there (a piece once
// per rack). A target is up, has room below MaxFill, and sits in a rack
// holding fewer than M pieces counting the targets already chosen; among those
// a rack holding fewest pieces first (one per rack where racks allow), then
// the least filled, then the one writing fewest copies, then a per-stripe
// hash. When no such node exists the rack rule is relaxed for that piece: the
// rack holding fewest pieces first, and its Target says so.
//
// Answer i is piece i's target; Index -1 marks a piece for which no node
// qualifies at all (the others can still be rebuilt). When a piece's
// qualifying nodes exist but are all at MaxTasks it returns ErrBusy
// (ErrRackBusy when the rack rule could have held): wait rather than relax or
// split the stripe. With no target for any piece, ErrNoTarget.
func ChooseRebuildTargets(n int, holders []int, rackPieces map[string]int, cands []Candidate, opt RebuildOptions) ([]Target, error) {
	ts := newTargetScan(holders, opt.Exclude, cands, opt.Salt)
	ts.rk.band = opt.FillBand
	inRack := make([]int, ts.nracks)
	for i, c := range cands {
		inRack[ts.rackOf[i]] = rackPieces[c.Rack]
	}
	out := make([]Target, n)
	found := 0
	for p := range n {
		t, err := ts.pick(inRack, opt.M, opt.Size, opt.MaxFill, opt.MaxTasks)
		switch {
		case errors.Is(err, ErrNoTarget):
			out[p] = Target{Index: -1}
			continue
		case err != nil:
			return nil, err
		}
		out[p] = t
		found++
		ts.skip[t.Index] = true
		inRack[ts.rackOf[t.Index]]++
	}
	if found == 0 {
		return nil, ErrNoTarget
	}
	return out, nil
}

// ChooseSurplusPiece picks the holder to remove from an erasure-coded piece
// held by more than one up node (its old holder came back after a rebuild).
// rackPieces counts, per rack, the stripe's other pieces with a live holder
// there. The piece keeps the holder that keeps the stripe within M pieces per
// rack, then the less filled one: so the removed holder is, in this order, a
// Leaving node's, one whose rack would hold more than m pieces with it, then
// the fullest disk (DiskFill), then a returning node, then by a per-piece
// hash and id. Only up
// holders are removed, so at least one up holder always stays. It returns
// ErrNoSurplus unless two or more holders are up.
func ChooseSurplusPiece(holders []int, cands []Candidate, rackPieces map[string]int, m int, salt uint64) (int, error) {
	up := 0
	for _, h := range holders {
		if h >= 0 && h < len(cands) && cands[h].State == model.StateUp {
			up++
		}
	}
	if up <= 1 {
		return -1, ErrNoSurplus
	}
	over := func(h int) bool { return rackPieces[cands[h].Rack]+1 > m }
	return worstUpHolder(holders, cands, salt, over), nil
}
