package core

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// TestDeferredMergeMatchesRescan is the incremental-queue walk with the
// verdict's merge split as the planner runs it: each verdict's newly short
// shards are taken out under the "lock", a few other changes of the map and
// of nodes land (writes, removals and reuses of handles, pieces, drains,
// other verdicts, registrations, a rescan) before the batch is sorted
// "outside" and merged back; after every merge the queues, the surplus list
// and the totals must equal a full rescan's, and during the window the
// totals already count the shards waiting.
func TestDeferredMergeMatchesRescan(t *testing.T) {
	v := indexedView(t, 3000)
	v.DeferMerges = true
	rng := rand.New(rand.NewPCG(11, 5))
	now := Epoch
	v.clock = func() time.Time { return now }
	states := []model.State{model.StateDown, model.StateSuspect, model.StateUp, model.StateMaintenance}
	node := func() string { return fmt.Sprintf("storage-%d", rng.IntN(100)+1) }
	change := func() {
		switch rng.IntN(9) {
		case 0:
			putPiece(t, v, fmt.Sprintf("obj-%02d", rng.IntN(50)), 0, rng.IntN(6), 4, 2, int64(10+rng.IntN(90)), node())
		case 1, 2:
			v.RemovePlacement(fmt.Sprintf("shard-%06d", rng.IntN(3000)))
		case 3, 4:
			Put(t, v, fmt.Sprintf("shard-%06d", rng.IntN(3000)), 100, node(), node(), node())
		case 5:
			if _, err := v.SetDrain(node(), rng.IntN(2) == 0, DrainState{Since: now}); err != nil {
				t.Fatal(err)
			}
		case 6:
			setState(t, v, node(), states[rng.IntN(len(states))], now)
		case 7:
			if err := v.SetNode(model.Node{V: 1, ID: node(), Rack: "rack-1", Addr: "x:1", CapacityBytes: 1 << 40}); err != nil {
				t.Fatal(err)
			}
		case 8:
			if rng.IntN(4) == 0 {
				v.Rescan()
			}
		}
	}
	merged, skipped := 0, 0
	for step := range 400 {
		now = now.Add(time.Second)
		setState(t, v, node(), states[rng.IntN(len(states))], now)
		p := v.TakePending()
		if p != nil {
			pend := 0
			for _, e := range p.adds {
				if v.Record(e.h).Flags&flagPending != 0 && e.b != moveBucket {
					pend++
				}
			}
			tot, queued := v.Totals(), countTotals(v)
			if tot.UnderReplicated+tot.Lost != queued.UnderReplicated+queued.Lost+pend {
				t.Fatalf("step %d: totals count %d short while a batch of %d is out and %d are queued", step,
					tot.UnderReplicated+tot.Lost, pend, queued.UnderReplicated+queued.Lost)
			}
		}
		for range rng.IntN(4) {
			change()
		}
		if p != nil {
			p.Sort() // "outside the lock"
			pend := 0
			for _, e := range p.adds {
				if v.Record(e.h).Flags&flagPending != 0 {
					pend++
				}
			}
			merged += pend
			skipped += p.Len() - pend
			v.MergePending(p)
		}
		if v.NeedRescan {
			t.Fatalf("step %d: a rescan is pending", step)
		}
		v.fresh() // a reader merges what no caller took
		for h := range v.IDs.Limit() {
			if v.IDs.Valid(h) && v.Record(h).Flags&flagPending != 0 {
				t.Fatalf("step %d: shard %s still pending after the merge", step, v.IDs.String(h))
			}
		}
		checkAgainstRescan(t, v, step)
	}
	if merged < 1000 || skipped == 0 {
		t.Fatalf("%d shards merged, %d skipped as changed meanwhile: the walk tested too little", merged, skipped)
	}
	t.Logf("%d shards merged after sorting outside, %d changed meanwhile and skipped", merged, skipped)
}

// TestDeferredMergeTable checks the cases one by one: a batch merged as
// taken; a shard of the batch that recovered meanwhile (not merged); one that
// lost another copy meanwhile (queued by that change, once); a shard removed
// meanwhile; a rescan meanwhile; and a batch no caller takes, merged by the
// next reader.
func TestDeferredMergeTable(t *testing.T) {
	cases := []struct {
		name    string
		between func(t *testing.T, v *View)
		take    bool
		want    [][]string // buckets 1 and 2, by id
	}{
		{"merged as taken", func(*testing.T, *View) {}, true,
			[][]string{nil, {"a", "b", "c"}}},
		{"recovered meanwhile", func(t *testing.T, v *View) { Put(t, v, "b", 100, "storage-2", "storage-3", "storage-4") }, true,
			[][]string{nil, {"a", "c"}}},
		{"lost another copy meanwhile", func(t *testing.T, v *View) { Put(t, v, "c", 100, "storage-1", "storage-5", "storage-9") }, true,
			[][]string{{"c"}, {"a", "b"}}},
		{"removed meanwhile", func(t *testing.T, v *View) { v.RemovePlacement("a") }, true,
			[][]string{nil, {"b", "c"}}},
		{"rescan meanwhile", func(t *testing.T, v *View) { v.Rescan() }, true,
			[][]string{nil, {"a", "b", "c"}}},
		{"never taken", func(*testing.T, *View) {}, false,
			[][]string{nil, {"a", "b", "c"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := TestView(t, 9, 3)
			v.DeferMerges = true
			setState(t, v, "storage-9", model.StateDown, Epoch)
			for _, id := range []string{"c", "a", "b"} {
				Put(t, v, id, 100, "storage-1", "storage-5", "storage-6")
			}
			setState(t, v, "storage-1", model.StateDown, Epoch)
			var p *PendingMerge
			if c.take {
				if p = v.TakePending(); p == nil || p.Len() != 3 {
					t.Fatalf("batch %+v, want the 3 shards of storage-1", p)
				}
			}
			c.between(t, v)
			if p != nil {
				p.Sort()
				v.MergePending(p)
			}
			tot := v.Totals()
			q, _ := queueState(v)
			if got := [][]string{q[1], q[2]}; !slices.EqualFunc(got, c.want, slices.Equal) {
				t.Fatalf("queues 1 and 2: %q, want %q", got, c.want)
			}
			if tot.UnderReplicated != len(c.want[0])+len(c.want[1]) {
				t.Fatalf("%d under-replicated, want %d", tot.UnderReplicated, len(c.want[0])+len(c.want[1]))
			}
			v.Rescan()
			if q2, _ := queueState(v); !slices.EqualFunc(q, q2, slices.Equal) {
				t.Fatalf("queues %q, a rescan's %q", q, q2)
			}
		})
	}
}
