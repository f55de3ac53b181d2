package planner_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// disk plays a storage node's inventory responder: the shards it holds,
// answered page by page on control.InventoryPrefix+node as a node does.
type disk struct {
	mu       sync.Mutex
	node     string
	boot     string
	shards   map[string]control.InventoryShard
	requests int
	pageSize int
}

// serveDisk subscribes d's inventory responder for the test's lifetime.
func (h *harness) serveDisk(d *disk) {
	h.t.Helper()
	sub, err := h.env.NC.Subscribe(control.InventoryPrefix+d.node, func(m *nats.Msg) {
		var req control.InventoryRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			_ = m.Respond(control.ErrorReply(fmt.Errorf("%w: %v", model.ErrInvalid, err)))
			return
		}
		d.mu.Lock()
		d.requests++
		ids := make([]string, 0, len(d.shards))
		for id := range d.shards {
			if id > req.After {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		limit := d.pageSize
		if limit <= 0 {
			limit = control.MaxInventoryPage
		}
		page := control.InventoryPage{Node: d.node, BootID: d.boot, Shards: []control.InventoryShard{}}
		for _, id := range ids[:min(len(ids), limit)] {
			page.Shards = append(page.Shards, d.shards[id])
		}
		if len(ids) > limit {
			page.Next = ids[limit-1]
		}
		d.mu.Unlock()
		b, _ := control.OKReply(page)
		_ = m.Respond(b)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// disks builds every node's disk from the map (each holds what it is listed for).
func (h *harness) disks() map[string]*disk {
	h.t.Helper()
	out := map[string]*disk{}
	for _, n := range h.nodes {
		out[n.ID] = &disk{node: n.ID, boot: "boot", shards: map[string]control.InventoryShard{}}
	}
	for id, p := range h.placements() {
		for _, n := range p.Nodes {
			out[n].shards[id] = control.InventoryShard{ID: id, Size: p.Size, SHA256: p.SHA256}
		}
	}
	return out
}

func (d *disk) has(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.shards[id]
	return ok
}

// writer is a mover answer that writes each copy or rebuilt piece onto its
// target's disk before reporting it done.
func writer(disks map[string]*disk) func(event.Task) *event.Failed {
	return func(t event.Task) *event.Failed {
		writes := []event.Piece{{Shard: t.Shard, Node: t.Target, Size: t.Bytes, SHA256: t.SHA256}}
		if t.Kind == event.KindRebuild {
			writes = t.Rebuild
		}
		for _, w := range writes {
			d := disks[w.Node]
			d.mu.Lock()
			d.shards[w.Shard] = control.InventoryShard{ID: w.Shard, Size: w.Size, SHA256: w.SHA256}
			d.mu.Unlock()
		}
		return nil
	}
}

// reboot plays a node starting again under its identity with a new boot id:
// its registration and a heartbeat carry it.
func (h *harness) reboot(node, boot string) {
	h.t.Helper()
	kv, err := h.env.JS.KeyValue(h.ctx, bus.BucketNodes)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, nd := range h.nodes {
		if nd.ID != node {
			continue
		}
		nd.BootID, nd.Started = boot, time.Now()
		b, _ := json.Marshal(nd)
		if _, err := kv.Put(h.ctx, node, b); err != nil {
			h.t.Fatal(err)
		}
		hb := &event.Heartbeat{Node: nd.ID, Rack: nd.Rack, Addr: nd.Addr, BootID: boot, CapacityBytes: nd.CapacityBytes}
		if err := bus.Publish(h.ctx, h.env.JS, event.HeartbeatPrefix+nd.ID, hb, ""); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) healStatusOf(node string) event.Progress {
	h.t.Helper()
	var p event.Progress
	if err := h.call(event.CtlHealStatus, control.HealStatusRequest{Node: node}, &p); err != nil {
		h.t.Fatalf("heal status --node %s: %v", node, err)
	}
	return p
}

// listedOn returns the shards the map places on node, and their bytes.
func (h *harness) listedOn(node string) (map[string]int64, int64) {
	out := map[string]int64{}
	var bytes int64
	for id, p := range h.placements() {
		if slices.Contains(p.Nodes, node) {
			out[id] = p.Size
			bytes += p.Size
		}
	}
	return out, bytes
}

// TestReplacementRejoinsInMaintenanceAndHealsInPlace is the runbook: a node
// in maintenance comes back under its identity with a new boot id and an
// empty disk. Without anyone asking, the planner reads its inventory, and
// every copy task targets that node alone, from survivors; the map is not
// changed (no other node receives anything); status is healthy after; the
// per-node shard counts are those before; heal --node then finds nothing
// missing. The narrowed heal status is checked against the map on the way.
func TestReplacementRejoinsInMaintenanceAndHealsInPlace(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	for i := 0; i < 12; i++ {
		h.put(fmt.Sprintf("rb-%02d", i), 2, 1000)
	}
	h.putEC("ec-rb", 3, 2, 2, 500) // 2+2 on 6 nodes: the victim holds some pieces
	disks := h.disks()
	for _, d := range disks {
		h.serveDisk(d)
	}
	const victim = "storage-2"
	before := h.status()
	mapBefore := h.placements()
	listed, listedBytes := h.listedOn(victim)
	if len(listed) < 6 {
		t.Fatalf("only %d shards on %s", len(listed), victim)
	}

	// Maintenance, the disk dies, the node comes back empty with a new boot id.
	h.setStateSeen(victim, model.StateMaintenance)
	disks[victim].mu.Lock()
	disks[victim].shards = map[string]control.InventoryShard{}
	disks[victim].boot = "boot-2"
	disks[victim].mu.Unlock()
	h.reboot(victim, "boot-2")

	// Nothing is moved before the mover runs: the numbers are those of the map.
	bustest.Eventually(t, deadline, "the empty disk is seen", func() bool {
		return h.healStatusOf(victim).UnderReplicated == len(listed)
	})
	p := h.healStatusOf(victim)
	if p.Node != victim || p.BytesRemaining != listedBytes || p.Lost != 0 || p.Shards != len(listed) {
		t.Fatalf("heal status --node %s: %+v, want %d shards / %d bytes to rebuild", victim, p, len(listed), listedBytes)
	}
	st := h.status()
	if st.UnderReplicated != len(listed) || st.Lost != 0 {
		t.Fatalf("cluster status %+v: want the %d copies %s lacks under-replicated", st, len(listed), victim)
	}
	if g := h.heal(); g.UnderReplicated != len(listed) || g.BytesRemaining != listedBytes {
		t.Fatalf("heal status %+v: want %d shards / %d bytes", g, len(listed), listedBytes)
	}

	mv := &mover{answer: writer(disks)}
	h.runMover(mv)
	st = h.waitHealthy()
	copies := 0
	for shard, ts := range mv.copies() {
		for _, task := range ts {
			copies++
			if task.Target != victim || slices.Contains(task.Sources, victim) || task.Incident != "heal-"+victim {
				t.Errorf("copy of %s: target %s sources %v incident %s: want %s only, from survivors", shard, task.Target, task.Sources, task.Incident, victim)
			}
		}
	}
	for _, task := range mv.rebuilds() {
		for _, pc := range task.Rebuild {
			copies++
			if pc.Node != victim {
				t.Errorf("rebuild %s writes piece %s to %s: want %s only", task.Task, pc.Shard, pc.Node, victim)
			}
		}
	}
	if copies != len(listed) {
		t.Errorf("%d copies and pieces written, want the %d %s lacked", copies, len(listed), victim)
	}
	for id := range listed {
		if !disks[victim].has(id) {
			t.Errorf("%s lacks %s after the heal", victim, id)
		}
	}
	mapAfter := h.placements()
	for id, p := range mapBefore {
		if !slices.Equal(mapAfter[id].Nodes, p.Nodes) {
			t.Errorf("%s: map %v, was %v: a heal in place changes no entry", id, mapAfter[id].Nodes, p.Nodes)
		}
	}
	for i, n := range st.Nodes {
		if n.Shards != before.Nodes[i].Shards {
			t.Errorf("%s holds %d shards, %d before", n.ID, n.Shards, before.Nodes[i].Shards)
		}
	}
	if p := h.healStatusOf(victim); p.UnderReplicated != 0 || p.BytesRemaining != 0 || p.InFlight != 0 || p.ETASeconds != 0 {
		t.Fatalf("heal status --node after the heal: %+v", p)
	}
	// The operator's heal --node now finds the disk whole.
	var rep control.HealNodeReply
	if err := h.call(control.CtlHealNode, control.HealNodeRequest{Node: victim}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Node != victim || rep.Checked != len(listed) || rep.Missing != 0 || rep.Rebuilding != 0 || rep.Dropped != 0 {
		t.Fatalf("heal --node after the heal: %+v", rep)
	}
	h.setStateSeen(victim, model.StateUp)
	bustest.Consistently(t, 300*time.Millisecond, "nothing more to do", func() bool {
		s := h.status()
		return s.UnderReplicated == 0 && s.InFlight == 0 && len(mv.deletes()) == 0
	})
}

// TestHealPlanIsADryRunThenHealNode: a node loses part of its disk
// without restarting; AutoHeal cannot notice. The plan lists the copies back
// onto it (source, racks, bytes, an estimate) and changes nothing; heal
// --node then finds the same and copies them back onto the node alone.
func TestHealPlanIsADryRunThenHealNode(t *testing.T) {
	h := newHarness(t, 6, 3)
	cfg := fastConfig()
	cfg.AutoHeal = false
	h.startPlanner(cfg)
	for i := 0; i < 16; i++ {
		h.put(fmt.Sprintf("pd-%02d", i), 1, 100)
	}
	disks := h.disks()
	for _, d := range disks {
		h.serveDisk(d)
	}
	const victim = "storage-3"
	listed, _ := h.listedOn(victim)
	ids := make([]string, 0, len(listed))
	for id := range listed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	gone := ids[:len(ids)/2]
	disks[victim].mu.Lock()
	for _, id := range gone {
		delete(disks[victim].shards, id)
	}
	disks[victim].pageSize = 3 // several pages
	disks[victim].mu.Unlock()
	mv := &mover{answer: writer(disks)}
	h.runMover(mv)

	mapBefore := h.placements()
	var plan control.HealPlan
	if err := h.call(control.CtlHealPlan, control.HealNodeRequest{Node: victim}, &plan); err != nil {
		t.Fatal(err)
	}
	if plan.Node != victim || plan.Shards != len(gone) || len(plan.Moves) != len(gone) || plan.Bytes != int64(len(gone))*100 ||
		plan.EstimatedSeconds <= 0 || plan.Throttle == "" {
		t.Fatalf("plan %+v: want %d moves of 100 bytes onto %s with an estimate", plan, len(gone), victim)
	}
	for i, m := range plan.Moves {
		if m.Shard != gone[i] || m.Kind != event.KindCopy || m.Target != victim || m.TargetRack != h.rack[victim] ||
			m.Source == victim || !slices.Contains(mapBefore[m.Shard].Nodes, m.Source) || m.SourceRack != h.rack[m.Source] || m.Bytes != 100 {
			t.Errorf("planned move %d: %+v", i, m)
		}
	}
	bustest.Consistently(t, 300*time.Millisecond, "a plan changes nothing", func() bool {
		mv.mu.Lock()
		n := len(mv.tasks)
		mv.mu.Unlock()
		return n == 0 && h.status().UnderReplicated == 0 && h.healStatusOf(victim).UnderReplicated == 0
	})
	for id, p := range h.placements() {
		if !slices.Equal(p.Nodes, mapBefore[id].Nodes) {
			t.Fatalf("the plan changed %s: %v, was %v", id, p.Nodes, mapBefore[id].Nodes)
		}
	}

	var rep control.HealNodeReply
	if err := h.call(control.CtlHealNode, control.HealNodeRequest{Node: victim}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Checked != len(ids) || rep.Missing != len(gone) || rep.MissingBytes != int64(len(gone))*100 ||
		rep.Dropped != 0 || rep.Rebuilding != len(gone) {
		t.Fatalf("heal --node %+v: want %d checked, %d missing and rebuilding", rep, len(ids), len(gone))
	}
	h.waitHealthy()
	for id, ts := range mv.copies() {
		if !slices.Contains(gone, id) || len(ts) != 1 || ts[0].Target != victim {
			t.Errorf("copies of %s: %+v: want one, onto %s, for lost copies only", id, ts, victim)
		}
	}
	if len(mv.copies()) != len(gone) {
		t.Errorf("%d shards copied, want %d", len(mv.copies()), len(gone))
	}
	for id, p := range h.placements() {
		if !slices.Equal(p.Nodes, mapBefore[id].Nodes) {
			t.Errorf("the heal changed %s: %v, was %v", id, p.Nodes, mapBefore[id].Nodes)
		}
	}
	// Refusals: unknown node, down node, bad id.
	if err := h.call(control.CtlHealNode, control.HealNodeRequest{Node: "storage-99"}, nil); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("heal of an unknown node: %v", err)
	}
	h.setStateSeen("storage-6", model.StateDown)
	if err := h.call(control.CtlHealPlan, control.HealNodeRequest{Node: "storage-6"}, nil); !errors.Is(err, control.ErrConflict) {
		t.Fatalf("plan for a down node: %v", err)
	}
	if err := h.call(control.CtlHealNode, control.HealNodeRequest{Node: "a.b"}, nil); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("heal of a bad node id: %v", err)
	}
}

// TestReturnFromDownIsCheckedBeforeTrimming: a node returns from down with
// an empty disk after half its shards were re-homed. Its inventory is read
// before anything is trimmed against its copies: the re-homed shards drop it
// from their entries (nothing copied, nothing trimmed), the others are
// copied back onto it. Paused meanwhile, heal --node reports the same and
// nothing moves until resume.
func TestReturnFromDownIsCheckedBeforeTrimming(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	for i := 0; i < 16; i++ {
		h.put(fmt.Sprintf("rt-%02d", i), 1, 100)
	}
	disks := h.disks()
	for _, d := range disks {
		h.serveDisk(d)
	}
	const victim = "storage-3"
	listed, _ := h.listedOn(victim)
	ids := make([]string, 0, len(listed))
	for id := range listed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rehomed := ids[:len(ids)/2]
	h.pauseHeal(true)
	h.setStateSeen(victim, model.StateDown)
	// The re-homing of half of them (as verified copies would record it).
	kv, _ := h.env.JS.KeyValue(h.ctx, bus.BucketPlacement)
	for _, id := range rehomed {
		e, err := kv.Get(h.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var p model.Placement
		_ = json.Unmarshal(e.Value(), &p)
		for _, n := range h.nodes {
			if !slices.Contains(p.Nodes, n.ID) && h.rack[n.ID] == h.rack[victim] {
				p.Nodes = append(p.Nodes, n.ID)
				disks[n.ID].shards[id] = control.InventoryShard{ID: id, Size: p.Size, SHA256: p.SHA256}
				break
			}
		}
		b, _ := json.Marshal(p)
		if _, err := kv.Update(h.ctx, id, b, e.Revision()); err != nil {
			t.Fatal(err)
		}
	}
	disks[victim].mu.Lock()
	disks[victim].shards = map[string]control.InventoryShard{}
	disks[victim].mu.Unlock()
	mv := &mover{answer: writer(disks)}
	h.runMover(mv)
	h.setStateSeen(victim, model.StateUp)
	bustest.Eventually(t, deadline, "its inventory checked on return", func() bool {
		return h.healStatusOf(victim).UnderReplicated == len(ids)
	})
	var rep control.HealNodeReply
	if err := h.call(control.CtlHealNode, control.HealNodeRequest{Node: victim}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Checked != len(ids) || rep.Missing != len(ids) || rep.Dropped != len(rehomed) || rep.Rebuilding != len(ids)-len(rehomed) {
		t.Fatalf("heal --node %+v: want %d checked and missing, %d dropped, %d rebuilding", rep, len(ids), len(rehomed), len(ids)-len(rehomed))
	}
	bustest.Consistently(t, 300*time.Millisecond, "paused: nothing moves", func() bool {
		mv.mu.Lock()
		defer mv.mu.Unlock()
		return len(mv.tasks) == 0
	})
	h.pauseHeal(false)
	h.waitHealthy()
	bustest.Eventually(t, deadline, "the node dropped from the entries whole without it", func() bool {
		for _, id := range rehomed {
			if slices.Contains(h.placements()[id].Nodes, victim) {
				return false
			}
		}
		return h.healStatusOf(victim).UnderReplicated == 0
	})
	h.checkHealed()
	for id, ts := range mv.copies() {
		if slices.Contains(rehomed, id) || len(ts) != 1 || ts[0].Target != victim {
			t.Errorf("copies of %s: %+v: want one, onto %s, and none for re-homed shards", id, ts, victim)
		}
	}
	if n := len(mv.copies()); n != len(ids)-len(rehomed) {
		t.Errorf("%d shards copied, want %d", n, len(ids)-len(rehomed))
	}
	if d := mv.deletes(); len(d) != 0 {
		t.Errorf("deletes %+v: nothing had a surplus once the empty disk was known", d)
	}
}

// TestCorruptReportIsRebuiltOnTheSameNode: a node reports a corrupt copy;
// exactly one copy goes back onto that node, and the map is unchanged.
func TestCorruptReportIsRebuiltOnTheSameNode(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	m, _ := h.put("scrubbed", 3, 100)
	disks := h.disks()
	mv := &mover{answer: writer(disks)}
	h.runMover(mv)
	id := m.Shards[1].ID
	before := h.placements()[id].Nodes
	node := before[1]
	c := &event.Corrupt{Node: node, Shard: id, Reason: "sha256 mismatch", Found: "scrub"}
	if err := bus.Publish(h.ctx, h.env.JS, event.CorruptPrefix+node, c, ""); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, deadline, "a copy back onto the reporting node", func() bool { return len(mv.copies()[id]) == 1 })
	h.waitHealthy()
	task := mv.copies()[id][0]
	if task.Target != node || slices.Contains(task.Sources, node) || len(mv.copies()) != 1 {
		t.Fatalf("tasks %+v: want one copy of %s onto %s from another holder", mv.copies(), id, node)
	}
	if after := h.placements()[id].Nodes; !slices.Equal(after, before) {
		t.Fatalf("map %v, was %v", after, before)
	}
	// A report about a copy the map does not list is ignored.
	other := &event.Corrupt{Node: "storage-1", Shard: "no-such-shard", Reason: "x", Found: "read"}
	if err := bus.Publish(h.ctx, h.env.JS, event.CorruptPrefix+"storage-1", other, ""); err != nil {
		t.Fatal(err)
	}
	bustest.Consistently(t, 300*time.Millisecond, "nothing more", func() bool {
		return len(mv.copies()) == 1 && h.status().UnderReplicated == 0
	})
}

// pauseHeal flips the durable heal switch as `rehome heal pause|resume` does.
func (h *harness) pauseHeal(paused bool) {
	h.t.Helper()
	kv, err := h.env.JS.KeyValue(h.ctx, bus.BucketControl)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := json.Marshal(control.HealSwitch{V: 1, Paused: paused, By: "test", Since: time.Now().UTC()})
	if _, err := kv.Put(h.ctx, control.HealSwitchKey, b); err != nil {
		h.t.Fatal(err)
	}
	bustest.Eventually(h.t, deadline, "the switch seen", func() bool {
		return h.status().HealPaused == paused && h.heal().Paused == paused
	})
}

// TestPauseHoldsNewTasksUntilResume: while paused, a node loss issues no
// task (status and progress say paused, an event says so); a restarted
// planner reads the pause at start; resume repairs everything.
func TestPauseHoldsNewTasksUntilResume(t *testing.T) {
	h := newHarness(t, 6, 3)
	_, stop := h.startPlanner(fastConfig())
	for i := 0; i < 10; i++ {
		h.put(fmt.Sprintf("pz-%02d", i), 1, 100)
	}
	h.placementsBefore = map[string][]string{}
	for id, p := range h.placements() {
		h.placementsBefore[id] = p.Nodes
	}
	switches := make(chan event.HealSwitched, 8)
	sub, err := h.env.NC.Subscribe("rehome.heal.*", func(m *nats.Msg) {
		var sw event.HealSwitched
		if (m.Subject == event.HealPaused || m.Subject == event.HealResumed) && event.Decode(m.Data, &sw) == nil {
			switches <- sw
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	mv := &mover{}
	h.runMover(mv)
	h.pauseHeal(true)
	select {
	case sw := <-switches:
		if !sw.Paused || sw.By != "test" {
			t.Fatalf("switch event %+v", sw)
		}
	case <-time.After(deadline):
		t.Fatal("no rehome.heal.paused event")
	}
	stop()
	h.startPlanner(fastConfig()) // reads the pause at start
	if !h.status().HealPaused {
		t.Fatal("a restarted planner forgot the pause")
	}
	h.setStateSeen("storage-1", model.StateDown)
	bustest.Eventually(t, deadline, "the loss seen", func() bool { return h.status().UnderReplicated > 0 })
	bustest.Consistently(t, 500*time.Millisecond, "no task while paused", func() bool {
		return len(mv.tasks) == 0 && h.heal().Paused
	})
	h.pauseHeal(false)
	h.waitHealthy()
	h.checkHealed("storage-1")
	if len(mv.copies()) == 0 {
		t.Fatal("nothing copied after resume")
	}
	select {
	case sw := <-switches:
		if sw.Paused {
			t.Fatalf("switch event %+v, want resumed", sw)
		}
	case <-time.After(deadline):
		t.Fatal("no rehome.heal.resumed event")
	}
}

// TestStatusRiskAndBodies: cluster status --risk counts what one more node
// or rack failure would cost, and malformed bodies are refused as invalid.
func TestStatusRiskAndBodies(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	for i := 0; i < 6; i++ {
		h.put(fmt.Sprintf("rk-%02d", i), 1, 100)
	}
	var st control.ClusterStatus
	if err := h.call(event.CtlStatus, control.StatusRequest{Risk: true}, &st); err != nil {
		t.Fatal(err)
	}
	if st.Risk == nil || len(st.Risk.Nodes) != 6 || len(st.Risk.Racks) != 3 || st.Risk.WorstNode != nil || st.Risk.WorstRack != nil {
		t.Fatalf("risk %+v: want 6 node and 3 rack lines, no failure costing anything", st.Risk)
	}
	// Every shard has one copy per rack: losing a rack leaves each with two.
	for _, l := range st.Risk.Racks {
		if l.Lost != 0 || l.SingleCopy != 0 {
			t.Fatalf("rack line %+v", l)
		}
	}
	h.setStateSeen("storage-1", model.StateDown)
	if err := h.call(event.CtlStatus, control.StatusRequest{Risk: true}, &st); err != nil {
		t.Fatal(err)
	}
	single := 0
	for _, l := range st.Risk.Nodes {
		single += l.SingleCopy
	}
	if single != 2*st.UnderReplicated || st.Risk.WorstNode == nil || st.Risk.WorstNode.SingleCopy == 0 {
		t.Fatalf("with storage-1 down (%d shards at two copies): risk %+v", st.UnderReplicated, st.Risk)
	}
	if st2 := h.status(); st2.Risk != nil {
		t.Fatal("risk without asking")
	}
	for _, subj := range []string{event.CtlStatus, event.CtlHealStatus, control.CtlHealNode, control.CtlHealPlan} {
		msg, err := h.env.NC.Request(subj, []byte("{{"), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		if err := control.DecodeReply(msg.Data, nil); err == nil {
			t.Fatalf("%s accepted garbage", subj)
		}
	}
	var p event.Progress
	if err := h.call(event.CtlHealStatus, control.HealStatusRequest{Node: "nobody"}, &p); err == nil {
		t.Fatal("heal status of an unknown node accepted")
	}
}
