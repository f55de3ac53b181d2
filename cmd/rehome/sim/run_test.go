package sim

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// holdSeeds runs n seeds drawn from base on cfg (n/6 with -short), fails t
// with the report of every run that broke an invariant, and returns the
// shards (stripes) lost to more failures than they tolerate, the copies
// made and how many faults of each kind the schedules drew.
func holdSeeds(t *testing.T, cfg Config, base uint64, n int) (lost, copies int, kinds map[Kind]int) {
	t.Helper()
	if testing.Short() {
		n /= 6
	}
	kinds = map[Kind]int{}
	for _, seed := range Seeds(base, n) {
		res := Run(cfg, seed, nil)
		if res.Violation != nil {
			var b bytes.Buffer
			WriteFailure(&b, cfg, res, nil, nil)
			t.Error(b.String())
		}
		lost += res.Lost
		copies += res.Copies
		for _, f := range res.Schedule {
			kinds[f.Kind]++
		}
	}
	if copies == 0 {
		t.Fatal("no schedule made the planner copy anything")
	}
	return lost, copies, kinds
}

// TestSeedsHoldInvariants runs a few hundred seeded schedules on 30 nodes:
// every invariant holds after every step of each.
func TestSeedsHoldInvariants(t *testing.T) {
	lost, copies, _ := holdSeeds(t, Defaults(), 1, 300)
	t.Logf("%d copies, %d shards lost to more failures at once than RF-1", copies, lost)
}

// TestStripeSeedsHoldInvariants runs seeded schedules on 30 nodes holding
// 4+2 erasure-coded stripes (the planner core rebuilds them): no stripe is
// lost unless more than 2 of its pieces failed at once, no rebuild puts
// more than 2 pieces of a stripe in one rack while racks allow, and the
// other invariants hold.
func TestStripeSeedsHoldInvariants(t *testing.T) {
	cfg := Defaults()
	cfg.Layout, cfg.Shards = "ec=4+2", 100
	lost, copies, _ := holdSeeds(t, cfg, 2, 150)
	t.Logf("%d pieces rebuilt or copied, %d stripes lost to more than 2 failures at once", copies, lost)
}

// TestBusFaultSeedsHoldInvariants runs seeded schedules with faults of the
// bus and the detector added (lost heartbeats, duplicated and late mover
// reports, detector restarts) on 30 nodes: every invariant holds, and the
// bus faults did happen.
func TestBusFaultSeedsHoldInvariants(t *testing.T) {
	cfg := Defaults()
	cfg.BusFaults = true
	_, _, kinds := holdSeeds(t, cfg, 4, 100)
	for k := BusLoss; k < numAllKinds; k++ {
		if kinds[k] == 0 {
			t.Errorf("the schedules drew no %s", k)
		}
	}
}

// TestSameSeedSameRun replays seeds twice (RF 3, with bus faults, and 4+2
// with bus faults): the full event traces are equal, and two seeds give two
// different runs.
func TestSameSeedSameRun(t *testing.T) {
	cfg := Defaults()
	cfg.Trace = true
	bus := cfg
	bus.BusFaults = true
	ec := bus
	ec.Layout, ec.Shards = "ec=4+2", 100
	var prev []string
	for i, seed := range Seeds(7, 14) {
		cfg := cfg
		switch {
		case i >= 12:
			cfg = ec
		case i >= 8:
			cfg = bus // late reports and lost heartbeats draw from the seed too
		}
		a, b := Run(cfg, seed, nil), Run(cfg, seed, nil)
		if len(a.Trace) == 0 || !slices.Equal(a.Trace, b.Trace) {
			for i := range min(len(a.Trace), len(b.Trace)) {
				if a.Trace[i] != b.Trace[i] {
					t.Fatalf("seed %d: runs differ at event %d:\n%s\n%s", seed, i, a.Trace[i], b.Trace[i])
				}
			}
			t.Fatalf("seed %d: %d events, then %d", seed, len(a.Trace), len(b.Trace))
		}
		if slices.Equal(a.Trace, prev) {
			t.Fatalf("seed %d: same run as the previous seed", seed)
		}
		prev = a.Trace
	}
}

// TestPlantedBugsAreCaught plants bugs in the simulated system: the sim
// finds a seed that breaks the matching invariant, reports the seed and the
// command replaying it, and shrinks the schedule to one that still fails.
func TestPlantedBugsAreCaught(t *testing.T) {
	for _, c := range []struct {
		bug    Bug
		layout string
		want   string
	}{
		{BugOneRack, "", "two copies in"},
		{BugUnverified, "", "whose disk never got it"},
		{BugOneRack, "ec=4+2", "pieces of its stripe in"},
		{BugUnverified, "ec=4+2", "map lists"},
	} {
		cfg := Defaults()
		cfg.Bug = c.bug
		if c.layout != "" {
			cfg.Layout, cfg.Shards = c.layout, 100
		}
		var res Result
		for _, seed := range Seeds(3, 200) {
			if res = Run(cfg, seed, nil); res.Violation != nil {
				break
			}
		}
		if res.Violation == nil {
			t.Fatalf("bug %d: 200 seeds and no invariant broke", c.bug)
		}
		if !strings.Contains(res.Violation.Msg, c.want) {
			t.Errorf("bug %d: broke %q, want %q", c.bug, res.Violation.Msg, c.want)
		}
		shrunk, keep := Shrink(cfg, res.Seed, res.Schedule)
		if len(shrunk) > len(res.Schedule) || len(shrunk) == 0 {
			t.Errorf("bug %d: shrunk %d faults to %d", c.bug, len(res.Schedule), len(shrunk))
		}
		again := Run(cfg, res.Seed, Pick(Generate(res.Seed, cfg.Nodes, cfg.Racks, cfg.MaxFaults, cfg.Window), keep))
		if again.Violation == nil {
			t.Errorf("bug %d: the shrunk schedule %v of seed %d does not fail", c.bug, keep, res.Seed)
		}
		var b bytes.Buffer
		WriteFailure(&b, cfg, res, shrunk, keep)
		out := b.String()
		seed := strconv.FormatUint(res.Seed, 10)
		if !strings.Contains(out, "seed "+seed+":") || !strings.Contains(out, "replay: "+ReplayCommand(cfg, res.Seed, keep)) ||
			!strings.Contains(out, "replay: rehome sim --nodes 30 ") || c.layout != "" && !strings.Contains(out, " --layout "+c.layout) {
			t.Errorf("bug %d: report lacks the seed or the replay command:\n%s", c.bug, out)
		}
		t.Logf("bug %d caught: %s", c.bug, out)
	}
}

// TestSourceFailuresKeepTheRackRule replays the schedule in which a copy's
// two sources were both down on 6 nodes in 3 racks (docs/simulation.md,
// "What the sim found"): its failures are the sources', so the planner
// never gives up the rack rule for it, and no invariant breaks.
func TestSourceFailuresKeepTheRackRule(t *testing.T) {
	cfg := Defaults()
	cfg.Nodes, cfg.Racks, cfg.Shards = 6, 0, 0 // racks and shards derived, as `rehome sim --nodes 6`
	cfg.Trace = true
	const seed = 8236534622307320139
	res := Run(cfg, seed, Pick(Generate(seed, cfg.Nodes, RacksOf(cfg), cfg.MaxFaults, WindowOf(cfg)), []int{1, 2, 3}))
	if res.Violation != nil {
		var b bytes.Buffer
		WriteFailure(&b, cfg, res, nil, nil)
		t.Fatal(b.String())
	}
	sourceFails := 0
	for _, line := range res.Trace {
		if strings.Contains(line, "rack rule relaxed") {
			t.Errorf("the rack rule was given up: %s", line)
		}
		if strings.Contains(line, "no source could serve") {
			sourceFails++
		}
	}
	if sourceFails < relaxAfter {
		t.Fatalf("%d copies failed for want of a source, want at least %d: the schedule no longer plays the finding", sourceFails, relaxAfter)
	}
}

// TestLateReportOfATrimmedCopyIsStale replays the schedule in which a
// copy's report came three minutes late, after the shard had been copied
// to the same node again and that copy trimmed (docs/simulation.md, "What
// the sim found"): the late report must not list the node again.
func TestLateReportOfATrimmedCopyIsStale(t *testing.T) {
	cfg := Defaults()
	cfg.Nodes, cfg.Racks, cfg.Shards = 6, 0, 0 // as `rehome sim --nodes 6 --bus-faults`
	cfg.BusFaults, cfg.Trace = true, true
	const seed = 7973636165828302864
	res := Run(cfg, seed, Pick(ScheduleOf(cfg, seed), []int{1, 2}))
	if res.Violation != nil {
		var b bytes.Buffer
		WriteFailure(&b, cfg, res, nil, nil)
		t.Fatal(b.String())
	}
	late, trimmed := false, false
	for _, line := range res.Trace {
		late = late || strings.Contains(line, "report late by")
		trimmed = trimmed || strings.Contains(line, "task trim-sh-0000003-storage-5")
	}
	if !late || !trimmed {
		t.Fatalf("late report %t, trim of sh-0000003 on storage-5 %t: the schedule no longer plays the finding", late, trimmed)
	}
}
