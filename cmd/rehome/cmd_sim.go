package main

import (
	"fmt"
	"io"
	"os"
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
	var restore []int
	var perNode int
	var plot string
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "run seeded fault schedules against the real detector and planner code on a virtual clock",
		Long: `Each schedule crashes, restarts, wipes, fills, slows and rots nodes, cuts them
off the detector, kills movers and the planner, takes racks and 1% of the
nodes at once and plays operator actions, all drawn from one seed, against the
detector's and planner's own decision code. After every step it checks: nothing
lost unless more copies failed at once than RF-1 (more pieces of a stripe than
M with --layout ec=K+M), never two copies (more than M pieces of a stripe) in
one rack where racks allow, the map lists only verified copies, nothing trimmed below
target, healthy within a bound once faults stop. A failure prints its seed, the
schedule shrunk to the faults that matter, and the command that replays it.

With --seed and --schedules 1 it runs that seed; otherwise --schedules seeds
drawn from --seed. --keep i,j replays only those faults of the seed's schedule.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			if len(restore) > 0 {
				return runRestore(cmd.OutOrStdout(), restore, perNode, cfg.Placement, cfg.Scatter, plot)
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
	f.IntVar(&cfg.Shards, "shards", 0, "replicated shards, 3 copies each, or erasure-coded stripes (default 10 per node)")
	f.StringVar(&cfg.Layout, "layout", cfg.Layout, "rf=3 (3 copies per shard) or ec=K+M (stripes of K data and M parity pieces, e.g. ec=4+2)")
	f.Uint64Var(&seed, "seed", 1, "the seed (with --schedules > 1: the seed the seeds are drawn from)")
	f.IntVar(&schedules, "schedules", 1, "fault schedules to run")
	f.IntVar(&cfg.MaxFaults, "max-faults", cfg.MaxFaults, "at most this many faults per schedule")
	f.StringVar(&cfg.Placement, "placement", cfg.Placement, "initial placement: random or copyset")
	f.IntVar(&cfg.Scatter, "scatter-width", cfg.Scatter, "copyset scatter width (with --placement copyset)")
	f.BoolVar(&cfg.BusFaults, "bus-faults", false, "add faults of the bus and the detector: lost heartbeats, duplicated and late mover reports, a detector restart")
	f.StringVar(&keep, "keep", "", "replay only these faults of the seed's schedule (indexes, from a shrunk failure)")
	f.BoolVar(&trace, "trace", false, "print every event of each run")
	f.IntSliceVar(&restore, "restore", nil, "instead of fault schedules: the time to restore one node's loss at these cluster sizes (e.g. 100,1000,10000)")
	f.IntVar(&perNode, "shards-per-node", 300, "with --restore: shards of 1 GiB per node")
	f.StringVar(&plot, "plot", "", "with --restore: also draw the restore times as an SVG file here")
	return cmd
}

// runSims runs seeds on cfg, one per core at a time, and reports: every
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
				sched = sim.Pick(sim.ScheduleOf(cfg, seed), keep)
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
	fmt.Fprintf(w, "%d schedules on %s: %d broke an invariant; %d shards or stripes lost to more failures at once than they tolerate; %d copies; slowest healthy at %s (virtual); %.0f schedules/hour\n",
		len(seeds), cfg.Flags(), failed, lost, copies, slowest, float64(len(seeds))/took.Hours())
	if failed > 0 {
		return fmt.Errorf("sim: %d of %d schedules broke an invariant", failed, len(seeds))
	}
	return nil
}

// runRestore measures the time to restore one node's loss at each cluster
// size (virtual time, from the down verdict to every shard whole), prints
// one line each and, with plot, draws them.
func runRestore(w io.Writer, sizes []int, perNode int, place string, scatter int, plot string) error {
	var pts []sim.Point
	var floor float64
	for _, n := range sizes {
		cfg := sim.RestoreShape(n, perNode, place, scatter)
		if err := cfg.Validate(); err != nil {
			return err
		}
		start := time.Now()
		d, res := sim.Restore(cfg, 1)
		if res.Violation != nil {
			return fmt.Errorf("sim: restore on %d nodes: %w", n, res.Violation)
		}
		floor = sim.CopySeconds(cfg)
		fmt.Fprintf(w, "%d nodes, %d shards (%s): one node's loss restored in %s (virtual), %d copies; simulated in %s\n",
			n, cfg.Shards, place, d, res.Copies, time.Since(start).Round(time.Millisecond))
		pts = append(pts, sim.Point{Nodes: n, Seconds: d.Seconds()})
	}
	if plot == "" {
		return nil
	}
	f, err := os.Create(plot)
	if err != nil {
		return fmt.Errorf("sim: plot: %w", err)
	}
	title := fmt.Sprintf("time to restore one node's loss (%d shards of 1 GiB per node, %s placement)", perNode, place)
	if err := sim.WritePlot(f, title, pts, floor); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
