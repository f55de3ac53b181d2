package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/rehome/rehome/shared/model"
)

// fleet is n up nodes over racks racks (node i in rack i % racks), 1 TiB each.
func fleet(n, racks int) []Candidate {
	out := make([]Candidate, n)
	for i := range out {
		out[i] = Candidate{ID: fmt.Sprintf("n%04d", i), Rack: fmt.Sprintf("r%02d", i%racks), State: model.StateUp, CapacityBytes: 1 << 40}
	}
	return out
}

func TestCopysetsKeepRacksDistinctAndCoverEveryNode(t *testing.T) {
	for _, tc := range []struct{ nodes, racks, rf, scatter int }{
		{6, 3, 3, 2}, {6, 6, 3, 4}, {30, 3, 3, 4}, {31, 5, 3, 10}, {100, 10, 3, 8}, {12, 4, 6, 5}, {7, 2, 3, 4},
	} {
		t.Run(fmt.Sprintf("%d nodes %d racks rf %d S %d", tc.nodes, tc.racks, tc.rf, tc.scatter), func(t *testing.T) {
			cands := fleet(tc.nodes, tc.racks)
			cs, err := NewCopysets(cands, tc.rf, tc.scatter, 7)
			if err != nil {
				t.Fatal(err)
			}
			perms := (tc.scatter + tc.rf - 2) / (tc.rf - 1)
			for _, set := range cs.Sets() {
				if len(set) != tc.rf {
					t.Fatalf("copyset %v has %d nodes, want %d", set, len(set), tc.rf)
				}
				racks := map[string]bool{}
				for _, n := range set {
					racks[cands[n].Rack] = true
				}
				if want := min(tc.rf, tc.racks); len(racks) < want {
					t.Errorf("copyset %v spans %d racks, want %d", set, len(racks), want)
				}
			}
			for i := range cands {
				if len(cs.Of(i)) == 0 {
					t.Errorf("%s is in no copyset", cands[i].ID)
				}
				if len(cs.Of(i)) > perms+perms { // once per permutation, plus filling in for leftovers
					t.Errorf("%s is in %d copysets, more than twice the %d permutations", cands[i].ID, len(cs.Of(i)), perms)
				}
			}
			// The same inputs in another order give the same copysets.
			shuffled := slices.Clone(cands)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			again, _ := NewCopysets(shuffled, tc.rf, tc.scatter, 7)
			if got, want := idSets(shuffled, again), idSets(cands, cs); !slices.Equal(got, want) {
				t.Errorf("copysets depend on the candidates' order:\n%v\n%v", got, want)
			}
		})
	}
}

// idSets names the copysets by node ids, sorted, for comparison.
func idSets(cands []Candidate, cs *Copysets) []string {
	var out []string
	for _, set := range cs.Sets() {
		ids := make([]string, len(set))
		for i, n := range set {
			ids[i] = cands[n].ID
		}
		slices.Sort(ids)
		out = append(out, fmt.Sprint(ids))
	}
	slices.Sort(out)
	return out
}

// TestCopysetsBoundScatterWidth: a node shares shards with about S others
// (the copysets' point), where random placement reaches nearly every node.
func TestCopysetsBoundScatterWidth(t *testing.T) {
	cands := fleet(300, 10)
	cs, err := NewCopysets(cands, 3, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	shards := make([]Shard, 20000)
	for i := range shards {
		shards[i] = Shard{ID: fmt.Sprintf("s%d", i), Size: 1 << 20}
	}
	placed, err := AllocateCopysets(cands, cs, shards)
	if err != nil {
		t.Fatal(err)
	}
	random, err := Allocate(cands, 3, shards)
	if err != nil {
		t.Fatal(err)
	}
	scatter := func(placed [][]int) (maxPeers int, groups int) {
		peers := make([]map[int]bool, len(cands))
		seen := map[string]bool{}
		for _, p := range placed {
			seen[fmt.Sprint(slices.Sorted(slices.Values(p)))] = true
			for _, a := range p {
				if peers[a] == nil {
					peers[a] = map[int]bool{}
				}
				for _, b := range p {
					if a != b {
						peers[a][b] = true
					}
				}
			}
		}
		for _, m := range peers {
			maxPeers = max(maxPeers, len(m))
		}
		return maxPeers, len(seen)
	}
	csPeers, csGroups := scatter(placed)
	rPeers, rGroups := scatter(random)
	t.Logf("copysets: at most %d peers per node, %d distinct groups; random: %d peers, %d groups", csPeers, csGroups, rPeers, rGroups)
	if csPeers > 2*10 || csGroups > len(cs.Sets()) {
		t.Errorf("copyset placement: %d peers per node (scatter width 10), %d groups of %d copysets", csPeers, csGroups, len(cs.Sets()))
	}
	if rGroups < 10*csGroups {
		t.Errorf("random placement used %d groups, copysets %d: the comparison shows nothing", rGroups, csGroups)
	}
	// Every shard sits on one copyset, three racks, and fill stays even.
	var lo, hi int64 = 1 << 62, 0
	load := make([]int64, len(cands))
	for _, p := range placed {
		for _, n := range p {
			load[n] += 1 << 20
		}
	}
	for _, l := range load {
		lo, hi = min(lo, l), max(hi, l)
	}
	if hi > lo*3/2 {
		t.Errorf("copyset placement fills nodes unevenly: %d to %d bytes", lo, hi)
	}
}

func TestAllocateCopysetsPassesOverGroupsWithADownOrFullNode(t *testing.T) {
	cands := fleet(9, 3)
	cs, _ := NewCopysets(cands, 3, 4, 3)
	cands[0].State = model.StateDown
	cands[1].Full = true
	placed, err := AllocateCopysets(cands, cs, []Shard{{ID: "a", Size: 10}, {ID: "b", Size: 10}, {ID: "c", Size: 10}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range placed {
		if slices.Contains(p, 0) || slices.Contains(p, 1) {
			t.Errorf("placed on %v, which holds the down node 0 or the full node 1", p)
		}
		if !slices.ContainsFunc(cs.Sets(), func(set []int) bool { return slices.Equal(set, p) }) {
			t.Errorf("placed on %v, not a copyset", p)
		}
	}
	for i := range cands {
		cands[i].State = model.StateDown
	}
	if _, err := AllocateCopysets(cands, cs, []Shard{{ID: "a", Size: 10}}); err == nil {
		t.Error("allocated with every node down")
	}
}

// TestStickyTargetKeepsLostGroupsTogether: shards that lost the same node of
// the same copyset are repaired onto the same node; different survivors
// spread over different targets.
func TestStickyTargetKeepsLostGroupsTogether(t *testing.T) {
	cands := fleet(30, 3)
	cs, _ := NewCopysets(cands, 3, 4, 5)
	dead := 0
	cands[dead].State = model.StateDown
	targets := map[uint64]int{}
	used := map[int]bool{}
	for k, set := range cs.Sets() {
		if !slices.Contains(set, dead) {
			continue
		}
		var ids []string
		for _, n := range set {
			if n != dead {
				ids = append(ids, cands[n].ID)
			}
		}
		salt := SurvivorSalt(ids)
		for s := range 5 { // five shards of this copyset, with different fills between them
			cands[s+1].UsedBytes = int64(s) << 30
			tg, err := ChooseTarget(set, cands, TargetOptions{Size: 1, Salt: salt, Sticky: true})
			if err != nil {
				t.Fatal(err)
			}
			if tg.RackRelaxed || cands[tg.Index].Rack != cands[dead].Rack {
				t.Errorf("copyset %d: target %s in %s, want %s's rack", k, cands[tg.Index].ID, cands[tg.Index].Rack, cands[dead].Rack)
			}
			if prev, ok := targets[salt]; ok && prev != tg.Index {
				t.Errorf("copyset %d: shards with the same survivors went to %s and %s", k, cands[prev].ID, cands[tg.Index].ID)
			}
			targets[salt] = tg.Index
			used[tg.Index] = true
		}
	}
	if len(targets) < 2 || len(used) < 2 {
		t.Errorf("the dead node's %d copysets all repaired onto %d node(s)", len(targets), len(used))
	}
}
