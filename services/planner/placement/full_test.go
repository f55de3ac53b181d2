package placement

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/rehome/rehome/shared/model"
)

// withFull marks the nodes at idx as refusing new shards (disk full or
// read-only).
func withFull(cs []Candidate, idx ...int) []Candidate {
	for _, i := range idx {
		cs[i].Full = true
	}
	return cs
}

// TestFullNodeIsNeverATargetTable: a node reporting itself full (or
// read-only) is treated like one without room by every chooser, even when it
// is the emptiest; it remains a source.
func TestFullNodeIsNeverATargetTable(t *testing.T) {
	cases := []struct {
		name string
		run  func(cs []Candidate) (picked []string, err error)
		// cs: 4 nodes on 4 racks, storage-01 the emptiest and full.
		want    []string
		wantErr error
	}{
		{"allocate skips the emptiest node when full", func(cs []Candidate) ([]string, error) {
			out, err := Allocate(cs, 3, shards(1, 10))
			if err != nil {
				return nil, err
			}
			return ids(cs, out[0]), nil
		}, []string{"storage-02", "storage-03", "storage-04"}, nil},
		{"allocate fails with too few nodes with room", func(cs []Candidate) ([]string, error) {
			_, err := Allocate(withFull(cs, 1), 3, shards(1, 10))
			return nil, err
		}, nil, ErrNotEnoughNodes},
		{"target: next emptiest", func(cs []Candidate) ([]string, error) {
			tg, err := ChooseTarget([]int{3}, cs, TargetOptions{Size: 10})
			return ids(cs, []int{tg.Index}), err
		}, []string{"storage-02"}, nil},
		{"target: full is no target, even relaxing the rack rule", func(cs []Candidate) ([]string, error) {
			cs[1].Rack, cs[2].Rack = cs[3].Rack, cs[3].Rack // only storage-01 is in another rack
			tg, err := ChooseTarget([]int{3}, cs, TargetOptions{Size: 10})
			if err == nil && !tg.RackRelaxed {
				return nil, errors.New("rack rule not relaxed")
			}
			return ids(cs, []int{tg.Index}), err
		}, []string{"storage-02"}, nil},
		{"target: none when every other node is full", func(cs []Candidate) ([]string, error) {
			_, err := ChooseTarget([]int{3}, withFull(cs, 1, 2), TargetOptions{Size: 10})
			return nil, err
		}, nil, ErrNoTarget},
		{"target: a full node at its task limit is not 'busy'", func(cs []Candidate) ([]string, error) {
			withFull(cs, 1, 2)
			cs[0].PendingTasks = 5
			_, err := ChooseTarget([]int{3}, cs, TargetOptions{Size: 10, MaxTasks: 1})
			return nil, err
		}, nil, ErrNoTarget},
		{"rebuild targets skip the full node", func(cs []Candidate) ([]string, error) {
			tgs, err := ChooseRebuildTargets(2, []int{3}, map[string]int{}, cs, RebuildOptions{M: 2, Size: 10})
			var out []int
			for _, tg := range tgs {
				out = append(out, tg.Index)
			}
			return ids(cs, out), err
		}, []string{"storage-02", "storage-03"}, nil},
		{"stripes skip the full node", func(cs []Candidate) ([]string, error) {
			cs = append(cs, cluster(6, 6)[4:]...) // storage-05, storage-06 on racks 5 and 6
			out, err := AllocateStripes(cs, 3, 2, [][]Shard{shards(5, 10)})
			if err != nil {
				return nil, err
			}
			return slices.Sorted(slices.Values(ids(cs, out[0]))), nil
		}, []string{"storage-02", "storage-03", "storage-04", "storage-05", "storage-06"}, nil},
		{"a full holder is still read from", func(cs []Candidate) ([]string, error) {
			src, err := ChooseSource([]int{0, 3}, cs, SourceOptions{})
			return ids(cs, []int{src}), err
		}, []string{"storage-01"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cs := withUsed(cluster(4, 4), 0, 100, 200, 300)
			cs[3].Reads = 1 // the source case prefers the idle full holder
			cs = withFull(cs, 0)
			picked, err := c.run(cs)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(picked, c.want) {
				t.Fatalf("picked %v, want %v", picked, c.want)
			}
		})
	}
}

// TestFullNodeIsNeverATargetProperty: on random clusters with random full
// nodes, no chooser ever places a shard on a full node, and a full node
// takes nothing that a node with room could not have taken.
func TestFullNodeIsNeverATargetProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for iter := 0; iter < 3000; iter++ {
		cs := randomCluster(r)
		for i := range cs {
			cs[i].Full = r.IntN(3) == 0
			cs[i].PendingTasks = r.IntN(3)
		}
		full := func(i int) bool { return cs[i].Full }
		size := 1 + r.Int64N(1<<20)

		if out, err := Allocate(cs, 1+r.IntN(3), shards(1+r.IntN(20), size)); err == nil {
			for s, picks := range out {
				if slices.ContainsFunc(picks, full) {
					t.Fatalf("iter %d: Allocate put shard %d on a full node: %v", iter, s, ids(cs, picks))
				}
			}
		}

		holders := r.Perm(len(cs))[:1+r.IntN(min(len(cs), 4))]
		tg, err := ChooseTarget(holders, cs, TargetOptions{Size: size, MaxTasks: r.IntN(3), MaxFill: r.Float64()})
		if err == nil && full(tg.Index) {
			t.Fatalf("iter %d: ChooseTarget picked full node %s", iter, cs[tg.Index].ID)
		}
		// With every node full there is never a target, only ErrNoTarget.
		allFull := slices.Clone(cs)
		for i := range allFull {
			allFull[i].Full = true
		}
		if _, err := ChooseTarget(holders, allFull, TargetOptions{Size: size, MaxTasks: 1}); !errors.Is(err, ErrNoTarget) {
			t.Fatalf("iter %d: ChooseTarget on an all-full cluster: %v, want ErrNoTarget", iter, err)
		}

		n := 1 + r.IntN(3)
		if tgs, err := ChooseRebuildTargets(n, holders, map[string]int{}, cs, RebuildOptions{M: 1 + r.IntN(2), Size: size}); err == nil {
			for _, tg := range tgs {
				if tg.Index >= 0 && full(tg.Index) {
					t.Fatalf("iter %d: ChooseRebuildTargets picked full node %s", iter, cs[tg.Index].ID)
				}
			}
		}

		// Being full never stops a node from being read: the source chosen
		// ignores the flag.
		srcFull, errFull := ChooseSource(holders, cs, SourceOptions{Salt: uint64(iter)})
		roomy := slices.Clone(cs)
		for i := range roomy {
			roomy[i].Full = false
		}
		srcRoomy, errRoomy := ChooseSource(holders, roomy, SourceOptions{Salt: uint64(iter)})
		if srcFull != srcRoomy || !errors.Is(errFull, errRoomy) && (errFull != nil || errRoomy != nil) {
			t.Fatalf("iter %d: source %d (%v) with full nodes, %d (%v) without: want the same", iter, srcFull, errFull, srcRoomy, errRoomy)
		}
		if errFull == nil && cs[srcFull].State == model.StateDown {
			t.Fatalf("iter %d: source %s is down", iter, cs[srcFull].ID)
		}
	}
}
