package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/rehome/rehome/shared/model"
)

// cluster builds n up nodes dealt round-robin onto racks, equal capacity.
func cluster(n, racks int) []Candidate {
	cs := make([]Candidate, n)
	for i := range cs {
		cs[i] = Candidate{
			ID:            fmt.Sprintf("storage-%02d", i+1),
			Rack:          fmt.Sprintf("rack-%d", i%racks+1),
			State:         model.StateUp,
			CapacityBytes: 1 << 40,
		}
	}
	return cs
}

// withUsed sets the nodes' used bytes in order (distinct loads: no ties).
func withUsed(cs []Candidate, used ...int64) []Candidate {
	for i, u := range used {
		cs[i].UsedBytes = u
	}
	return cs
}

// shards names n shards of the given size.
func shards(n int, size int64) []Shard {
	out := make([]Shard, n)
	for i := range out {
		out[i] = Shard{ID: fmt.Sprintf("shard-%05d", i), Size: size}
	}
	return out
}

func ids(cs []Candidate, idx []int) []string {
	out := make([]string, len(idx))
	for i, x := range idx {
		out[i] = cs[x].ID
	}
	return out
}

func TestAllocateTable(t *testing.T) {
	tests := []struct {
		name    string
		cands   []Candidate
		rf      int
		want    []string // node ids of the single shard, in choice order
		wantErr error
	}{{
		name:  "three racks: one node per rack, least filled first",
		cands: withUsed(cluster(6, 3), 100, 50, 0, 10, 20, 30),
		rf:    3,
		want:  []string{"storage-03", "storage-04", "storage-05"},
	}, {
		name:  "pending bytes count as fill",
		cands: func() []Candidate { c := withUsed(cluster(6, 3), 1, 2, 3, 4, 5, 6); c[0].PendingBytes = 10; return c }(),
		rf:    3,
		want:  []string{"storage-02", "storage-03", "storage-04"},
	}, {
		name:  "fewer racks than rf: spread 2+1",
		cands: withUsed(cluster(4, 2), 1, 2, 3, 4),
		rf:    3,
		want:  []string{"storage-01", "storage-02", "storage-03"},
	}, {
		name: "down, suspect and maintenance nodes are skipped",
		cands: func() []Candidate {
			c := withUsed(cluster(6, 3), 0, 0, 0, 1, 2, 3)
			c[0].State, c[1].State, c[2].State = model.StateDown, model.StateSuspect, model.StateMaintenance
			return c
		}(),
		rf:   3,
		want: []string{"storage-04", "storage-05", "storage-06"},
	}, {
		name:    "fewer live nodes than rf",
		cands:   func() []Candidate { c := cluster(3, 3); c[2].State = model.StateDown; return c }(),
		rf:      3,
		wantErr: ErrNotEnoughNodes,
	}, {
		name: "full nodes are skipped",
		cands: func() []Candidate {
			c := withUsed(cluster(4, 4), 0, 1, 2, 3)
			c[0].UsedBytes = c[0].CapacityBytes
			return c
		}(),
		rf:   3,
		want: []string{"storage-02", "storage-03", "storage-04"},
	}, {
		name: "other data on the disk leaves no room",
		cands: func() []Candidate {
			c := withUsed(cluster(4, 4), 0, 1, 2, 3)
			c[0].OtherBytes = c[0].CapacityBytes
			return c
		}(),
		rf:   3,
		want: []string{"storage-02", "storage-03", "storage-04"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Allocate(tt.cands, tt.rf, shards(1, 1))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := ids(tt.cands, got[0]); !slices.Equal(g, tt.want) {
				t.Fatalf("allocated %v, want %v", g, tt.want)
			}
		})
	}
}

func TestAllocateDoesNotModifyCandidates(t *testing.T) {
	c := cluster(6, 3)
	before := slices.Clone(c)
	if _, err := Allocate(c, 3, shards(3, 10)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c, before) {
		t.Fatal("Allocate changed its input")
	}
}

// busyEmptiest is 9 nodes on 3 racks of 1 TiB: storage-01 empty but
// writing one copy, storage-04 and storage-07 idle holding used4 and used7
// bytes.
func busyEmptiest(used4, used7 int64) []Candidate {
	c := cluster(9, 3)
	c[0].PendingTasks = 1
	c[3].UsedBytes, c[6].UsedBytes = used4, used7
	return c
}

func TestChooseTargetTable(t *testing.T) {
	six := func(mod func(c []Candidate)) []Candidate { c := cluster(6, 3); mod(c); return c }
	tests := []struct {
		name        string
		cands       []Candidate
		holders     []int
		opt         TargetOptions
		want        string
		wantRelaxed bool
		wantErr     error
	}{{
		// storage-01 (rack-1) down; copies survive in rack-2 and rack-3: only storage-04 is in rack-1.
		name:    "rack without a live copy",
		cands:   six(func(c []Candidate) { c[0].State = model.StateDown }),
		holders: []int{0, 1, 2},
		want:    "storage-04",
	}, {
		name:    "a down holder is still never the target",
		cands:   six(func(c []Candidate) { c[0].State = model.StateDown; c[5].UsedBytes = 1 }),
		holders: []int{0, 1, 2, 3},
		want:    "storage-05",
		// rack-1 (storage-04 live) rack-2, rack-3 all have live copies: relaxed
		wantRelaxed: true,
	}, {
		name:    "least loaded among rack-eligible",
		cands:   withUsed(cluster(9, 3), 0, 0, 0, 1, 0, 0, 2),
		holders: []int{1, 2}, // racks 2 and 3 hold copies: rack-1 = storage-01,04,07
		opt:     TargetOptions{},
		want:    "storage-01",
	}, {
		name:    "in-flight bytes count",
		cands:   func() []Candidate { c := cluster(9, 3); c[0].PendingBytes = 5; c[3].UsedBytes = 3; return c }(),
		holders: []int{1, 2},
		want:    "storage-07",
	}, {
		// storage-01 is the emptiest but already writing; storage-04 holds
		// 1 GiB more of 1 TiB (same 1% band) and is idle; storage-07 idle but
		// in a fuller band.
		name:    "fill band: an idle node within the band beats the emptiest busy one",
		cands:   busyEmptiest(1<<30, 20<<30),
		holders: []int{1, 2},
		opt:     TargetOptions{FillBand: 0.01},
		want:    "storage-04",
	}, {
		// storage-01 has one batched task of 64 MiB on its way, storage-04
		// two tasks of 1 MiB: within the band the bytes queued decide.
		name: "fill band: bytes on their way count before tasks (a batch is one task)",
		cands: func() []Candidate {
			c := busyEmptiest(1<<30, 20<<30)
			c[0].PendingBytes = 64 << 20
			c[3].PendingTasks, c[3].PendingBytes = 2, 1<<20
			return c
		}(),
		holders: []int{1, 2},
		opt:     TargetOptions{FillBand: 0.01},
		want:    "storage-04",
	}, {
		name:    "no fill band: the exact fill decides",
		cands:   busyEmptiest(1<<30, 20<<30),
		holders: []int{1, 2},
		want:    "storage-01",
	}, {
		name:    "fill band: a fuller band still loses to a busy node",
		cands:   busyEmptiest(20<<30, 30<<30),
		holders: []int{1, 2},
		opt:     TargetOptions{FillBand: 0.01},
		want:    "storage-01",
	}, {
		name:    "suspect, maintenance and down are not targets",
		cands:   six(func(c []Candidate) { c[3].State = model.StateSuspect; c[0].State = model.StateDown; c[5].UsedBytes = 1 }),
		holders: []int{0, 1, 2},
		want:    "storage-05",
		// rack-1's other node is suspect: relax
		wantRelaxed: true,
	}, {
		name:    "throttled rack-eligible node: busy, not relaxed",
		cands:   six(func(c []Candidate) { c[0].State = model.StateDown; c[3].PendingTasks = 4 }),
		holders: []int{0, 1, 2},
		opt:     TargetOptions{MaxTasks: 4},
		wantErr: ErrBusy,
	}, {
		name:    "excluded target",
		cands:   withUsed(cluster(9, 3), 0, 0, 0, 0, 0, 0, 1),
		holders: []int{1, 2},
		opt:     TargetOptions{Exclude: []int{0}},
		want:    "storage-04",
	}, {
		name:    "no room anywhere",
		cands:   func() []Candidate { c := cluster(4, 4); c[3].CapacityBytes = 10; return c }(),
		holders: []int{0, 1, 2},
		opt:     TargetOptions{Size: 11},
		wantErr: ErrNoTarget,
	}, {
		name:    "every node holds it",
		cands:   cluster(3, 3),
		holders: []int{0, 1, 2},
		wantErr: ErrNoTarget,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseTarget(tt.holders, tt.cands, tt.opt)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v (target %+v), want %v", err, got, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.cands[got.Index].ID != tt.want || got.RackRelaxed != tt.wantRelaxed {
				t.Fatalf("target %s relaxed=%v, want %s relaxed=%v", tt.cands[got.Index].ID, got.RackRelaxed, tt.want, tt.wantRelaxed)
			}
		})
	}
}

func TestChooseSourceTable(t *testing.T) {
	six := func(mod func(c []Candidate)) []Candidate { c := cluster(6, 3); mod(c); return c }
	tests := []struct {
		name     string
		cands    []Candidate
		holders  []int
		maxReads int
		want     string
		wantErr  error
	}{{
		name:    "least busy up holder",
		cands:   six(func(c []Candidate) { c[0].State = model.StateDown; c[1].Reads = 2; c[2].Reads = 1 }),
		holders: []int{0, 1, 2},
		want:    "storage-03",
	}, {
		name:    "suspect only when no up holder",
		cands:   six(func(c []Candidate) { c[0].State = model.StateDown; c[1].State = model.StateSuspect; c[2].Reads = 3 }),
		holders: []int{0, 1, 2},
		want:    "storage-03",
	}, {
		name: "suspect when nothing else",
		cands: six(func(c []Candidate) {
			c[0].State = model.StateDown
			c[1].State = model.StateSuspect
			c[2].State = model.StateDown
		}),
		holders: []int{0, 1, 2},
		want:    "storage-02",
	}, {
		name:     "up holders throttled: busy, suspect not used",
		cands:    six(func(c []Candidate) { c[0].State = model.StateSuspect; c[1].Reads = 4; c[2].Reads = 4 }),
		holders:  []int{0, 1, 2},
		maxReads: 4,
		wantErr:  ErrBusy,
	}, {
		name:    "no live holder",
		cands:   six(func(c []Candidate) { c[0].State = model.StateDown }),
		holders: []int{0},
		wantErr: ErrNoSource,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseSource(tt.holders, tt.cands, SourceOptions{MaxReads: tt.maxReads})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.cands[got].ID != tt.want {
				t.Fatalf("source %s, want %s", tt.cands[got].ID, tt.want)
			}
		})
	}
}

// randomCluster draws a cluster of 3..30 nodes on 1..8 racks, most of them up.
func randomCluster(r *rand.Rand) []Candidate {
	n := 3 + r.IntN(28)
	racks := 1 + r.IntN(8)
	cs := make([]Candidate, n)
	states := []model.State{model.StateUp, model.StateUp, model.StateUp, model.StateUp, model.StateUp,
		model.StateSuspect, model.StateDown, model.StateMaintenance}
	for i := range cs {
		cs[i] = Candidate{
			ID:            fmt.Sprintf("n%02d", i),
			Rack:          fmt.Sprintf("r%d", r.IntN(racks)),
			State:         states[r.IntN(len(states))],
			CapacityBytes: 1 << 40,
			UsedBytes:     r.Int64N(1 << 30),
		}
	}
	return cs
}

func TestAllocateProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 2000; iter++ {
		cs := randomCluster(r)
		rf := 1 + r.IntN(5)
		upRacks := map[string]int{}
		up := 0
		for _, c := range cs {
			if c.State == model.StateUp {
				up++
				upRacks[c.Rack]++
			}
		}
		sizes := shards(1+r.IntN(20), 0)
		for i := range sizes {
			sizes[i].Size = r.Int64N(4 << 20)
		}
		got, err := Allocate(cs, rf, sizes)
		if up < rf {
			if !errors.Is(err, ErrNotEnoughNodes) {
				t.Fatalf("iter %d: %d up, rf %d: err = %v, want ErrNotEnoughNodes", iter, up, rf, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		for s, picks := range got {
			if len(picks) != rf {
				t.Fatalf("iter %d shard %d: %d nodes, want %d", iter, s, len(picks), rf)
			}
			seen := map[int]bool{}
			perRack := map[string]int{}
			for _, p := range picks {
				if seen[p] {
					t.Fatalf("iter %d shard %d: node %s twice", iter, s, cs[p].ID)
				}
				seen[p] = true
				if cs[p].State != model.StateUp {
					t.Fatalf("iter %d shard %d: node %s is %s", iter, s, cs[p].ID, cs[p].State)
				}
				perRack[cs[p].Rack]++
			}
			if len(upRacks) >= rf && len(perRack) != rf {
				t.Fatalf("iter %d shard %d: %d up racks, rf %d, but racks %v", iter, s, len(upRacks), rf, perRack)
			}
			// Fewer racks: as even as the racks' sizes permit.
			for rack, k := range perRack {
				for other, cap := range upRacks {
					if other != rack && perRack[other] < cap && k > perRack[other]+1 {
						t.Fatalf("iter %d shard %d: uneven rack spread %v (up per rack %v)", iter, s, perRack, upRacks)
					}
				}
			}
		}
	}
}

// maxOverMean returns max/mean of the counts.
func maxOverMean(counts []int) float64 {
	var sum, maxc int
	for _, c := range counts {
		sum += c
		maxc = max(maxc, c)
	}
	if sum == 0 {
		return 0
	}
	return float64(maxc) / (float64(sum) / float64(len(counts)))
}

func TestAllocateBalances(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 200; iter++ {
		racks := 1 + r.IntN(6)
		n := racks * (1 + r.IntN(5))
		rf := 1 + r.IntN(min(n, 4))
		cs := cluster(n, racks)
		sizes := shards(300+r.IntN(700), 4<<20)
		// Allocate in batches of random size, feeding back what was placed.
		counts := make([]int, n)
		for done := 0; done < len(sizes); {
			batch := min(len(sizes)-done, 1+r.IntN(50))
			got, err := Allocate(cs, rf, sizes[done:done+batch])
			if err != nil {
				t.Fatal(err)
			}
			for s, picks := range got {
				for _, p := range picks {
					counts[p]++
					cs[p].UsedBytes += sizes[done+s].Size
				}
			}
			done += batch
		}
		if mm := maxOverMean(counts); mm > 1.25 {
			t.Fatalf("iter %d: %d nodes, %d racks, rf %d: max/mean %.3f > 1.25 (%v)", iter, n, racks, rf, mm, counts)
		}
	}
}

func TestAllocateBalancesBytesOfMixedSizes(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	cs := cluster(12, 4)
	sizes := shards(5000, 0)
	for i := range sizes {
		sizes[i].Size = 1 + r.Int64N(8<<20)
	}
	got, err := Allocate(cs, 3, sizes)
	if err != nil {
		t.Fatal(err)
	}
	bytes := make([]int64, len(cs))
	for s, picks := range got {
		for _, p := range picks {
			bytes[p] += sizes[s].Size
		}
	}
	lo, hi := slices.Min(bytes), slices.Max(bytes)
	if float64(hi-lo) > 8<<20 {
		t.Fatalf("bytes per node spread %d..%d: more than one shard apart", lo, hi)
	}
}

// TestRehomeSpreads allocates a balanced cluster, kills one node and re-homes
// every shard it held, as the planner would (each choice counts as pending).
func TestRehomeSpreads(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for iter := 0; iter < 100; iter++ {
		racks := 3 + r.IntN(5)
		n := racks * (1 + r.IntN(4))
		if n < 4 {
			n = racks * 2
		}
		const rf = 3
		cs := cluster(n, racks)
		sizes := shards(200*n, 4<<20)
		got, err := Allocate(cs, rf, sizes)
		if err != nil {
			t.Fatal(err)
		}
		for s, picks := range got {
			for _, p := range picks {
				cs[p].UsedBytes += sizes[s].Size
			}
		}
		dead := r.IntN(n)
		cs[dead].State = model.StateDown
		received := make([]int, n)
		eligible := make([]bool, n)
		for s, picks := range got {
			if !slices.Contains(picks, dead) {
				continue
			}
			liveRacks := map[string]bool{}
			for _, p := range picks {
				if p != dead {
					liveRacks[cs[p].Rack] = true
				}
			}
			strictExists := false
			for i, c := range cs {
				if c.State == model.StateUp && !slices.Contains(picks, i) && !liveRacks[c.Rack] {
					strictExists = true
					eligible[i] = true
				}
			}
			tg, err := ChooseTarget(picks, cs, TargetOptions{Size: sizes[s].Size, Salt: Salt(sizes[s].ID)})
			if err != nil {
				t.Fatalf("iter %d shard %d: %v", iter, s, err)
			}
			if slices.Contains(picks, tg.Index) || cs[tg.Index].State != model.StateUp {
				t.Fatalf("iter %d shard %d: target %s holds it or is not up", iter, s, cs[tg.Index].ID)
			}
			if strictExists && (tg.RackRelaxed || liveRacks[cs[tg.Index].Rack]) {
				t.Fatalf("iter %d shard %d: target %s in a rack with a live copy though another existed", iter, s, cs[tg.Index].ID)
			}
			received[tg.Index]++
			cs[tg.Index].PendingBytes += sizes[s].Size
		}
		var counts []int
		for i, ok := range eligible {
			if ok {
				counts = append(counts, received[i])
			}
		}
		if mm := maxOverMean(counts); mm > 1.25 {
			t.Fatalf("iter %d: %d nodes %d racks: re-homed max/mean %.3f > 1.25 over survivors (%v)", iter, n, racks, mm, counts)
		}
	}
}

func TestChooseTargetProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for iter := 0; iter < 5000; iter++ {
		cs := randomCluster(r)
		k := 1 + r.IntN(min(len(cs), 5))
		holders := r.Perm(len(cs))[:k]
		maxTasks := r.IntN(3)
		for i := range cs {
			cs[i].PendingTasks = r.IntN(3)
		}
		tg, err := ChooseTarget(holders, cs, TargetOptions{MaxTasks: maxTasks})
		if err != nil {
			continue
		}
		c := cs[tg.Index]
		if slices.Contains(holders, tg.Index) || c.State != model.StateUp {
			t.Fatalf("iter %d: target %s (%s) holds the shard or is not up", iter, c.ID, c.State)
		}
		if maxTasks > 0 && c.PendingTasks >= maxTasks {
			t.Fatalf("iter %d: target %s over its task limit", iter, c.ID)
		}
		liveRacks := map[string]bool{}
		for _, h := range holders {
			if cs[h].State.Live() {
				liveRacks[cs[h].Rack] = true
			}
		}
		if tg.RackRelaxed != liveRacks[c.Rack] {
			t.Fatalf("iter %d: target %s relaxed=%v but its rack holds a live copy=%v", iter, c.ID, tg.RackRelaxed, liveRacks[c.Rack])
		}
	}
}

// TestRehomeSpreadsOverAllSurvivors: with one node per rack (every survivor
// may receive), a dead node's replicas spread over all survivors, which needs
// allocation not to pair nodes into fixed groups.
func TestRehomeSpreadsOverAllSurvivors(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for iter := 0; iter < 30; iter++ {
		n := 5 + r.IntN(16)
		cs := cluster(n, n)
		var got [][]int
		// One shard per call, as objects are written one by one.
		for s := 0; s < 60*n; s++ {
			sh := Shard{ID: fmt.Sprintf("obj-%d-%d", iter, s), Size: 16 << 10}
			p, err := Allocate(cs, 3, []Shard{sh})
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range p[0] {
				cs[x].UsedBytes += sh.Size
			}
			got = append(got, p[0])
		}
		dead := r.IntN(n)
		cs[dead].State = model.StateDown
		received := make([]int, n)
		for s, picks := range got {
			if !slices.Contains(picks, dead) {
				continue
			}
			id := fmt.Sprintf("obj-%d-%d", iter, s)
			tg, err := ChooseTarget(picks, cs, TargetOptions{Size: 16 << 10, Salt: Salt(id)})
			if err != nil {
				t.Fatal(err)
			}
			received[tg.Index]++
			cs[tg.Index].PendingBytes += 16 << 10
		}
		survivors := slices.Delete(slices.Clone(received), dead, dead+1)
		if mm := maxOverMean(survivors); mm > 1.25 {
			t.Fatalf("iter %d: %d nodes: re-homed max/mean %.3f > 1.25 (%v)", iter, n, mm, survivors)
		}
	}
}

func TestChooseTargetMaxFill(t *testing.T) {
	cs := cluster(6, 3) // rack-1: storage-01 (down), storage-04
	cs[0].State = model.StateDown
	for i := range cs {
		cs[i].CapacityBytes = 1000
	}
	cs[3].OtherBytes = 850 // heartbeat says 85% used
	tg, err := ChooseTarget([]int{0, 1, 2}, cs, TargetOptions{Size: 40, MaxFill: 0.9})
	if err != nil || cs[tg.Index].ID != "storage-04" || tg.RackRelaxed {
		t.Fatalf("40 bytes fit below 90%%: got %+v %v", tg, err)
	}
	tg, err = ChooseTarget([]int{0, 1, 2}, cs, TargetOptions{Size: 60, MaxFill: 0.9})
	if err != nil || cs[tg.Index].ID == "storage-04" || !tg.RackRelaxed {
		t.Fatalf("60 bytes would take storage-04 past 90%%: got %s relaxed=%v %v, want another rack, relaxed", cs[tg.Index].ID, tg.RackRelaxed, err)
	}
	cs[3].PendingBytes = 60 // copies in flight count too
	if tg, err = ChooseTarget([]int{0, 1, 2}, cs, TargetOptions{Size: 40, MaxFill: 0.9}); err != nil || !tg.RackRelaxed {
		t.Fatalf("in-flight bytes ignored: %+v %v", tg, err)
	}
}

func TestChooseSourceNearestRackAmongEquallyBusy(t *testing.T) {
	cs := cluster(6, 3) // racks: 1 {01,04} 2 {02,05} 3 {03,06}
	holders := []int{1, 2, 3}
	for _, rack := range []string{"rack-1", "rack-2", "rack-3"} {
		got, err := ChooseSource(holders, cs, SourceOptions{TargetRack: rack})
		if err != nil || cs[got].Rack != rack {
			t.Fatalf("target in %s: source %s, want the holder in that rack", rack, cs[got].ID)
		}
	}
	// Busy beats near: the rack-1 holder reads one copy already.
	cs[3].Reads = 1
	got, _ := ChooseSource(holders, cs, SourceOptions{TargetRack: "rack-1"})
	if cs[got].Rack == "rack-1" {
		t.Fatalf("source %s: a busier near holder chosen over idle ones", cs[got].ID)
	}
}

func TestChooseSurplusTable(t *testing.T) {
	six := func(mod func(c []Candidate)) []Candidate {
		c := cluster(6, 3)
		for i := range c {
			c[i].CapacityBytes = 1000
		}
		mod(c)
		return c
	}
	tests := []struct {
		name    string
		cands   []Candidate
		holders []int
		copies  int
		want    string
		wantErr error
	}{{
		name:    "the copy sharing its rack goes, even on an emptier node",
		cands:   six(func(c []Candidate) { c[0].UsedBytes = 100; c[3].UsedBytes = 10; c[1].UsedBytes = 900 }),
		holders: []int{0, 1, 2, 3}, // storage-01 and -04 share rack-1
		copies:  3,
		want:    "storage-01",
	}, {
		name:    "then the fullest node",
		cands:   six(func(c []Candidate) { c[3].OtherBytes = 500 }),
		holders: []int{0, 1, 2, 3},
		copies:  3,
		want:    "storage-04",
	}, {
		name:    "then the returning node",
		cands:   six(func(c []Candidate) { c[3].Returning = true }),
		holders: []int{0, 1, 2, 3},
		copies:  3,
		want:    "storage-04",
	}, {
		name:    "distinct racks: the fullest",
		cands:   func() []Candidate { c := cluster(4, 4); c[2].UsedBytes = 7; return c }(),
		holders: []int{0, 1, 2, 3},
		copies:  3,
		want:    "storage-03",
	}, {
		name:    "never a suspect holder, never below copies up",
		cands:   six(func(c []Candidate) { c[3].State = model.StateSuspect }),
		holders: []int{0, 1, 2, 3},
		copies:  3,
		wantErr: ErrNoSurplus,
	}, {
		name:    "a down holder does not count",
		cands:   six(func(c []Candidate) { c[0].State = model.StateDown }),
		holders: []int{0, 1, 2, 3},
		copies:  3,
		wantErr: ErrNoSurplus,
	}, {
		name:    "a down holder in the rack does not make it shared",
		cands:   six(func(c []Candidate) { c[0].State = model.StateDown; c[4].OtherBytes = 1 }),
		holders: []int{0, 1, 2, 3, 4}, // 4 up: 02 and 05 share rack-2
		copies:  3,
		want:    "storage-05",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseSurplus(tt.holders, tt.cands, tt.copies, Salt("s"))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v (got %d), want %v", err, got, tt.wantErr)
				}
				return
			}
			if err != nil || tt.cands[got].ID != tt.want {
				t.Fatalf("chose %v (err %v), want %s", got, err, tt.want)
			}
		})
	}
}

func TestChooseSurplusProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for iter := 0; iter < 3000; iter++ {
		cs := randomCluster(r)
		k := 1 + r.IntN(min(len(cs), 6))
		holders := r.Perm(len(cs))[:k]
		copies := 1 + r.IntN(3)
		got, err := ChooseSurplus(holders, cs, copies, uint64(iter))
		up := 0
		for _, h := range holders {
			if cs[h].State == model.StateUp {
				up++
			}
		}
		if up <= copies {
			if !errors.Is(err, ErrNoSurplus) {
				t.Fatalf("iter %d: %d up holders, %d copies: chose %d", iter, up, copies, got)
			}
			continue
		}
		if err != nil || !slices.Contains(holders, got) || cs[got].State != model.StateUp {
			t.Fatalf("iter %d: chose %d (%v): not an up holder", iter, got, err)
		}
		// If any up holder shares its rack with another live holder, the choice does.
		shares := func(h int) bool {
			for _, o := range holders {
				if o != h && cs[o].State.Live() && cs[o].Rack == cs[h].Rack {
					return true
				}
			}
			return false
		}
		if !shares(got) && slices.ContainsFunc(holders, func(h int) bool { return cs[h].State == model.StateUp && shares(h) }) {
			t.Fatalf("iter %d: chose %s in a rack of its own while another copy shares a rack", iter, cs[got].ID)
		}
	}
}
