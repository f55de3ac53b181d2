// Package intern assigns dense uint32 handles to distinct short strings and
// stores their bytes compactly: one arena of 1 MiB chunks, an 8-byte reference
// per handle and an open-addressing hash index of 4-byte slots. A string costs
// about len(s) + 16 bytes, against ~60 + len(s) for a map[string]uint32. The
// planner uses it for shard ids (millions of them).
//
// A Table is not safe for concurrent use.
package intern

import (
	"hash/maphash"
	"unsafe"
)

// MaxLen is the longest string a Table stores.
const MaxLen = 255

const (
	chunkBits = 20
	chunkSize = 1 << chunkBits // arena chunk bytes
	pageBits  = 16
	pageSize  = 1 << pageBits // refs per page
	minSlots  = 1024
)

// Table maps strings to handles and back. The zero value is not usable: call New.
type Table struct {
	seed   maphash.Seed
	chunks [][]byte   // arena; every chunk has capacity chunkSize
	refs   [][]uint64 // handle -> chunk<<28 | offset<<8 | len; 0 = free
	slots  []uint32   // handle+1, 0 = empty
	free   []uint32   // recycled handles
	next   uint32     // handles ever issued
	n      int        // strings stored
	live   int64      // arena bytes in use
	dead   int64      // arena bytes of removed strings
}

// New returns an empty table.
func New() *Table {
	return &Table{seed: maphash.MakeSeed(), slots: make([]uint32, minSlots)}
}

// Len returns how many strings the table holds.
func (t *Table) Len() int { return t.n }

// Limit returns one more than the highest handle ever issued: every live
// handle is below it.
func (t *Table) Limit() uint32 { return t.next }

func (t *Table) ref(h uint32) uint64 {
	return t.refs[h>>pageBits][h&(pageSize-1)]
}

func (t *Table) setRef(h uint32, r uint64) {
	p := int(h >> pageBits)
	for p >= len(t.refs) {
		t.refs = append(t.refs, make([]uint64, pageSize))
	}
	t.refs[p][h&(pageSize-1)] = r
}

// Valid reports whether h names a stored string.
func (t *Table) Valid(h uint32) bool { return h < t.next && t.ref(h) != 0 }

// String returns the string of handle h ("" if h is not valid). The result
// stays valid after h is removed: arena bytes are never overwritten.
func (t *Table) String(h uint32) string {
	if !t.Valid(h) {
		return ""
	}
	return t.view(t.ref(h))
}

func (t *Table) view(r uint64) string {
	c, off, n := r>>28, (r>>8)&(chunkSize-1), r&0xff
	return unsafe.String(&t.chunks[c][off], int(n))
}

func (t *Table) hash(s string) uint64 { return maphash.String(t.seed, s) }

// find returns the slot index holding s, or the empty slot where it would go.
func (t *Table) find(s string) (slot int, found bool) {
	mask := uint64(len(t.slots) - 1)
	i := t.hash(s) & mask
	for {
		v := t.slots[i]
		if v == 0 {
			return int(i), false
		}
		if t.view(t.ref(v-1)) == s {
			return int(i), true
		}
		i = (i + 1) & mask
	}
}

// Lookup returns the handle of s.
func (t *Table) Lookup(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > MaxLen {
		return 0, false
	}
	i, ok := t.find(s)
	if !ok {
		return 0, false
	}
	return t.slots[i] - 1, true
}

// Intern returns the handle of s, adding s if absent (added reports which).
// s must be 1..MaxLen bytes long; Intern panics otherwise (validate first).
func (t *Table) Intern(s string) (h uint32, added bool) {
	if len(s) == 0 || len(s) > MaxLen {
		panic("intern: string length out of range")
	}
	i, ok := t.find(s)
	if ok {
		return t.slots[i] - 1, false
	}
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
		i, _ = t.find(s)
	}
	if k := len(t.free); k > 0 {
		h = t.free[k-1]
		t.free = t.free[:k-1]
	} else {
		h = t.next
		t.next++
	}
	t.setRef(h, t.store(s))
	t.slots[i] = h + 1
	t.n++
	t.live += int64(len(s))
	return h, true
}

// store appends s to the arena and returns its reference.
func (t *Table) store(s string) uint64 {
	last := len(t.chunks) - 1
	if last < 0 || len(t.chunks[last])+len(s) > chunkSize {
		t.chunks = append(t.chunks, make([]byte, 0, chunkSize))
		last++
	}
	c := t.chunks[last]
	off := len(c)
	t.chunks[last] = append(c, s...)
	return uint64(last)<<28 | uint64(off)<<8 | uint64(len(s))
}

// Remove deletes the string of handle h and recycles h. Removing an invalid
// handle does nothing.
func (t *Table) Remove(h uint32) {
	if !t.Valid(h) {
		return
	}
	s := t.view(t.ref(h))
	i, ok := t.find(s)
	if !ok {
		return
	}
	// Backward-shift deletion keeps probe chains intact without tombstones.
	mask := len(t.slots) - 1
	j := i
	for {
		j = (j + 1) & mask
		v := t.slots[j]
		if v == 0 {
			break
		}
		home := int(t.hash(t.view(t.ref(v-1)))) & mask
		if (i <= j && i < home && home <= j) || (i > j && (i < home || home <= j)) {
			continue
		}
		t.slots[i] = v
		i = j
	}
	t.slots[i] = 0
	t.setRef(h, 0)
	t.free = append(t.free, h)
	t.n--
	t.live -= int64(len(s))
	t.dead += int64(len(s))
	if t.dead > t.live && t.dead > 4*chunkSize {
		t.compact()
	}
}

func (t *Table) grow() {
	old := t.slots
	t.slots = make([]uint32, len(old)*2)
	mask := uint64(len(t.slots) - 1)
	for _, v := range old {
		if v == 0 {
			continue
		}
		i := t.hash(t.view(t.ref(v-1))) & mask
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = v
	}
}

// compact copies live strings into fresh chunks, dropping removed bytes.
// Strings handed out earlier keep their old chunk alive until dropped.
func (t *Table) compact() {
	fresh := &Table{}
	for h := uint32(0); h < t.next; h++ {
		if r := t.ref(h); r != 0 {
			t.setRef(h, fresh.store(t.view(r))) // t.view still reads the old chunks
		}
	}
	t.chunks = fresh.chunks
	t.dead = 0
}
