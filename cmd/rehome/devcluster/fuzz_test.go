package devcluster_test

import (
	"math"
	"testing"
	"time"

	"github.com/rehome/rehome/cmd/rehome/devcluster"
)

// FuzzConfig feeds arbitrary `rehome dev` flag values to the configuration
// check: whatever it accepts can run (1-64 nodes on 1..nodes racks, 1-5
// planners, a port, a silent share in (0, 1], positive durations).
func FuzzConfig(f *testing.F) {
	f.Add(6, 3, 2, 1, 4222, 0.5, int64(10*time.Second), int64(3*time.Second), int64(time.Second))
	f.Fuzz(func(t *testing.T, nodes, racks, movers, planners, port int, share float64, grace, suspect, heartbeat int64) {
		c := devcluster.Config{Dir: "rehome-data", Nodes: nodes, Racks: racks, Movers: movers, Planners: planners, NATSPort: port,
			MaxSilent: share, Grace: time.Duration(grace), SuspectAfter: time.Duration(suspect), Heartbeat: time.Duration(heartbeat)}
		if c.Validate() != nil {
			return
		}
		if nodes < 1 || nodes > 64 || racks < 1 || racks > nodes || planners < 1 || planners > 5 || movers < 1 ||
			port < 1 || port > 65535 || math.IsNaN(share) || share <= 0 || share > 1 || grace <= 0 || suspect <= 0 || heartbeat <= 0 {
			t.Fatalf("accepted %+v", c)
		}
	})
}
