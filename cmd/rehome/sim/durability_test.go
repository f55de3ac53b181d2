package sim

import (
	"testing"
	"time"
)

// TestCopysetsCutLossProbability: on 500 nodes losing 5% at once, copyset
// placement (scatter width 2) loses data far less often than random
// placement of the same cluster.
func TestCopysetsCutLossProbability(t *testing.T) {
	base := LossConfig{Nodes: 500, FailShare: 0.05, Trials: 2000, Sample: 3000, ShardsPerNode: 300, Seed: 1}
	rnd, cs := base, base
	rnd.Placement = "random"
	cs.Placement, cs.Scatter = "copyset", 2
	r, err := LossProbability(rnd)
	if err != nil {
		t.Fatal(err)
	}
	c, err := LossProbability(cs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("random: %+v; copyset: %+v", r, c)
	if r.Probability < 0.5 || c.Probability > r.Probability/4 {
		t.Fatalf("loss probability random %.4f, copyset %.4f: want random high and copyset well below", r.Probability, c.Probability)
	}
	if c.Groups > 200 {
		t.Fatalf("scatter width 2 on 500 nodes: %d copysets, want about 167", c.Groups)
	}
}

// TestRestoreFasterWithMoreNodes: a node's loss is restored faster on a
// larger cluster holding as much per node (more sources and targets).
func TestRestoreFasterWithMoreNodes(t *testing.T) {
	times := map[int]time.Duration{}
	for _, n := range []int{12, 48} {
		cfg := Config{Nodes: n, Shards: n * 40 / RF, ShardSize: 1 << 30}
		d, res := Restore(cfg, 1)
		if res.Violation != nil || d <= 0 {
			t.Fatalf("%d nodes: restore %s, violation %v", n, d, res.Violation)
		}
		times[n] = d
	}
	if times[48]*2 > times[12] {
		t.Fatalf("restore on 12 nodes %s, on 48 %s: want at least twice as fast", times[12], times[48])
	}
}

// TestScenarios: one rack lost leaves every shard two copies (rack-aware
// RF 3) and loses nothing; a second failure during repair leaves some
// shards at one copy for a while and, two failures being fewer than three,
// loses nothing either.
func TestScenarios(t *testing.T) {
	cfg := Config{Nodes: 12, Racks: 4, Shards: 120, ShardSize: 1 << 30}
	rack, err := PlayScenario(cfg, OneRack, Seeds(1, 3))
	if err != nil {
		t.Fatal(err)
	}
	second, err := PlayScenario(cfg, SecondDuringRepair, Seeds(1, 3))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rack %+v; second %+v", rack, second)
	if rack.LossRuns != 0 || rack.AtRF2 != 0 || rack.AtRF1 <= 0 || rack.Restore <= 0 {
		t.Errorf("one rack lost: %+v, want no loss, no shard at RF-2, some time at RF-1", rack)
	}
	if second.LossRuns != 0 || second.AtRF2 <= 0 {
		t.Errorf("second failure during repair: %+v, want no loss and some time at RF-2", second)
	}
	// 4+2 stripes: placement.AllocateStripes puts at most M = 2 pieces of a
	// stripe in a rack (not one per rack), so a rack's loss takes up to two
	// pieces of a stripe, as do two failures: neither loses data.
	ec := Config{Nodes: 12, Racks: 6, Shards: 60, ShardSize: 1 << 30, Layout: "ec=4+2"}
	ecRack, err := PlayScenario(ec, OneRack, Seeds(1, 3))
	if err != nil {
		t.Fatal(err)
	}
	ecSecond, err := PlayScenario(ec, SecondDuringRepair, Seeds(1, 3))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("4+2: rack %+v; second %+v", ecRack, ecSecond)
	if ecRack.LossRuns != 0 || ecRack.AtRF1+ecRack.AtRF2 <= 0 || ecRack.Restore <= 0 {
		t.Errorf("4+2, one rack lost: %+v, want no loss, some stripe short of a piece for a while", ecRack)
	}
	if ecSecond.LossRuns != 0 || ecSecond.AtRF2 <= 0 {
		t.Errorf("4+2, second failure during repair: %+v, want no loss and some stripe short of two pieces", ecSecond)
	}
	if _, err := PlayScenario(cfg, "flood", Seeds(1, 1)); err == nil {
		t.Error("unknown scenario: no error")
	}
}
