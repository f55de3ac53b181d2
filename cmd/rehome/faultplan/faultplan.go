// Package faultplan draws a soak's faults from a seed: which fault, on which
// process, after what gap and held for how long. It is pure: the same Config
// always gives the same Plan, so a soak run can be repeated by its seed (as
// far as real processes allow).
//
// A plan has two lanes, each run one fault at a time: storage-node faults
// (kill, pause, full disk) and service faults (a mover or a planner killed).
// One node fault at a time is the redundancy budget: Put acknowledges a
// replicated chunk once a majority (2 of 3) holds it and an erasure-coded
// stripe once K+1 pieces do, so an acknowledged object may have one copy
// fewer than its layout until repair catches up, and tolerates one more
// node fault, not two. Service faults hold no data and may overlap a node
// fault.
package faultplan

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Kind is a kind of fault.
type Kind string

// The kinds of fault. A node fault (KillNode, PauseShort, PauseLong,
// FullDisk) targets a storage node; KillMover and KillPlanner target a
// service process.
const (
	// KillNode: SIGKILL a storage node, then start it again under the same
	// identity and data directory once Hold has passed (before or after the
	// detector declared it down).
	KillNode Kind = "kill-node"
	// PauseShort: SIGSTOP a storage node for less than Config.Down, then
	// SIGCONT: at most suspect, never down (timing permitting).
	PauseShort Kind = "pause-short"
	// PauseLong: SIGSTOP a storage node for longer than Config.Down: it is
	// declared down and its shards re-homed, then it comes back with them.
	PauseLong Kind = "pause-long"
	// FullDisk: another writer takes all the room a node has left for
	// Hold, then gives it back.
	FullDisk Kind = "full-disk"
	// KillMover: SIGKILL a mover, start it again after Hold.
	KillMover Kind = "kill-mover"
	// KillPlanner: SIGKILL a planner, start it again after Hold.
	KillPlanner Kind = "kill-planner"
)

// NodeKinds and ServiceKinds are the kinds of each lane, in a fixed order.
var (
	NodeKinds    = []Kind{KillNode, PauseShort, PauseLong, FullDisk}
	ServiceKinds = []Kind{KillMover, KillPlanner}
)

// Fault is one fault of a lane: after Gap from the moment the lane is free
// again (the previous fault cleared and the cluster recovered from it), it
// hits Target and lasts Hold.
type Fault struct {
	Kind   Kind
	Target string
	Gap    time.Duration
	Hold   time.Duration
}

func (f Fault) String() string {
	return fmt.Sprintf("%s %s for %s", f.Kind, f.Target, f.Hold.Round(time.Millisecond))
}

// Config is what a plan is drawn from.
type Config struct {
	Seed uint64
	// For is the soak's length: each lane gets faults whose gaps and holds
	// add up to no more than For (a real run, slower than the plan, stops
	// injecting at For and leaves the rest unused).
	For time.Duration
	// Down is the silence after which the detector declares a node down
	// (suspect-after plus grace); pauses are drawn either side of it.
	Down time.Duration
	// Nodes, Movers and Planners are the targets (ids); a lane or kind with
	// no target draws no fault.
	Nodes, Movers, Planners []string
}

// Validate rejects a config no plan can be drawn from.
func (c Config) Validate() error {
	switch {
	case c.For <= 0:
		return errors.New("faultplan: For must be positive")
	case c.Down <= 0:
		return errors.New("faultplan: Down must be positive")
	case len(c.Nodes) == 0:
		return errors.New("faultplan: no storage node to fault")
	}
	return nil
}

// Plan is the two lanes of faults, in the order they are to be injected.
type Plan struct {
	Nodes    []Fault
	Services []Fault
}

// holdRange is a kind's hold, as multiples of Config.Down.
var holdRange = map[Kind][2]float64{
	KillNode:    {0.3, 2.5},
	PauseShort:  {0.2, 0.5},
	PauseLong:   {1.5, 2.5},
	FullDisk:    {1, 3},
	KillMover:   {0.2, 1.5},
	KillPlanner: {0.2, 1.5},
}

// Gaps between a lane's faults, as multiples of Config.Down.
var (
	nodeGap    = [2]float64{0.2, 1}
	serviceGap = [2]float64{1, 3}
)

// New draws the plan for cfg. Each lane first has one fault of each of its
// kinds (in a seeded order), then kinds drawn at random, so every run long
// enough sees every kind. Deterministic: equal configs give equal plans.
func New(cfg Config) (Plan, error) {
	if err := cfg.Validate(); err != nil {
		return Plan{}, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	targets := map[Kind][]string{KillNode: cfg.Nodes, PauseShort: cfg.Nodes, PauseLong: cfg.Nodes, FullDisk: cfg.Nodes,
		KillMover: cfg.Movers, KillPlanner: cfg.Planners}
	return Plan{
		Nodes:    lane(rng, cfg, NodeKinds, targets, nodeGap),
		Services: lane(rng, cfg, ServiceKinds, targets, serviceGap),
	}, nil
}

// lane draws one lane's faults until their gaps and holds fill cfg.For.
func lane(rng *rand.Rand, cfg Config, kinds []Kind, targets map[Kind][]string, gap [2]float64) []Fault {
	var usable []Kind
	for _, k := range kinds {
		if len(targets[k]) > 0 {
			usable = append(usable, k)
		}
	}
	if len(usable) == 0 {
		return nil
	}
	order := make([]Kind, len(usable))
	for i, j := range rng.Perm(len(usable)) {
		order[i] = usable[j]
	}
	var out []Fault
	var total time.Duration
	for i := 0; ; i++ {
		k := usable[rng.IntN(len(usable))]
		if i < len(order) {
			k = order[i]
		}
		f := Fault{Kind: k, Target: targets[k][rng.IntN(len(targets[k]))],
			Gap: between(rng, cfg.Down, gap), Hold: between(rng, cfg.Down, holdRange[k])}
		if total += f.Gap + f.Hold; total > cfg.For {
			return out
		}
		out = append(out, f)
	}
}

// between draws a duration uniformly in [r[0], r[1]) times unit.
func between(rng *rand.Rand, unit time.Duration, r [2]float64) time.Duration {
	return time.Duration((r[0] + rng.Float64()*(r[1]-r[0])) * float64(unit))
}
