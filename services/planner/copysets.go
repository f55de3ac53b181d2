package planner

import (
	"fmt"
	"strings"

	"github.com/rehome/rehome/services/planner/placement"
)

// copysetSeed seeds the copysets' draw: every planner draws the same ones
// from the same membership, so a lease hand-over keeps them.
const copysetSeed = 0x7265686f6d65 // "rehome"

// copysetCache keeps the copysets of the last membership and RF seen; they
// are drawn again only when a node joins, leaves or changes rack.
type copysetCache struct {
	key  string
	sets *placement.Copysets
}

// allocateReplicas places rf replicas of each shard: on copysets under
// copyset placement, else by placement.Allocate. The caller holds s.mu.
func (s *Service) allocateReplicas(cands []placement.Candidate, rf int, shards []placement.Shard) ([][]int, error) {
	if s.cfg.Placement != PlacementCopyset {
		return placement.Allocate(cands, rf, shards)
	}
	var key strings.Builder
	fmt.Fprintf(&key, "%d/%d", rf, s.cfg.ScatterWidth)
	for _, c := range cands {
		key.WriteString("|" + c.ID + "@" + c.Rack)
	}
	if s.copysets.key != key.String() {
		cs, err := placement.NewCopysets(cands, rf, s.cfg.ScatterWidth, copysetSeed)
		if err != nil {
			return nil, err
		}
		s.copysets = copysetCache{key: key.String(), sets: cs}
	}
	return placement.AllocateCopysets(cands, s.copysets.sets, shards)
}
