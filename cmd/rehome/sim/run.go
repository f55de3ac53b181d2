// Package sim is rehome's deterministic simulator (SPEC §10): the real
// detector tracker (services/detector/liveness) and the real planner core
// (services/planner/core) drive a modelled cluster (nodes, racks, disks,
// disk bandwidth, movers, the bus) on a virtual clock, under a fault
// schedule drawn from a seed. One seed gives one run, replayed exactly;
// invariants are checked after every step.
package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/rehome/rehome/services/detector/liveness"
	"github.com/rehome/rehome/services/planner/core"
	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// RF is the redundancy of the simulated shards (3 copies).
const RF = 3

// Bug is a fault planted in the simulated system itself (tests only): the
// invariants must catch it.
type Bug int

const (
	// NoBug runs the system as it is.
	NoBug Bug = iota
	// BugOneRack tells the planner every node sits in one rack, so it
	// places copies without regard to racks.
	BugOneRack
	// BugUnverified makes movers report a copy done without writing it.
	BugUnverified
)

// Config shapes a run. Zero fields take Defaults' values.
type Config struct {
	Nodes, Racks int
	// Shards is the number of replicated shards (or erasure-coded stripes),
	// ShardSize their size (a stripe's data: its pieces are ShardSize/K).
	Shards    int
	ShardSize int64
	// Layout is "rf=3" (3 copies of each shard) or "ec=K+M" (stripes of K
	// data and M parity pieces, each piece on its own node).
	Layout string
	// Bandwidth is one node's disk stream, bytes per second, each way.
	Bandwidth int64
	// MaxFaults bounds the faults drawn in Window (from the start).
	MaxFaults int
	Window    time.Duration
	// Bound is how long after the last fault the cluster must be healthy.
	Bound time.Duration
	// TaskTimeout is how long a task may go without a result.
	TaskTimeout time.Duration
	// Limits are the planner's throttles.
	Limits core.Limits
	// Placement is "random" (placement.Allocate) or "copyset" with
	// Scatter as the scatter width.
	Placement string
	Scatter   int
	// Detector is the liveness tracker's configuration.
	Detector liveness.Config
	// BusFaults adds faults of the bus and the detector to each schedule
	// (GenerateBus): lost heartbeats, duplicated and late mover reports, a
	// detector restart.
	BusFaults bool
	// Bug plants a bug (tests only).
	Bug Bug
	// Trace records every event of the run (Result.Trace).
	Trace bool
	// Exposure records, every step, the fewest intact copies any shard has
	// (Result.Exposed); it costs a pass over the shards per step.
	Exposure bool
}

// Defaults returns the configuration of a default run: 30 nodes on 6 racks,
// 300 shards of 64 MiB, 100 MiB/s disks, up to 6 faults in 10 minutes,
// healthy within 20 minutes after them, the service's default throttles.
func Defaults() Config {
	return Config{Nodes: 30, Racks: 6, Shards: 300, ShardSize: 64 << 20, Bandwidth: 100 << 20,
		MaxFaults: 6, Window: 10 * time.Minute, Bound: 20 * time.Minute, TaskTimeout: 2 * time.Minute,
		Limits: core.Limits{PerNodeIn: 2, PerNodeOut: 2, MaxInFlight: 64}, Placement: "random", Scatter: 10, Layout: "rf=3",
		Detector: liveness.DefaultConfig()}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.Nodes <= 0 {
		c.Nodes = d.Nodes
	}
	if c.Racks <= 0 {
		c.Racks = min(max(3, c.Nodes/5), c.Nodes)
	}
	if c.Shards <= 0 {
		c.Shards = 10 * c.Nodes
	}
	if c.ShardSize <= 0 {
		c.ShardSize = d.ShardSize
	}
	if c.Bandwidth <= 0 {
		c.Bandwidth = d.Bandwidth
	}
	if c.MaxFaults <= 0 {
		c.MaxFaults = d.MaxFaults
	}
	if c.Window <= 0 {
		c.Window = d.Window
	}
	if c.Bound <= 0 {
		c.Bound = d.Bound
	}
	if c.TaskTimeout <= 0 {
		c.TaskTimeout = d.TaskTimeout
	}
	if c.Limits.MaxInFlight <= 0 {
		c.Limits = d.Limits
	}
	if c.Placement == "" {
		c.Placement = d.Placement
	}
	if c.Layout == "" {
		c.Layout = d.Layout
	}
	if c.Scatter <= 0 {
		c.Scatter = d.Scatter
	}
	if c.Detector.SuspectAfter <= 0 {
		c.Detector = d.Detector
	}
	return c
}

// Validate rejects a configuration no run can use.
func (c Config) Validate() error {
	c = c.withDefaults()
	l, err := model.ParseLayout(c.Layout)
	if err != nil || !l.Erasure() && l.RF != RF {
		return fmt.Errorf("sim: --layout %q: want rf=%d or ec=K+M", c.Layout, RF)
	}
	switch {
	case c.Nodes < l.K+l.M+l.RF || c.Nodes > 65000:
		return fmt.Errorf("sim: --nodes %d: want %d to 65000", c.Nodes, l.K+l.M+l.RF)
	case l.Erasure() && c.Placement != "random":
		return fmt.Errorf("sim: --placement %s: erasure-coded stripes are placed at random only", c.Placement)
	case c.Racks > c.Nodes:
		return fmt.Errorf("sim: --racks %d: more racks than nodes (%d)", c.Racks, c.Nodes)
	case c.Placement != "random" && c.Placement != "copyset":
		return fmt.Errorf("sim: --placement %q: want random or copyset", c.Placement)
	}
	return nil
}

// Violation is an invariant broken at a time of a run.
type Violation struct {
	At  time.Duration
	Msg string
}

func (v Violation) Error() string { return fmt.Sprintf("at %s: %s", v.At, v.Msg) }

// Result is what one run found.
type Result struct {
	Seed     uint64
	Schedule Schedule
	// Violation is the first invariant broken (nil: none).
	Violation *Violation
	// Lost counts the shards (stripes) lost to more faults at once than
	// their redundancy tolerates (excused).
	Lost int
	// Healthy is when every shard was whole again after the last fault
	// ended (from the start of the run); Ended is when the run stopped.
	Healthy, Ended time.Duration
	// Copies and Trims count the tasks done.
	Copies, Trims int
	// Steps counts planning rounds.
	Steps int
	// Exposed[k] is how long (virtual) some shard had only k intact copies
	// on running nodes (k < RF; with Config.Exposure); for a K+M layout,
	// how long some stripe lacked RF-k of its K+M pieces (k = RF-1: one
	// piece, RF-2: two).
	Exposed [RF]time.Duration
	// TooFewNodes is set when the faults left fewer nodes (neither destroyed
	// nor draining) than a shard or stripe needs distinct nodes: the run is
	// not held to the healthy bound.
	TooFewNodes bool
	// FirstDown is when the detector first declared a node down (zero: never).
	FirstDown time.Duration
	// Trace is every event, when Config.Trace is set.
	Trace []string
}

// transfer is one task a mover holds.
type transfer struct {
	task event.Task
	end  time.Duration
	dead bool // its mover died: no result will come
}

// run is one simulation in progress.
type run struct {
	cfg       Config
	w         *world
	det       *liveness.Tracker
	pl        *planner
	epoch     time.Time
	transfers map[string]*transfer
	verdicts  map[string]model.State
	pauses    int
	res       Result
	rackOf    []int
	// srcFails counts, per shard id, the copies of its current retry round
	// (since its last attempt 1) that failed for want of a source.
	srcFails map[string]int
	// lay is the layout; width the records per shard or stripe (1, or
	// K+M pieces: a stripe's pieces are records unit(s)..unit(s)+width-1).
	lay   model.Layout
	width int
	// The bus and detector faults in force (counts of active windows), the
	// draws they make, and when each node's last heartbeat reached the bus.
	busLoss, busDup, busDelay, detStopped int
	rng                                   *rand.Rand
	lastBeat                              map[string]time.Time
	lastBoot                              map[string]string
}

// Run replays the schedule of seed (or sched, when not nil: a shrunk one)
// on a cluster shaped by cfg and returns what it found. It is a pure
// function of its arguments.
func Run(cfg Config, seed uint64, sched Schedule) Result {
	cfg = cfg.withDefaults()
	if sched == nil {
		sched = ScheduleOf(cfg, seed)
	}
	r, err := newRun(cfg, seed)
	if err != nil {
		return Result{Seed: seed, Schedule: sched, Violation: &Violation{Msg: err.Error()}}
	}
	r.res.Schedule = sched
	r.schedule(sched)
	r.loop(sched.End())
	return r.res
}

// newRun builds the cluster of cfg with every shard written (RF copies,
// placed by the real placement functions) and the detector and planner
// started.
func newRun(cfg Config, seed uint64) (*run, error) {
	r := &run{cfg: cfg, epoch: core.Epoch, transfers: map[string]*transfer{}, verdicts: map[string]model.State{},
		srcFails: map[string]int{}, rng: rand.New(rand.NewPCG(seed, 0x6d657373)), // "mess"
		lastBeat: map[string]time.Time{}, lastBoot: map[string]string{}}
	r.res.Seed = seed
	lay, err := model.ParseLayout(cfg.Layout)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	r.lay, r.width = lay, 1
	size := cfg.ShardSize
	if lay.Erasure() {
		r.width, size = lay.K+lay.M, cfg.ShardSize/int64(lay.K)
	}
	r.w = newWorld(cfg.Nodes, cfg.Racks, cfg.Shards*r.width, size, cfg.Bandwidth)
	var nodes []model.Node
	for _, n := range r.w.nodes {
		rack := n.rack
		if cfg.Bug == BugOneRack {
			rack = "rack-1"
		}
		nodes = append(nodes, model.Node{V: 1, ID: n.id, Rack: rack, Addr: "sim", BootID: n.bootID(),
			CapacityBytes: 1 << 50, Started: r.epoch})
		r.rackOf = append(r.rackOf, n.rackIdx)
	}
	pl, err := newPlanner(r.epoch, nodes, cfg.Limits, cfg.TaskTimeout, cfg.Placement == "copyset")
	if err != nil {
		return nil, err
	}
	r.pl = pl
	picks, err := r.place(seed)
	if err != nil {
		return nil, err
	}
	err = pl.load(len(picks), func(i int) model.Placement {
		s := r.w.shards[i]
		ids := make([]string, len(picks[i]))
		for j, n := range picks[i] {
			ids[j] = r.w.nodes[n].id
			r.w.put(int32(i), int32(n), intact)
		}
		if r.lay.Erasure() {
			obj := fmt.Sprintf("obj-%07d", i/r.width)
			return model.Placement{V: 1, Shard: s.id, Key: "key-" + obj, ObjectID: obj, Index: i % r.width,
				Size: r.w.size, SHA256: s.sha, Layout: r.lay, Nodes: ids}
		}
		return model.Placement{V: 1, Shard: s.id, Key: "key-" + s.id, ObjectID: "obj-" + s.id,
			Size: r.w.size, SHA256: s.sha, Layout: model.Layout{RF: RF}, Nodes: ids}
	})
	if err != nil {
		return nil, err
	}
	// The cluster ran before the run: the detector has heard every node.
	r.det = liveness.New(cfg.Detector, r.epoch)
	for _, n := range r.w.nodes {
		r.det.Heard(n.id, n.bootID(), r.epoch)
	}
	return r, nil
}

// bigPlacement is the size (nodes × shards) above which the initial
// placement is drawn at random (rack-distinct triples from the seed) rather
// than by placement.Allocate, whose O(nodes) scan per copy suits a client's
// write of a few shards, not the load of a million.
const bigPlacement = 50_000_000

// place chooses RF nodes for every shard by the real placement code
// (Allocate, or NewCopysets and AllocateCopysets) and returns them.
func (r *run) place(seed uint64) ([][]int, error) {
	cands := r.pl.candidates()
	for i := range cands {
		cands[i].State = model.StateUp
		cands[i].Rack = r.w.nodes[i].rack
	}
	shards := make([]placement.Shard, len(r.w.shards))
	for i, s := range r.w.shards {
		shards[i] = placement.Shard{ID: s.id, Size: r.w.size}
	}
	var picks [][]int
	var err error
	switch {
	case r.lay.Erasure():
		return r.placeStripes(seed, cands, shards)
	case r.cfg.Placement == "copyset":
		cs, cerr := placement.NewCopysets(cands, RF, r.cfg.Scatter, seed)
		if cerr != nil {
			return nil, cerr
		}
		picks, err = placement.AllocateCopysets(cands, cs, shards)
	case len(cands)*len(shards) > bigPlacement:
		picks = randomGroups(seed, len(shards), RF, r.rackOf, r.cfg.Racks)
	default:
		picks, err = placement.Allocate(cands, RF, shards)
	}
	if err != nil {
		return nil, fmt.Errorf("sim: place: %w", err)
	}
	return picks, nil
}

// placeStripes places every stripe's pieces by placement.AllocateStripes
// (or, above bigPlacement, as random rack-distinct groups) and returns the
// node of each piece record.
func (r *run) placeStripes(seed uint64, cands []placement.Candidate, shards []placement.Shard) ([][]int, error) {
	var groups [][]int
	if len(cands)*len(shards) > bigPlacement {
		groups = randomGroups(seed, len(shards)/r.width, r.width, r.rackOf, r.cfg.Racks)
	} else {
		stripes := make([][]placement.Shard, len(shards)/r.width)
		for i := range stripes {
			stripes[i] = shards[i*r.width : (i+1)*r.width]
		}
		var err error
		if groups, err = placement.AllocateStripes(cands, r.lay.K, r.lay.M, stripes); err != nil {
			return nil, fmt.Errorf("sim: place: %w", err)
		}
	}
	picks := make([][]int, 0, len(shards))
	for _, g := range groups {
		for _, n := range g {
			picks = append(picks, []int{n})
		}
	}
	return picks, nil
}

// randomGroups draws, for n shards, k distinct nodes in distinct racks
// (racks ≥ k) from seed.
func randomGroups(seed uint64, n, k int, rackOf []int, racks int) [][]int {
	rng := rand.New(rand.NewPCG(seed, 0x706c616365)) // "place"
	flat := make([]int, n*k)
	out := make([][]int, n)
	for s := range out {
		p := flat[s*k : (s+1)*k : (s+1)*k]
		for j := 0; j < k; {
			c := rng.IntN(len(rackOf))
			ok := true
			for _, x := range p[:j] {
				if x == c || racks >= k && rackOf[x] == rackOf[c] {
					ok = false
				}
			}
			if ok {
				p[j] = c
				j++
			}
		}
		out[s] = p
	}
	return out
}

// t returns the virtual time as a time.Time.
func (r *run) t() time.Time { return r.epoch.Add(r.w.clock.now) }

// tracef records one event of the trace.
func (r *run) tracef(format string, args ...any) {
	if r.cfg.Trace {
		r.res.Trace = append(r.res.Trace, fmt.Sprintf("%10s ", r.w.clock.now)+fmt.Sprintf(format, args...))
	}
}

// violate records the first invariant broken.
func (r *run) violate(format string, args ...any) {
	if r.res.Violation == nil {
		r.res.Violation = &Violation{At: r.w.clock.now, Msg: fmt.Sprintf(format, args...)}
		r.tracef("VIOLATION %s", r.res.Violation.Msg)
	}
}

// tick is the period of heartbeats, detector ticks and planning rounds.
const tick = time.Second

// loop runs the cluster second by second until it is healthy after the
// schedule's end, or an invariant breaks, or the bound passes.
func (r *run) loop(end time.Duration) {
	deadline := end + r.cfg.Bound
	for t := time.Duration(0); ; t += tick {
		r.w.clock.runDue(t)
		if r.res.Violation != nil {
			break
		}
		r.pl.setNow(r.t())
		r.beats()
		r.detect()
		r.pl.reconcile(r.inventory)
		e := r.pl.step()
		r.res.Steps++
		r.checkStep(e)
		r.issue(e)
		if r.res.Violation != nil {
			break
		}
		if r.cfg.Exposure {
			if k := r.fewest(); k < RF {
				r.res.Exposed[k] += tick
			}
		}
		if t >= end && r.idle() && r.healthy() {
			r.res.Healthy = t
			break
		}
		if t > deadline && !r.canHold() {
			// Too few nodes are left to hold the layout (K+M pieces on
			// distinct nodes): no planner could heal it.
			r.res.TooFewNodes = true
			r.tracef("too few nodes left for %s: not held to the healthy bound", r.lay)
			break
		}
		if t > deadline {
			r.violate("not healthy %s after the last fault: %s", r.cfg.Bound, r.unhealthy())
			break
		}
	}
	r.res.Ended = r.w.clock.now
	if r.res.Violation == nil {
		r.checkMap()
	}
}

// beats delivers the heartbeats of every running node the partitions let
// through, to the detector and to the planner.
func (r *run) beats() {
	now := r.t()
	for _, n := range r.w.nodes {
		if !n.up || n.cut > 0 {
			continue
		}
		if r.busLoss > 0 && r.rng.IntN(2) == 0 {
			continue // lost on the bus: neither detector nor planner gets it
		}
		r.lastBeat[n.id], r.lastBoot[n.id] = now, n.bootID()
		if r.detStopped == 0 {
			r.det.Heard(n.id, n.bootID(), now)
		}
		r.pl.heartbeat(n.id, n.bootID(), n.bytes, 1<<50, n.full)
	}
}

// detect runs the detector's tick and feeds its verdicts to the planner.
func (r *run) detect() {
	if r.detStopped > 0 {
		return
	}
	for _, tr := range r.det.Tick(r.t()) {
		r.tracef("verdict %s %s -> %s", tr.Node, tr.From, tr.To)
		if tr.To == model.StateDown && r.res.FirstDown == 0 {
			r.res.FirstDown = r.w.clock.now
		}
		r.verdict(tr.Node, tr.To)
	}
}

func (r *run) verdict(node string, st model.State) {
	r.verdicts[node] = st
	if err := r.pl.verdict(node, st); err != nil {
		r.violate("verdict %s %s: %v", node, st, err)
	}
}

// inventory answers an inventory request of node id from its disk.
func (r *run) inventory(id string) (string, []control.InventoryShard, bool) {
	i := r.w.nodeIndex(id)
	if i < 0 || !r.w.nodes[i].up {
		return "", nil, false
	}
	var out []control.InventoryShard
	for _, s := range r.sortedShards(i) {
		sh := r.w.shards[s]
		if c, ok := sh.copyOf(i); ok && c.state != gone {
			out = append(out, control.InventoryShard{ID: sh.id, Size: r.w.size, SHA256: sh.sha})
		}
	}
	return r.w.nodes[i].bootID(), out, true
}

// issue hands the round's tasks to movers: each is taken at once and its
// result comes when the bytes have streamed.
func (r *run) issue(e core.Effects) {
	now := r.w.clock.now
	for _, t := range e.Tasks {
		r.pl.take(t.Task)
		tr := &transfer{task: t}
		r.transfers[t.Task] = tr
		switch t.Kind {
		case event.KindDelete:
			tr.end = now + 10*time.Millisecond
		case event.KindRebuild:
			tr.end = r.rebuildEnd(t)
		default:
			tr.end = now + tick
			src, tgt := r.w.nodeIndex(firstOr(t.Sources)), r.w.nodeIndex(t.Target)
			if src >= 0 && tgt >= 0 {
				s, g := r.w.nodes[src], r.w.nodes[tgt]
				start := max(now, s.outFree, g.inFree)
				bw := r.w.bw
				if s.slow > 0 || g.slow > 0 {
					bw /= 10
				}
				tr.end = start + time.Duration(float64(t.Bytes)/float64(bw)*float64(time.Second))
				s.outFree, g.inFree = tr.end, tr.end
			}
		}
		r.tracef("task %s %s %s %v -> %s", t.Task, t.Kind, t.Shard, t.Sources, t.Target)
		r.w.clock.at(tr.end, func() { r.finish(tr) })
	}
}

func firstOr(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// finish is a mover's end of transfer tr: the copy lands verified, or
// fails, or (its mover dead) nothing is reported and the task times out.
func (r *run) finish(tr *transfer) {
	delete(r.transfers, tr.task.Task)
	if tr.dead {
		return
	}
	t := tr.task
	s := r.w.index[t.Shard]
	if t.Kind == event.KindDelete {
		tgt := r.w.nodeIndex(t.Target)
		if tgt < 0 || !r.w.nodes[tgt].up {
			r.failReport(t, event.SideTarget, "node down")
			return
		}
		r.checkDelete(s, tgt)
		r.w.remove(s, tgt)
		r.res.Trims++
		r.tracef("deleted %s from %s", t.Shard, t.Target)
		r.report(func() {
			if err := r.pl.done(t); err != nil {
				r.violate("done %s: %v", t.Task, err)
			}
		})
		r.checkLoss(s)
		return
	}
	if t.Kind == event.KindRebuild {
		r.rebuilt(t)
		return
	}
	if t.Kind != event.KindCopy {
		r.failReport(t, "", "the sim does not model "+t.Kind)
		return
	}
	tgt := r.w.nodeIndex(t.Target)
	if tgt < 0 || !r.w.nodes[tgt].up || r.w.nodes[tgt].full {
		r.failReport(t, event.SideTarget, "target down or full")
		return
	}
	state := copyState(0)
	if r.cfg.Bug == BugUnverified {
		state = unverified // the planted bug: report it without writing
	} else {
		for _, id := range t.Sources {
			src := r.w.nodeIndex(id)
			if src < 0 || !r.w.nodes[src].up {
				continue
			}
			c, ok := r.w.shards[s].copyOf(src)
			if !ok || c.state == gone {
				continue
			}
			if c.state == rotten {
				// The source's read fails its checksum: it quarantines
				// the copy and reports it; the mover tries the next.
				r.w.setState(c, src, gone)
				r.pl.corrupt(t.Shard, id)
				continue
			}
			state = intact
			break
		}
	}
	if state == 0 {
		r.srcFails[t.Shard]++
		r.tracef("task %s failed: no source could serve", t.Task)
		r.failReport(t, event.SideSource, "no source could serve")
		return
	}
	if state == intact {
		r.w.put(s, tgt, intact)
	}
	r.res.Copies++
	r.tracef("copied %s to %s", t.Shard, t.Target)
	r.report(func() {
		if err := r.pl.done(t); err != nil {
			r.violate("done %s: %v", t.Task, err)
			return
		}
		r.checkListed(s)
		r.maybeWhole(s)
	})
}

// report delivers a mover's report to the planner: deliver feeds it and
// runs the checks that follow. It runs at once, or 1 s to 3 min late while
// a BusDelay lasts, and once more 5 s later while a BusDup lasts (the bus
// delivers at least once).
func (r *run) report(deliver func()) {
	now := r.w.clock.now
	if r.busDelay > 0 {
		d := time.Duration(1+r.rng.IntN(180)) * time.Second
		r.tracef("report late by %s", d)
		r.w.clock.at(now+d, deliver)
	} else {
		deliver()
	}
	if r.busDup > 0 {
		r.w.clock.at(now+5*time.Second, func() { r.tracef("report delivered again"); deliver() })
	}
}

// failReport is report of a failure of task t on side.
func (r *run) failReport(t event.Task, side, cause string) {
	r.report(func() { r.pl.fail(t, side, cause) })
}

// rebuildEnd reserves the streams of rebuild task t, which reads one piece
// from each of its first K sources and writes each rebuilt piece to its
// target, all at once, and returns when it ends.
func (r *run) rebuildEnd(t event.Task) time.Duration {
	var nodes []*simNode
	start, slow := r.w.clock.now, false
	for _, id := range t.Sources[:min(len(t.Sources), t.K)] {
		if i := r.w.nodeIndex(id); i >= 0 {
			n := r.w.nodes[i]
			nodes, start, slow = append(nodes, n), max(start, n.outFree), slow || n.slow > 0
		}
	}
	reads := len(nodes)
	for _, p := range t.Rebuild {
		if i := r.w.nodeIndex(p.Node); i >= 0 {
			n := r.w.nodes[i]
			nodes, start, slow = append(nodes, n), max(start, n.inFree), slow || n.slow > 0
		}
	}
	bw := r.w.bw
	if slow {
		bw /= 10
	}
	end := start + time.Duration(float64(r.w.size)/float64(bw)*float64(time.Second))
	for k, n := range nodes {
		if k < reads {
			n.outFree = end
		} else {
			n.inFree = end
		}
	}
	return end
}

// rebuilt is a mover's end of rebuild task t: it reads K intact pieces from
// their holders (a rotten one fails its checksum: the holder quarantines and
// reports it, the mover reads another), reconstructs the pieces to rebuild
// and lands each, verified, on its target; or it fails, on the source side
// with fewer than K pieces readable, on the target side when a target is
// down or full.
func (r *run) rebuilt(t event.Task) {
	rebuilding := map[string]bool{}
	for _, p := range t.Rebuild {
		rebuilding[p.Shard] = true
		tgt := r.w.nodeIndex(p.Node)
		if tgt < 0 || !r.w.nodes[tgt].up || r.w.nodes[tgt].full {
			r.failReport(t, event.SideTarget, "target down or full")
			return
		}
	}
	read := 0
	for _, p := range t.Stripe {
		if read == t.K {
			break
		}
		if rebuilding[p.Shard] || p.Node == "" {
			continue
		}
		src, s := r.w.nodeIndex(p.Node), r.w.index[p.Shard]
		if src < 0 || !r.w.nodes[src].up {
			continue
		}
		c, ok := r.w.shards[s].copyOf(src)
		switch {
		case !ok || c.state == gone:
		case c.state == rotten:
			r.w.setState(c, src, gone)
			r.pl.corrupt(p.Shard, p.Node)
		default:
			read++
		}
	}
	if read < t.K && r.cfg.Bug != BugUnverified {
		r.srcFails[t.Shard]++
		r.tracef("task %s failed: %d of %d pieces readable", t.Task, read, t.K)
		r.failReport(t, event.SideSource, "too few pieces readable")
		return
	}
	state := intact
	if r.cfg.Bug == BugUnverified {
		state = unverified
	}
	for _, p := range t.Rebuild {
		r.w.put(r.w.index[p.Shard], r.w.nodeIndex(p.Node), state)
	}
	r.res.Copies += len(t.Rebuild)
	r.tracef("rebuilt %d pieces of %s's stripe", len(t.Rebuild), t.Shard)
	r.report(func() {
		if err := r.pl.done(t); err != nil {
			r.violate("done %s: %v", t.Task, err)
			return
		}
		for _, p := range t.Rebuild {
			s := r.w.index[p.Shard]
			r.checkListed(s)
			r.maybeWhole(s)
		}
	})
}

// canHold reports whether enough nodes, neither destroyed nor draining,
// are left for a shard's RF copies or a stripe's K+M pieces.
func (r *run) canHold() bool {
	cands := r.pl.candidates()
	n := 0
	for i, nd := range r.w.nodes {
		if !nd.destroyed && !cands[i].Leaving {
			n++
		}
	}
	return n >= r.lay.K+r.lay.M+r.lay.RF
}

// firstActive returns the live transfer with the smallest task id.
func (r *run) firstActive() (string, bool) {
	var ids []string
	for id, tr := range r.transfers {
		if !tr.dead && tr.task.Kind != event.KindDelete {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "", false
	}
	return slices.Min(ids), true
}

// shardIDs returns every shard id, in order.
func (r *run) shardIDs() []string {
	out := make([]string, len(r.w.shards))
	for i, s := range r.w.shards {
		out[i] = s.id
	}
	return out
}

// idle reports whether no mover holds a task.
func (r *run) idle() bool { return len(r.transfers) == 0 }

// Seeds returns n seeds drawn from base: the seeds `make sim` runs.
func Seeds(base uint64, n int) []uint64 {
	rng := rand.New(rand.NewPCG(base, 1))
	out := make([]uint64, n)
	for i := range out {
		out[i] = rng.Uint64() >> 1
	}
	return out
}

// RacksOf returns the racks of cfg's cluster (defaults applied).
func RacksOf(cfg Config) int { return cfg.withDefaults().Racks }

// WindowOf returns the window cfg's faults are drawn in (defaults applied).
func WindowOf(cfg Config) time.Duration { return cfg.withDefaults().Window }
