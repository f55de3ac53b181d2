package core

import "testing"

// TestUnlistedForgetsTheOldestFirst: past maxUnlisted removals the oldest
// shard's are forgotten; a holder listed again is forgotten at once.
func TestUnlistedForgetsTheOldestFirst(t *testing.T) {
	var u unlisted
	for h := uint32(0); h <= maxUnlisted; h++ {
		u.changed(h, []NodeRef{1, 2}, []NodeRef{1})
	}
	if u.has(0, 2) || !u.has(1, 2) || !u.has(maxUnlisted, 2) || len(u.by) != maxUnlisted {
		t.Fatalf("after %d removals: shard 0 %t, shard 1 %t, last %t, %d remembered", maxUnlisted+1,
			u.has(0, 2), u.has(1, 2), u.has(maxUnlisted, 2), len(u.by))
	}
	u.changed(1, []NodeRef{1}, []NodeRef{1, 2})
	if u.has(1, 2) {
		t.Fatal("a holder listed again is still remembered as lost")
	}
}
