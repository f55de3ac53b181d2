package disk

import (
	"fmt"
	"os"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// Written returns when shard id's file was last written (its modification
// time), or an error wrapping fs.ErrNotExist when the shard is gone. It reads
// the file's metadata, not the index.
func (s *Store) Written(id string) (time.Time, error) {
	if err := model.ValidateShardID(id); err != nil {
		return time.Time{}, err
	}
	fi, err := os.Stat(s.path(id))
	if err != nil {
		return time.Time{}, fmt.Errorf("stat shard %s: %w", id, err)
	}
	return fi.ModTime(), nil
}

// Page returns up to limit stored shards whose ids sort after after (from the
// first id when after is empty), in id order, and whether more such shards
// exist. The store keeps its ids sorted as they are written and deleted, so a
// page costs O(log N + limit) under a short read lock, whatever the number
// of shards. A limit below 1 yields an empty page. Safe for concurrent use.
func (s *Store) Page(after string, limit int) (page []Info, more bool) {
	if limit < 1 {
		return nil, false
	}
	s.mu.RLock()
	page = make([]Info, 0, min(limit, s.ids.n))
	s.ids.after(after, func(id string) bool {
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, s.index[id].info(id))
		return true
	})
	s.mu.RUnlock()
	return page, more
}
