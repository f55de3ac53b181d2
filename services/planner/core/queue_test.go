package core

import (
	"cmp"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestQueuedOrderIsSinceThenID checks the prefix shortcut against the
// order it stands for: first seen short earlier first, then by id, on ids
// that share prefixes, are shorter than 8 bytes, or differ only after them.
func TestQueuedOrderIsSinceThenID(t *testing.T) {
	v := TestView(t, 3, 3)
	r := rand.New(rand.NewPCG(1, 7))
	alphabet := "ab0-"
	var keys []queued
	for range 2000 {
		n := 1 + r.IntN(12)
		var b strings.Builder
		for range n {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		h, _ := v.IDs.Intern(b.String())
		keys = append(keys, v.queuedKey(int64(r.IntN(3)), h))
	}
	for i, a := range keys {
		for _, b := range keys[max(0, i-50):i] {
			want := cmp.Compare(a.since, b.since)
			if want == 0 {
				want = strings.Compare(v.IDs.String(a.h), v.IDs.String(b.h))
			}
			if got := v.queuedOrder(a, b); got != want {
				t.Fatalf("queuedOrder(%q@%d, %q@%d) = %d, want %d", v.IDs.String(a.h), a.since, v.IDs.String(b.h), b.since, got, want)
			}
		}
	}
}
