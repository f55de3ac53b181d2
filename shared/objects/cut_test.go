package objects

import (
	"testing"

	"github.com/rehome/rehome/shared/model"
)

// TestCutAndSpansAtBoundaries: an object cut for writing and laid out again
// for reading agree at and around chunk and stripe boundaries: one unit per
// chunk (rf) or per stripe of K chunks (ec, K+M pieces each), lengths adding
// to the size, and read spans at the same offsets. The round trip through a
// real cluster is tested in shared/clustertest (Put needs a planner).
func TestCutAndSpansAtBoundaries(t *testing.T) {
	const chunk = 1024
	c := &Client{ChunkSize: chunk}
	for _, l := range []model.Layout{{RF: 3}, {K: 4, M: 2}, {K: 3, M: 1}} {
		unitBytes := int64(chunk)
		if l.Erasure() {
			unitBytes *= int64(l.K)
		}
		for _, size := range []int64{0, 1, chunk - 1, chunk, chunk + 1, 2*chunk + 1,
			unitBytes - 1, unitBytes, unitBytes + 1, 3*unitBytes + 7} {
			units, _, err := c.cut("obj", size, l)
			if err != nil {
				t.Fatalf("%s %d: %v", l, size, err)
			}
			want := int(max(1, (size+unitBytes-1)/unitBytes))
			if len(units) != want {
				t.Fatalf("%s, %d bytes: %d units, want %d", l, size, len(units), want)
			}
			m := model.Manifest{Key: "k", Size: size, Layout: l, ChunkSize: chunk}
			var total int64
			for i, u := range units {
				total += int64(u.length)
				if i < len(units)-1 && int64(u.length) != unitBytes {
					t.Fatalf("%s, %d bytes: unit %d holds %d bytes, want %d", l, size, i, u.length, unitBytes)
				}
				perUnit := 1
				if l.Erasure() {
					perUnit = l.K + l.M
				}
				if len(u.specs) != perUnit {
					t.Fatalf("%s: unit %d has %d shards, want %d", l, i, len(u.specs), perUnit)
				}
				for _, s := range u.specs {
					m.Shards = append(m.Shards, model.ShardRef{ID: s.ID, Stripe: s.Stripe, Index: s.Index, Size: s.Size})
				}
			}
			if total != size {
				t.Fatalf("%s, %d bytes: units hold %d", l, size, total)
			}
			sp, _, err := spans(m)
			if err != nil || len(sp) != len(units) {
				t.Fatalf("%s, %d bytes: %d spans (%v), want %d", l, size, len(sp), err, len(units))
			}
			var off int64
			for i, s := range sp {
				if s.off != off || s.n != int64(units[i].length) {
					t.Fatalf("%s, %d bytes: span %d at %d+%d, want %d+%d", l, size, i, s.off, s.n, off, units[i].length)
				}
				off += s.n
			}
		}
	}
}
