package core

import (
	"cmp"
	"slices"

	"github.com/rehome/rehome/shared/control"
)

// Risk answers `cluster status --risk`: for every live node, and every rack
// holding a live node, what its failure now would cost. A shard counts only
// if the failure touches it (it takes away at least one of its live copies
// or pieces):
//   - Lost: a replicated shard left without a live copy; every piece of an
//     erasure-coded stripe left with fewer than K pieces with a live holder
//     (as status counts lost pieces).
//   - SingleCopy: a replicated shard left with exactly one live copy; an
//     erasure-coded stripe left with exactly K live pieces (one more loss
//     loses it), counted once per stripe, as heal progress counts them.
//
// Shards already lost count in neither. Holders lacking a shard do not
// count as copies. WorstNode and WorstRack are the lines with the most lost,
// then the most single-copy shards (then the first by name); nil when no
// failure would cost anything. It is a pure function of the view, one pass
// over the map (O(shards)).
func (v *View) Risk() control.Risk {
	v.fresh()
	rackIdx := map[string]int{}
	var rackNames []string
	nodeRack := make([]int, len(v.Nodes))
	liveNode := make([]bool, len(v.Nodes))
	for i := range v.Nodes {
		n := &v.Nodes[i]
		nodeRack[i] = -1
		if !n.Registered || !n.EffState().Live() {
			continue
		}
		liveNode[i] = true
		k, ok := rackIdx[n.Rack]
		if !ok {
			k = len(rackNames)
			rackIdx[n.Rack] = k
			rackNames = append(rackNames, n.Rack)
		}
		nodeRack[i] = k
	}
	nodeLost, nodeSingle := make([]int, len(v.Nodes)), make([]int, len(v.Nodes))
	rackLost, rackSingle := make([]int, len(rackNames)), make([]int, len(rackNames))

	// holdersOf lists the live holders of h that have it (a node once).
	var buf []NodeRef
	holdersOf := func(h uint32) []NodeRef {
		buf = buf[:0]
		for _, r := range v.holders(h) {
			if liveNode[r] && !v.IsMissing(h, r) && !slices.Contains(buf, r) {
				buf = append(buf, r)
			}
		}
		return buf
	}
	perRack := make([]int, len(rackNames))
	limit := v.IDs.Limit()
	for h := uint32(0); h < limit; h++ {
		if !v.IDs.Valid(h) || v.layouts[v.Record(h).layout].Erasure() {
			continue
		}
		hs := holdersOf(h)
		n := len(hs)
		if n == 0 {
			continue
		}
		for _, r := range hs {
			switch n - 1 {
			case 0:
				nodeLost[r]++
			case 1:
				nodeSingle[r]++
			}
			perRack[nodeRack[r]]++
		}
		for _, r := range hs {
			k := nodeRack[r]
			if perRack[k] == 0 {
				continue // counted already
			}
			switch n - perRack[k] {
			case 0:
				rackLost[k]++
			case 1:
				rackSingle[k]++
			}
			perRack[k] = 0
		}
	}

	// Erasure-coded stripes: a failure takes the pieces all of whose live
	// holders it takes.
	nodeTaken := map[NodeRef]int{}
	rackTaken := map[int]int{}
	var racksOf []int
	for _, gs := range v.stripes {
		for _, g := range gs {
			clear(nodeTaken)
			clear(rackTaken)
			live := 0
			for _, p := range g.pieces {
				if p == noPiece {
					continue
				}
				hs := holdersOf(p)
				if len(hs) == 0 {
					continue
				}
				live++
				if len(hs) == 1 {
					nodeTaken[hs[0]]++
				}
				racksOf = racksOf[:0]
				for _, r := range hs {
					if !slices.Contains(racksOf, nodeRack[r]) {
						racksOf = append(racksOf, nodeRack[r])
					}
				}
				if len(racksOf) == 1 {
					rackTaken[racksOf[0]]++
				}
			}
			if live < g.k {
				continue // lost already
			}
			for r, taken := range nodeTaken {
				switch after := live - taken; {
				case after < g.k:
					nodeLost[r] += g.present
				case after == g.k:
					nodeSingle[r]++
				}
			}
			for k, taken := range rackTaken {
				switch after := live - taken; {
				case after < g.k:
					rackLost[k] += g.present
				case after == g.k:
					rackSingle[k]++
				}
			}
		}
	}

	out := control.Risk{Nodes: []control.RiskLine{}, Racks: []control.RiskLine{}}
	for i := range v.Nodes {
		if liveNode[i] {
			out.Nodes = append(out.Nodes, control.RiskLine{Node: v.Nodes[i].ID, Rack: v.Nodes[i].Rack, Lost: nodeLost[i], SingleCopy: nodeSingle[i]})
		}
	}
	for k, name := range rackNames {
		out.Racks = append(out.Racks, control.RiskLine{Rack: name, Lost: rackLost[k], SingleCopy: rackSingle[k]})
	}
	slices.SortFunc(out.Nodes, func(a, b control.RiskLine) int { return cmp.Compare(a.Node, b.Node) })
	slices.SortFunc(out.Racks, func(a, b control.RiskLine) int { return cmp.Compare(a.Rack, b.Rack) })
	out.WorstNode = worst(out.Nodes)
	out.WorstRack = worst(out.Racks)
	return out
}

// worst returns a copy of the costliest line (most lost, then most
// single-copy, then the first), or nil when none costs anything.
func worst(lines []control.RiskLine) *control.RiskLine {
	var w *control.RiskLine
	for i := range lines {
		l := &lines[i]
		if l.Lost == 0 && l.SingleCopy == 0 {
			continue
		}
		if w == nil || l.Lost > w.Lost || (l.Lost == w.Lost && l.SingleCopy > w.SingleCopy) {
			w = l
		}
	}
	if w == nil {
		return nil
	}
	c := *w
	return &c
}
