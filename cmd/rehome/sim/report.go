package sim

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Flags renders the command-line flags that rebuild cfg's cluster and
// schedules (the defaults left out).
func (c Config) Flags() string {
	c = c.withDefaults()
	d := Config{Nodes: c.Nodes}.withDefaults()
	f := []string{"--nodes " + strconv.Itoa(c.Nodes)}
	if c.Racks != d.Racks {
		f = append(f, "--racks "+strconv.Itoa(c.Racks))
	}
	if c.Shards != d.Shards {
		f = append(f, "--shards "+strconv.Itoa(c.Shards))
	}
	if c.MaxFaults != d.MaxFaults {
		f = append(f, "--max-faults "+strconv.Itoa(c.MaxFaults))
	}
	if c.BusFaults {
		f = append(f, "--bus-faults")
	}
	if c.Layout != d.Layout {
		f = append(f, "--layout "+c.Layout)
	}
	if c.Placement != d.Placement {
		f = append(f, "--placement "+c.Placement, "--scatter-width "+strconv.Itoa(c.Scatter))
	}
	return strings.Join(f, " ")
}

// ReplayCommand is the command line that replays seed on cfg's cluster,
// keeping only the faults at keep (nil: all).
func ReplayCommand(cfg Config, seed uint64, keep []int) string {
	s := fmt.Sprintf("rehome sim %s --seed %d", cfg.Flags(), seed)
	if keep != nil {
		ks := make([]string, len(keep))
		for i, k := range keep {
			ks[i] = strconv.Itoa(k)
		}
		s += " --keep " + strings.Join(ks, ",")
	}
	return s
}

// WriteFailure reports a failed run to w: the seed, the invariant broken,
// the schedule (shrunk when keep is not nil) and the command that replays it.
func WriteFailure(w io.Writer, cfg Config, res Result, shrunk Schedule, keep []int) {
	fmt.Fprintf(w, "seed %d: invariant broken %v\n", res.Seed, res.Violation)
	fmt.Fprintf(w, "schedule (%d faults):\n", len(res.Schedule))
	for _, f := range res.Schedule {
		fmt.Fprintf(w, "  %s\n", f)
	}
	if keep != nil {
		fmt.Fprintf(w, "shrunk to %d faults:\n", len(shrunk))
		for _, f := range shrunk {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	fmt.Fprintf(w, "replay: %s\n", ReplayCommand(cfg, res.Seed, keep))
}
