package core

import (
	"time"

	"github.com/rehome/rehome/shared/control"
)

// orphanVerdict is what findOrphans decided about one node's inventory.
type orphanVerdict struct {
	// Delete are the copies to delete: unknown to the map and older than
	// the grace. Empty when Held.
	Delete []control.InventoryShard
	// Young are unknown copies still within the grace (kept, for now).
	Young int
	// Undated are unknown copies whose age the node did not report (kept).
	Undated int
	// Unknown counts every copy the map does not know; Total the inventory.
	Unknown, Total int
	// Held is set when Unknown exceeds maxShare of Total: nothing is deleted.
	Held bool
}

// FindOrphans decides which of a node's copies are orphans to delete. shards
// are inventory entries (a filtered subset is fine: known ones are skipped),
// total is the size of the whole inventory, known reports the ids the view
// knows (map, copies in flight, allocations), now is the node's clock. A copy
// is deleted only when known says no and its Written is set and more than
// grace before now; nothing is deleted when the unknown copies are more than
// maxShare of total (a wrong view must not wipe a node) or grace is not
// positive. It is a pure function.
func FindOrphans(shards []control.InventoryShard, total int, known func(id string) bool, now time.Time,
	grace time.Duration, maxShare float64) orphanVerdict {
	var v orphanVerdict
	for _, sh := range shards {
		if known(sh.ID) {
			continue
		}
		v.Unknown++
		switch {
		case sh.Written.IsZero():
			v.Undated++
		case grace <= 0 || now.Sub(sh.Written) <= grace:
			v.Young++
		default:
			v.Delete = append(v.Delete, sh)
		}
	}
	v.Total = max(total, len(shards))
	if !(float64(v.Unknown) <= maxShare*float64(v.Total)) { // NaN holds too
		v.Held = true
		v.Delete = nil
	}
	return v
}

// OrphanKnown reports whether the view knows shard id: a map entry, a copy
// or rebuild in flight when it left the map (view.unmapped), or a shard of an
// allocation not yet committed or expired.
func (v *View) OrphanKnown(id string) bool {
	if _, ok := v.IDs.Lookup(id); ok {
		return true
	}
	if _, ok := v.unmapped[id]; ok {
		return true
	}
	for _, a := range v.Allocs {
		if a.Shards[id] {
			return true
		}
	}
	return false
}
