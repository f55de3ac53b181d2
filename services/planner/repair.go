package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/telemetry"
)

// seedFlights reads the copy and trim tasks still waiting in (or being
// worked from) the work-queue stream, without consuming them, and counts
// them in flight, so a restarted planner or one taking over does not issue
// the same work twice.
func (s *Service) seedFlights(ctx context.Context) error {
	ictx, cancel := context.WithTimeout(ctx, opTimeout)
	info, err := s.tasks.Info(ictx)
	cancel()
	if err != nil {
		return fmt.Errorf("task stream info: %w", err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	now := s.now()
	seeded := 0
	for seq := first; seq <= last; {
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		m, err := s.tasks.GetMsg(gctx, seq, jetstream.WithGetMsgSubject(event.TaskPrefix+"*"))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("read task %d: %w", seq, err)
		}
		seq = m.Sequence + 1
		var t event.Task
		if event.Decode(m.Data, &t) != nil {
			continue
		}
		s.mu.Lock()
		if s.v.seedFlight(t, m.Sequence, now.Add(s.cfg.TaskTimeout)) {
			seeded++
		}
		s.mu.Unlock()
	}
	if seeded > 0 {
		s.log.Info("resumed tasks still queued", "tasks", seeded)
	}
	return nil
}

// publishTask publishes a task on the work queue with its id as dedup id.
// It returns the stream ack (Duplicate set when that id was seen recently).
func (s *Service) publishTask(ctx context.Context, t *event.Task) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	// PublishAck carries ctx's trace (the incident's plan span) in the headers.
	ack, err := bus.PublishAck(ctx, s.js, event.TaskPrefix+t.Target, t, t.Task)
	if err != nil {
		return nil, fmt.Errorf("publish task %s: %w", t.Task, err)
	}
	if t.Kind == event.KindDelete && !ack.Duplicate {
		s.m.issued.WithLabelValues(t.Kind).Inc()
	}
	return ack, nil
}

// incidentTrace returns the traceparent of the down verdict that opened
// incident inc ("" if unknown): the plan span continues that trace.
func (s *Service) incidentTrace(inc string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.v.nodes {
		n := &s.v.nodes[i]
		if n.traceParent != "" && !n.since.IsZero() && inc == n.id+"-"+strconv.FormatInt(n.since.UnixMilli(), 10) {
			return n.traceParent
		}
	}
	return ""
}

// awaitPlacement waits (at most opTimeout) until the view has applied every
// placement write made so far, so a control call's effects show in the next
// status (read your writes).
func (s *Service) awaitPlacement(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	st, err := s.kvPlace.Status(ctx)
	if err != nil {
		return
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return
	}
	last := bs.StreamInfo().State.LastSeq
	for s.placeSeen.Load() < last && s.acting.Load() {
		select {
		case <-ctx.Done():
			s.log.Warn("placement watch lags behind writes", "seen", s.placeSeen.Load(), "written", last)
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// awaitWrites waits until the placement view and the listing index hold
// every write made so far (see awaitPlacement and awaitIndex): a control
// call answers only then, so what it wrote is what the next call reads.
func (s *Service) awaitWrites(ctx context.Context) {
	s.awaitPlacement(ctx)
	s.awaitIndex(ctx)
}

// awaitIndex waits (at most opTimeout) until the listing index holds every
// manifest write made so far, so that a listing right after a put, a
// compose or a delete sees it (S3's read-after-write for LIST). It returns
// at once while not acting.
func (s *Service) awaitIndex(ctx context.Context) {
	ix := s.indexer.Load()
	if ix == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	st, err := s.kvObjects.Status(ctx)
	if err != nil {
		return
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return
	}
	if err := ix.WaitApplied(ctx, bs.StreamInfo().State.LastSeq); err != nil {
		s.log.Warn("listing index lags behind manifest writes", "err", err)
	}
}

// getPlacement reads one map entry.
func (s *Service) getPlacement(ctx context.Context, shard string) (model.Placement, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	e, err := s.kvPlace.Get(ctx, shard)
	if err != nil {
		return model.Placement{}, 0, err
	}
	var p model.Placement
	if err := decodeRecord(e.Value(), &p); err != nil {
		return p, 0, err
	}
	return p, e.Revision(), nil
}

// resultsPending counts results not yet handled by anyone, or handed out
// and not acknowledged.
func (s *Service) resultsPending(ctx context.Context, act *acting) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	info, err := act.cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return uint64(info.NumAckPending) + info.NumPending, nil
}

// tick runs one planning round: forget expired tasks, start the inventory
// checks that are due, issue new copies and trims (none while paused), drop
// holders lacking shards that are whole without them, announce lost shards,
// refresh the gauges. It returns how soon to plan again when the byte cap
// held copies back (0: no need). It does nothing unless the lease is held.
func (s *Service) tick(ctx context.Context, act *acting) time.Duration {
	now := s.now()
	if !s.lease.held(now) {
		return 0
	}
	if !act.gateUntil.IsZero() {
		if n, err := s.resultsPending(ctx, act); now.Before(act.gateUntil) && (err != nil || n > 0) {
			if !act.gateLogged {
				act.gateLogged = true
				s.log.Info("waiting for results handed to the previous planner before planning", "pending", n, "until", act.gateUntil)
			}
			s.refreshGauges()
			return 0
		}
		act.gateUntil = time.Time{}
	}
	s.expireFlights(ctx, now)
	s.startReconciles(act)
	s.startOrphanSweep(act, now)

	s.mu.Lock()
	s.v.expire(now)
	s.markMovesLocked()
	p := s.v.round(now, s.limits())
	s.v.reserve(p, now, s.cfg.TaskTimeout)
	s.m.rescanSeconds.Set(s.v.rescanDur.Seconds())
	s.mu.Unlock()

	if len(p.copies) > 0 {
		s.issue(ctx, p.copies)
	}
	for _, t := range p.trims {
		s.trim(ctx, t)
	}
	if len(p.drops) > 0 {
		s.drops(ctx, p.drops)
	}
	s.announceLost(ctx)
	s.announceDrained(ctx)
	s.refreshGauges()
	return p.wait
}

// expireFlights re-plans tasks past their deadline, unless the task message
// still sits in the work queue (no mover took it yet, or one is retrying it).
// An expired copy counts as a failed attempt; an expired trim is forgotten.
func (s *Service) expireFlights(ctx context.Context, now time.Time) {
	s.mu.Lock()
	copies, trims := s.v.expired(now)
	type check struct {
		h    uint32
		task string
		seq  uint64
		trim bool
	}
	checks := make([]check, 0, len(copies)+len(trims))
	for _, h := range copies {
		f := s.v.flights[h]
		checks = append(checks, check{h, f.task, f.seq, false})
	}
	for _, h := range trims {
		t := s.v.trims[h]
		checks = append(checks, check{h, t.task, t.seq, true})
	}
	s.mu.Unlock()
	for _, c := range checks {
		queued := false
		if c.seq != 0 {
			gctx, cancel := context.WithTimeout(ctx, opTimeout)
			_, err := s.tasks.GetMsg(gctx, c.seq)
			cancel()
			queued = err == nil
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // cannot tell now: look again next tick
			}
		}
		if c.trim {
			s.mu.Lock()
			if t := s.v.trims[c.h]; t != nil && t.task == c.task {
				if queued {
					t.deadline = now.Add(s.cfg.TaskTimeout)
				} else {
					s.log.Warn("trim timed out", "task", c.task)
					s.v.endTrim(c.h)
				}
			}
			s.mu.Unlock()
			continue
		}
		var gaveUp *event.Failed
		s.mu.Lock()
		if f := s.v.flights[c.h]; f != nil && f.task == c.task {
			if queued {
				f.deadline = now.Add(s.cfg.TaskTimeout)
				if f.rb != nil {
					for _, p := range s.v.openPieces(f.rb) {
						s.v.flights[p].deadline = f.deadline
					}
				}
			} else {
				s.log.Warn("task timed out, re-planning", "task", c.task)
				gaveUp = s.failedLocked(c.h, f, "no result within the task timeout", now, false)
			}
		}
		s.mu.Unlock()
		s.reportGaveUp(ctx, gaveUp)
	}
}

// failedLocked ends flight f of shard h as a failed attempt (s.mu held); for
// a piece of a rebuild, every piece of its task still open. When it was the
// last attempt of its round it returns the report to publish.
func (s *Service) failedLocked(h uint32, f *flight, cause string, now time.Time, avoid bool) *event.Failed {
	// A copy back in place that failed leaves its target lacking the shard
	// (a planner that took over knows it only from the task).
	type back struct {
		h uint32
		r nodeRef
	}
	var backs []back
	if f.rb != nil {
		for _, p := range s.v.openPieces(f.rb) {
			if pf := s.v.flights[p]; pf.inPlace {
				backs = append(backs, back{p, pf.target})
			}
		}
	} else if f.inPlace {
		backs = append(backs, back{h, f.target})
	}
	defer func() {
		for _, b := range backs {
			s.v.markMissing(b.h, b.r)
		}
	}()
	kind := event.KindCopy
	if f.rb != nil {
		kind = event.KindRebuild
		if pieces := s.v.openPieces(f.rb); len(pieces) > 0 {
			h = pieces[0]
		}
		if !s.v.failedRebuild(f.rb, now, avoid) {
			return nil
		}
	} else {
		s.v.endFlight(h)
		if !s.v.failed(h, f.target, f.attempt, f.serial, now, avoid) {
			return nil
		}
	}
	s.m.gaveUp.Inc()
	r := s.v.retries[h]
	return &event.Failed{
		Task: f.task, Incident: f.incident, Shard: s.v.ids.String(h), Kind: kind,
		Target: s.v.nodes[f.target].id, Attempt: f.attempt, Final: true, RetryAt: r.notBefore.UTC(),
		Error: fmt.Sprintf("repair failed %d times in a row (last: %s); retrying from attempt 1 at %s",
			f.attempt, cause, r.notBefore.UTC().Format(time.RFC3339)),
	}
}

// reportGaveUp publishes the planner's final failure report of a parked
// shard (nil: nothing to report), deduplicated by its task id.
func (s *Service) reportGaveUp(ctx context.Context, f *event.Failed) {
	if f == nil {
		return
	}
	s.log.Warn("repair parked after repeated failures", "shard", f.Shard, "attempts", f.Attempt, "retry_at", f.RetryAt, "err", f.Error)
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := bus.Publish(pctx, s.js, event.FailedPrefix+f.Target, f, "planner-gave-up-"+f.Task); err != nil {
		s.log.Warn("publish final failure", "shard", f.Shard, "err", err)
	}
}

// issue publishes the tasks of reserved decisions and one plan event per
// incident (a rebuild counts each piece it writes, on its target).
func (s *Service) issue(ctx context.Context, ds []decision) {
	// One plan span per incident, continuing the trace its down verdict
	// started; the tasks and the plan event are published inside it.
	byIncident := map[string][]decision{}
	var order []string
	for _, d := range ds {
		if _, ok := byIncident[d.incident]; !ok {
			order = append(order, d.incident)
		}
		byIncident[d.incident] = append(byIncident[d.incident], d)
	}
	for _, inc := range order {
		s.issueIncident(ctx, inc, byIncident[inc])
	}
}

// issueIncident publishes the tasks of one incident and its plan event.
func (s *Service) issueIncident(ctx context.Context, inc string, ds []decision) {
	ctx, span := s.tracer.Start(telemetry.ContextFromTraceParent(ctx, s.incidentTrace(inc)), "rehome.repair.plan",
		trace.WithAttributes(attribute.String("rehome.incident", inc)))
	defer span.End()
	plan := event.Plan{Incident: inc}
	targets := map[string]*event.PlanTarget{}
	for _, d := range ds {
		var (
			t  *event.Task
			ok bool
		)
		if d.rb != nil {
			t, ok = s.issueRebuild(ctx, d)
		} else {
			t, ok = s.issueOne(ctx, d)
		}
		if !ok {
			continue
		}
		if t.RackRelaxed {
			plan.RackRelaxed++
			s.m.rackRelaxed.Inc()
		}
		writes := []event.Piece{{Node: t.Target, Size: t.Bytes}}
		if t.Kind == event.KindRebuild {
			writes = t.Rebuild
		}
		for _, w := range writes {
			plan.Shards++
			plan.Bytes += w.Size
			pt := targets[w.Node]
			if pt == nil {
				pt = &event.PlanTarget{Node: w.Node}
				targets[w.Node] = pt
			}
			pt.Shards++
			pt.Bytes += w.Size
		}
	}
	if plan.Shards == 0 {
		return
	}
	for _, pt := range targets {
		plan.Targets = append(plan.Targets, *pt)
	}
	slices.SortFunc(plan.Targets, func(x, y event.PlanTarget) int { return strings.Compare(x.Node, y.Node) })
	span.SetAttributes(attribute.Int("rehome.shards", plan.Shards), attribute.Int64("rehome.bytes", plan.Bytes))
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	if err := bus.Publish(pctx, s.js, event.PlanPrefix+inc, &plan, ""); err != nil {
		s.log.WarnContext(ctx, "publish plan", "incident", inc, "err", err)
	}
	cancel()
	s.log.InfoContext(ctx, "repair plan", "incident", inc, "shards", plan.Shards, "bytes", plan.Bytes,
		"targets", len(plan.Targets), "rack_relaxed", plan.RackRelaxed)
}

// issueOne reads the shard's entry (checksum, revision) and publishes its
// task; on any failure (or a lease lost meanwhile) the reservation is released.
func (s *Service) issueOne(ctx context.Context, d decision) (*event.Task, bool) {
	s.mu.Lock()
	taskID := s.v.taskID(d)
	target := s.v.nodes[d.target].id
	sources := make([]string, len(d.sources))
	for i, r := range d.sources {
		sources[i] = s.v.nodes[r].id
	}
	s.mu.Unlock()
	release := func(used bool) {
		s.mu.Lock()
		if f := s.v.flights[d.shard]; f != nil && f.task == taskID {
			s.v.endFlight(d.shard)
			if used {
				s.v.usedSerial(d.shard, d.serial, s.now())
			}
		}
		s.mu.Unlock()
	}
	if !s.lease.held(s.now()) {
		release(false)
		return nil, false
	}
	p, rev, err := s.getPlacement(ctx, d.id)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.log.Warn("read placement for task", "shard", d.id, "err", err)
		}
		release(false)
		return nil, false
	}
	t := &event.Task{
		Task: taskID, Incident: d.incident, Shard: d.id, Kind: event.KindCopy,
		Sources: sources, Target: target, Bytes: p.Size, SHA256: p.SHA256,
		Attempt: d.attempt, RackRelaxed: d.relaxed,
	}
	ack, err := s.publishTask(ctx, t)
	if err != nil {
		s.log.Warn("publish task", "task", taskID, "err", err)
		release(false)
		return nil, false
	}
	if ack.Duplicate {
		// That id was used recently (before a restart): take a new serial.
		release(true)
		s.plan()
		return nil, false
	}
	s.m.issued.WithLabelValues(event.KindCopy).Inc()
	s.mu.Lock()
	if f := s.v.flights[d.shard]; f != nil && f.task == taskID {
		f.seq, f.rev, f.entry = ack.Sequence, rev, &p
	}
	s.mu.Unlock()
	s.log.Debug("task issued", "task", taskID, "source", sources[0], "target", target, "bytes", p.Size,
		"attempt", d.attempt, "margin", d.margin, "rack_relaxed", d.relaxed)
	return t, true
}

// issueRebuild publishes the task of a reserved rebuild decision, built
// from the view alone (checksums are kept per stripe, so nothing is read):
// on rehome.repair.task.<first target>, with the task id as dedup id. The
// task lists the K holders it was charged for first in Sources, then the
// other live holders. On any failure (or a lease lost, or a piece gone from
// the map meanwhile) the reservation is released.
func (s *Service) issueRebuild(ctx context.Context, d decision) (*event.Task, bool) {
	s.mu.Lock()
	taskID := s.v.taskID(d)
	g := d.rb.group
	rb := g.rb
	if rb == nil || rb.task != taskID || len(s.v.openPieces(rb)) != len(d.rb.pieces) {
		s.mu.Unlock()
		s.releaseRebuild(taskID, g, d, false)
		return nil, false
	}
	t := s.v.rebuildTask(d, taskID)
	s.mu.Unlock()
	if err := t.Validate(); err != nil {
		s.log.Warn("rebuild task not valid, not issued", "task", taskID, "err", err)
		s.releaseRebuild(taskID, g, d, false)
		return nil, false
	}
	if !s.lease.held(s.now()) {
		s.releaseRebuild(taskID, g, d, false)
		return nil, false
	}
	ack, err := s.publishTask(ctx, t)
	if err != nil {
		s.log.Warn("publish task", "task", taskID, "err", err)
		s.releaseRebuild(taskID, g, d, false)
		return nil, false
	}
	if ack.Duplicate {
		s.releaseRebuild(taskID, g, d, true)
		s.plan()
		return nil, false
	}
	s.m.issued.WithLabelValues(event.KindRebuild).Inc()
	s.mu.Lock()
	if g.rb != nil && g.rb.task == taskID {
		for _, p := range s.v.openPieces(g.rb) {
			s.v.flights[p].seq = ack.Sequence
		}
	}
	s.mu.Unlock()
	s.log.Debug("rebuild issued", "task", taskID, "pieces", len(t.Rebuild), "sources", t.Sources[:t.K],
		"target", t.Target, "bytes_read", d.bytes, "attempt", d.attempt, "margin", d.margin, "rack_relaxed", d.relaxed)
	return t, true
}

// releaseRebuild forgets reserved rebuild taskID of stripe g; used records
// that its task id is taken (the next task takes a higher serial).
func (s *Service) releaseRebuild(taskID string, g *stripeGroup, d decision, used bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g.rb == nil || g.rb.task != taskID {
		return
	}
	for _, p := range s.v.openPieces(g.rb) {
		s.v.endFlight(p)
		if used {
			s.v.usedSerial(p, d.serial, s.now())
		}
	}
}

// trim removes one surplus copy: it takes the node out of the shard's
// placement entry with a compare-and-set (never leaving fewer up holders
// than the layout's copies), then queues the delete task for that node.
// Anything unexpected (entry changed, lease lost, bus trouble) releases the
// reservation; the next round looks again.
func (s *Service) trim(ctx context.Context, td trimDecision) {
	s.mu.Lock()
	node := s.v.nodes[td.node].id
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if t := s.v.trims[td.shard]; t != nil && t.node == td.node && t.task == "" {
			s.v.endTrim(td.shard)
		}
		s.mu.Unlock()
	}
	if !s.lease.held(s.now()) {
		release()
		return
	}
	p, rev, err := s.getPlacement(ctx, td.id)
	if err != nil {
		release()
		return
	}
	s.mu.Lock()
	up := 0 // holders up and not lacking the shard
	for _, n := range p.Nodes {
		if r, ok := s.v.nodeIdx[n]; ok && s.v.nodes[r].effState() == model.StateUp && !s.v.isMissing(td.shard, r) {
			up++
		}
	}
	s.mu.Unlock()
	if !slices.Contains(p.Nodes, node) || up <= p.Layout.Copies() {
		release()
		return
	}
	entry := p
	entry.Nodes = slices.DeleteFunc(slices.Clone(p.Nodes), func(n string) bool { return n == node })
	body, err := json.Marshal(entry)
	if err != nil {
		release()
		return
	}
	uctx, cancel := context.WithTimeout(ctx, opTimeout)
	newRev, err := s.kvPlace.Update(uctx, td.id, body, rev)
	cancel()
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			s.log.Warn("trim: update placement", "shard", td.id, "err", err)
		}
		release()
		return
	}
	taskID := trimPrefix + td.id + "-" + node + "-" + strconv.FormatUint(newRev, 10)
	s.mu.Lock()
	if t := s.v.trims[td.shard]; t != nil && t.node == td.node {
		t.task = taskID
	}
	s.mu.Unlock()
	t := &event.Task{Task: taskID, Incident: "trim", Shard: td.id, Kind: event.KindDelete,
		Target: node, Bytes: p.Size, SHA256: p.SHA256}
	ack, err := s.publishTask(ctx, t)
	if err != nil {
		// The map no longer lists the copy: it stays on the node's disk, unused.
		s.log.Warn("trim: copy unmapped but its delete task not queued", "shard", td.id, "node", node, "err", err)
		s.mu.Lock()
		if t := s.v.trims[td.shard]; t != nil && t.task == taskID {
			s.v.endTrim(td.shard)
		}
		s.mu.Unlock()
		return
	}
	s.m.trims.Inc()
	s.mu.Lock()
	if t := s.v.trims[td.shard]; t != nil && t.task == taskID {
		t.seq = ack.Sequence
	}
	s.mu.Unlock()
	s.log.Info("surplus copy trimmed", "shard", td.id, "node", node, "task", taskID)
}

// announceLost publishes event.Lost once for each newly lost shard.
func (s *Service) announceLost(ctx context.Context) {
	s.mu.Lock()
	hs := s.v.lostToAnnounce(256)
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = s.v.ids.String(h)
	}
	s.mu.Unlock()
	for i, id := range ids {
		p, _, err := s.getPlacement(ctx, id)
		if err != nil {
			continue
		}
		l := &event.Lost{Shard: id, Key: p.Key, Nodes: p.Nodes}
		what := "shard lost: no live copy"
		if p.Layout.Erasure() {
			what = "shard lost: its stripe has fewer than K pieces with a live holder"
		}
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		err = bus.Publish(pctx, s.js, event.LostPrefix+id, l, "lost-"+id)
		cancel()
		if err != nil {
			s.log.Warn("publish lost", "shard", id, "err", err)
			continue
		}
		s.log.Error(what, "shard", id, "key", p.Key, "nodes", p.Nodes, "layout", p.Layout.String())
		s.mu.Lock()
		if h, ok := s.v.ids.Lookup(id); ok && h == hs[i] {
			s.v.rec(h).flags |= flagLostSent
		}
		s.mu.Unlock()
	}
}

func (s *Service) refreshGauges() {
	s.mu.Lock()
	t := s.v.totals()
	single, _ := s.v.singleCopy()
	lacking := 0
	for i := range s.v.nodes {
		lacking += s.v.nodes[i].missing
	}
	s.mu.Unlock()
	s.m.singleCopy.Set(float64(single))
	s.m.lacking.Set(float64(lacking))
	s.m.underReplicated.Set(float64(t.underReplicated))
	s.m.lost.Set(float64(t.lost))
	s.m.bytesRemaining.Set(float64(t.bytesRemaining))
	s.m.inFlight.Set(float64(t.inFlight))
	s.m.shards.Set(float64(t.shards))
	s.m.surplus.Set(float64(t.surplus))
	s.m.stripes.Set(float64(t.stripes))
	s.m.stripesDegraded.Set(float64(t.stripesDegraded))
}

// publishProgress publishes rehome.heal.progress, and rehome.heal.stalled
// once per stall.
func (s *Service) publishProgress(ctx context.Context) {
	now := s.now()
	s.mu.Lock()
	p := s.v.progress(now, s.cfg.StallAfter)
	p.Paused = s.pausedLocked()
	announce := p.Stalled && !s.v.stallSent
	s.v.stallSent = p.Stalled
	idle := now.Sub(s.v.idleSince()).Seconds()
	s.mu.Unlock()
	if p.Stalled {
		s.m.stalled.Set(1)
	} else {
		s.m.stalled.Set(0)
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := bus.Publish(pctx, s.js, event.HealProgress, &p, ""); err != nil {
		s.log.Warn("publish progress", "err", err)
	}
	if announce {
		st := &event.Stalled{UnderReplicated: p.UnderReplicated, BytesRemaining: p.BytesRemaining, IdleSeconds: idle}
		if err := bus.Publish(pctx, s.js, event.HealStalled, st, ""); err != nil {
			s.log.Warn("publish stalled", "err", err)
		}
		s.log.Warn("heal stalled", "under_replicated", p.UnderReplicated, "bytes_remaining", p.BytesRemaining, "idle_seconds", idle)
	}
}
