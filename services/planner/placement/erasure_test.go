package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/rehome/rehome/shared/model"
)

// stripes names n stripes of k+m pieces of size bytes.
func stripes(n, k, m int, size int64) [][]Shard {
	out := make([][]Shard, n)
	for s := range out {
		for i := 0; i < k+m; i++ {
			out[s] = append(out[s], Shard{ID: fmt.Sprintf("obj-s%06dp%03d", s, i), Size: size})
		}
	}
	return out
}

// rackUse counts a stripe's pieces per rack.
func rackUse(cs []Candidate, picks []int) map[string]int {
	use := map[string]int{}
	for _, x := range picks {
		use[cs[x].Rack]++
	}
	return use
}

func TestAllocateStripesTable(t *testing.T) {
	tests := []struct {
		name    string
		cands   []Candidate
		k, m    int
		maxRack int      // most pieces of the stripe one rack may hold
		want    []string // when set: the exact nodes, in piece order
		wantErr string
	}{{
		name:  "12 nodes in 6 racks, 4+2: one per rack (a rack's loss costs one piece)",
		cands: cluster(12, 6),
		k:     4, m: 2,
		maxRack: 1,
	}, {
		name: "emptier nodes in a rack already used do not win over an unused rack",
		// The four emptiest nodes sit two by two in rack-1 and rack-2.
		cands: withUsed(cluster(12, 6), 1, 2, 90, 91, 92, 93, 3, 4, 94, 95, 96, 97),
		k:     4, m: 2,
		maxRack: 1,
	}, {
		name:  "8 nodes in 4 racks, 4+2: at most 2 per rack",
		cands: cluster(8, 4),
		k:     4, m: 2,
		maxRack: 2,
	}, {
		name:  "6 nodes in 3 racks, 4+2: exactly 2 per rack",
		cands: cluster(6, 3),
		k:     4, m: 2,
		maxRack: 2,
	}, {
		name:  "too few racks for the cap: spread evenly, 3 and 3",
		cands: cluster(6, 2),
		k:     4, m: 2,
		maxRack: 3,
	}, {
		name:  "least filled first, within the rack cap",
		cands: withUsed(cluster(8, 4), 70, 60, 50, 40, 30, 20, 10, 0),
		k:     2, m: 1,
		// The three emptiest nodes sit in three racks.
		want:    []string{"storage-08", "storage-07", "storage-06"},
		maxRack: 1,
	}, {
		name: "down, suspect and maintenance nodes are skipped",
		cands: func() []Candidate {
			c := cluster(8, 4)
			c[0].State, c[1].State = model.StateDown, model.StateSuspect
			return c
		}(),
		k: 3, m: 1,
		maxRack: 1,
	}, {
		name:  "fewer up nodes than k+m",
		cands: func() []Candidate { c := cluster(6, 3); c[5].State = model.StateDown; return c }(),
		k:     4, m: 2,
		wantErr: "invalid: ec 4+2 needs 6 live nodes, 5 are up",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AllocateStripes(tt.cands, tt.k, tt.m, stripes(1, tt.k, tt.m, 1))
			if tt.wantErr != "" {
				if !errors.Is(err, model.ErrInvalid) || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q (invalid)", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			picks := got[0]
			if len(picks) != tt.k+tt.m {
				t.Fatalf("%d picks", len(picks))
			}
			seen := map[int]bool{}
			for _, x := range picks {
				if seen[x] || tt.cands[x].State != model.StateUp {
					t.Fatalf("picks %v: a node twice or not up", ids(tt.cands, picks))
				}
				seen[x] = true
			}
			for rack, n := range rackUse(tt.cands, picks) {
				if n > tt.maxRack {
					t.Fatalf("%s holds %d pieces (%v), want <= %d", rack, n, ids(tt.cands, picks), tt.maxRack)
				}
			}
			if tt.want != nil && !slices.Equal(ids(tt.cands, picks), tt.want) {
				t.Fatalf("allocated %v, want %v", ids(tt.cands, picks), tt.want)
			}
		})
	}
}

func TestAllocateStripesRefusesOversizedStripe(t *testing.T) {
	_, err := AllocateStripes(cluster(8, 4), 2, 1, stripes(1, 3, 1, 1))
	if !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("4 pieces in a 2+1 stripe: %v, want invalid", err)
	}
	c := cluster(6, 3)
	c[0].UsedBytes = c[0].CapacityBytes
	if _, err := AllocateStripes(c, 4, 2, stripes(1, 4, 2, 1)); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("one of 6 nodes full, 4+2: %v, want ErrNotEnoughNodes", err)
	}
}

// evenLevel is the smallest per-rack maximum any placement of n pieces on
// distinct nodes can reach, given the nodes available per rack.
func evenLevel(perRack map[string]int, n int) int {
	for level := 1; ; level++ {
		sum := 0
		for _, c := range perRack {
			sum += min(c, level)
		}
		if sum >= n {
			return level
		}
	}
}

func TestAllocateStripesProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for iter := 0; iter < 2000; iter++ {
		cs := randomCluster(r)
		k, m := 1+r.IntN(6), 1+r.IntN(3)
		st := stripes(1+r.IntN(4), k, m, 1+r.Int64N(1<<20))
		got, err := AllocateStripes(cs, k, m, st)
		perRack := map[string]int{}
		up := 0
		for _, c := range cs {
			if c.State == model.StateUp {
				up++
				perRack[c.Rack]++
			}
		}
		if up < k+m {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("iter %d: %d up for %d+%d: %v", iter, up, k, m, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		level := evenLevel(perRack, k+m)
		for s, picks := range got {
			seen := map[int]bool{}
			for _, x := range picks {
				if seen[x] || cs[x].State != model.StateUp {
					t.Fatalf("iter %d stripe %d: %v reuses a node or picks one not up", iter, s, picks)
				}
				seen[x] = true
			}
			most := 0
			for _, n := range rackUse(cs, picks) {
				most = max(most, n)
			}
			// The most even spread the racks allow (one per rack when
			// there are k+m racks or more, so never above m where racks allow).
			if most > level {
				t.Fatalf("iter %d stripe %d: a rack holds %d pieces of %d+%d, best possible %d", iter, s, most, k, m, level)
			}
		}
	}
}

func TestAllocateStripesBalancesBytes(t *testing.T) {
	cs := cluster(8, 4)
	got, err := AllocateStripes(cs, 4, 2, stripes(400, 4, 2, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, len(cs))
	for _, picks := range got {
		for _, x := range picks {
			counts[x]++
		}
	}
	if mm := maxOverMean(counts); mm > 1.05 {
		t.Fatalf("pieces per node %v: max/mean %.2f", counts, mm)
	}
}

func TestChooseRebuildTargetsTable(t *testing.T) {
	// 8 nodes in 4 racks: storage-0i sits in rack-((i-1)%4+1). The stripe is
	// on storage-01..06: rack-1 holds 01, 05; rack-2 02, 06; rack-3 03; rack-4 04.
	eight := func(mod func(c []Candidate)) []Candidate { c := cluster(8, 4); mod(c); return c }
	holders := []int{0, 1, 2, 3, 4, 5}
	tests := []struct {
		name       string
		cands      []Candidate
		n          int
		rackPieces map[string]int
		opt        RebuildOptions
		want       []string // "" for no target
		relaxed    []bool
		wantErr    error
	}{{
		name:       "one missing (01 down): the emptier of 07, 08",
		cands:      eight(func(c []Candidate) { c[0].State = model.StateDown; c[6].UsedBytes = 5 }),
		n:          1,
		rackPieces: map[string]int{"rack-1": 1, "rack-2": 2, "rack-3": 1, "rack-4": 1},
		opt:        RebuildOptions{M: 2, Size: 1},
		want:       []string{"storage-08"},
	}, {
		name:       "two missing in one pass: both outsiders, distinct",
		cands:      eight(func(c []Candidate) { c[0].State, c[1].State = model.StateDown, model.StateDown }),
		n:          2,
		rackPieces: map[string]int{"rack-1": 1, "rack-2": 1, "rack-3": 1, "rack-4": 1},
		opt:        RebuildOptions{M: 2, Size: 1},
		want:       []string{"storage-07", "storage-08"},
	}, {
		name:       "rack cap: rack-3 already holds m pieces, so the fuller rack-4 node",
		cands:      eight(func(c []Candidate) { c[0].State = model.StateDown; c[7].UsedBytes = 1 << 30 }),
		n:          1,
		rackPieces: map[string]int{"rack-1": 1, "rack-2": 1, "rack-3": 2, "rack-4": 1},
		opt:        RebuildOptions{M: 2, Size: 1},
		want:       []string{"storage-08"},
	}, {
		// 12 nodes: rack-3 has 07 and 11, rack-4 08 and 12. The first piece
		// fills rack-3 to m, so the second goes to rack-4 though 11 is emptier.
		name: "the cap counts targets of the same task",
		cands: func() []Candidate {
			c := withUsed(cluster(12, 4), 0, 0, 0, 0, 0, 0, 0, 5, 9, 9, 1, 6)
			c[0].State, c[1].State = model.StateDown, model.StateDown
			return c
		}(),
		n:          2,
		rackPieces: map[string]int{"rack-1": 2, "rack-2": 2, "rack-3": 1, "rack-4": 1},
		opt:        RebuildOptions{M: 2, Size: 1},
		want:       []string{"storage-07", "storage-08"},
	}, {
		// 12 nodes in 6 racks, the stripe one piece per rack on 01..06; 01
		// is down, so rack-1 holds no live piece: its 07 wins over emptier
		// nodes in racks that hold one.
		name: "a rack holding fewer of the stripe's pieces first, then the least filled",
		cands: func() []Candidate {
			c := withUsed(cluster(12, 6), 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 6)
			c[0].State = model.StateDown
			return c
		}(),
		n:          1,
		rackPieces: map[string]int{"rack-2": 1, "rack-3": 1, "rack-4": 1, "rack-5": 1, "rack-6": 1},
		opt:        RebuildOptions{M: 2, Size: 1},
		want:       []string{"storage-07"},
	}, {
		name:       "no node for one piece: the other is still rebuilt",
		cands:      eight(func(c []Candidate) { c[0].State, c[1].State = model.StateDown, model.StateDown }),
		n:          2,
		rackPieces: map[string]int{"rack-1": 1, "rack-2": 1, "rack-3": 1, "rack-4": 1},
		opt:        RebuildOptions{M: 2, Size: 1, Exclude: []int{7}},
		want:       []string{"storage-07", ""},
	}, {
		name:       "only capped racks left: relaxed, and said so",
		cands:      eight(func(c []Candidate) { c[0].State = model.StateDown }),
		n:          1,
		rackPieces: map[string]int{"rack-1": 1, "rack-2": 2, "rack-3": 2, "rack-4": 1},
		opt:        RebuildOptions{M: 2, Size: 1, Exclude: []int{7}},
		want:       []string{"storage-07"},
		relaxed:    []bool{true},
	}, {
		name:       "every node holds a piece (even a dead one) or is excluded: no target",
		cands:      eight(func(c []Candidate) { c[0].State = model.StateDown }),
		n:          1,
		rackPieces: map[string]int{"rack-2": 2, "rack-3": 1, "rack-4": 1, "rack-1": 1},
		opt:        RebuildOptions{M: 2, Size: 1, Exclude: []int{6, 7}},
		wantErr:    ErrNoTarget,
	}, {
		name:       "the rack-keeping target is busy: wait, do not relax",
		cands:      eight(func(c []Candidate) { c[0].State = model.StateDown; c[7].PendingTasks = 2 }),
		n:          1,
		rackPieces: map[string]int{"rack-1": 1, "rack-2": 2, "rack-3": 2, "rack-4": 1},
		opt:        RebuildOptions{M: 2, Size: 1, MaxTasks: 2},
		wantErr:    ErrRackBusy,
	}, {
		name:       "the second piece's only target is busy: the whole stripe waits",
		cands:      eight(func(c []Candidate) { c[0].State, c[1].State = model.StateDown, model.StateDown; c[7].PendingTasks = 1 }),
		n:          2,
		rackPieces: map[string]int{"rack-1": 1, "rack-2": 1, "rack-3": 1, "rack-4": 1},
		opt:        RebuildOptions{M: 2, Size: 1, MaxTasks: 1},
		wantErr:    ErrBusy,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseRebuildTargets(tt.n, holders, tt.rackPieces, tt.cands, tt.opt)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v (got %+v), want %v", err, got, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, tg := range got {
				name := ""
				if tg.Index >= 0 {
					name = tt.cands[tg.Index].ID
				}
				if name != tt.want[i] {
					t.Fatalf("piece %d: target %q, want %q (all %+v)", i, name, tt.want[i], got)
				}
				if want := tt.relaxed != nil && tt.relaxed[i]; tg.RackRelaxed != want {
					t.Fatalf("piece %d: relaxed %v, want %v", i, tg.RackRelaxed, want)
				}
			}
		})
	}
}

func TestChooseRebuildTargetsProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for iter := 0; iter < 3000; iter++ {
		cs := randomCluster(r)
		m := 1 + r.IntN(3)
		nh := 1 + r.IntN(len(cs))
		holders := r.Perm(len(cs))[:nh]
		rackPieces := map[string]int{}
		for _, h := range holders {
			if cs[h].State.Live() {
				rackPieces[cs[h].Rack]++
			}
		}
		n := 1 + r.IntN(m)
		got, err := ChooseRebuildTargets(n, holders, rackPieces, cs, RebuildOptions{M: m, Size: 1, Salt: uint64(iter)})
		if err != nil {
			if errors.Is(err, ErrNoTarget) {
				for i, c := range cs {
					if c.State == model.StateUp && !slices.Contains(holders, i) {
						t.Fatalf("iter %d: ErrNoTarget but %s is up and holds nothing", iter, c.ID)
					}
				}
				continue
			}
			t.Fatalf("iter %d: %v", iter, err)
		}
		use := maps(rackPieces)
		seen := map[int]bool{}
		for _, tg := range got {
			if tg.Index < 0 {
				continue
			}
			c := cs[tg.Index]
			if slices.Contains(holders, tg.Index) || seen[tg.Index] || c.State != model.StateUp {
				t.Fatalf("iter %d: target %s holds a piece, is chosen twice or is not up", iter, c.ID)
			}
			seen[tg.Index] = true
			use[c.Rack]++
			if !tg.RackRelaxed && use[c.Rack] > m {
				t.Fatalf("iter %d: %s puts %d pieces in %s without saying the rule was relaxed", iter, c.ID, use[c.Rack], c.Rack)
			}
		}
	}
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestChooseSurplusPiece(t *testing.T) {
	eight := func(mod func(c []Candidate)) []Candidate {
		c := cluster(8, 4)
		for i := range c {
			c[i].CapacityBytes = 1000
		}
		mod(c)
		return c
	}
	tests := []struct {
		name       string
		cands      []Candidate
		holders    []int
		rackPieces map[string]int
		want       string
		wantErr    error
	}{{
		name:       "the holder whose rack would exceed m goes, even on an emptier node",
		cands:      eight(func(c []Candidate) { c[0].UsedBytes = 10; c[6].UsedBytes = 900 }),
		holders:    []int{0, 6}, // rack-1 holds 2 other pieces already, rack-3 one
		rackPieces: map[string]int{"rack-1": 2, "rack-3": 1},
		want:       "storage-01",
	}, {
		name:       "both within m: the fuller goes",
		cands:      eight(func(c []Candidate) { c[6].OtherBytes = 500 }),
		holders:    []int{0, 6},
		rackPieces: map[string]int{"rack-1": 1, "rack-3": 1},
		want:       "storage-07",
	}, {
		name:       "then the returning node",
		cands:      eight(func(c []Candidate) { c[0].Returning = true }),
		holders:    []int{0, 6},
		rackPieces: map[string]int{"rack-1": 1, "rack-3": 1},
		want:       "storage-01",
	}, {
		name:       "one up holder and a suspect one: nothing to remove",
		cands:      eight(func(c []Candidate) { c[6].State = model.StateSuspect }),
		holders:    []int{0, 6},
		rackPieces: map[string]int{},
		wantErr:    ErrNoSurplus,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseSurplusPiece(tt.holders, tt.cands, tt.rackPieces, 2, Salt("p"))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || tt.cands[got].ID != tt.want {
				t.Fatalf("chose %d (err %v), want %s", got, err, tt.want)
			}
		})
	}
}
