package mover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/shardapi"
)

// publishTimeout bounds one result publish.
const publishTimeout = 10 * time.Second

// maxDeliveriesSubject carries the bus's advisory for a task that reached
// MaxDeliver without an answer (a mover died on it each time).
var maxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + bus.StreamTasks + "." + bus.MoverConsumer

// handle runs one delivered task to its outcome and answers the bus: Ack after
// a published Done, Nak with backoff or Term after a published Failed, Term for
// a malformed message. It never panics on bad input and returns when answered.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) {
	start := s.now()
	var t event.Task
	md, err := msg.Metadata()
	if err == nil {
		err = decodeTask(msg.Subject(), msg.Data(), &t)
	}
	if err != nil {
		s.m.malformed.WithLabelValues(malformedTask, event.Reason(err)).Inc()
		s.log.Debug("dropping malformed task", "subject", msg.Subject(), "bytes", len(msg.Data()), "reason", event.Reason(err), "err", err)
		var seq uint64
		deliveries := 1
		if md != nil {
			seq, deliveries = md.Sequence.Stream, int(md.NumDelivered)
		}
		if derr := s.bury(ctx, msg.Subject(), msg.Data(), seq, deliveries, DeadMalformed, oneLine(err)); derr != nil {
			s.log.Warn("malformed task could not be dead-lettered; handing it back", "err", derr)
			if err := msg.NakWithDelay(Backoff(deliveries, s.cfg.BackoffMin, s.cfg.BackoffMax)); err != nil {
				s.log.Warn("handing back a malformed task", "err", err)
			}
			return
		}
		if err := msg.TermWithReason("malformed task"); err != nil {
			s.log.Warn("terminating a malformed task", "err", err)
		}
		return
	}
	s.m.inFlight.Inc()
	defer s.m.inFlight.Dec()
	attempt := int(md.NumDelivered)
	log := s.log.With("task", t.Task, "kind", t.Kind, "shard", t.Shard, "target", t.Target, "attempt", attempt)
	// The attempt runs in its span: storage requests, reports and log lines
	// made with ctx belong to the incident's trace.
	var span trace.Span
	ctx, span = s.startSpan(ctx, msg, t, attempt)
	// Its storage requests are repair traffic (a rebalancing move's are
	// background traffic): nodes serve clients first.
	ctx = shardapi.AsRepair(ctx)
	if t.Class == event.ClassBackground {
		ctx = shardapi.WithClass(ctx, shardapi.ClassBackground)
	}

	stop := s.keepAlive(msg)
	var out outcome
	var rb rebuilt
	var batch []memberResult
	switch {
	case t.Kind == event.KindCopy && len(t.Batch) > 0:
		batch = s.exec.copyBatch(ctx, t, s.now, func(m event.Task, r memberResult) error { return s.reportVerified(ctx, m, r) })
		out, err = batchOutcome(batch)
	case t.Kind == event.KindCopy:
		out, err = s.exec.copy(ctx, t)
	case t.Kind == event.KindRebuild:
		rb, err = s.exec.rebuild(ctx, t)
	case t.Kind == event.KindDelete:
		err = s.exec.delete(ctx, t)
	default: // Validate admits no other kind.
		err = fmt.Errorf("%w: kind %q", event.ErrMalformed, t.Kind)
	}
	stop()
	elapsed := s.now().Sub(start)
	s.m.duration.WithLabelValues(t.Kind).Observe(elapsed.Seconds())
	s.m.read.Add(float64(out.read + rb.read))

	switch {
	case batch != nil && (err == nil || ctx.Err() == nil):
		s.finishBatch(ctx, msg, t, batch, attempt, elapsed, log)
	case t.Kind == event.KindRebuild && (err == nil || ctx.Err() == nil):
		s.finishRebuild(ctx, msg, t, rb, err, attempt, elapsed, log)
	case err == nil:
		s.succeed(ctx, msg, t, out, elapsed, log)
	case ctx.Err() != nil:
		s.m.tasks.WithLabelValues(t.Kind, ResultAborted).Inc()
		log.InfoContext(ctx, "task aborted by shutdown; handing it back", "err", err)
		if err := msg.Nak(); err != nil {
			log.WarnContext(ctx, "handing back an aborted task", "err", err)
		}
	default:
		s.fail(ctx, msg, t, attempt, err, log)
	}
	source, written, result, cause := spanOutcome(t, out, rb, err, ctx.Err() != nil)
	endSpan(span, source, written, result, cause)
}

// spanOutcome sums up an attempt for its span: the source(s) read, the bytes
// written, the result (done, already_present, aborted, failed) and the error.
func spanOutcome(t event.Task, out outcome, rb rebuilt, err error, aborted bool) (source string, written int64, result string, cause error) {
	source, written = out.source, out.copied
	present := out.present
	if t.Kind == event.KindRebuild {
		source, written = strings.Join(rb.sources, ","), rb.written()
		present = len(rb.pieces) > 0
		for _, p := range rb.pieces {
			present = present && p.present
		}
	}
	switch {
	case err == nil && present:
		return source, written, ResultAlreadyPresent, nil
	case err == nil:
		return source, written, ResultDone, nil
	case aborted:
		return source, written, ResultAborted, err
	}
	return source, written, ResultFailed, err
}

// keepAlive tells the bus every AckWait/3 that msg is still being worked on.
// The returned stop is idempotent and returns once no more signal will be sent.
func (s *Service) keepAlive(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(s.cfg.AckWait / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := msg.InProgress(); err != nil {
					s.log.Debug("signalling task progress", "err", err)
				}
			}
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// succeed publishes Done and only then acknowledges the task. If Done cannot
// be published the task is handed back; its redelivery finds the shard in place.
func (s *Service) succeed(ctx context.Context, msg jetstream.Msg, t event.Task, out outcome, elapsed time.Duration, log *slog.Logger) {
	done := &event.Done{
		Task: t.Task, Incident: t.Incident, Shard: t.Shard, Kind: t.Kind,
		Source: out.source, Target: t.Target, DurationMS: elapsed.Milliseconds(),
	}
	if t.Kind == event.KindCopy {
		done.Bytes = t.Bytes
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	err := bus.Publish(pctx, s.js, event.DonePrefix+t.Target, done, "done-"+t.Task)
	cancel()
	if err != nil {
		s.m.tasks.WithLabelValues(t.Kind, ResultRetry).Inc()
		log.WarnContext(ctx, "task done but its report could not be published; handing it back", "err", err)
		if err := msg.Nak(); err != nil {
			log.WarnContext(ctx, "handing back a task", "err", err)
		}
		return
	}
	if err := msg.Ack(); err != nil {
		log.WarnContext(ctx, "acknowledging a done task (it will be redelivered and found done)", "err", err)
	}
	result := ResultDone
	if out.present {
		result = ResultAlreadyPresent
	}
	s.m.tasks.WithLabelValues(t.Kind, result).Inc()
	s.m.bytes.Add(float64(out.copied))
	log.InfoContext(ctx, "task done", "result", result, "source", out.source, "bytes", out.copied, "duration", elapsed)
}

// finishRebuild reports a rebuild attempt and answers the bus. First one
// Done per piece its target now holds (on rehome.repair.done.<piece target>,
// deduplicated per task and piece), so even a partial success is recorded;
// then Ack when every piece is done, or else a Failed for the task naming the
// first piece that is not, handed back or given up exactly as a failed copy
// (see fail). If a Done cannot be published the task is handed back; its
// redelivery finds the pieces in place.
func (s *Service) finishRebuild(ctx context.Context, msg jetstream.Msg, t event.Task, rb rebuilt, cause error, attempt int, elapsed time.Duration, log *slog.Logger) {
	written := rb.written()
	s.m.bytes.Add(float64(written))
	source := strings.Join(rb.sources, ",")
	for i, r := range rb.pieces {
		if r.err != nil {
			continue
		}
		p := t.Rebuild[i]
		done := &event.Done{
			Task: t.Task, Incident: t.Incident, Shard: p.Shard, Kind: t.Kind,
			Target: p.Node, Bytes: p.Size, DurationMS: elapsed.Milliseconds(),
		}
		if !r.present {
			done.Source = source
		}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := bus.Publish(pctx, s.js, event.DonePrefix+p.Node, done, "done-"+t.Task+"-"+p.Shard)
		cancel()
		if err != nil {
			s.m.tasks.WithLabelValues(t.Kind, ResultRetry).Inc()
			log.WarnContext(ctx, "piece rebuilt but its report could not be published; handing the task back", "piece", p.Shard, "err", err)
			if err := msg.NakWithDelay(Backoff(attempt, s.cfg.BackoffMin, s.cfg.BackoffMax)); err != nil {
				log.WarnContext(ctx, "handing back a task", "err", err)
			}
			return
		}
	}
	var rbErr *rebuildError
	if cause != nil && errors.As(cause, &rbErr) {
		first := rbErr.first()
		ft := t
		ft.Shard, ft.Target = first.Shard, first.Node
		s.fail(ctx, msg, ft, attempt, cause, log)
		return
	}
	if cause != nil { // not produced by rebuild; reported against the task as queued
		s.fail(ctx, msg, t, attempt, cause, log)
		return
	}
	if err := msg.Ack(); err != nil {
		log.WarnContext(ctx, "acknowledging a done task (it will be redelivered and found done)", "err", err)
	}
	result := ResultAlreadyPresent
	for _, r := range rb.pieces {
		if !r.present {
			result = ResultDone
		}
	}
	s.m.tasks.WithLabelValues(t.Kind, result).Inc()
	log.InfoContext(ctx, "task done", "result", result, "pieces", len(t.Rebuild), "sources", source, "bytes_read", rb.read,
		"bytes_written", written, "duration", elapsed)
}

// fail reports a failed attempt and answers the bus: a transient failure
// before MaxDeliver is handed back with backoff, anything else is given up
// (Term) once its dead letter and then its final Failed are published (a
// TargetFull failure gets no dead letter: only the final Failed, which has
// the planner re-plan the shard onto another target). If either cannot be
// published the task is handed back so nothing is lost.
func (s *Service) fail(ctx context.Context, msg jetstream.Msg, t event.Task, attempt int, cause error, log *slog.Logger) {
	class := Classify(cause)
	final := class.Final() || attempt >= s.cfg.MaxDeliver
	f := &event.Failed{
		Task: t.Task, Incident: t.Incident, Shard: t.Shard, Kind: t.Kind, Target: t.Target,
		Error: oneLine(cause), Attempt: attempt, Final: final, Side: Side(cause),
	}
	delay := Backoff(attempt, s.cfg.BackoffMin, s.cfg.BackoffMax)
	if final && class != TargetFull { // a full target is no fault of the task: nothing to bury
		kind, reason := DeadPermanent, f.Error
		if class != Permanent {
			kind, reason = DeadMaxDeliveries, fmt.Sprintf("attempt %d of %d failed: %s", attempt, s.cfg.MaxDeliver, f.Error)
		}
		var seq uint64
		if md, err := msg.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		if err := s.bury(ctx, msg.Subject(), msg.Data(), seq, attempt, kind, reason); err != nil {
			s.m.tasks.WithLabelValues(t.Kind, ResultRetry).Inc()
			log.WarnContext(ctx, "task given up but its dead letter could not be published; handing it back", "err", cause, "publish_err", err)
			if err := msg.NakWithDelay(delay); err != nil {
				log.WarnContext(ctx, "handing back a task", "err", err)
			}
			return
		}
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	perr := bus.Publish(pctx, s.js, event.FailedPrefix+t.Target, f, "failed-"+t.Task+"-"+strconv.Itoa(attempt))
	cancel()
	switch {
	case perr != nil:
		s.m.tasks.WithLabelValues(t.Kind, ResultRetry).Inc()
		log.WarnContext(ctx, "task failed and its report could not be published; handing it back", "err", cause, "publish_err", perr)
		if err := msg.NakWithDelay(delay); err != nil {
			log.WarnContext(ctx, "handing back a task", "err", err)
		}
	case final:
		s.m.tasks.WithLabelValues(t.Kind, ResultFailed).Inc()
		log.WarnContext(ctx, "task given up", "class", class, "err", cause)
		if err := msg.TermWithReason(f.Error); err != nil {
			log.WarnContext(ctx, "terminating a given-up task", "err", err)
		}
	default:
		s.m.tasks.WithLabelValues(t.Kind, ResultRetry).Inc()
		log.InfoContext(ctx, "task failed; will retry", "class", class, "retry_in", delay, "err", cause)
		if err := msg.NakWithDelay(delay); err != nil {
			log.WarnContext(ctx, "handing back a task", "err", err)
		}
	}
}

// deliveryExceeded is the part of the bus's max-deliveries advisory used here.
type deliveryExceeded struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// giveUpTimeout bounds how long one max-deliveries advisory is worked on
// (retrying while the bus is unavailable).
const giveUpTimeout = time.Minute

// giveUp handles a max-deliveries advisory: the task went MaxDeliver times
// without an answer (movers died on it), so the bus will not deliver it again
// and it would sit in the work queue forever. One mover of the pool (queue
// group) publishes its dead letter and, for a well-formed task, its final
// Failed so the planner re-plans it, then removes it from the queue. A step
// that fails is retried with backoff for up to giveUpTimeout; until every
// report is out the task stays queued. It is idempotent: a task already gone
// is ignored, and reports published again are deduplicated by the stream.
func (s *Service) giveUp(ctx context.Context, data []byte) {
	var adv deliveryExceeded
	if err := json.Unmarshal(data, &adv); err != nil || adv.StreamSeq == 0 || adv.Stream != bus.StreamTasks {
		s.m.malformed.WithLabelValues(malformedAdvisory, event.ReasonMalformed).Inc()
		s.log.Debug("ignoring malformed delivery advisory", "bytes", len(data), "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, giveUpTimeout)
	defer cancel()
	log := s.log.With("stream_seq", adv.StreamSeq, "deliveries", adv.Deliveries)
	r := &retirement{adv: adv, log: log}
	for attempt := 1; ; attempt++ {
		err := s.retire(ctx, r)
		if err == nil {
			return
		}
		delay := Backoff(attempt, s.cfg.BackoffMin, s.cfg.BackoffMax)
		log.WarnContext(ctx, "task reached max deliveries but could not be retired yet", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			log.ErrorContext(ctx, "giving up retiring a task that reached max deliveries; it stays in the queue", "err", err)
			return
		case <-time.After(delay):
		}
	}
}

// retirement is the progress of one giveUp, so that a retry repeats only the
// steps that did not happen.
type retirement struct {
	adv              deliveryExceeded
	log              *slog.Logger
	buried, reported bool
}

// retire runs the steps of giveUp not yet done; nil once the task is gone.
func (s *Service) retire(ctx context.Context, r *retirement) error {
	actx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	stream, err := s.js.Stream(actx, bus.StreamTasks)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", bus.StreamTasks, err)
	}
	raw, err := stream.GetMsg(actx, r.adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read task: %w", err)
	}
	var t event.Task
	kind, reason := DeadMaxDeliveries, fmt.Sprintf("no answer after %d deliveries", r.adv.Deliveries)
	derr := decodeTask(raw.Subject, raw.Data, &t)
	if derr != nil {
		kind, reason = DeadMalformed, oneLine(derr)
	}
	if !r.buried {
		if err := s.bury(ctx, raw.Subject, raw.Data, r.adv.StreamSeq, int(r.adv.Deliveries), kind, reason); err != nil {
			return err
		}
		r.buried = true
		if derr != nil {
			s.m.malformed.WithLabelValues(malformedTask, event.Reason(derr)).Inc()
		}
	}
	if derr == nil && !r.reported {
		for _, m := range t.Members() { // each shard of a batch
			f := &event.Failed{
				Task: m.Task, Incident: m.Incident, Shard: m.Shard, Kind: m.Kind, Target: m.Target,
				Error:   fmt.Sprintf("gave up after %d deliveries without an answer", r.adv.Deliveries),
				Attempt: int(r.adv.Deliveries), Final: true,
			}
			if err := bus.Publish(actx, s.js, event.FailedPrefix+m.Target, f, "failed-"+m.Task+"-final"); err != nil {
				return fmt.Errorf("final report of %s: %w", m.Task, err)
			}
		}
		r.reported = true
		s.m.tasks.WithLabelValues(t.Kind, ResultFailed).Inc()
		r.log.Warn("task given up after max deliveries", "task", t.Task, "shard", t.Shard, "target", t.Target)
	}
	if err := stream.DeleteMsg(actx, r.adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("remove the task from the queue: %w", err)
	}
	return nil
}
