package sim

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSimSchedules runs seeded fault schedules on 30 nodes, one per
// core at once, and reports schedules per hour of wall time.
func BenchmarkSimSchedules(b *testing.B) {
	seeds := Seeds(11, 1<<16)
	var next atomic.Int64
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			if res := Run(Defaults(), seeds[int(i)%len(seeds)], nil); res.Violation != nil {
				b.Errorf("seed %d: %v", res.Seed, res.Violation)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Hours(), "schedules/h")
}

// BenchmarkSimLoss estimates the probability of losing data when 1% of
// 5,000 nodes fail at once, RF 3, for random placement and for copysets of
// scatter width 2 and 10 (SPEC §11), and for 4+2 stripes placed at random,
// each cluster holding 3,000 shards (pieces) per node. REHOME_BENCH_QUICK runs fewer trials.
func BenchmarkSimLoss(b *testing.B) {
	trials := 20000
	if os.Getenv("REHOME_BENCH_QUICK") != "" {
		trials = 2000
	}
	base := LossConfig{Nodes: 5000, FailShare: 0.01, Trials: trials, ShardsPerNode: 3000, Seed: 5}
	for b.Loop() {
		rnd := base
		rnd.Placement, rnd.Sample = "random", 20000
		r, err := LossProbability(rnd)
		if err != nil {
			b.Fatal(err)
		}
		c2, c10 := base, base
		c2.Placement, c2.Scatter, c2.Sample = "copyset", 2, 20000
		c10.Placement, c10.Scatter, c10.Sample = "copyset", 10, 60000
		rc2, err := LossProbability(c2)
		if err != nil {
			b.Fatal(err)
		}
		rc10, err := LossProbability(c10)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(100*r.Probability, "random_loss_%")
		b.ReportMetric(r.PerShard*1e6, "random_per_shard_ppm")
		b.ReportMetric(100*rc2.Probability, "copyset_loss_%")
		b.ReportMetric(float64(rc2.Groups), "copysets")
		b.ReportMetric(100*rc10.Probability, "copyset_s10_loss_%")
		ec := base
		ec.Placement, ec.Layout, ec.Sample = "random", "ec=4+2", 20000
		rec, err := LossProbability(ec)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(100*rec.Probability, "ec4+2_loss_%")
		b.ReportMetric(rec.PerShard*1e6, "ec4+2_per_stripe_ppm")
	}
}

// BenchmarkSimRestore measures, on the virtual clock, the time from a
// node's down verdict to every shard whole again at 100, 1,000 and 10,000
// nodes, each holding 300 shards of 1 GiB on 100 MiB/s disks, the planner
// allowing 1,024 copies at once (the cluster's bandwidth cap) and 2 per
// node each way; and at 100 nodes under copysets of scatter width 2 and 10.
func BenchmarkSimRestore(b *testing.B) {
	type shape struct {
		nodes     int
		placement string
		scatter   int
	}
	shapes := []shape{{100, "random", 0}, {1000, "random", 0}, {10000, "random", 0},
		{100, "copyset", 2}, {100, "copyset", 10}}
	if os.Getenv("REHOME_BENCH_QUICK") != "" {
		shapes = shapes[:2]
	}
	for _, s := range shapes {
		name := fmt.Sprintf("nodes=%d/%s", s.nodes, s.placement)
		if s.placement == "copyset" {
			name += fmt.Sprintf("/scatter=%d", s.scatter)
		}
		b.Run(name, func(b *testing.B) {
			cfg := RestoreShape(s.nodes, 300, s.placement, s.scatter)
			for b.Loop() {
				start := time.Now()
				d, res := Restore(cfg, 1)
				if res.Violation != nil || d <= 0 {
					b.Fatalf("restore %s: %v", d, res.Violation)
				}
				b.ReportMetric(d.Seconds(), "restore_s")
				b.ReportMetric(float64(res.Copies), "copies")
				b.ReportMetric(time.Since(start).Seconds(), "wall_s")
			}
		})
	}
}

// BenchmarkSimScenarios plays one rack lost, a second failure during
// repair, and a rack lost then a node of another rack during its repair, on
// 30 nodes in 6 racks holding 300 objects of 1 GiB, 50 seeds each: as RF 3
// shards under random placement and copysets of scatter width 4, and as 4+2
// stripes (pieces of 256 MiB). It reports the share of runs that lost data,
// the stripes or shards lost per run, the mean restore time and the mean
// time some shard spent at RF-1 and RF-2 copies (a stripe one and two
// pieces short), in virtual seconds.
func BenchmarkSimScenarios(b *testing.B) {
	for _, lay := range []struct{ name, layout, placement string }{
		{"random", "rf=3", "random"}, {"copyset", "rf=3", "copyset"}, {"ec4+2", "ec=4+2", "random"},
	} {
		for _, sc := range []Scenario{OneRack, SecondDuringRepair, RackThenNode} {
			b.Run(fmt.Sprintf("%s/%s", sc, lay.name), func(b *testing.B) {
				cfg := Config{Nodes: 30, Racks: 6, Shards: 300, ShardSize: 1 << 30, Placement: lay.placement, Scatter: 4, Layout: lay.layout}
				for b.Loop() {
					res, err := PlayScenario(cfg, sc, Seeds(21, 50))
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(100*float64(res.LossRuns)/float64(res.Runs), "loss_runs_%")
					b.ReportMetric(float64(res.LostShards)/float64(res.Runs), "lost/run")
					b.ReportMetric(res.Restore.Seconds(), "restore_s")
					b.ReportMetric(res.AtRF1.Seconds(), "at_rf-1_s")
					b.ReportMetric(res.AtRF2.Seconds(), "at_rf-2_s")
				}
			})
		}
	}
}
