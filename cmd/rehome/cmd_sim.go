package main

import (
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/rehome/rehome/cmd/rehome/sim"
)

// simCmd is `rehome sim`: seeded fault schedules against the real detector
// and planner cores on a virtual clock (SPEC §10).
func simCmd() *cobra.Command {
	cfg := sim.Defaults()
	cfg.Racks, cfg.Shards = 0, 0 // derived from --nodes unless given
	var seed uint64
	var schedules int
	var keep string
	var trace bool
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "run seeded fault schedules against the real detector and planner code on a virtual clock",
		Long: `Each schedule crashes, restarts, wipes, fills, slows and rots nodes, cuts them
off the detector, kills movers and the planner, takes racks and 1% of the
nodes at once and plays operator actions, all drawn from one seed, against the
detector's and planner's own decision code. After every step it checks: nothing
lost unless more copies failed at once than RF-1, never two copies in one rack
where racks allow, the map lists only verified copies, nothing trimmed below
target, healthy within a bound once faults stop. A failure prints its seed, the
schedule shrunk to the faults that matter, and the command that replays it.

With --seed and --schedules 1 it runs that seed; otherwise --schedules seeds
drawn from --seed. --keep i,j replays only those faults of the seed's schedule.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			if schedules < 1 {
				return fmt.Errorf("sim: --schedules %d: want at least 1", schedules)
			}
			seeds := []uint64{seed}
			if schedules > 1 {
				seeds = sim.Seeds(seed, schedules)
			}
			var only []int
			if keep != "" {
				for _, f := range strings.Split(keep, ",") {
					i, err := strconv.Atoi(strings.TrimSpace(f))
					if err != nil || i < 0 {
						return fmt.Errorf("sim: --keep %q: want fault indexes like 0,2", keep)
					}
					only = append(only, i)
				}
				if len(seeds) != 1 {
					return fmt.Errorf("sim: --keep replays one seed: drop --schedules")
				}
			}
			run := cfg
			run.Trace = trace
			return runSims(cmd.OutOrStdout(), run, seeds, only)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "storage nodes")
	f.IntVar(&cfg.Racks, "racks", 0, "racks (default nodes/5, at least 3)")
	f.IntVar(&cfg.Shards, "shards", 0, "replicated shards, 3 copies each (default 10 per node)")
	f.Uint64Var(&seed, "seed", 1, "the seed (with --schedules > 1: the seed the seeds are drawn from)")
	f.IntVar(&schedules, "schedules", 1, "fault schedules to run")
	f.IntVar(&cfg.MaxFaults, "max-faults", cfg.MaxFaults, "at most this many faults per schedule")
	f.StringVar(&cfg.Placement, "placement", cfg.Placement, "initial placement: random or copyset")
	f.IntVar(&cfg.Scatter, "scatter-width", cfg.Scatter, "copyset scatter width (with --placement copyset)")
	f.StringVar(&keep, "keep", "", "replay only these faults of the seed's schedule (indexes, from a shrunk failure)")
	f.BoolVar(&trace, "trace", false, "print every event of each run")
	return cmd
}

// runSims runs seeds on cfg, two at a time per core, and reports: every
// failure (shrunk, with its replay command), then a summary line. It fails
// if any run broke an invariant.
func runSims(w io.Writer, cfg sim.Config, seeds []uint64, keep []int) error {
	results := make([]sim.Result, len(seeds))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	start := time.Now()
	for i, seed := range seeds {
		g.Go(func() error {
			var sched sim.Schedule
			if keep != nil {
				sched = sim.Pick(sim.Generate(seed, cfg.Nodes, sim.RacksOf(cfg), cfg.MaxFaults, sim.WindowOf(cfg)), keep)
			}
			results[i] = sim.Run(cfg, seed, sched)
			return nil
		})
	}
	_ = g.Wait()
	took := time.Since(start)
	failed, lost, copies := 0, 0, 0
	var slowest time.Duration
	for _, res := range results {
		for _, l := range res.Trace {
			fmt.Fprintln(w, l)
		}
		lost += res.Lost
		copies += res.Copies
		slowest = max(slowest, res.Healthy)
		if res.Violation == nil {
			continue
		}
		failed++
		shrunk, kept := res.Schedule, keep
		if keep == nil {
			shrunk, kept = sim.Shrink(cfg, res.Seed, res.Schedule)
		}
		sim.WriteFailure(w, cfg, res, shrunk, kept)
	}
	fmt.Fprintf(w, "%d schedules on %s: %d broke an invariant; %d shards lost to more failures at once than RF-1; %d copies; slowest healthy at %s (virtual); %.0f schedules/hour\n",
		len(seeds), cfg.Flags(), failed, lost, copies, slowest, float64(len(seeds))/took.Hours())
	if failed > 0 {
		return fmt.Errorf("sim: %d of %d schedules broke an invariant", failed, len(seeds))
	}
	return nil
}
