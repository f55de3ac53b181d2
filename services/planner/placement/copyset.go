package placement

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/rehome/rehome/shared/model"
)

// Copysets is a copyset placement (Cidon et al., "Copysets: Reducing the
// Frequency of Data Loss in Cloud Storage", USENIX ATC 2013): the nodes are
// cut into a few fixed groups of rf (the copysets) and every shard's replicas
// fill exactly one group. Data is lost only when all nodes of one group fail
// together, and with few groups that is rare, where random placement gives
// nearly every rf-subset of nodes some shard to lose. The price is restore
// parallelism: a dead node's shards are read from its scatter width's worth
// of nodes, not from all of them.
//
// A Copysets is immutable after NewCopysets and safe for concurrent use.
type Copysets struct {
	rf   int
	sets [][]int // indexes into the candidates it was built from, sorted
	of   [][]int // per candidate, the copysets it belongs to
}

// NewCopysets builds the copysets of cands for rf replicas and scatter width
// scatter (how many other nodes share shards with any one node, about): it
// draws ceil(scatter/(rf-1)) permutations of the nodes from seed and cuts
// each into groups of rf, each group in rf distinct racks while the racks
// allow. Every node of cands takes part whatever its state (a down node's
// groups are simply not chosen while it is down), so the copysets change only
// when the membership does. The result is a function of (the candidates' ids
// and racks, rf, scatter, seed); the order of cands does not matter.
func NewCopysets(cands []Candidate, rf, scatter int, seed uint64) (*Copysets, error) {
	if rf < 1 || scatter < 1 {
		return nil, fmt.Errorf("copysets: rf %d, scatter width %d: %w", rf, scatter, model.ErrInvalid)
	}
	if len(cands) < rf {
		return nil, fmt.Errorf("copysets of %d from %d nodes: %w", rf, len(cands), ErrNotEnoughNodes)
	}
	order := make([]int, len(cands)) // candidates by id: the draw ignores the input's order
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(cands[a].ID, cands[b].ID) })
	// Racks numbered in the order their nodes' ids name them, not the input's.
	rackOf, nracks := rackIndexIn(cands, slices.Values(order))
	perms := 1
	if rf > 1 {
		perms = (scatter + rf - 2) / (rf - 1)
	}
	rng := rand.New(rand.NewPCG(seed, 0x636f70797365747a)) // "copysetz"
	cs := &Copysets{rf: rf, of: make([][]int, len(cands))}
	seen := make(map[string]bool)
	for range perms {
		for _, set := range permutationGroups(order, rackOf, nracks, rf, rng) {
			slices.Sort(set)
			key := fmt.Sprint(set)
			if seen[key] {
				continue // two permutations drew the same group: keep one
			}
			seen[key] = true
			for _, n := range set {
				cs.of[n] = append(cs.of[n], len(cs.sets))
			}
			cs.sets = append(cs.sets, set)
		}
	}
	return cs, nil
}

// permutationGroups shuffles the nodes and cuts them into groups of rf: it
// takes one node from each of the rf racks with the most nodes left (ties in
// a shuffled rack order), so groups keep to distinct racks while rf racks
// still have nodes (with fewer racks than rf, as evenly as they go). The
// nodes left over are grouped with nodes drawn from the other racks, so every
// node is in at least one group of every permutation.
func permutationGroups(order, rackOf []int, nracks, rf int, rng *rand.Rand) [][]int {
	byRack := make([][]int, nracks)
	for _, n := range order {
		byRack[rackOf[n]] = append(byRack[rackOf[n]], n)
	}
	for _, nodes := range byRack {
		rng.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	}
	pop := func(r int) int {
		n := byRack[r][len(byRack[r])-1]
		byRack[r] = byRack[r][:len(byRack[r])-1]
		return n
	}
	racks := rng.Perm(nracks)
	spread := min(rf, nracks) // distinct racks a group can have
	var groups [][]int
	for {
		slices.SortStableFunc(racks, func(a, b int) int { return cmp.Compare(len(byRack[b]), len(byRack[a])) })
		if len(byRack[racks[spread-1]]) == 0 {
			break // fewer racks with nodes than a group spans
		}
		total := 0
		for _, r := range racks[:spread] {
			total += len(byRack[r])
		}
		if total < rf {
			break // too few nodes left for a whole group
		}
		group := make([]int, 0, rf)
		for i := 0; len(group) < rf; i = (i + 1) % spread {
			if len(byRack[racks[i]]) > 0 {
				group = append(group, pop(racks[i]))
			}
		}
		groups = append(groups, group)
	}
	for _, r := range racks {
		for len(byRack[r]) > 0 {
			groups = append(groups, fillGroup(pop(r), order, rackOf, rf, rng))
		}
	}
	return groups
}

// fillGroup builds a group around node n from nodes of other racks, one per
// rack while racks last (drawn at random), then any other nodes.
func fillGroup(n int, order, rackOf []int, rf int, rng *rand.Rand) []int {
	group := []int{n}
	used := map[int]bool{rackOf[n]: true}
	pool := slices.Clone(order)
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	for _, strict := range []bool{true, false} {
		for _, m := range pool {
			if len(group) == rf {
				return group
			}
			if slices.Contains(group, m) || strict && used[rackOf[m]] {
				continue
			}
			group = append(group, m)
			used[rackOf[m]] = true
		}
	}
	return group
}

// Sets returns the copysets as indexes into the candidates they were built
// from, each sorted; the caller must not modify them.
func (cs *Copysets) Sets() [][]int { return cs.sets }

// Of returns the copysets node i belongs to (indexes into Sets).
func (cs *Copysets) Of(i int) []int { return cs.of[i] }

// AllocateCopysets places each shard on one copyset whose every node is up
// and has room: the one whose fullest member is least filled (each choice
// counts as pending bytes for the next, as in Allocate), ties broken by a
// hash of shard and copyset. cands must be the candidates cs was built from,
// in the same order (states and fills may have changed). It fails with
// ErrNotEnoughNodes when no copyset can take a shard.
func AllocateCopysets(cands []Candidate, cs *Copysets, shards []Shard) ([][]int, error) {
	work := slices.Clone(cands)
	out := make([][]int, len(shards))
	for s, sh := range shards {
		salt := hash64(sh.ID)
		best, bestFill, bestHash := -1, 0.0, uint64(0)
		for k, set := range cs.sets {
			worst, ok := 0.0, true
			for _, n := range set {
				if n >= len(work) || work[n].State != model.StateUp || !work[n].fits(sh.Size) {
					ok = false
					break
				}
				worst = max(worst, work[n].Fill())
			}
			if !ok {
				continue
			}
			h := mix(salt, uint64(k))
			if best < 0 || worst < bestFill || worst == bestFill && h < bestHash {
				best, bestFill, bestHash = k, worst, h
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("allocate %d bytes on a copyset: none with every node up and room: %w", sh.Size, ErrNotEnoughNodes)
		}
		out[s] = slices.Clone(cs.sets[best])
		for _, n := range out[s] {
			work[n].PendingBytes += sh.Size
		}
	}
	return out, nil
}

// SurvivorSalt is the tie-break salt of a repair under copyset placement: a
// hash of the ids of the shard's live holders, whatever their order. With
// TargetOptions.Sticky it makes every shard that lost the same node of the
// same copyset choose the same target, so the repaired shards form one new
// group instead of scattering (which would undo the copysets).
func SurvivorSalt(ids []string) uint64 {
	sorted := slices.Sorted(slices.Values(ids))
	h := uint64(1469598103934665603)
	for _, id := range sorted {
		h = mix(h, hash64(id))
	}
	return h
}
