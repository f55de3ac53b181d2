package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/event"
)

// metrics are the planner's prometheus series (all rehome_planner_*).
type metrics struct {
	underReplicated prometheus.Gauge
	lost            prometheus.Gauge
	bytesRemaining  prometheus.Gauge
	repairedBytes   prometheus.Counter
	inFlight        prometheus.Gauge
	issued          *prometheus.CounterVec
	failures        prometheus.Counter
	stalled         prometheus.Gauge
	malformed       *prometheus.CounterVec
	shards          prometheus.Gauge
	rescanSeconds   prometheus.Gauge
	acting          prometheus.Gauge
	gaveUp          prometheus.Counter
	trims           prometheus.Counter
	rackRelaxed     prometheus.Counter
	surplus         prometheus.Gauge
	stripes         prometheus.Gauge
	stripesDegraded prometheus.Gauge
	checks          *prometheus.CounterVec
	lacking         prometheus.Gauge
	healedInPlace   prometheus.Counter
	dropped         prometheus.Counter
	corrupt         prometheus.Counter
	paused          prometheus.Gauge
	singleCopy      prometheus.Gauge
	// orphan collection (orphans.go)
	orphansDeleted   prometheus.Counter
	orphansAwaiting  prometheus.Gauge
	orphanSweepsHeld prometheus.Counter
	// lockHeld is how long the view's mutex is held, by operation; handling
	// is how long a heartbeat or a status call takes, waiting for it included.
	lockHeld *prometheus.HistogramVec
	handling *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		underReplicated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_under_replicated_shards", Help: "Shards with fewer live copies than their layout needs (at least one)."}),
		lost: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_lost_shards", Help: "Shards no live copy can restore."}),
		bytesRemaining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_repair_bytes_remaining", Help: "Bytes still to copy to restore full redundancy."}),
		repairedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_repaired_bytes_total", Help: "Bytes of verified repair copies recorded in the placement map."}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_tasks_in_flight", Help: "Repair copies, rebuilds and trims issued and not yet resolved (0 while standing by)."}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_planner_tasks_issued_total", Help: "Tasks published on the work queue, by kind."}, []string{"kind"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_task_failures_total", Help: "Failure reports received from movers."}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_stalled", Help: "1 while repair work remains and nothing was verified for the stall timeout."}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_planner_malformed_events_total", Help: "Events, records and requests rejected, by subject or bucket and reason (malformed, invalid, subject_mismatch, unknown_node, unknown_shard)."}, []string{"subject", "reason"}),
		shards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_shards", Help: "Entries of the placement map."}),
		rescanSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_rescan_seconds", Help: "Duration of the last full derivation of the repair queue."}),
		acting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_acting", Help: "1 while this planner holds the lease and acts, 0 while it stands by."}),
		gaveUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_repairs_parked_total", Help: "Times a shard's repair failed MaxAttempts times in a row and was parked for RetryLater."}),
		trims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_trims_total", Help: "Surplus copies removed from the map and queued for deletion."}),
		rackRelaxed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_rack_relaxed_total", Help: "Copies sent to a rack already holding a live copy because no other valid target existed."}),
		surplus: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_surplus_shards", Help: "Shards with more up copies than their layout needs, awaiting a trim."}),
		stripes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_stripes", Help: "Erasure-coded stripes in the placement map."}),
		stripesDegraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_stripes_degraded", Help: "Erasure-coded stripes missing at least one piece (unrecoverable ones included)."}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_planner_inventory_checks_total", Help: "Node inventories compared with the map, by result (ok, failed)."}, []string{"result"}),
		lacking: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_lacking_copies", Help: "Copies the map lists on a node whose disk lacks them (found by an inventory check or a corrupt report)."}),
		healedInPlace: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_healed_in_place_total", Help: "Copies and pieces verified back onto a node that lacked them."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_dropped_holders_total", Help: "Holders removed from an entry because they lacked the shard and it was whole without them."}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_corrupt_reports_total", Help: "Corrupt-copy reports received from storage nodes."}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_heal_paused", Help: "1 while an operator has paused repairs (heal pause)."}),
		singleCopy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_single_copy_shards", Help: "Shards one more loss would lose (one live copy; erasure-coded stripes with exactly K live pieces)."}),
		orphansDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_orphans_deleted_total", Help: "Orphaned copies (on a node's disk, unknown to the map, older than the grace) queued for deletion."}),
		orphansAwaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_planner_orphans_awaiting_grace", Help: "Copies unknown to the map and younger than the orphan grace, as the nodes' last sweeps found them."}),
		orphanSweepsHeld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_planner_orphan_sweeps_held_total", Help: "Orphan sweeps of a node that deleted nothing because too large a share of its inventory was unknown to the map."}),
	}
	m.lockHeld = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rehome_planner_lock_held_seconds", Help: "Time the planner's view is locked, by operation: a watch update (verdict or registration: both halves of its queue merge; placement: one batch of entries) or a planning round.",
		Buckets: prometheus.ExponentialBuckets(1e-5, 2, 20)}, []string{"op"})
	m.handling = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "rehome_planner_handling_seconds", Help: "Time to handle a heartbeat or answer a status call, waiting for the view's lock included.",
		Buckets: prometheus.ExponentialBuckets(1e-5, 2, 20)}, []string{"op"})
	reg.MustRegister(m.lockHeld, m.handling)
	reg.MustRegister(m.underReplicated, m.lost, m.bytesRemaining, m.repairedBytes, m.inFlight,
		m.issued, m.failures, m.stalled, m.malformed, m.shards, m.rescanSeconds,
		m.acting, m.gaveUp, m.trims, m.rackRelaxed, m.surplus, m.stripes, m.stripesDegraded,
		m.checks, m.lacking, m.healedInPlace, m.dropped, m.corrupt, m.paused, m.singleCopy,
		m.orphansDeleted, m.orphansAwaiting, m.orphanSweepsHeld)
	for _, s := range []string{core.SubjectDone, core.SubjectFailed, core.SubjectCorrupt} {
		for _, r := range event.Reasons {
			m.malformed.WithLabelValues(s, r)
		}
	}
	return m
}
