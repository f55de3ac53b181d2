package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/telemetry"
)

// nonFinalRecheck is how soon a task reported failed but not final is
// checked again (is the mover still retrying it?).
const nonFinalRecheck = 10 * time.Second

// resultsAckWait is the results consumer's AckWait: how long a result
// handed to a planner that stopped without answering waits before another
// gets it. Handling one takes a KV round trip; a late ack only repeats an
// idempotent update.
const resultsAckWait = 10 * time.Second

// consumeResults starts the durable consumer of mover results and of the
// storage nodes' corrupt-copy reports; handling stops when ctx ends.
func (s *Service) consumeResults(ctx context.Context) (jetstream.Consumer, jetstream.ConsumeContext, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cons, err := s.js.CreateOrUpdateConsumer(cctx, bus.StreamEvents, jetstream.ConsumerConfig{
		Durable:        bus.PlannerConsumer,
		Description:    "planner: repair results and corrupt-copy reports",
		FilterSubjects: []string{event.DonePrefix + ">", event.FailedPrefix + ">", event.CorruptPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        resultsAckWait,
		MaxAckPending:  1024,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("results consumer: %w", err)
	}
	// A small buffer: what a planner losing the lease had buffered waits
	// AckWait before the next one gets it.
	cc, err := cons.Consume(func(msg jetstream.Msg) { s.onResult(ctx, msg) }, jetstream.PullMaxMessages(64))
	if err != nil {
		return nil, nil, fmt.Errorf("consume results: %w", err)
	}
	return cons, cc, nil
}

// onResult handles one mover result (or corrupt report). Malformed results,
// and well-formed ones naming a node or shard the planner does not know
// (view.checkResult), are counted, acked and dropped; a result that could
// not be recorded (bus trouble) is redelivered.
func (s *Service) onResult(ctx context.Context, msg jetstream.Msg) {
	subj := msg.Subject()
	ctx, span := telemetry.StartProcess(ctx, s.tracer, "rehome.repair.commit", subj, msg.Headers())
	defer span.End()
	label, r, err := core.DecodeResult(subj, msg.Data())
	if err == nil {
		s.mu.Lock()
		err = s.v.CheckResult(r)
		s.mu.Unlock()
	}
	if err != nil {
		s.malformed(label, err)
		_ = msg.Ack() // rejected for good: never redelivered
		return
	}
	switch {
	case r.Done != nil:
		err = s.onDone(ctx, *r.Done)
	case r.Failed != nil:
		s.onFailed(ctx, *r.Failed)
	case r.Corrupt != nil:
		s.onCorrupt(*r.Corrupt)
	}
	if err != nil {
		s.log.Warn("recording result failed, will retry", "subject", subj, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}

// onDone records a verified copy in the placement map (compare-and-set; the
// down holders stay listed). The task leaves the in-flight set when the map
// watch shows the new holder, so the shard is never planned twice in between.
// A copy back onto a holder that lacked the shard changes nothing in the map:
// the holder counts again at once. A copy of a shard no longer in the map is
// scheduled for deletion.
func (s *Service) onDone(ctx context.Context, d event.Done) error {
	if d.Kind == event.KindDelete {
		s.endTrim(d.Shard, d.Task)
		return nil
	}
	s.mu.Lock()
	var (
		entry *model.Placement
		rev   uint64
	)
	if h, ok := s.v.IDs.Lookup(d.Shard); ok {
		if r, known := s.v.NodeIndex[d.Target]; known && s.v.LandedInPlace(h, r, d.Task) {
			s.v.VerifiedCopy(d.Bytes, s.now())
			s.mu.Unlock()
			s.m.repairedBytes.Add(float64(d.Bytes))
			s.m.healedInPlace.Inc()
			s.log.Debug("copy back in place recorded", "shard", d.Shard, "target", d.Target, "bytes", d.Bytes)
			s.plan()
			return nil
		}
		if f := s.v.Flights[h]; f != nil && f.Task == d.Task && f.Entry != nil {
			e := *f.Entry
			e.Nodes = slices.Clone(e.Nodes)
			entry, rev = &e, f.Rev
		}
	}
	s.mu.Unlock()

	added := false
	for try := 0; ; try++ {
		if entry == nil {
			p, r, err := s.getPlacement(ctx, d.Shard)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return s.deleteOrphan(ctx, d.Shard, d.Target, d.Bytes)
			}
			if err != nil {
				return fmt.Errorf("read placement %s: %w", d.Shard, err)
			}
			entry, rev = &p, r
		}
		if slices.Contains(entry.Nodes, d.Target) {
			break // recorded already (a redelivered result)
		}
		entry.Nodes = append(entry.Nodes, d.Target)
		data, err := json.Marshal(entry)
		if err != nil {
			return fmt.Errorf("encode placement: %w", err)
		}
		uctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err = s.kvPlace.Update(uctx, d.Shard, data, rev)
		cancel()
		if err == nil {
			added = true
			break
		}
		if (errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)) && try < 20 {
			entry = nil // someone wrote it since: re-read and retry
			continue
		}
		return fmt.Errorf("update placement %s: %w", d.Shard, err)
	}
	if added {
		s.m.repairedBytes.Add(float64(d.Bytes))
		s.mu.Lock()
		s.v.VerifiedCopy(d.Bytes, s.now())
		s.mu.Unlock()
		s.log.Debug("copy recorded", "shard", d.Shard, "target", d.Target, "bytes", d.Bytes)
	}
	return nil
}

// deleteOrphan schedules the deletion of a copy whose shard left the map
// (its object was deleted while the copy ran).
func (s *Service) deleteOrphan(ctx context.Context, shard, node string, bytes int64) error {
	t := &event.Task{Task: "delete-" + shard + "-" + node, Shard: shard, Kind: event.KindDelete, Target: node, Bytes: bytes}
	if _, err := s.publishTask(ctx, t); err != nil {
		return err
	}
	s.log.Info("copy of a deleted shard: scheduled its deletion", "shard", shard, "node", node)
	return nil
}

// endTrim ends the trim of shard whose delete task is task, if in flight,
// and plans again (its slot is free).
func (s *Service) endTrim(shard, task string) {
	s.mu.Lock()
	ended := false
	if h, ok := s.v.IDs.Lookup(shard); ok {
		if t := s.v.Trims[h]; t != nil && t.Task == task {
			s.v.EndTrim(h)
			ended = true
		}
	}
	s.mu.Unlock()
	if ended {
		s.plan()
	}
}

// onFailed handles a failure report. A final failure ends the task and
// re-plans the shard with backoff, avoiding that target (or parks it after
// MaxAttempts, reporting so); a non-final one (the mover retries) keeps it in
// flight and has it checked again soon. The planner's own reports (RetryAt
// set) are ignored.
func (s *Service) onFailed(ctx context.Context, f event.Failed) {
	if !f.RetryAt.IsZero() {
		return
	}
	s.m.failures.Inc()
	if f.Kind == event.KindDelete {
		if f.Final {
			s.log.Warn("delete task failed: the copy stays on the node, unmapped", "task", f.Task, "shard", f.Shard, "target", f.Target, "err", f.Error)
			s.endTrim(f.Shard, f.Task)
		}
		return
	}
	now := s.now()
	s.mu.Lock()
	h, ok := s.v.IDs.Lookup(f.Shard)
	if !ok {
		s.mu.Unlock()
		return
	}
	fl := s.v.Flights[h]
	if (fl == nil || fl.Task != f.Task) && f.Kind == event.KindRebuild {
		// The piece named may have landed already: find the task by its stripe.
		if g := s.v.Group(h); g != nil && g.RB != nil && g.RB.Task == f.Task {
			if open := s.v.OpenPieces(g.RB); len(open) > 0 {
				fl = s.v.Flights[open[0]]
				h = open[0]
			}
		}
	}
	if fl == nil || fl.Task != f.Task {
		s.mu.Unlock()
		return // an older attempt
	}
	if !f.Final {
		fl.Deadline = minTime(fl.Deadline, now.Add(nonFinalRecheck))
		s.mu.Unlock()
		return
	}
	gaveUp := s.failedLocked(h, fl, f.Error, now, true)
	if gaveUp == nil {
		next := 0
		if r := s.v.Retries[h]; r != nil {
			next = r.Attempt
		}
		s.log.Warn("repair failed, re-planning", "kind", f.Kind, "task", f.Task, "shard", f.Shard, "target", f.Target,
			"err", f.Error, "next_attempt", next)
	}
	s.mu.Unlock()
	s.reportGaveUp(ctx, gaveUp)
	s.plan()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
