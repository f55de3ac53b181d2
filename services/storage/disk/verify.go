package disk

import (
	"errors"
	"fmt"
	"io"
)

// VerifyChunk is the most Verify reads between two calls of its pace function.
const VerifyChunk = 64 << 10

// Verify re-reads shard id from disk and checks its bytes against the stored
// checksum, returning how many shard bytes it read. Before reading each chunk
// of n bytes (0 < n <= VerifyChunk) it calls pace(n), which may block (a rate
// limiter) and whose error stops the verification and is returned as is
// (pace may be nil). A shard that fails is quarantined exactly as a failed Get
// is (no longer indexed or served), reported to Options.OnQuarantine as
// FoundScrub, and Verify returns an error wrapping ErrCorrupt. A shard absent
// from the index (deleted meanwhile) yields ErrNotFound. Verify is safe to
// call concurrently with every other method; a shard deleted or replaced while
// it is verified is never quarantined by mistake.
func (s *Store) Verify(id string, pace func(n int) error) (int64, error) {
	rd, info, err := s.open(id, FoundScrub)
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := (*bp)[:VerifyChunk]
	var done int64
	for done < info.Size {
		n := int(min(int64(len(buf)), info.Size-done))
		if pace != nil {
			if err := pace(n); err != nil {
				return done, err
			}
		}
		if _, err := io.ReadFull(rd, buf[:n]); err != nil {
			return done, err
		}
		done += int64(n)
	}
	// The reader checks the checksum when it hands out the last byte; an empty
	// shard is checked here.
	if _, err := rd.Read(buf[:1]); !errors.Is(err, io.EOF) {
		if err == nil {
			err = fmt.Errorf("shard %s: more bytes than indexed", id)
		}
		return done, err
	}
	return done, nil
}
