package storage

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/event"
)

// publishFunc publishes one event to JetStream with msgID as its dedup id
// (bus.Publish bound to the node's JetStream context).
type publishFunc func(ctx context.Context, subject string, p event.Payload, msgID string) error

const (
	// maxReason bounds the reason text carried by a corrupt report.
	maxReason = 256
	// publishTimeout bounds one publish attempt.
	publishTimeout = 5 * time.Second
	// flushTimeout bounds the last attempt to publish what is still queued
	// when the reporter stops.
	flushTimeout = 2 * time.Second
)

// corruptReport is one queued event with the dedup id it keeps across retries.
type corruptReport struct {
	ev    event.Corrupt
	msgID string
}

// reporter turns the store's quarantine notices into event.Corrupt messages
// on event.CorruptPrefix+node. report never blocks (it is called from read
// paths); run publishes in order and retries while the bus is unreachable,
// holding at most max reports.
type reporter struct {
	node, bootID string
	publish      publishFunc
	now          func() time.Time
	log          *slog.Logger
	max          int
	minBackoff   time.Duration
	maxBackoff   time.Duration

	mu    sync.Mutex
	queue []corruptReport
	seq   uint64
	wake  chan struct{}

	found   *prometheus.CounterVec // rehome_storage_corrupt_shards_total{found}
	reports *prometheus.CounterVec // rehome_storage_corrupt_reports_total{result}
}

// newReporter returns a reporter for node's incarnation bootID, registering
// its metrics on reg.
func newReporter(node, bootID string, max int, publish publishFunc, now func() time.Time,
	log *slog.Logger, reg prometheus.Registerer) *reporter {
	r := &reporter{
		node: node, bootID: bootID, publish: publish, now: now, log: log, max: max,
		minBackoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second,
		wake: make(chan struct{}, 1),
		found: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_storage_corrupt_shards_total",
			Help: "Shards found damaged and quarantined, by how they were found (open, read, scrub).",
		}, []string{"found"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_storage_corrupt_reports_total",
			Help: "Corrupt-shard events published, or dropped because the queue was full or the node stopped.",
		}, []string{"result"}),
	}
	for _, f := range []disk.Found{disk.FoundOpen, disk.FoundRead, disk.FoundScrub} {
		r.found.WithLabelValues(string(f))
	}
	r.reports.WithLabelValues("published")
	r.reports.WithLabelValues("dropped")
	reg.MustRegister(r.found, r.reports, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rehome_storage_corrupt_reports_queued",
		Help: "Corrupt-shard events waiting to be published.",
	}, func() float64 { return float64(r.queued()) }))
	return r
}

// report counts q and queues its event. It never blocks and is safe for
// concurrent use (it is the store's OnQuarantine hook). When max reports are
// already waiting, the new one is dropped and counted.
func (r *reporter) report(q disk.Quarantine) {
	r.found.WithLabelValues(string(q.Found)).Inc()
	reason := q.Reason
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	r.mu.Lock()
	r.seq++
	rep := corruptReport{
		ev: event.Corrupt{
			Header: event.Header{TS: r.now().UTC()},
			Node:   r.node, Shard: q.ID, Reason: reason, Found: string(q.Found),
		},
		msgID: "corrupt-" + r.node + "-" + q.ID + "-" + r.bootID + "-" + strconv.FormatUint(r.seq, 10),
	}
	full := len(r.queue) >= r.max
	if !full {
		r.queue = append(r.queue, rep)
	}
	r.mu.Unlock()
	if full {
		r.reports.WithLabelValues("dropped").Inc()
		r.log.Warn("corrupt-shard report dropped: queue full", "shard", q.ID, "found", q.Found, "queue", r.max)
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reporter) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

func (r *reporter) head() (corruptReport, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return corruptReport{}, false
	}
	return r.queue[0], true
}

func (r *reporter) pop() {
	r.mu.Lock()
	r.queue[0] = corruptReport{}
	r.queue = r.queue[1:]
	r.mu.Unlock()
}

// send publishes one report within publishTimeout.
func (r *reporter) send(ctx context.Context, rep corruptReport) error {
	actx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	ev := rep.ev
	return r.publish(actx, event.CorruptPrefix+r.node, &ev, rep.msgID)
}

// run publishes queued reports in order until ctx ends. A failed publish is
// retried with exponential backoff (minBackoff to maxBackoff) under the same
// dedup id, so a retry never doubles an event. When ctx ends it makes one
// last attempt, bounded by flushTimeout, for what is still queued; the rest
// is counted as dropped. It blocks until then.
func (r *reporter) run(ctx context.Context) {
	backoff := r.minBackoff
	failing := false
	for {
		rep, ok := r.head()
		if !ok {
			select {
			case <-ctx.Done():
				r.flush()
				return
			case <-r.wake:
				continue
			}
		}
		if err := r.send(ctx, rep); err != nil {
			if ctx.Err() != nil {
				r.flush()
				return
			}
			if !failing {
				r.log.Warn("cannot publish corrupt-shard report, will retry", "shard", rep.ev.Shard, "err", err)
			}
			failing = true
			select {
			case <-ctx.Done():
				r.flush()
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, r.maxBackoff)
			continue
		}
		if failing {
			r.log.Info("corrupt-shard reports publishing again")
		}
		failing, backoff = false, r.minBackoff
		r.pop()
		r.reports.WithLabelValues("published").Inc()
	}
}

// flush tries to publish what is queued within flushTimeout and drops the rest.
func (r *reporter) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	for {
		rep, ok := r.head()
		if !ok {
			return
		}
		if err := r.send(ctx, rep); err != nil {
			r.mu.Lock()
			n := len(r.queue)
			r.queue = nil
			r.mu.Unlock()
			r.reports.WithLabelValues("dropped").Add(float64(n))
			r.log.Warn("corrupt-shard reports not published before stopping", "count", n, "err", err)
			return
		}
		r.pop()
		r.reports.WithLabelValues("published").Inc()
	}
}
