package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/model"
)

// LossConfig shapes a Monte-Carlo estimate of the probability that a
// simultaneous failure of a share of the nodes loses data (every copy of
// some shard), over placements made by the real placement functions.
type LossConfig struct {
	Nodes, Racks int
	// FailShare is the share of nodes failing at once (0.01: 1%).
	FailShare float64
	// Trials is the number of random failure sets drawn.
	Trials int
	// Placement is "random" (placement.Allocate) or "copyset" (NewCopysets,
	// AllocateCopysets) with Scatter as the scatter width.
	Placement string
	Scatter   int
	// Layout is "rf=3" (the default) or "ec=K+M": stripes placed by
	// placement.AllocateStripes (random placement only), lost when more
	// than M of their pieces fail.
	Layout string
	// Sample is how many shards are actually placed; ShardsPerNode sizes
	// the cluster the estimate is for (Nodes × ShardsPerNode / RF shards).
	Sample, ShardsPerNode int
	Seed                  uint64
}

// LossResult is the estimate.
type LossResult struct {
	// Probability of losing at least one shard of the whole cluster.
	Probability float64
	// SampleProbability is the share of trials that lost a shard of the
	// sample itself; PerShard the chance that one given shard is lost.
	SampleProbability, PerShard float64
	// Groups is the number of distinct replica groups the sample used.
	Groups int
	// ClusterShards is the number of shards Probability is for.
	ClusterShards int
}

// LossProbability places cfg.Sample shards with the real placement code
// and draws cfg.Trials failure sets of FailShare × Nodes nodes.
//
// Random placement gives each shard an independent group, so the whole
// cluster's probability is 1 − (1 − PerShard)^ClusterShards, PerShard
// being measured on the sample. Copyset placement puts every shard on one
// of a few groups, each used once the cluster holds many more shards than
// groups (the sample checks that it used them all): the probability is the
// share of trials in which some copyset failed whole.
func LossProbability(cfg LossConfig) (LossResult, error) {
	if cfg.Racks <= 0 {
		cfg.Racks = max(3, cfg.Nodes/5)
	}
	cands := make([]placement.Candidate, cfg.Nodes)
	for i := range cands {
		cands[i] = placement.Candidate{ID: fmt.Sprintf("storage-%d", i+1), Rack: fmt.Sprintf("rack-%d", i%cfg.Racks+1),
			State: model.StateUp, CapacityBytes: 1 << 50}
	}
	shards := make([]placement.Shard, cfg.Sample)
	for i := range shards {
		shards[i] = placement.Shard{ID: fmt.Sprintf("sh-%07d", i), Size: 64 << 20}
	}
	lay := model.Layout{RF: RF}
	if cfg.Layout != "" {
		l, err := model.ParseLayout(cfg.Layout)
		if err != nil || !l.Erasure() && l.RF != RF || l.Erasure() && cfg.Placement != "random" {
			return LossResult{}, fmt.Errorf("sim: layout %q with %s placement: want rf=%d, or ec=K+M placed at random", cfg.Layout, cfg.Placement, RF)
		}
		lay = l
	}
	var groups [][]int
	res := LossResult{ClusterShards: cfg.Nodes * cfg.ShardsPerNode / RF}
	tolerate := RF - 1
	switch {
	case lay.Erasure():
		tolerate = lay.M
		res.ClusterShards = cfg.Nodes * cfg.ShardsPerNode / (lay.K + lay.M)
		stripes := make([][]placement.Shard, cfg.Sample)
		for i := range stripes {
			for p := range lay.K + lay.M {
				stripes[i] = append(stripes[i], placement.Shard{ID: fmt.Sprintf("sh-%07d-%d", i, p), Size: 16 << 20})
			}
		}
		picks, err := placement.AllocateStripes(cands, lay.K, lay.M, stripes)
		if err != nil {
			return res, err
		}
		groups = picks
	}
	switch {
	case lay.Erasure():
	case cfg.Placement == "copyset":
		cs, err := placement.NewCopysets(cands, RF, cfg.Scatter, cfg.Seed)
		if err != nil {
			return res, err
		}
		picks, err := placement.AllocateCopysets(cands, cs, shards)
		if err != nil {
			return res, err
		}
		used := map[[RF]int]bool{}
		for _, p := range picks {
			used[key(p)] = true
		}
		if len(used) < len(cs.Sets()) {
			return res, fmt.Errorf("sim: %d shards used %d of %d copysets: sample more", cfg.Sample, len(used), len(cs.Sets()))
		}
		groups = cs.Sets()
	case cfg.Placement == "random":
		picks, err := placement.Allocate(cands, RF, shards)
		if err != nil {
			return res, err
		}
		groups = picks
	default:
		return res, fmt.Errorf("sim: placement %q: want random or copyset", cfg.Placement)
	}
	distinct := map[string]bool{}
	for _, g := range groups {
		k := slices.Clone(g)
		slices.Sort(k)
		distinct[fmt.Sprint(k)] = true
	}
	res.Groups = len(distinct)
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6c6f7373)) // "loss"
	failed := make([]bool, cfg.Nodes)
	k := max(1, int(math.Round(cfg.FailShare*float64(cfg.Nodes))))
	hits, lossTrials := 0, 0
	for range cfg.Trials {
		clear(failed)
		for _, i := range rng.Perm(cfg.Nodes)[:k] {
			failed[i] = true
		}
		n := 0
		for _, g := range groups {
			down := 0
			for _, x := range g {
				if failed[x] {
					down++
				}
			}
			if down > tolerate {
				n++
			}
		}
		hits += n
		if n > 0 {
			lossTrials++
		}
	}
	res.SampleProbability = float64(lossTrials) / float64(cfg.Trials)
	res.PerShard = float64(hits) / float64(cfg.Trials) / float64(len(groups))
	if cfg.Placement == "copyset" && !lay.Erasure() {
		res.Probability = res.SampleProbability
	} else {
		res.Probability = 1 - math.Pow(1-res.PerShard, float64(res.ClusterShards))
	}
	return res, nil
}

func key(g []int) [RF]int {
	var k [RF]int
	copy(k[:], g)
	if k[0] > k[1] {
		k[0], k[1] = k[1], k[0]
	}
	if k[1] > k[2] {
		k[1], k[2] = k[2], k[1]
	}
	if k[0] > k[1] {
		k[0], k[1] = k[1], k[0]
	}
	return k
}

// Restore runs cfg's cluster with no fault but one node stopping for good
// and returns the time from the detector's down verdict to every shard
// whole again (restore time), and the run.
func Restore(cfg Config, seed uint64) (time.Duration, Result) {
	cfg = cfg.withDefaults()
	res := Run(cfg, seed, Schedule{{At: 5 * time.Second, Kind: CrashStop, Nodes: []int{0}}})
	if res.Violation != nil || res.FirstDown == 0 {
		return 0, res
	}
	return res.Healthy - res.FirstDown, res
}

// RestoreShape is the cluster of the restore figures: n nodes on n/5
// racks, each holding perNode shards of 1 GiB on 100 MiB/s disks; the
// planner allows 2 copies per node each way and 1,024 at once in the
// cluster (its bandwidth cap: 100 GiB/s).
func RestoreShape(n, perNode int, place string, scatter int) Config {
	cfg := Config{Nodes: n, Shards: n * perNode / RF, ShardSize: 1 << 30, Bandwidth: 100 << 20,
		Bound: 48 * time.Hour, Placement: place, Scatter: scatter}
	cfg.Limits = Defaults().Limits
	cfg.Limits.MaxInFlight = 1024
	return cfg.withDefaults()
}

// CopySeconds is how long one shard of cfg takes to stream between two
// idle nodes: the floor of any restore.
func CopySeconds(cfg Config) float64 {
	cfg = cfg.withDefaults()
	return float64(cfg.ShardSize) / float64(cfg.Bandwidth)
}

// Scenario names a failure the scenario figures play.
type Scenario string

const (
	// OneRack: every node of one rack stops for good at once.
	OneRack Scenario = "rack"
	// SecondDuringRepair: a node stops for good, then another during its
	// repair.
	SecondDuringRepair Scenario = "second"
	// RackThenNode: a rack is lost, then a node of another rack during the
	// repair (secondAfter later).
	RackThenNode Scenario = "rack+node"
)

// ScenarioResult sums the runs of one scenario.
type ScenarioResult struct {
	Runs, LossRuns, LostShards int
	// Restore is the mean time from the first down verdict to healthy;
	// AtRF1 and AtRF2 the mean time some shard spent with RF-1 and RF-2
	// intact copies on running nodes.
	Restore, AtRF1, AtRF2 time.Duration
}

// PlayScenario runs sc once per seed on cfg's cluster (the nodes chosen from
// the seed, the first failure a minute in, past the detector's start-up
// hold) and sums the runs.
func PlayScenario(cfg Config, sc Scenario, seeds []uint64) (ScenarioResult, error) {
	cfg = cfg.withDefaults()
	cfg.Exposure = true
	var out ScenarioResult
	var restore, rf1, rf2 time.Duration
	for _, seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 0x7363656e)) // "scen"
		f := Fault{At: time.Minute}
		var then Schedule
		switch sc {
		case OneRack, RackThenNode:
			f.Kind = RackLoss
			rack := rng.IntN(cfg.Racks)
			for i := rack; i < cfg.Nodes; i += cfg.Racks {
				f.Nodes = append(f.Nodes, i)
			}
			if sc == RackThenNode {
				other := rng.IntN(cfg.Nodes)
				for other%cfg.Racks == rack { // nodes are dealt round-robin on racks
					other = rng.IntN(cfg.Nodes)
				}
				then = Schedule{{At: time.Minute + secondAfter, Kind: CrashStop, Nodes: []int{other}}}
			}
		case SecondDuringRepair:
			f.Kind = SecondFailure
			p := rng.Perm(cfg.Nodes)
			f.Nodes = p[:2]
		default:
			return out, fmt.Errorf("sim: scenario %q: want rack, second or rack+node", sc)
		}
		res := Run(cfg, seed, append(Schedule{f}, then...))
		if res.Violation != nil {
			return out, fmt.Errorf("sim: scenario %s, seed %d: %w", sc, seed, res.Violation)
		}
		out.Runs++
		if res.Lost > 0 {
			out.LossRuns++
			out.LostShards += res.Lost
		}
		restore += res.Healthy - res.FirstDown
		rf1 += res.Exposed[RF-1]
		rf2 += res.Exposed[RF-2]
	}
	if out.Runs > 0 {
		n := time.Duration(out.Runs)
		out.Restore, out.AtRF1, out.AtRF2 = restore/n, rf1/n, rf2/n
	}
	return out, nil
}
