package planner_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// ecManifest builds an erasure-coded object of the given stripes, each of
// k+m pieces of size bytes (piece ids as the client makes them).
func ecManifest(key string, stripes, k, m int, size int64) model.Manifest {
	id := "obj-" + hex.EncodeToString([]byte(key))
	mf := model.Manifest{V: 1, Key: key, ID: id, Layout: model.Layout{K: k, M: m}, ChunkSize: size,
		Size: int64(stripes*k) * size, Created: time.Now().UTC()}
	whole := sha256.New()
	for s := 0; s < stripes; s++ {
		for i := 0; i < k+m; i++ {
			pid := fmt.Sprintf("%s-s%06dp%03d", id, s, i)
			sum := sha256.Sum256([]byte(pid))
			whole.Write(sum[:])
			mf.Shards = append(mf.Shards, model.ShardRef{ID: pid, Stripe: s, Index: i, Size: size, SHA256: hex.EncodeToString(sum[:])})
		}
	}
	mf.SHA256 = hex.EncodeToString(whole.Sum(nil))
	return mf
}

// putEC allocates and commits an erasure-coded object as the client does,
// checking that each stripe got k+m distinct nodes with at most m per rack.
// Pieces named in unwritten are committed without a node (their write failed).
func (h *harness) putEC(key string, stripes, k, m int, size int64, unwritten ...string) model.Manifest {
	h.t.Helper()
	mf := ecManifest(key, stripes, k, m, size)
	req := control.AllocateRequest{Key: key, Layout: mf.Layout}
	for _, s := range mf.Shards {
		req.Shards = append(req.Shards, control.ShardSpec{ID: s.ID, Stripe: s.Stripe, Index: s.Index, Size: s.Size})
	}
	var alloc control.AllocateReply
	if err := h.call(event.CtlAllocate, req, &alloc); err != nil {
		h.t.Fatalf("allocate %s: %v", key, err)
	}
	if len(alloc.Allocations) != len(mf.Shards) {
		h.t.Fatalf("%d allocations for %d pieces", len(alloc.Allocations), len(mf.Shards))
	}
	commit := control.CommitRequest{Manifest: mf, Nodes: map[string][]string{}}
	byStripe := map[int][]control.Endpoint{}
	for i, a := range alloc.Allocations {
		if a.Shard != mf.Shards[i].ID || len(a.Nodes) != 1 || a.Nodes[0].Addr == "" {
			h.t.Fatalf("allocation %d: %+v: want one node with an address", i, a)
		}
		byStripe[mf.Shards[i].Stripe] = append(byStripe[mf.Shards[i].Stripe], a.Nodes[0])
		if !slices.Contains(unwritten, a.Shard) {
			commit.Nodes[a.Shard] = []string{a.Nodes[0].Node}
		}
	}
	for s, eps := range byStripe {
		nodes := map[string]bool{}
		racks := map[string]int{}
		for _, ep := range eps {
			nodes[ep.Node] = true
			racks[ep.Rack]++
		}
		if len(nodes) != k+m {
			h.t.Fatalf("%s stripe %d allocated on %d distinct nodes, want %d", key, s, len(nodes), k+m)
		}
		for r, n := range racks {
			if n > m {
				h.t.Fatalf("%s stripe %d: %d pieces allocated in %s, want <= %d", key, s, n, r, m)
			}
		}
	}
	if err := h.call(event.CtlCommit, commit, nil); err != nil {
		h.t.Fatalf("commit %s: %v", key, err)
	}
	return mf
}

// checkStripes asserts every erasure-coded stripe in the map has its k+m
// pieces each on exactly one live holder, on distinct nodes, at most m per
// rack, and that down holders stay listed.
func (h *harness) checkStripes(k, m int, down ...string) {
	h.t.Helper()
	type sk struct {
		obj    string
		stripe int
	}
	nodes := map[sk][]string{}
	for id, p := range h.placements() {
		if !p.Layout.Erasure() {
			continue
		}
		var live []string
		for _, n := range p.Nodes {
			if !slices.Contains(down, n) {
				live = append(live, n)
			}
		}
		if len(live) != 1 {
			h.t.Errorf("piece %s: live holders %v (nodes %v), want exactly one", id, live, p.Nodes)
			continue
		}
		key := sk{p.ObjectID, p.Stripe}
		nodes[key] = append(nodes[key], live[0])
		for _, d := range down {
			if slices.Contains(h.placementsBefore[id], d) && !slices.Contains(p.Nodes, d) {
				h.t.Errorf("piece %s: down holder %s dropped from the map", id, d)
			}
		}
	}
	for key, ns := range nodes {
		racks := map[string]int{}
		distinct := map[string]bool{}
		for _, n := range ns {
			racks[h.rack[n]]++
			distinct[n] = true
		}
		if len(ns) != k+m || len(distinct) != k+m {
			h.t.Errorf("stripe %v: pieces on %v, want %d distinct nodes", key, ns, k+m)
		}
		for r, n := range racks {
			if n > m {
				h.t.Errorf("stripe %v: %d pieces in %s, want <= %d", key, n, r, m)
			}
		}
	}
}

// TestECRepairAfterNodeLoss: 4+2 objects on 8 nodes in 4 racks; a node
// dies; the planner issues one rebuild per stripe that lost a piece, each
// to a node holding no piece of the stripe; the test plays the movers. All
// stripes end with 6 live pieces on distinct nodes, at most 2 per rack. The
// node then returns and the surplus pieces are trimmed.
func TestECRepairAfterNodeLoss(t *testing.T) {
	h := newHarness(t, 8, 4)
	h.startPlanner(fastConfig())
	wide := ecManifest("wide", 1, 8, 4, 10)
	req := control.AllocateRequest{Key: "wide", Layout: wide.Layout}
	for _, s := range wide.Shards {
		req.Shards = append(req.Shards, control.ShardSpec{ID: s.ID, Stripe: s.Stripe, Index: s.Index, Size: s.Size})
	}
	if err := h.call(event.CtlAllocate, req, nil); !errors.Is(err, model.ErrInvalid) || err.Error() != "ec 8+4 needs 12 live nodes, 8 are up" {
		t.Fatalf("allocate 8+4 on 8 nodes: %v, want invalid %q", err, "ec 8+4 needs 12 live nodes, 8 are up")
	}
	for i := 0; i < 12; i++ {
		h.putEC(fmt.Sprintf("ec-%02d", i), 2, 4, 2, 1000)
	}
	h.put("replicated", 2, 1000) // replication shares the planner
	st := h.status()
	if st.Objects != 13 || st.Shards != 12*2*6+2 || st.Stripes != 24 || st.StripesDegraded != 0 || st.UnderReplicated != 0 {
		t.Fatalf("status after writes: %+v", st)
	}
	pieces := 0
	for _, n := range st.Nodes {
		pieces += n.Shards
		if n.Shards < 14 || n.Shards > 23 {
			t.Errorf("node %s holds %d of %d pieces and replicas: unbalanced", n.ID, n.Shards, 12*2*6+6)
		}
	}
	h.placementsBefore = map[string][]string{}
	lostHere, degraded := 0, map[string]bool{}
	for id, p := range h.placements() {
		h.placementsBefore[id] = p.Nodes
		if slices.Contains(p.Nodes, "storage-3") {
			lostHere++
			if p.Layout.Erasure() {
				degraded[fmt.Sprint(p.ObjectID, p.Stripe)] = true
			}
		}
	}
	h.setState("storage-3", model.StateDown)
	bustest.Eventually(t, deadline, "loss seen", func() bool {
		st := h.status()
		return st.UnderReplicated == lostHere && st.StripesDegraded == len(degraded)
	})
	mv := &mover{}
	h.runMover(mv)
	st = h.waitHealthy()
	if st.StripesDegraded != 0 || st.Stripes != 24 {
		t.Fatalf("status after the repair: %+v", st)
	}
	h.checkStripes(4, 2, "storage-3")
	h.checkHealedReplicated("storage-3")
	rebuilds := mv.rebuilds()
	if len(rebuilds) != len(degraded) {
		t.Errorf("%d rebuild tasks for %d degraded stripes, want one each", len(rebuilds), len(degraded))
	}
	for _, task := range rebuilds {
		before := h.placementsBefore[task.Shard]
		if task.K != 4 || task.M != 2 || len(task.Rebuild) != 1 || task.Attempt != 1 || task.Incident == "" ||
			slices.Contains(task.Sources[:4], "storage-3") || len(task.Stripe) != 6 || !slices.Contains(before, "storage-3") {
			t.Errorf("task %+v", task)
		}
		for _, p := range task.Stripe {
			if p.Node == task.Target {
				t.Errorf("task %s: target %s holds piece %d of the stripe", task.Task, task.Target, p.Index)
			}
		}
	}
	p := h.heal()
	if p.UnderReplicated != 0 || p.BytesRemaining != 0 || p.VerifiedBytes != int64(lostHere)*1000 {
		t.Errorf("heal status after repair %+v (want %d bytes verified)", p, lostHere*1000)
	}

	// storage-3 comes back with its old pieces: each rebuilt piece now has
	// two up holders; one is trimmed, the stripes stay whole.
	h.setState("storage-3", model.StateUp)
	bustest.Eventually(t, deadline, "surplus pieces trimmed", func() bool {
		for _, p := range h.placements() {
			if len(p.Nodes) > p.Layout.Copies() {
				return false
			}
		}
		return len(mv.deletes()) == lostHere
	})
	h.checkStripes(4, 2)
	if st := h.waitHealthy(); st.StripesDegraded != 0 {
		t.Fatalf("status after the trims: %+v", st)
	}
}

// checkHealedReplicated asserts the replicated entries have 3 live holders in 3 racks.
func (h *harness) checkHealedReplicated(down ...string) {
	h.t.Helper()
	for id, p := range h.placements() {
		if p.Layout.Erasure() {
			continue
		}
		racks := map[string]bool{}
		for _, n := range p.Nodes {
			if !slices.Contains(down, n) {
				racks[h.rack[n]] = true
			}
		}
		if len(racks) != 3 {
			h.t.Errorf("shard %s: live holders in racks %v (nodes %v)", id, racks, p.Nodes)
		}
	}
}

// TestECFailedRebuildAndUnwrittenPiece: a piece committed without a node is
// rebuilt at once ("partial-write"); a rebuild that fails (the mover names
// the piece it could not write) is re-planned to another target.
func TestECFailedRebuildAndUnwrittenPiece(t *testing.T) {
	h := newHarness(t, 8, 4)
	h.startPlanner(fastConfig())
	var (
		mu     sync.Mutex
		failed = map[string]string{} // stripe's first piece -> target that failed
	)
	mv := &mover{answer: func(task event.Task) *event.Failed {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := failed[task.Stripe[0].Shard]; ok {
			return nil
		}
		last := task.Rebuild[len(task.Rebuild)-1]
		failed[task.Stripe[0].Shard] = last.Node
		return &event.Failed{Task: task.Task, Shard: last.Shard, Kind: task.Kind, Target: last.Node,
			Error: "disk on fire", Attempt: task.Attempt, Final: true}
	}}
	h.runMover(mv)
	h.putEC("whole", 1, 4, 2, 100)
	unwritten := ecManifest("holes", 1, 4, 2, 100).Shards[2].ID
	h.putEC("holes", 1, 4, 2, 100, unwritten)
	h.waitHealthy()
	h.checkStripes(4, 2)
	ts := mv.rebuilds()
	if len(ts) != 2 || ts[0].Rebuild[0].Shard != unwritten || ts[1].Rebuild[0].Shard != unwritten {
		t.Fatalf("rebuild tasks %+v: want two for %s (a failure, then the retry)", ts, unwritten)
	}
	if ts[0].Incident != "partial-write" || ts[1].Attempt != 2 || ts[1].Task == ts[0].Task || ts[1].Target == ts[0].Target {
		t.Fatalf("tasks %+v then %+v: want attempt 2 with a new id on another target", ts[0], ts[1])
	}
	p := h.placements()[unwritten]
	if len(p.Nodes) != 1 || p.Nodes[0] != ts[1].Target {
		t.Fatalf("piece %s on %v, want %s", unwritten, p.Nodes, ts[1].Target)
	}
	// A stripe with fewer than K pieces written is refused.
	mfBad := ecManifest("too-few", 1, 4, 2, 100)
	commit := control.CommitRequest{Manifest: mfBad, Nodes: map[string][]string{}}
	for i, s := range mfBad.Shards[:3] {
		commit.Nodes[s.ID] = []string{fmt.Sprintf("storage-%d", i+1)}
	}
	if err := h.call(event.CtlCommit, commit, nil); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("commit of a stripe with 3 of 4+2 pieces written: %v, want invalid", err)
	}
}
