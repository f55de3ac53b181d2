package core

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// batchHarness maps n shards of size bytes on 6 nodes in 3 racks, each on
// storage-1 and, alternately, storage-2+3 or storage-5+6, then takes
// storage-1 down: every new copy must go to storage-4 (rack-1's other node).
func batchHarness(t *testing.T, n int, size int64, lim Limits) *planHarness {
	t.Helper()
	h := newPlanHarness(t, 6, 3, lim)
	for i := range n {
		if i%2 == 0 {
			h.put(fmt.Sprintf("s%03d", i), size, "storage-1", "storage-2", "storage-3")
		} else {
			h.put(fmt.Sprintf("s%03d", i), size, "storage-1", "storage-5", "storage-6")
		}
	}
	h.state("storage-1", model.StateDown)
	return h
}

// members lists the shards a step's tasks carry.
func members(ts []event.Task) []string {
	var out []string
	for _, t := range ts {
		for _, m := range t.Members() {
			out = append(out, m.Shard)
		}
	}
	return out
}

func TestBatchSmallShardsOfOnePairTravelInOneTask(t *testing.T) {
	h := batchHarness(t, 40, 4<<10, Limits{PerNodeIn: 2, PerNodeOut: 2, MaxInFlight: 64, Batch: 16})
	e := h.Step()
	if len(e.Tasks) != 2 {
		t.Fatalf("tasks %d, want 2 (per-node-in 2 on the only valid target; a batch is one transfer)", len(e.Tasks))
	}
	for _, tk := range e.Tasks {
		if tk.Target != "storage-4" || tk.Kind != event.KindCopy || len(tk.Batch) != 16 {
			t.Fatalf("task %s to %s kind %s with %d shards, want a copy of 16 shards to storage-4", tk.Task, tk.Target, tk.Kind, len(tk.Batch))
		}
		if err := tk.Validate(); err != nil {
			t.Fatalf("batched task refused by its own schema check: %v", err)
		}
		for _, m := range tk.Members() {
			if m.Sources[0] != tk.Sources[0] || m.SHA256 != sha || m.Bytes != 4<<10 || m.Attempt != 1 {
				t.Fatalf("member %s: sources %v, bytes %d, attempt %d; want first source %s as the task's", m.Shard, m.Sources, m.Bytes, m.Attempt, tk.Sources[0])
			}
			if p, _ := h.Entry(m.Shard); !slices.Contains(p.Nodes, m.Sources[0]) {
				t.Fatalf("member %s reads from %s, which does not hold it (%v)", m.Shard, m.Sources[0], p.Nodes)
			}
		}
	}
	got := members(e.Tasks)
	if len(got) != 32 || len(slices.Compact(slices.Sorted(slices.Values(got)))) != 32 {
		t.Fatalf("members %v, want 32 distinct shards", got)
	}
	if again := h.Step(); len(again.Tasks) != 0 {
		t.Fatalf("a round with both batches in flight issued %d more tasks", len(again.Tasks))
	}
	for _, tk := range e.Tasks {
		if err := h.Done(tk); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range got {
		if !slices.Contains(h.Holders(id), "storage-4") {
			t.Fatalf("shard %s verified in a batch but the map lists %v", id, h.Holders(id))
		}
	}
	rest := h.Step()
	if n := len(members(rest.Tasks)); n != 8 {
		t.Fatalf("second round carries %d shards, want the 8 left", n)
	}
}

func TestBatchPartialFailureLandsWhatVerifiedAndReplansTheRest(t *testing.T) {
	h := batchHarness(t, 6, 4<<10, Limits{PerNodeIn: 1, PerNodeOut: 4, MaxInFlight: 64, Batch: 16})
	e := h.Step()
	if len(e.Tasks) != 1 || len(e.Tasks[0].Batch) < 3 {
		t.Fatalf("want one batch of 3 or more shards, got %d tasks %v", len(e.Tasks), members(e.Tasks))
	}
	tk := e.Tasks[0]
	ms := tk.Members()
	// The mover: the second shard failed for want of a source, the third
	// on the target; the others verified.
	h.Take(tk.Task)
	for i, m := range ms {
		switch i {
		case 1:
			h.FailSide(m, true, event.SideSource, "source storage-2: shard missing")
		case 2:
			h.FailSide(m, true, event.SideTarget, "target storage-4: write failed")
		default:
			if err := h.Done(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, m := range ms {
		landed := slices.Contains(h.Holders(m.Shard), "storage-4")
		if landed != (i != 1 && i != 2) {
			t.Fatalf("shard %s (member %d): landed %v, want only verified members landed", m.Shard, i, landed)
		}
	}
	failed := []string{ms[1].Shard, ms[2].Shard}
	again := h.Step() // the shards of the other sources go now
	if got := members(again.Tasks); slices.ContainsFunc(got, func(s string) bool { return slices.Contains(failed, s) }) {
		t.Fatalf("failed members re-planned before their backoff: %v", got)
	}
	for _, tk := range again.Tasks {
		if err := h.Done(tk); err != nil {
			t.Fatal(err)
		}
	}
	h.Advance(2 * time.Second)
	next := h.Step()
	if got := slices.Sorted(slices.Values(members(next.Tasks))); !slices.Equal(got, slices.Sorted(slices.Values(failed))) {
		t.Fatalf("re-planned %v, want only the two failed members %v", got, failed)
	}
	for _, tk := range next.Tasks {
		for _, m := range tk.Members() {
			if m.Attempt != 2 || m.Target != "storage-4" {
				t.Fatalf("re-planned %s: attempt %d to %s, want attempt 2 to storage-4 (the only rack-keeping target)", m.Shard, m.Attempt, m.Target)
			}
			if m.Shard == ms[1].Shard && m.Sources[0] == ms[1].Sources[0] {
				t.Fatalf("source-side failure of %s re-read first from the source that failed (%s)", m.Shard, m.Sources[0])
			}
		}
	}
}

func TestBatchThrottles(t *testing.T) {
	t.Run("global limit counts a batch once", func(t *testing.T) {
		h := batchHarness(t, 40, 4<<10, Limits{PerNodeIn: 8, PerNodeOut: 8, MaxInFlight: 1, Batch: 10})
		e := h.Step()
		if len(e.Tasks) != 1 || len(e.Tasks[0].Batch) != 10 {
			t.Fatalf("want one task of 10 shards under a global limit of 1, got %d tasks carrying %d", len(e.Tasks), len(members(e.Tasks)))
		}
	})
	t.Run("byte cap counts every shard", func(t *testing.T) {
		lim := Limits{PerNodeIn: 8, PerNodeOut: 8, MaxInFlight: 64, Batch: 16,
			Bytes: rate.NewLimiter(rate.Limit(4<<10), 5*(4<<10))}
		h := batchHarness(t, 40, 4<<10, lim)
		e := h.Step()
		if n := len(members(e.Tasks)); n != 5 {
			t.Fatalf("a byte cap with a burst of 5 shards let %d through", n)
		}
		if e.Plan.Wait <= 0 {
			t.Fatalf("byte cap held shards back without a wait")
		}
	})
	t.Run("per-source limit", func(t *testing.T) {
		h := batchHarness(t, 40, 4<<10, Limits{PerNodeIn: 8, PerNodeOut: 1, MaxInFlight: 64, Batch: 4})
		e := h.Step()
		srcs := map[string]int{}
		for _, tk := range e.Tasks {
			srcs[tk.Sources[0]]++
		}
		for s, n := range srcs {
			if n > 1 {
				t.Fatalf("source %s serves %d tasks at once, per-node-out 1", s, n)
			}
		}
		if len(members(e.Tasks)) > 4*4 {
			t.Fatalf("%d shards in flight from 4 sources at one batch of 4 each", len(members(e.Tasks)))
		}
	})
	t.Run("large shards travel alone", func(t *testing.T) {
		h := batchHarness(t, 8, BatchShardMax+1, Limits{PerNodeIn: 2, PerNodeOut: 8, MaxInFlight: 64, Batch: 16})
		e := h.Step()
		if len(e.Tasks) != 2 {
			t.Fatalf("want 2 tasks (per-node-in 2), got %d", len(e.Tasks))
		}
		for _, tk := range e.Tasks {
			if len(tk.Batch) != 0 {
				t.Fatalf("a shard of %d bytes was batched", tk.Bytes)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		h := batchHarness(t, 8, 4<<10, Limits{PerNodeIn: 2, PerNodeOut: 8, MaxInFlight: 64})
		for _, tk := range h.Step().Tasks {
			if len(tk.Batch) != 0 {
				t.Fatalf("batch formed with Limits.Batch 0")
			}
		}
	})
}

// TestBatchSeededAfterTakeover: a planner taking over counts a queued batch
// as in flight, shard by shard, and as one transfer of its target's slots.
func TestBatchSeededAfterTakeover(t *testing.T) {
	lim := Limits{PerNodeIn: 1, PerNodeOut: 8, MaxInFlight: 64, Batch: 8}
	h := batchHarness(t, 12, 4<<10, lim)
	e := h.Step()
	if len(e.Tasks) != 1 {
		t.Fatalf("want one batch, got %d tasks", len(e.Tasks))
	}
	h2 := batchHarness(t, 12, 4<<10, lim)
	// The first shard landed before the takeover (its Done was handled).
	ms := e.Tasks[0].Members()
	landed, _ := h2.Entry(ms[0].Shard)
	landed, _ = AddHolder(landed, "storage-4")
	if err := h2.Write(landed); err != nil {
		t.Fatal(err)
	}
	if !h2.View.SeedFlight(e.Tasks[0], 1, h2.Now.Add(time.Hour)) {
		t.Fatal("queued batch not seeded")
	}
	if got := h2.Step(); len(got.Tasks) != 0 {
		t.Fatalf("the new planner issued %v beside the queued batch (per-node-in 1)", members(got.Tasks))
	}
	for i, m := range ms {
		hh, _ := h2.View.IDs.Lookup(m.Shard)
		f := h2.View.Flights[hh]
		if i == 0 && f != nil {
			t.Fatalf("member %s, landed before the takeover, seeded in flight again", m.Shard)
		}
		if i > 0 && (f == nil || f.Task != m.Task) {
			t.Fatalf("member %s not in flight under its task id after the takeover", m.Shard)
		}
	}
}

// TestBatchDoesNotStarveOtherTargets: a target with a batch forming is
// offered to later shards as if free, but a shard that cannot join it (no
// holder is the batch's source) still goes to another target with a free
// slot in the same round. 6 nodes in 6 racks, storage-1 down, one write
// slot per node, two shards with no holder in common: both go out at once,
// whatever targets their ids' hashes favour.
func TestBatchDoesNotStarveOtherTargets(t *testing.T) {
	for i := range 40 {
		h := newPlanHarness(t, 6, 6, Limits{PerNodeIn: 1, PerNodeOut: 8, MaxInFlight: 64, Batch: 4})
		h.put(fmt.Sprintf("a%03d", i), 4<<10, "storage-1", "storage-2", "storage-3")
		h.put(fmt.Sprintf("b%03d", i), 4<<10, "storage-1", "storage-5", "storage-6")
		h.state("storage-1", model.StateDown)
		if got := members(h.Step().Tasks); len(got) != 2 {
			t.Fatalf("pair %d: first round planned %v, want both shards (free targets remain for each)", i, got)
		}
	}
}
