package mover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
)

// errReport marks a batched shard that verified but whose Done could not be
// published (and the shards not tried after it): the batch is handed back.
var errReport = errors.New("report not published")

// memberResult is what one shard of a batched copy came to.
type memberResult struct {
	out  outcome
	err  error
	took time.Duration
}

// copyBatch copies the shards of batched copy task t one after another
// (each one exactly as copy does: the target pulls it and verifies it
// before it counts), so a batch is one transfer at a time into its target,
// and hands each verified shard to verified as soon as it is. It stops
// early when ctx ends or verified fails (that shard and the rest then carry
// an error wrapping errReport, or ctx's error).
func (e executor) copyBatch(ctx context.Context, t event.Task, now func() time.Time, verified func(m event.Task, r memberResult) error) []memberResult {
	ms := t.Members()
	out := make([]memberResult, len(ms))
	var stop error
	for i, m := range ms {
		if stop == nil {
			stop = ctx.Err()
		}
		if stop != nil {
			out[i].err = stop
			continue
		}
		start := now()
		out[i].out, out[i].err = e.copy(ctx, m)
		out[i].took = now().Sub(start)
		if out[i].err != nil {
			continue
		}
		if err := verified(m, out[i]); err != nil {
			stop = fmt.Errorf("%w: %w", errReport, err)
			out[i].err = stop
		}
	}
	return out
}

// reportVerified publishes the Done of batch member m (a shard the target
// verified, as r says) under m's own task id, on rehome.repair.done.<target>.
func (s *Service) reportVerified(ctx context.Context, m event.Task, r memberResult) error {
	done := &event.Done{Task: m.Task, Incident: m.Incident, Shard: m.Shard, Kind: m.Kind,
		Source: r.out.source, Target: m.Target, Bytes: m.Bytes, DurationMS: r.took.Milliseconds()}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := bus.Publish(pctx, s.js, event.DonePrefix+m.Target, done, "done-"+m.Task); err != nil {
		return fmt.Errorf("done report of %s: %w", m.Shard, err)
	}
	s.m.bytes.Add(float64(r.out.copied))
	return nil
}

// finishBatch answers the bus for a batched copy attempt whose verified
// shards were reported as they verified (reportVerified). If a report could
// not be published the batch is handed back (its redelivery finds the
// verified shards in place). When no shard verified and every failure is
// transient with deliveries left, it publishes a non-final Failed per shard
// and hands the batch back with backoff, as a single copy would be;
// otherwise a final Failed per shard that did not verify (with its side:
// the planner re-plans each alone), then acknowledges the batch.
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
	for _, r := range res {
		switch {
		case errors.Is(r.err, errReport):
			handBack("a shard verified but its report could not be published", r.err)
			return
		case r.err != nil:
			retry = retry && !Classify(r.err).Final()
		default:
			verified++
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
			handBack("a shard failed and its report could not be published", err)
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
