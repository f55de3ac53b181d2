package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind int

// The faults a schedule draws from (SPEC §10).
const (
	CrashStop       Kind = iota // the node never comes back, nor its disk
	CrashRestart                // the process stops, then starts again on its disk
	WipeDisk                    // the disk is replaced: the node comes back empty, same identity
	FullDisk                    // the disk refuses writes for a while
	SlowDisk                    // the disk streams at a tenth of its speed for a while
	BitRot                      // one copy on the node silently changes
	Partition                   // node ↔ detector cut (asymmetric: data still flows)
	Flap                        // short silences, again and again
	MoverCrash                  // a mover dies mid-copy: its task is redelivered
	PlannerFailover             // the acting planner dies; a standby loads the map
	RackLoss                    // every node of one rack stops at once, for good
	OnePercent                  // 1% of the nodes (at least one) stop at once, for good
	SecondFailure               // a node stops for good, another during its repair
	Maintenance                 // an operator restarts a node in maintenance
	Drain                       // an operator drains a node
	Pause                       // an operator pauses healing for a while
	numKinds
)

// The faults of the bus and of the detector, drawn only with
// Config.BusFaults (GenerateBus), so that the schedules of the faults above
// stay what they were for every seed.
const (
	BusLoss         Kind = numKinds + iota // for a while, each heartbeat is lost on the bus with probability 1/2
	BusDup                                 // for a while, every mover's report is delivered twice, the copy 5 s later
	BusDelay                               // for a while, every mover's report arrives 1 s to 3 min late (past a task's timeout)
	DetectorRestart                        // the detector stops for a while, then starts afresh, seeded as the service does
	numAllKinds
)

var kindNames = [...]string{"crash-stop", "crash-restart", "wipe-disk", "full-disk", "slow-disk", "bit-rot",
	"partition", "flap", "mover-crash", "planner-failover", "rack-loss", "one-percent", "second-failure",
	"maintenance", "drain", "pause", "bus-loss", "bus-dup", "bus-delay", "detector-restart"}

func (k Kind) String() string {
	if k >= 0 && k < numAllKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind-%d", int(k))
}

// Fault is one fault of a schedule: Kind at At on Nodes, lasting For (for
// the faults that end).
type Fault struct {
	At    time.Duration
	Kind  Kind
	Nodes []int
	For   time.Duration
}

func (f Fault) String() string {
	ns := make([]string, len(f.Nodes))
	for i, n := range f.Nodes {
		ns[i] = fmt.Sprintf("storage-%d", n+1)
	}
	s := fmt.Sprintf("%8s %-16s %s", f.At, f.Kind, strings.Join(ns, ","))
	if f.For > 0 {
		s += fmt.Sprintf(" for %s", f.For)
	}
	return s
}

// Schedule is the faults of one run, by time.
type Schedule []Fault

// Generate draws the fault schedule of seed for a cluster of n nodes on
// racks racks: between 1 and maxFaults faults inside window. It is a pure
// function of its arguments.
func Generate(seed uint64, n, racks, maxFaults int, window time.Duration) Schedule {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	k := 1 + rng.IntN(max(maxFaults, 1))
	var s Schedule
	// A node stopped for good is not chosen again; the schedule keeps at
	// least a rack's worth plus two nodes alive.
	gone := map[int]bool{}
	pick := func() int {
		for range 64 {
			if i := rng.IntN(n); !gone[i] {
				return i
			}
		}
		return -1
	}
	budget := n - n/racks - 3
	for range k {
		f := Fault{At: time.Duration(rng.Int64N(int64(window))).Truncate(time.Second), Kind: Kind(rng.IntN(int(numKinds)))}
		f.For = time.Duration(5+rng.IntN(300)) * time.Second
		switch f.Kind {
		case CrashStop, SecondFailure:
			need := 1
			if f.Kind == SecondFailure {
				need = 2
			}
			for range need {
				if i := pick(); i >= 0 && len(gone) < budget {
					gone[i] = true
					f.Nodes = append(f.Nodes, i)
				}
			}
			f.For = 0
		case RackLoss:
			r := rng.IntN(racks)
			for i := r; i < n; i += racks {
				if !gone[i] {
					f.Nodes = append(f.Nodes, i)
				}
			}
			if len(gone)+len(f.Nodes) > budget {
				f.Nodes = nil
			}
			for _, i := range f.Nodes {
				gone[i] = true
			}
			f.For = 0
		case OnePercent:
			for range max(1, n/100) {
				if i := pick(); i >= 0 && len(gone) < budget && !slices.Contains(f.Nodes, i) {
					gone[i] = true
					f.Nodes = append(f.Nodes, i)
				}
			}
			f.For = 0
		case MoverCrash, PlannerFailover:
			f.For = 0
		case Pause:
		case Drain:
			if i := pick(); i >= 0 && len(gone) < budget {
				// A drained node empties: count it as leaving.
				gone[i] = true
				f.Nodes = []int{i}
			}
			f.For = 0
		default:
			if i := pick(); i >= 0 {
				f.Nodes = []int{i}
			}
		}
		if f.Kind != MoverCrash && f.Kind != PlannerFailover && f.Kind != Pause && len(f.Nodes) == 0 {
			continue
		}
		s = append(s, f)
	}
	slices.SortStableFunc(s, func(a, b Fault) int { return int(a.At - b.At) })
	return s
}

// GenerateBus draws the bus and detector faults of seed: between 1 and
// maxFaults/2 (at least 1) inside window, each lasting 5 s to 2 min. It is
// a pure function of its arguments.
func GenerateBus(seed uint64, maxFaults int, window time.Duration) Schedule {
	rng := rand.New(rand.NewPCG(seed, 0x627573)) // "bus"
	k := 1 + rng.IntN(max(maxFaults/2, 1))
	s := make(Schedule, 0, k)
	for range k {
		s = append(s, Fault{At: time.Duration(rng.Int64N(int64(window))).Truncate(time.Second),
			Kind: BusLoss + Kind(rng.IntN(int(numAllKinds-BusLoss))), For: time.Duration(5+rng.IntN(116)) * time.Second})
	}
	slices.SortStableFunc(s, func(a, b Fault) int { return int(a.At - b.At) })
	return s
}

// ScheduleOf returns the fault schedule of seed on cfg's cluster: Generate's,
// merged by time with GenerateBus's when cfg.BusFaults is set.
func ScheduleOf(cfg Config, seed uint64) Schedule {
	cfg = cfg.withDefaults()
	s := Generate(seed, cfg.Nodes, cfg.Racks, cfg.MaxFaults, cfg.Window)
	if !cfg.BusFaults {
		return s
	}
	s = append(s, GenerateBus(seed, cfg.MaxFaults, cfg.Window)...)
	slices.SortStableFunc(s, func(a, b Fault) int { return int(a.At - b.At) })
	return s
}

// End returns when the last fault of s is over (zero for none).
func (s Schedule) End() time.Duration {
	var end time.Duration
	for _, f := range s {
		end = max(end, f.At+f.For)
		if f.Kind == SecondFailure {
			end = max(end, f.At+secondAfter)
		}
	}
	return end
}
