package core

import "slices"

// maxUnlisted bounds how many shards' lately removed holders the view
// remembers (oldest forgotten first): a report later than that many
// removals is treated as current.
const maxUnlisted = 1 << 16

// unlisted remembers, for the shards whose entries lately lost a holder
// (a trim, a drop, a removed node), which holders they lost, so that a late
// or repeated copy report naming one of them is not taken for a new copy:
// the copy it reports was deleted, or found missing, after it was made.
// Bounded by maxUnlisted shards, oldest first out; not safe for concurrent
// use (the view's lock).
type unlisted struct {
	by   map[uint32][]NodeRef
	fifo []uint32 // shards in the order a removal was recorded
}

// note records that shard h's entry no longer lists r.
func (u *unlisted) note(h uint32, r NodeRef) {
	if u.by == nil {
		u.by = make(map[uint32][]NodeRef)
	}
	if !slices.Contains(u.by[h], r) {
		u.by[h] = append(u.by[h], r)
	}
	u.fifo = append(u.fifo, h)
	if len(u.fifo) > maxUnlisted {
		delete(u.by, u.fifo[0])
		u.fifo = slices.Delete(u.fifo, 0, 1)
	}
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
