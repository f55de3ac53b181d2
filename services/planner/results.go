package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/telemetry"
)

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

// onDone records a verified copy in the placement map (compare-and-set; see
// core.View.Land and core.AddHolder). The task leaves the in-flight set when
// the map watch shows the new holder, so the shard is never planned twice in
// between. A copy of a shard no longer in the map is scheduled for deletion.
func (s *Service) onDone(ctx context.Context, d event.Done) error {
	if d.Kind == event.KindDelete {
		s.endTrim(d.Shard, d.Task)
		return nil
	}
	s.mu.Lock()
	l := s.v.Land(d, s.now())
	s.mu.Unlock()
	switch {
	case l.InPlace:
		s.m.repairedBytes.Add(float64(d.Bytes))
		s.m.healedInPlace.Inc()
		s.log.Debug("copy back in place recorded", "shard", d.Shard, "target", d.Target, "bytes", d.Bytes)
		s.plan()
		return nil
	case l.Stale:
		s.log.Debug("stale copy report ignored", "task", d.Task, "shard", d.Shard, "target", d.Target)
		return nil
	}
	entry, rev := l.Entry, l.Rev
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
		next, changed := core.AddHolder(*entry, d.Target)
		if !changed {
			break // recorded already (a redelivered result)
		}
		data, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("encode placement: %w", err)
		}
		uctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err = s.places.Update(uctx, d.Shard, data, rev)
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
		s.v.Verified(d.Bytes, s.now())
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
	ended := s.v.EndTrimTask(shard, task)
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
	s.mu.Lock()
	out := s.v.Fail(f, s.now())
	s.mu.Unlock()
	if !out.Ended {
		return
	}
	if out.GaveUp == nil {
		s.log.Warn("repair failed, re-planning", "kind", f.Kind, "task", f.Task, "shard", f.Shard, "target", f.Target, "side", f.Side,
			"err", f.Error, "next_attempt", out.NextAttempt)
	}
	s.reportGaveUp(ctx, out.GaveUp)
	s.plan()
}
