package mover

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rehome/rehome/shared/event"
)

// Task results, the values of the "result" label of rehome_mover_tasks_total.
const (
	ResultDone           = "done"            // copied and verified, or deleted
	ResultAlreadyPresent = "already_present" // the target already held the shard: nothing written
	ResultRetry          = "retry"           // failed, handed back for a later attempt
	ResultFailed         = "failed"          // given up (permanent, or MaxDeliver reached)
	ResultAborted        = "aborted"         // interrupted by shutdown, handed back at once
)

// Subjects of rehome_mover_malformed_events_total.
const (
	malformedTask     = "task"
	malformedNode     = "node"
	malformedAdvisory = "advisory"
	malformedLiveness = "liveness"
)

// metrics are the mover's Prometheus series, on a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	tasks     *prometheus.CounterVec
	bytes     prometheus.Counter
	read      prometheus.Counter
	duration  *prometheus.HistogramVec
	inFlight  prometheus.Gauge
	malformed *prometheus.CounterVec
	dead      *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_mover_tasks_total",
			Help: "Task attempts finished by this mover, by kind (copy, rebuild, delete) and result (done, already_present, retry, failed, aborted).",
		}, []string{"kind", "result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_mover_bytes_copied_total",
			Help: "Shard bytes written to targets that verified them: copied shards and rebuilt erasure-coded pieces.",
		}),
		read: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_mover_bytes_read_total",
			Help: "Shard bytes read from source nodes, all kinds (a rebuild reads K pieces per stripe), failed reads included.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rehome_mover_task_duration_seconds",
			Help:    "Time from receiving a task to its outcome, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 16),
		}, []string{"kind"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_mover_tasks_in_flight",
			Help: "Tasks this mover is executing now.",
		}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_mover_malformed_events_total",
			Help: "Messages dropped because they were not valid, by subject (task messages, node records, liveness records, delivery advisories) and reason (malformed, invalid, subject_mismatch).",
		}, []string{"subject", "reason"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_mover_dead_letters_total",
			Help: "Task messages terminated and republished on rehome.repair.dead.<target>, by reason (malformed, permanent, max_deliveries).",
		}, []string{"reason"}),
	}
	m.reg.MustRegister(m.tasks, m.bytes, m.read, m.duration, m.inFlight, m.malformed, m.dead,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, s := range []string{malformedTask, malformedNode, malformedAdvisory, malformedLiveness} {
		m.malformed.WithLabelValues(s, event.ReasonMalformed)
	}
	for _, r := range []string{DeadMalformed, DeadPermanent, DeadMaxDeliveries} {
		m.dead.WithLabelValues(r)
	}
	for _, k := range []string{event.KindCopy, event.KindRebuild, event.KindDelete} {
		m.duration.WithLabelValues(k)
		for _, r := range []string{ResultDone, ResultAlreadyPresent, ResultRetry, ResultFailed, ResultAborted} {
			m.tasks.WithLabelValues(k, r)
		}
	}
	return m
}
