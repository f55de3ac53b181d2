package faultplan

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func testConfig(seed uint64, d time.Duration) Config {
	return Config{Seed: seed, For: d, Down: 5 * time.Second,
		Nodes:  []string{"storage-1", "storage-2", "storage-3", "storage-4", "storage-5", "storage-6"},
		Movers: []string{"mover-1", "mover-2"}, Planners: []string{"planner-1", "planner-2"}}
}

func TestSameSeedSamePlan(t *testing.T) {
	a, err := New(testConfig(42, 5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(testConfig(42, 5*time.Minute))
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 42 drew two different plans:\n%v\n%v", a, b)
	}
	c, _ := New(testConfig(43, 5*time.Minute))
	if reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 drew the same plan")
	}
}

// TestPlanProperties checks, over many seeds and lengths, what the soak
// relies on: faults fit in For, targets come from the config, pauses fall on
// the right side of Down, and a run long enough sees every kind first.
func TestPlanProperties(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		d := time.Duration(10+seed%600) * time.Second
		cfg := testConfig(seed, d)
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, ln := range []struct {
			name    string
			faults  []Fault
			kinds   []Kind
			targets []string
		}{
			{"nodes", p.Nodes, NodeKinds, cfg.Nodes},
			{"services", p.Services, ServiceKinds, append(slices.Clone(cfg.Movers), cfg.Planners...)},
		} {
			var total time.Duration
			for i, f := range ln.faults {
				total += f.Gap + f.Hold
				if !slices.Contains(ln.kinds, f.Kind) || !slices.Contains(ln.targets, f.Target) {
					t.Fatalf("seed %d %s lane fault %d: %v not of this lane", seed, ln.name, i, f)
				}
				if f.Gap <= 0 || f.Hold <= 0 {
					t.Fatalf("seed %d: %v has gap %s", seed, f, f.Gap)
				}
				switch f.Kind {
				case PauseShort:
					if f.Hold >= cfg.Down {
						t.Fatalf("seed %d: %v: a short pause must end before the node is declared down (%s)", seed, f, cfg.Down)
					}
				case PauseLong:
					if f.Hold <= cfg.Down {
						t.Fatalf("seed %d: %v: a long pause must outlast %s", seed, f, cfg.Down)
					}
				case KillMover:
					if !slices.Contains(cfg.Movers, f.Target) {
						t.Fatalf("seed %d: %v targets no mover", seed, f)
					}
				case KillPlanner:
					if !slices.Contains(cfg.Planners, f.Target) {
						t.Fatalf("seed %d: %v targets no planner", seed, f)
					}
				}
				// The first faults of a lane are one of each kind.
				if i < len(ln.kinds) && slices.ContainsFunc(ln.faults[:i], func(g Fault) bool { return g.Kind == f.Kind }) {
					t.Fatalf("seed %d %s lane: %s repeated among the first %d faults", seed, ln.name, f.Kind, len(ln.kinds))
				}
			}
			if total > d {
				t.Fatalf("seed %d %s lane: faults take %s, more than %s", seed, ln.name, total, d)
			}
		}
		// Five minutes and more hold at least one of every kind.
		if d >= 5*time.Minute && (len(p.Nodes) < len(NodeKinds) || len(p.Services) < len(ServiceKinds)) {
			t.Fatalf("seed %d, %s: %d node and %d service faults, want every kind", seed, d, len(p.Nodes), len(p.Services))
		}
	}
}

// TestShortSoakHasAHandfulOfFaults: the short soak of `make test` (50 s,
// Down 5 s) gets several node faults and at least one service fault, so it
// exercises the injector every run.
func TestShortSoakHasAHandfulOfFaults(t *testing.T) {
	for seed := uint64(0); seed < 200; seed++ {
		p, _ := New(testConfig(seed, 50*time.Second))
		if len(p.Nodes) < 2 || len(p.Services) < 1 {
			t.Fatalf("seed %d: %d node faults and %d service faults in 50 s", seed, len(p.Nodes), len(p.Services))
		}
	}
}

func TestNoTargetNoFault(t *testing.T) {
	cfg := testConfig(7, 10*time.Minute)
	cfg.Movers, cfg.Planners = nil, []string{"planner"}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range p.Services {
		if f.Kind != KillPlanner || f.Target != "planner" {
			t.Fatalf("with no mover and one planner: %v", f)
		}
	}
	cfg.Planners = nil
	if p, _ := New(cfg); len(p.Services) != 0 {
		t.Fatalf("no service targets, yet %d service faults", len(p.Services))
	}
}

func TestInvalidConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no length":  {Down: time.Second, Nodes: []string{"a"}},
		"no down":    {For: time.Minute, Nodes: []string{"a"}},
		"no nodes":   {For: time.Minute, Down: time.Second},
		"negative":   {For: -time.Minute, Down: time.Second, Nodes: []string{"a"}},
		"down <= 0 ": {For: time.Minute, Down: -1, Nodes: []string{"a"}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
