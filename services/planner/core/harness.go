package core

import (
	"fmt"
	"slices"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Harness drives a View the way the planner service drives it over the bus,
// with the bus replaced by memory: it keeps the placement map (entries and
// revisions) and the work queue, carries out every decision as the service
// would (tasks queued, map entries written with their checks, lost shards
// announced) and records what it did as Effects. Tests and simulators feed
// it inputs at explicit times (Advance moves its clock), call Step for a
// planning round, play the movers' answers (Done, Fail, Take) and assert on
// the effects. It is deterministic: the same inputs give the same effects.
// It is not safe for concurrent use.
type Harness struct {
	// View is the planner state driven (its clock is the harness's Now).
	View *View
	// Now is the harness's time: every input and round happens at it.
	Now time.Time
	// Limits are the throttles of each round (Bytes, if set, is consumed).
	Limits Limits
	// TaskTimeout is how long a task may stay in flight without a result.
	TaskTimeout time.Duration
	// Log holds the effects of every Step, oldest first.
	Log []Effects

	entries map[string]model.Placement
	revs    map[string]uint64
	rev     uint64
	queue   map[string]uint64 // task id (each batch member's) -> its sequence, while queued
	seq     uint64
}

// Effects is what one Step did, in the order the service does it.
type Effects struct {
	At time.Time
	// Expired are the tasks past their deadline that were resolved: TimedOut
	// lists those failed (a copy) or forgotten (a trim), by task id.
	TimedOut []string
	// Plan is the round's decision, as reserved.
	Plan Plan
	// Tasks are the tasks queued: copies, rebuilds, and the delete tasks
	// of trims.
	Tasks []event.Task
	// Writes are the map entries written by trims and drops (after the write).
	Writes []model.Placement
	// Lost are the losses announced.
	Lost []event.Lost
	// GaveUp are the planner's final failure reports of shards parked.
	GaveUp []event.Failed
}

// NewHarness returns a harness at now with an empty map, the failure
// policy pol and the throttles lim; tasks time out after an hour.
func NewHarness(now time.Time, pol Policy, lim Limits) *Harness {
	h := &Harness{Now: now, Limits: lim, TaskTimeout: time.Hour,
		entries: map[string]model.Placement{}, revs: map[string]uint64{}, queue: map[string]uint64{}}
	h.View = NewView(func() time.Time { return h.Now }, pol)
	return h
}

// Advance moves the harness's clock on by d.
func (h *Harness) Advance(d time.Duration) { h.Now = h.Now.Add(d) }

// AddNodes registers n up nodes storage-1..storage-n dealt round-robin on
// racks rack-1..rack-racks, each of 1 TiB.
func (h *Harness) AddNodes(n, racks int) error {
	for i := 1; i <= n; i++ {
		err := h.View.SetNode(model.Node{V: 1, ID: fmt.Sprintf("storage-%d", i), Rack: fmt.Sprintf("rack-%d", (i-1)%racks+1),
			Addr: fmt.Sprintf("127.0.0.1:%d", 9000+i), CapacityBytes: 1 << 40})
		if err != nil {
			return err
		}
	}
	return nil
}

// Write puts entry p in the map (a new revision) and feeds it to the view,
// as the placement watch does.
func (h *Harness) Write(p model.Placement) error {
	if _, err := h.View.UpsertPlacement(p); err != nil {
		return err
	}
	h.rev++
	h.entries[p.Shard] = p
	h.revs[p.Shard] = h.rev
	return nil
}

// Delete removes shard id from the map and the view.
func (h *Harness) Delete(id string) {
	delete(h.entries, id)
	delete(h.revs, id)
	h.View.RemovePlacement(id)
}

// Entry returns the map's entry for shard id.
func (h *Harness) Entry(id string) (model.Placement, bool) {
	p, ok := h.entries[id]
	return p, ok
}

// SetLiveness feeds a detector verdict at the harness's time.
func (h *Harness) SetLiveness(node string, st model.State) error {
	_, err := h.View.SetLiveness(model.Liveness{V: 1, Node: node, State: st, Since: h.Now})
	return err
}

// Queued reports whether task id still waits in the work queue (no mover
// took it, or it was not resolved).
func (h *Harness) Queued(id string) bool {
	_, ok := h.queue[id]
	return ok
}

// Take plays a mover taking task id (a batch member's: its whole batch) off
// the work queue: past its deadline it then times out instead of being
// extended.
func (h *Harness) Take(id string) {
	seq, ok := h.queue[id]
	if !ok {
		return
	}
	for k, s := range h.queue {
		if s == seq {
			delete(h.queue, k)
		}
	}
}

// publish queues task t (under each batch member's id).
func (h *Harness) publish(t event.Task) uint64 {
	h.seq++
	for _, m := range t.Members() {
		h.queue[m.Task] = h.seq
	}
	return h.seq
}

// Step runs one planning round at the harness's time, as the service's tick
// does: resolve expired tasks, forget old allocations and retries, plan,
// reserve, issue the copies and rebuilds, trim (map write, then delete
// task), drop holders lacking their copy, announce lost shards. It records
// and returns the effects.
func (h *Harness) Step() Effects {
	v, now := h.View, h.Now
	e := Effects{At: now}
	for _, x := range v.ExpiredTasks(now) {
		_, queued := h.queue[x.Task]
		out := v.ResolveExpired(x, queued, now, h.TaskTimeout)
		if out.TimedOut {
			e.TimedOut = append(e.TimedOut, x.Task)
		}
		if out.GaveUp != nil {
			e.GaveUp = append(e.GaveUp, *out.GaveUp)
		}
	}
	v.Expire(now)
	p := v.Round(now, h.Limits)
	v.Reserve(p, now, h.TaskTimeout)
	e.Plan = p
	for _, group := range p.Batches() {
		if d := group[0]; d.RB != nil {
			t, ok := v.RebuildTaskOf(d)
			if !ok {
				v.ReleaseRebuild(d, v.TaskID(d), false, now)
				continue
			}
			v.RebuildQueued(d, t.Task, h.publish(*t))
			e.Tasks = append(e.Tasks, *t)
			continue
		}
		var (
			ds      []Decision
			entries []model.Placement
		)
		for _, d := range group {
			entry, ok := h.entries[d.ID]
			if !ok {
				v.ReleaseCopy(d, v.TaskID(d), false, now)
				continue
			}
			ds, entries = append(ds, d), append(entries, entry)
		}
		if len(ds) == 0 {
			continue
		}
		t := v.BatchTask(ds, entries)
		seq := h.publish(t)
		for i, d := range ds {
			v.CopyQueued(d, v.TaskID(d), seq, h.revs[d.ID], entries[i])
		}
		e.Tasks = append(e.Tasks, t)
	}
	for _, td := range p.Trims {
		entry, ok := h.entries[td.ID]
		next, allowed := v.TrimEntry(td, entry)
		if !ok || !allowed {
			v.ReleaseTrim(td)
			continue
		}
		if err := h.Write(next); err != nil {
			v.ReleaseTrim(td)
			continue
		}
		e.Writes = append(e.Writes, next)
		t := v.TrimWritten(td, entry, h.rev)
		v.TrimQueued(td, t.Task, h.publish(t), true)
		e.Tasks = append(e.Tasks, t)
	}
	for _, d := range p.Drops {
		entry, ok := h.entries[d.ID]
		next, allowed := v.DropEntry(d, entry)
		if !ok || !allowed || h.Write(next) != nil {
			continue
		}
		e.Writes = append(e.Writes, next)
	}
	for _, id := range v.LostIDs(256) {
		entry := h.entries[id]
		e.Lost = append(e.Lost, event.Lost{Shard: id, Key: entry.Key, Nodes: entry.Nodes})
		v.LostSent(id)
	}
	h.Log = append(h.Log, e)
	return e
}

// Done plays a mover's Done for task t: a copy's target (each rebuilt
// piece's, each batched shard's) joins the shard's entry, unless it was a
// copy back in place; a trim's delete ends the trim. The task leaves the
// queue. For a batch member alone (a partly failed batch), pass
// t.Member(b) after Take.
func (h *Harness) Done(t event.Task) error {
	h.Take(t.Task)
	switch t.Kind {
	case event.KindDelete:
		h.View.EndTrimTask(t.Shard, t.Task)
		return nil
	case event.KindRebuild:
		for _, p := range t.Rebuild {
			if err := h.land(event.Done{Task: t.Task, Shard: p.Shard, Kind: t.Kind, Target: p.Node, Bytes: p.Size}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, m := range t.Members() {
		if err := h.land(event.Done{Task: m.Task, Shard: m.Shard, Kind: m.Kind, Target: m.Target, Bytes: m.Bytes}); err != nil {
			return err
		}
	}
	return nil
}

// land records one verified copy as the service's results handler does.
func (h *Harness) land(d event.Done) error {
	l := h.View.Land(d, h.Now)
	if l.InPlace || l.Stale {
		return nil
	}
	entry, ok := h.entries[d.Shard]
	if !ok {
		return fmt.Errorf("harness: done for shard %s, not in the map", d.Shard)
	}
	next, changed := AddHolder(entry, d.Target)
	if !changed {
		return nil
	}
	if err := h.Write(next); err != nil {
		return err
	}
	h.View.Verified(d.Bytes, h.Now)
	return nil
}

// Fail plays a mover's failure report of task t (final: the mover gave the
// attempt up) that does not say which side failed, and returns what it
// changed. A final report takes the task off the queue.
func (h *Harness) Fail(t event.Task, final bool, cause string) FailOutcome {
	return h.FailSide(t, final, "", cause)
}

// FailSide is Fail with the report's side (event.SideSource, SideTarget,
// "": unknown). A batched task fails every member (for one member alone,
// pass t.Member(b)); the outcome merges theirs.
func (h *Harness) FailSide(t event.Task, final bool, side, cause string) FailOutcome {
	if final {
		h.Take(t.Task)
	}
	if t.Kind == event.KindDelete {
		if final {
			h.View.EndTrimTask(t.Shard, t.Task)
		}
		return FailOutcome{}
	}
	var out FailOutcome
	for _, m := range t.Members() {
		o := h.View.Fail(event.Failed{Task: m.Task, Shard: m.Shard, Kind: m.Kind, Target: m.Target,
			Attempt: m.Attempt, Final: final, Error: cause, Side: side}, h.Now)
		out.Ended = out.Ended || o.Ended
		out.NextAttempt = max(out.NextAttempt, o.NextAttempt)
		if out.GaveUp == nil {
			out.GaveUp = o.GaveUp
		}
	}
	return out
}

// Tasks returns the tasks of every Step so far, oldest first, that match
// keep (nil: all).
func (h *Harness) Tasks(keep func(event.Task) bool) []event.Task {
	var out []event.Task
	for _, e := range h.Log {
		for _, t := range e.Tasks {
			if keep == nil || keep(t) {
				out = append(out, t)
			}
		}
	}
	return out
}

// Holders returns the nodes the map lists for shard id, sorted.
func (h *Harness) Holders(id string) []string {
	out := slices.Clone(h.entries[id].Nodes)
	slices.Sort(out)
	return out
}
