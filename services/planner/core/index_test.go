package core

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// indexedView is a loaded view of 100 nodes on 10 racks with n replicated
// shards dealt on three consecutive nodes, and 50 stripes of 4+2 pieces.
func indexedView(t *testing.T, n int) *View {
	t.Helper()
	v := TestView(t, 100, 10)
	node := func(i int) string { return fmt.Sprintf("storage-%d", i%100+1) }
	for i := range n {
		Put(t, v, fmt.Sprintf("shard-%06d", i), 100, node(i), node(i+1), node(i+2))
	}
	for s := range 50 {
		PutStripe(t, v, fmt.Sprintf("obj-%02d", s), 0, 4, 2, 50, node(s), node(s+10), node(s+20), node(s+30), node(s+40), node(s+50))
	}
	v.Rescan()
	return v
}

// queueState is the repair queue and surplus list, by shard id.
func queueState(v *View) (queues [][]string, surplus []string) {
	queues = make([][]string, len(v.buckets))
	for b, q := range v.buckets {
		for _, h := range q {
			queues[b] = append(queues[b], v.IDs.String(h))
		}
	}
	for _, h := range v.surplus {
		surplus = append(surplus, v.IDs.String(h))
	}
	return queues, surplus
}

// TestVerdictCostsOneNodesShards: a node's down verdict, its return and an
// inventory check of it examine that node's shards (and the pieces of its
// stripes), not the map: no rescan, and the visits counted stay within the
// node's share.
func TestVerdictCostsOneNodesShards(t *testing.T) {
	const n = 20000
	v := indexedView(t, n)
	r := v.NodeIndex["storage-7"]
	onNode := len(v.byNode[r])
	if onNode < 3*n/100 || onNode > 3*n/100+50 {
		t.Fatalf("index lists %d shards on storage-7, want about %d", onNode, 3*n/100)
	}
	budget := int64(onNode + 6*onNode) // its shards, plus at most every piece of each of its stripes
	rescans, visits := v.Rescans(), v.Visits()
	setState(t, v, "storage-7", model.StateDown, Epoch)
	if v.Rescans() != rescans {
		t.Fatal("a down verdict rescanned the whole map")
	}
	if got := v.Visits() - visits; got > budget || got < int64(onNode) {
		t.Fatalf("a down verdict visited %d shards, want between %d and %d", got, onNode, budget)
	}
	if tot := v.Totals(); tot.UnderReplicated < onNode-50 {
		t.Fatalf("after the verdict %d shards under-replicated, want about %d", tot.UnderReplicated, onNode)
	}
	visits = v.Visits()
	c := v.StartCheck(r)
	if got := v.Visits() - visits; got != int64(onNode) || len(c.ids) != onNode {
		t.Fatalf("an inventory check visited %d shards and listed %d, want %d", got, len(c.ids), onNode)
	}
	visits = v.Visits()
	if _, err := v.SetDrain("storage-8", true, DrainState{Since: Epoch}); err != nil {
		t.Fatal(err)
	}
	if got := v.Visits() - visits; got > budget {
		t.Fatalf("a drain visited %d shards, want at most %d", got, budget)
	}
	if v.Rescans() != rescans {
		t.Fatal("a drain rescanned the whole map")
	}
}

// TestIncrementalQueueMatchesRescan plays random verdicts, registrations,
// drains and map writes, refreshing only the shards concerned, and checks
// after each that the queues and the surplus list are exactly what a full
// rescan derives.
func TestIncrementalQueueMatchesRescan(t *testing.T) {
	v := indexedView(t, 3000)
	rng := rand.New(rand.NewPCG(7, 18))
	now := Epoch
	v.clock = func() time.Time { return now }
	states := []model.State{model.StateDown, model.StateSuspect, model.StateUp, model.StateMaintenance}
	sawDegraded := false
	for step := range 300 {
		now = now.Add(time.Second)
		node := fmt.Sprintf("storage-%d", rng.IntN(100)+1)
		switch op := rng.IntN(8); op {
		case 6:
			o := rng.IntN(50)
			putPiece(t, v, fmt.Sprintf("obj-%02d", o), 0, rng.IntN(6), 4, 2, int64(10+rng.IntN(90)),
				fmt.Sprintf("storage-%d", rng.IntN(100)+1))
		case 7:
			v.RemovePlacement(fmt.Sprintf("shard-%06d", rng.IntN(3000)))
		case 0, 1:
			setState(t, v, node, states[rng.IntN(len(states))], now)
		case 2:
			v.ClearLiveness(node)
		case 3:
			if _, err := v.SetDrain(node, rng.IntN(2) == 0, DrainState{Since: now}); err != nil {
				t.Fatal(err)
			}
		case 4:
			Put(t, v, fmt.Sprintf("shard-%06d", rng.IntN(3000)), 100,
				fmt.Sprintf("storage-%d", rng.IntN(100)+1), node, fmt.Sprintf("storage-%d", rng.IntN(100)+1))
		case 5:
			if rng.IntN(2) == 0 {
				v.RemoveNode(node)
			} else if err := v.SetNode(model.Node{V: 1, ID: node, Rack: "rack-1", Addr: "x:1", CapacityBytes: 1 << 40}); err != nil {
				t.Fatal(err)
			}
		}
		if v.NeedRescan {
			t.Fatalf("step %d: a rescan is pending", step)
		}
		tot := checkAgainstRescan(t, v, step)
		sawDegraded = sawDegraded || tot.StripesDegraded > 0
	}
	if tot := v.Totals(); tot.UnderReplicated == 0 && tot.Lost == 0 || !sawDegraded {
		t.Fatal("the walk never left a shard short or a stripe degraded: it tested too little")
	}
}

// countTotals counts Totals by walking the queues, shard by shard.
// checkAgainstRescan fails t (at step) unless the view's running totals
// equal a count of its queues, and its queues, surplus list and totals equal
// those of a full rescan (which it does). It returns the totals.
func checkAgainstRescan(t *testing.T, v *View, step int) totals {
	t.Helper()
	q, s := queueState(v)
	tot := v.Totals()
	if want := countTotals(v); tot != want {
		t.Fatalf("step %d: running totals %+v, counted %+v", step, tot, want)
	}
	v.Rescan()
	q2, s2 := queueState(v)
	if !slices.EqualFunc(q, q2, slices.Equal) || !slices.Equal(s, s2) {
		t.Fatalf("step %d: incremental queues differ from a rescan", step)
	}
	if tot2 := v.Totals(); tot2 != tot {
		t.Fatalf("step %d: totals %+v after a rescan, %+v before", step, tot2, tot)
	}
	return tot
}

func countTotals(v *View) totals {
	t := totals{Shards: v.IDs.Len(), Objects: v.objects, InFlight: v.copyFlights + len(v.Trims), Surplus: len(v.surplus),
		Stripes: v.stripeCount}
	degraded := map[*StripeGroup]bool{}
	for b := 0; b < moveBucket; b++ {
		for _, h := range v.buckets[b] {
			s := v.Record(h)
			l := v.layouts[s.layout]
			if l.Erasure() {
				if g := v.Group(h); g != nil {
					degraded[g] = true
				}
			}
			if b == 0 {
				t.Lost++
				continue
			}
			t.UnderReplicated++
			if l.Erasure() {
				t.BytesRemaining += s.size
			} else {
				t.BytesRemaining += s.size * int64(l.Copies()-b)
			}
		}
	}
	t.moving = len(v.buckets[moveBucket])
	t.StripesDegraded = len(degraded)
	return t
}
