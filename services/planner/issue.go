package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

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
		if s.v.SeedFlight(t, m.Sequence, now.Add(s.cfg.TaskTimeout)) {
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
	ack, err := s.pub.PublishAck(ctx, event.TaskPrefix+t.Target, t, t.Task)
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
	return s.v.IncidentTrace(inc)
}

// awaitPlacement waits (at most opTimeout) until the view has applied every
// placement write made so far, so a control call's effects show in the next
// status (read your writes).
func (s *Service) awaitPlacement(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	st, err := s.places.Status(ctx)
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
	e, err := s.places.Get(ctx, shard)
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
	if until := act.gate.Until(); !until.IsZero() {
		n, err := s.resultsPending(ctx, act)
		if !act.gate.Open(now, n, err == nil) {
			if !act.gateLogged {
				act.gateLogged = true
				s.log.Info("waiting for results handed to the previous planner before planning", "pending", n, "until", until)
			}
			s.refreshGauges()
			s.publishSnapshot()
			return 0
		}
	}
	s.expireFlights(ctx, now)
	s.startReconciles(act)
	s.startOrphanSweep(act, now)

	s.mu.Lock()
	start := time.Now()
	s.v.Expire(now)
	s.markMovesLocked()
	rescans := s.v.Rescans()
	p := s.v.Round(now, s.limits())
	if s.v.Rescans() != rescans {
		s.m.rescanSeconds.Set(time.Since(start).Seconds())
	}
	s.v.Reserve(p, now, s.cfg.TaskTimeout)
	s.publishSnapshotLocked()
	s.m.lockHeld.WithLabelValues("round").Observe(time.Since(start).Seconds())
	s.mu.Unlock()

	if len(p.Copies) > 0 {
		s.issue(ctx, p.Batches())
	}
	for _, t := range p.Trims {
		s.trim(ctx, t)
	}
	if len(p.Drops) > 0 {
		s.drops(ctx, p.Drops)
	}
	s.announceLost(ctx)
	s.announceDrained(ctx)
	s.refreshGauges()
	return p.Wait
}

// expireFlights resolves tasks past their deadline (see
// core.View.ResolveExpired): it asks the work queue whether each still waits
// there, and publishes the final failure of a shard parked meanwhile.
func (s *Service) expireFlights(ctx context.Context, now time.Time) {
	s.mu.Lock()
	expired := s.v.ExpiredTasks(now)
	s.mu.Unlock()
	for _, e := range expired {
		queued := false
		if e.Seq != 0 {
			gctx, cancel := context.WithTimeout(ctx, opTimeout)
			_, err := s.tasks.GetMsg(gctx, e.Seq)
			cancel()
			queued = err == nil
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // cannot tell now: look again next tick
			}
		}
		s.mu.Lock()
		out := s.v.ResolveExpired(e, queued, now, s.cfg.TaskTimeout)
		s.mu.Unlock()
		if out.TimedOut {
			s.log.Warn("task timed out, re-planning", "task", e.Task, "trim", e.Trim)
		}
		s.reportGaveUp(ctx, out.GaveUp)
	}
}

// reportGaveUp publishes the planner's final failure report of a parked
// shard (nil: nothing to report), deduplicated by its task id.
func (s *Service) reportGaveUp(ctx context.Context, f *event.Failed) {
	if f == nil {
		return
	}
	s.m.gaveUp.Inc()
	s.log.Warn("repair parked after repeated failures", "shard", f.Shard, "attempts", f.Attempt, "retry_at", f.RetryAt, "err", f.Error)
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := s.pub.Publish(pctx, event.FailedPrefix+f.Target, f, "planner-gave-up-"+f.Task); err != nil {
		s.log.Warn("publish final failure", "shard", f.Shard, "err", err)
	}
}

// issue publishes the tasks of reserved decisions, grouped as they travel
// (core.Plan.Batches: one task per group), and one plan event per incident
// (a rebuild counts each piece it writes, on its target; a batch each shard).
func (s *Service) issue(ctx context.Context, groups [][]core.Decision) {
	// One plan span per incident, continuing the trace its down verdict
	// started; the tasks and the plan event are published inside it.
	byIncident := map[string][][]core.Decision{}
	var order []string
	for _, g := range groups {
		inc := g[0].Incident
		if _, ok := byIncident[inc]; !ok {
			order = append(order, inc)
		}
		byIncident[inc] = append(byIncident[inc], g)
	}
	for _, inc := range order {
		s.issueIncident(ctx, inc, byIncident[inc])
	}
}

// issueIncident publishes the tasks of one incident and its plan event.
func (s *Service) issueIncident(ctx context.Context, inc string, groups [][]core.Decision) {
	ctx, span := s.tracer.Start(telemetry.ContextFromTraceParent(ctx, s.incidentTrace(inc)), "rehome.repair.plan",
		trace.WithAttributes(attribute.String("rehome.incident", inc)))
	defer span.End()
	plan := event.Plan{Incident: inc}
	targets := map[string]*event.PlanTarget{}
	for _, g := range groups {
		var (
			t  *event.Task
			ok bool
		)
		switch d := g[0]; {
		case d.RB != nil:
			t, ok = s.issueRebuild(ctx, d)
		case len(g) > 1:
			t, ok = s.issueBatch(ctx, g)
		default:
			t, ok = s.issueOne(ctx, d)
		}
		if !ok {
			continue
		}
		writes := []event.Piece{{Node: t.Target, Size: t.Bytes}}
		relaxed := 0
		if t.RackRelaxed {
			relaxed = 1
		}
		switch {
		case t.Kind == event.KindRebuild:
			writes = t.Rebuild
		case len(t.Batch) > 0:
			writes, relaxed = writes[:0], 0
			for _, m := range t.Batch {
				writes = append(writes, event.Piece{Node: t.Target, Size: m.Bytes})
				if m.RackRelaxed {
					relaxed++
				}
			}
		}
		plan.RackRelaxed += relaxed
		s.m.rackRelaxed.Add(float64(relaxed))
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
	if err := s.pub.Publish(pctx, event.PlanPrefix+inc, &plan, ""); err != nil {
		s.log.WarnContext(ctx, "publish plan", "incident", inc, "err", err)
	}
	cancel()
	s.log.InfoContext(ctx, "repair plan", "incident", inc, "shards", plan.Shards, "bytes", plan.Bytes,
		"targets", len(plan.Targets), "rack_relaxed", plan.RackRelaxed)
}

// issueOne reads the shard's entry (checksum, revision) and publishes its
// task; on any failure (or a lease lost meanwhile) the reservation is released.
func (s *Service) issueOne(ctx context.Context, d core.Decision) (*event.Task, bool) {
	s.mu.Lock()
	taskID := s.v.TaskID(d)
	s.mu.Unlock()
	release := func(used bool) {
		s.mu.Lock()
		s.v.ReleaseCopy(d, taskID, used, s.now())
		s.mu.Unlock()
	}
	if !s.lease.held(s.now()) {
		release(false)
		return nil, false
	}
	p, rev, err := s.getPlacement(ctx, d.ID)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.log.Warn("read placement for task", "shard", d.ID, "err", err)
		}
		release(false)
		return nil, false
	}
	s.mu.Lock()
	t := s.v.CopyTask(d, p)
	s.mu.Unlock()
	ack, ok := s.publishReserved(ctx, &t, release)
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	s.v.CopyQueued(d, taskID, ack.Sequence, rev, p)
	s.mu.Unlock()
	s.log.Debug("task issued", "task", taskID, "source", t.Sources[0], "target", t.Target, "bytes", p.Size,
		"attempt", d.Attempt, "margin", d.Margin, "rack_relaxed", d.Relaxed)
	return &t, true
}

// publishReserved publishes the task of a reservation and counts it; on a
// failure it calls release(false), and on a task id already used (seen by
// the stream's dedup window, before a restart) release(true) and plans
// again, so the next task takes a new serial.
func (s *Service) publishReserved(ctx context.Context, t *event.Task, release func(used bool)) (*jetstream.PubAck, bool) {
	ack, err := s.publishTask(ctx, t)
	if err != nil {
		s.log.Warn("publish task", "task", t.Task, "err", err)
		release(false)
		return nil, false
	}
	if ack.Duplicate {
		release(true)
		s.plan()
		return nil, false
	}
	s.m.issued.WithLabelValues(t.Kind).Inc()
	return ack, true
}

// issueRebuild publishes the task of a reserved rebuild decision, built
// from the view alone (checksums are kept per stripe, so nothing is read):
// on rehome.repair.task.<first target>, with the task id as dedup id. The
// task lists the K holders it was charged for first in Sources, then the
// other live holders. On any failure (or a lease lost, or a piece gone from
// the map meanwhile) the reservation is released.
func (s *Service) issueRebuild(ctx context.Context, d core.Decision) (*event.Task, bool) {
	s.mu.Lock()
	taskID := s.v.TaskID(d)
	t, ok := s.v.RebuildTaskOf(d)
	s.mu.Unlock()
	release := func(used bool) {
		s.mu.Lock()
		s.v.ReleaseRebuild(d, taskID, used, s.now())
		s.mu.Unlock()
	}
	if !ok {
		release(false)
		return nil, false
	}
	if err := t.Validate(); err != nil {
		s.log.Warn("rebuild task not valid, not issued", "task", taskID, "err", err)
		release(false)
		return nil, false
	}
	if !s.lease.held(s.now()) {
		release(false)
		return nil, false
	}
	ack, ok := s.publishReserved(ctx, t, release)
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	s.v.RebuildQueued(d, taskID, ack.Sequence)
	s.mu.Unlock()
	s.log.Debug("rebuild issued", "task", taskID, "pieces", len(t.Rebuild), "sources", t.Sources[:t.K],
		"target", t.Target, "bytes_read", d.Bytes, "attempt", d.Attempt, "margin", d.Margin, "rack_relaxed", d.Relaxed)
	return t, true
}

// trim removes one surplus copy: it takes the node out of the shard's
// placement entry with a compare-and-set when core.View.TrimEntry still
// allows it, then queues the delete task for that node. Anything unexpected
// (entry changed, lease lost, bus trouble) releases the reservation; the
// next round looks again.
func (s *Service) trim(ctx context.Context, td core.TrimDecision) {
	release := func() {
		s.mu.Lock()
		s.v.ReleaseTrim(td)
		s.mu.Unlock()
	}
	if !s.lease.held(s.now()) {
		release()
		return
	}
	p, rev, err := s.getPlacement(ctx, td.ID)
	if err != nil {
		release()
		return
	}
	s.mu.Lock()
	entry, ok := s.v.TrimEntry(td, p)
	s.mu.Unlock()
	if !ok {
		release()
		return
	}
	body, err := json.Marshal(entry)
	if err != nil {
		release()
		return
	}
	uctx, cancel := context.WithTimeout(ctx, opTimeout)
	newRev, err := s.places.Update(uctx, td.ID, body, rev)
	cancel()
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			s.log.Warn("trim: update placement", "shard", td.ID, "err", err)
		}
		release()
		return
	}
	s.mu.Lock()
	t := s.v.TrimWritten(td, p, newRev)
	s.mu.Unlock()
	ack, err := s.publishTask(ctx, &t)
	s.mu.Lock()
	if err != nil {
		s.v.TrimQueued(td, t.Task, 0, false)
	} else {
		s.v.TrimQueued(td, t.Task, ack.Sequence, true)
	}
	s.mu.Unlock()
	if err != nil {
		// The map no longer lists the copy: it stays on the node's disk, unused.
		s.log.Warn("trim: copy unmapped but its delete task not queued", "shard", td.ID, "node", t.Target, "err", err)
		return
	}
	s.m.trims.Inc()
	s.log.Info("surplus copy trimmed", "shard", td.ID, "node", t.Target, "task", t.Task)
}

// announceLost publishes event.Lost once for each newly lost shard.
func (s *Service) announceLost(ctx context.Context) {
	s.mu.Lock()
	ids := s.v.LostIDs(256)
	s.mu.Unlock()
	for _, id := range ids {
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
		err = s.pub.Publish(pctx, event.LostPrefix+id, l, "lost-"+id)
		cancel()
		if err != nil {
			s.log.Warn("publish lost", "shard", id, "err", err)
			continue
		}
		s.log.Error(what, "shard", id, "key", p.Key, "nodes", p.Nodes, "layout", p.Layout.String())
		s.mu.Lock()
		s.v.LostSent(id)
		s.mu.Unlock()
	}
}

func (s *Service) refreshGauges() {
	s.mu.Lock()
	t := s.v.Totals()
	single, _ := s.v.SingleCopy()
	lacking := 0
	for i := range s.v.Nodes {
		lacking += s.v.Nodes[i].Missing
	}
	s.mu.Unlock()
	s.m.singleCopy.Set(float64(single))
	s.m.lacking.Set(float64(lacking))
	s.m.underReplicated.Set(float64(t.UnderReplicated))
	s.m.lost.Set(float64(t.Lost))
	s.m.bytesRemaining.Set(float64(t.BytesRemaining))
	s.m.inFlight.Set(float64(t.InFlight))
	s.m.shards.Set(float64(t.Shards))
	s.m.surplus.Set(float64(t.Surplus))
	s.m.stripes.Set(float64(t.Stripes))
	s.m.stripesDegraded.Set(float64(t.StripesDegraded))
}

// publishProgress publishes rehome.heal.progress, and rehome.heal.stalled
// once per stall.
func (s *Service) publishProgress(ctx context.Context) {
	now := s.now()
	s.mu.Lock()
	p := s.v.Progress(now, s.cfg.StallAfter)
	p.Paused = s.pausedLocked()
	announce := p.Stalled && !s.v.StallSent
	s.v.StallSent = p.Stalled
	idle := now.Sub(s.v.IdleSince()).Seconds()
	s.mu.Unlock()
	if p.Stalled {
		s.m.stalled.Set(1)
	} else {
		s.m.stalled.Set(0)
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := s.pub.Publish(pctx, event.HealProgress, &p, ""); err != nil {
		s.log.Warn("publish progress", "err", err)
	}
	if announce {
		st := &event.Stalled{UnderReplicated: p.UnderReplicated, BytesRemaining: p.BytesRemaining, IdleSeconds: idle}
		if err := s.pub.Publish(pctx, event.HealStalled, st, ""); err != nil {
			s.log.Warn("publish stalled", "err", err)
		}
		s.log.Warn("heal stalled", "under_replicated", p.UnderReplicated, "bytes_remaining", p.BytesRemaining, "idle_seconds", idle)
	}
}
