package mover

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
)

// memberResult is what one shard of a batched copy came to.
type memberResult struct {
	out outcome
	err error
}

// copyBatch copies the shards of batched copy task t one after another
// (each one exactly as copy does: the target pulls it and verifies it
// before it counts), so a batch is one transfer at a time into its target.
// It stops early only when ctx ends; the shards not tried then carry
// ctx's error.
func (e executor) copyBatch(ctx context.Context, t event.Task) []memberResult {
	ms := t.Members()
	out := make([]memberResult, len(ms))
	for i, m := range ms {
		if err := ctx.Err(); err != nil {
			out[i].err = err
			continue
		}
		out[i].out, out[i].err = e.copy(ctx, m)
	}
	return out
}

// finishBatch reports a batched copy attempt shard by shard and answers the
// bus. First one Done per shard the target verified (under that shard's
// task id, on rehome.repair.done.<target>). Then, when no shard verified
// and every failure is transient with deliveries left, a non-final Failed
// per shard and the batch is handed back with backoff, as a single copy
// would be; otherwise a final Failed per shard that did not verify (with
// its side: the planner re-plans each alone) and the batch is
// acknowledged. If a report cannot be published the batch is handed back;
// its redelivery finds the verified shards in place.
func (s *Service) finishBatch(ctx context.Context, msg jetstream.Msg, t event.Task, res []memberResult, attempt int, elapsed time.Duration, log *slog.Logger) {
	ms := t.Members()
	delay := Backoff(attempt, s.cfg.BackoffMin, s.cfg.BackoffMax)
	handBack := func(what string, err error) {
		s.m.tasks.WithLabelValues(t.Kind, ResultRetry).Inc()
		log.WarnContext(ctx, what+"; handing the batch back", "err", err)
		if err := msg.NakWithDelay(delay); err != nil {
			log.WarnContext(ctx, "handing back a task", "err", err)
		}
	}
	verified, retry := 0, attempt < s.cfg.MaxDeliver
	for i, r := range res {
		m := ms[i]
		if r.err != nil {
			retry = retry && !Classify(r.err).Final()
			continue
		}
		verified++
		s.m.bytes.Add(float64(r.out.copied))
		done := &event.Done{Task: m.Task, Incident: m.Incident, Shard: m.Shard, Kind: m.Kind,
			Source: r.out.source, Target: m.Target, Bytes: m.Bytes, DurationMS: elapsed.Milliseconds()}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := bus.Publish(pctx, s.js, event.DonePrefix+m.Target, done, "done-"+m.Task)
		cancel()
		if err != nil {
			handBack("shard verified but its report could not be published", err)
			return
		}
	}
	final := verified > 0 || !retry
	for i, r := range res {
		if r.err == nil {
			continue
		}
		m := ms[i]
		f := &event.Failed{Task: m.Task, Incident: m.Incident, Shard: m.Shard, Kind: m.Kind, Target: m.Target,
			Error: oneLine(r.err), Attempt: attempt, Final: final, Side: Side(r.err)}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := bus.Publish(pctx, s.js, event.FailedPrefix+m.Target, f, "failed-"+m.Task+"-"+strconv.Itoa(attempt))
		cancel()
		if err != nil {
			handBack("shard failed and its report could not be published", err)
			return
		}
		log.InfoContext(ctx, "batched shard failed", "shard", m.Shard, "final", final, "class", Classify(r.err), "err", r.err)
	}
	failed := len(res) - verified
	if !final {
		handBack("every shard of the batch failed", res[0].err)
		return
	}
	if err := msg.Ack(); err != nil {
		log.WarnContext(ctx, "acknowledging a batch (it will be redelivered and found done)", "err", err)
	}
	result := ResultDone
	if failed > 0 {
		result = ResultFailed
	}
	s.m.tasks.WithLabelValues(t.Kind, result).Inc()
	log.InfoContext(ctx, "batch done", "shards", len(res), "verified", verified, "failed", failed, "duration", elapsed)
}

// batchOutcome sums up a batched attempt for its span and metrics: the
// first source read, bytes read and written, and the first error.
func batchOutcome(res []memberResult) (out outcome, err error) {
	for _, r := range res {
		out.read += r.out.read
		out.copied += r.out.copied
		if out.source == "" {
			out.source = r.out.source
		}
		if err == nil {
			err = r.err
		}
	}
	return out, err
}
