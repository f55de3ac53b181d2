package core

import "slices"

// maxUnlisted bounds how many removals the view remembers (oldest forgotten
// first): a report later than that many removals is treated as current.
const maxUnlisted = 1 << 16

// unlisted remembers, for the shards whose entries lately lost a holder
// (a trim, a drop, a removed node), which holders they lost, so that a late
// or repeated copy report naming one of them is not taken for a new copy:
// the copy it reports was deleted, or found missing, after it was made.
// Bounded by maxUnlisted removals in a ring, oldest first out; not safe
// for concurrent use (the view's lock).
type unlisted struct {
	by   map[uint32][]NodeRef
	ring []uint32 // shards in the order a removal was recorded (a ring of maxUnlisted)
	next int      // where the next removal goes in ring
}

// changed records what an entry change of shard h did to its holders:
// those in before but not in after were lost, those in after but not in
// before are listed again. Cheap when nothing was lost and nothing is
// remembered (a cold start's entries).
func (u *unlisted) changed(h uint32, before, after []NodeRef) {
	for _, r := range before {
		if !slices.Contains(after, r) {
			u.note(h, r)
		}
	}
	if len(u.by) == 0 {
		return
	}
	for _, r := range after {
		if !slices.Contains(before, r) {
			u.relisted(h, r)
		}
	}
}

// note records that shard h's entry no longer lists r.
func (u *unlisted) note(h uint32, r NodeRef) {
	if u.by == nil {
		u.by = make(map[uint32][]NodeRef)
	}
	if !slices.Contains(u.by[h], r) {
		u.by[h] = append(u.by[h], r)
	}
	if len(u.ring) < maxUnlisted {
		u.ring = append(u.ring, h)
		return
	}
	delete(u.by, u.ring[u.next]) // the oldest removal's shard is forgotten
	u.ring[u.next] = h
	u.next = (u.next + 1) % maxUnlisted
}

// relisted records that h's entry lists r again (a copy landed there).
func (u *unlisted) relisted(h uint32, r NodeRef) {
	if rs, ok := u.by[h]; ok {
		if rs = slices.DeleteFunc(rs, func(x NodeRef) bool { return x == r }); len(rs) == 0 {
			delete(u.by, h)
		} else {
			u.by[h] = rs
		}
	}
}

// forget drops what is remembered of h (its entry was removed).
func (u *unlisted) forget(h uint32) { delete(u.by, h) }

// has reports whether h's entry lately lost r.
func (u *unlisted) has(h uint32, r NodeRef) bool { return slices.Contains(u.by[h], r) }
