package disk

import (
	"slices"
	"strings"
)

// maxBlock bounds one block of sortedIDs: inserts and deletes move at most
// this many strings.
const maxBlock = 1024

// sortedIDs is an ordered set of shard ids kept as a list of sorted blocks
// (every id of a block sorts before every id of the next one). Inserting or
// deleting costs O(log N + maxBlock); reading k ids from any point costs
// O(log N + k). It shares the id strings with the index map, so it adds about
// 16 bytes per shard. Not safe for concurrent use: Store.mu guards it.
type sortedIDs struct {
	blocks [][]string
	n      int
}

// newSortedIDs builds the set from ids (any order, no duplicates) with one sort.
func newSortedIDs(ids []string) sortedIDs {
	slices.Sort(ids)
	var s sortedIDs
	for len(ids) > 0 {
		k := min(len(ids), maxBlock/2)
		s.blocks = append(s.blocks, slices.Clone(ids[:k]))
		ids = ids[k:]
		s.n += k
	}
	return s
}

// seek returns the block holding the first id >= id and its position in that
// block; b == len(blocks) when every id is smaller.
func (s *sortedIDs) seek(id string) (b, i int) {
	b, _ = slices.BinarySearchFunc(s.blocks, id, func(blk []string, id string) int {
		return strings.Compare(blk[len(blk)-1], id)
	})
	if b == len(s.blocks) {
		return b, 0
	}
	i, _ = slices.BinarySearch(s.blocks[b], id)
	return b, i
}

// insert adds id; it reports false if id was already there.
func (s *sortedIDs) insert(id string) bool {
	if len(s.blocks) == 0 {
		s.blocks = [][]string{{id}}
		s.n = 1
		return true
	}
	b, i := s.seek(id)
	if b == len(s.blocks) { // larger than every id: append to the last block
		b = len(s.blocks) - 1
		i = len(s.blocks[b])
	} else if s.blocks[b][i] == id {
		return false
	}
	s.blocks[b] = slices.Insert(s.blocks[b], i, id)
	s.n++
	if blk := s.blocks[b]; len(blk) > maxBlock {
		half := len(blk) / 2
		s.blocks = slices.Insert(s.blocks, b+1, slices.Clone(blk[half:]))
		s.blocks[b] = slices.Clip(blk[:half])
	}
	return true
}

// remove deletes id; it reports false if id was not there.
func (s *sortedIDs) remove(id string) bool {
	b, i := s.seek(id)
	if b == len(s.blocks) || s.blocks[b][i] != id {
		return false
	}
	s.blocks[b] = slices.Delete(s.blocks[b], i, i+1)
	s.n--
	if len(s.blocks[b]) == 0 {
		s.blocks = slices.Delete(s.blocks, b, b+1)
	}
	return true
}

// after calls fn on every id greater than id, in order, until fn returns false.
func (s *sortedIDs) after(id string, fn func(string) bool) {
	b, i := s.seek(id)
	for ; b < len(s.blocks); b, i = b+1, 0 {
		blk := s.blocks[b]
		if i < len(blk) && blk[i] == id {
			i++
		}
		for ; i < len(blk); i++ {
			if !fn(blk[i]) {
				return
			}
		}
	}
}
