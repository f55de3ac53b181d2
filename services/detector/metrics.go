package detector

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/detector/liveness"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// metrics are the detector's prometheus series, on its own registry.
type metrics struct {
	nodeState  *prometheus.GaugeVec
	age        *prometheus.GaugeVec
	verdicts   *prometheus.CounterVec
	delay      prometheus.Histogram
	held       prometheus.Gauge
	override   prometheus.Gauge
	flaps      *prometheus.GaugeVec
	grace      *prometheus.GaugeVec
	malformed  *prometheus.CounterVec
	failedPubs prometheus.Counter
	// disconnects counts server disconnect notices by outcome: suspected
	// (an up node became suspect), ignored (not an up node, or not a node),
	// dropped (queue full).
	disconnects *prometheus.CounterVec
}

var states = []model.State{model.StateUp, model.StateSuspect, model.StateDown, model.StateMaintenance}

// newMetrics registers every series on reg. timeout (suspect + grace) anchors
// the detection-delay buckets, whose interesting part is the overshoot.
func newMetrics(reg *prometheus.Registry, timeout time.Duration) *metrics {
	base := timeout.Seconds()
	var buckets []float64
	for _, over := range []float64{0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300} {
		buckets = append(buckets, base+over)
	}
	m := &metrics{
		nodeState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rehome_detector_node_state",
			Help: "1 for the node's current state as judged by this detector, 0 for the others.",
		}, []string{"node", "state"}),
		age: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rehome_detector_heartbeat_age_seconds",
			Help: "Time since the node's last heartbeat.",
		}, []string{"node"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_detector_verdicts_total",
			Help: "Verdicts announced (liveness written and event published), by state.",
		}, []string{"state"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rehome_detector_detection_delay_seconds",
			Help:    "Time from a node's last heartbeat to its down verdict.",
			Buckets: buckets,
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_detector_verdicts_held",
			Help: "1 while down verdicts are held because too many nodes are silent at once.",
		}),
		override: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rehome_detector_hold_override_active",
			Help: "1 while an operator override of the mass-silence guard is in force.",
		}),
		flaps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rehome_detector_node_flaps",
			Help: "Suspect episodes of the node inside the flap window.",
		}, []string{"node"}),
		grace: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rehome_detector_node_grace_seconds",
			Help: "Grace currently applied to the node (longer while it flaps).",
		}, []string{"node"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_detector_disconnects_total",
			Help: "Client-disconnect notices from the NATS server, by outcome (suspected, ignored, dropped).",
		}, []string{"outcome"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_detector_malformed_events_total",
			Help: "Messages and records rejected, by subject and reason (malformed: not a well-formed version-1 payload; invalid: fields break the contract; subject_mismatch: the subject names another node).",
		}, []string{"subject", "reason"}),
		failedPubs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_detector_announce_errors_total",
			Help: "Failed attempts to record or publish a verdict (retried on the next tick).",
		}),
	}
	reg.MustRegister(m.nodeState, m.age, m.verdicts, m.delay, m.held, m.override, m.flaps, m.grace,
		m.disconnects, m.malformed, m.failedPubs)
	for _, s := range []string{"heartbeat", "liveness", "override", "hold", "disconnect"} {
		m.malformed.WithLabelValues(s, event.ReasonMalformed)
	}
	for _, s := range []string{"suspected", "ignored", "dropped"} {
		m.disconnects.WithLabelValues(s)
	}
	for _, s := range states[:3] {
		m.verdicts.WithLabelValues(string(s))
	}
	return m
}

// observe refreshes the per-node and guard gauges from a tracker snapshot.
func (m *metrics) observe(nodes []liveness.NodeInfo, hold liveness.Hold, now time.Time) {
	for _, n := range nodes {
		for _, s := range states {
			v := 0.0
			if n.State == s {
				v = 1
			}
			m.nodeState.WithLabelValues(n.Node, string(s)).Set(v)
		}
		if !n.LastHeard.IsZero() {
			m.age.WithLabelValues(n.Node).Set(max(now.Sub(n.LastHeard).Seconds(), 0))
		}
		m.flaps.WithLabelValues(n.Node).Set(float64(n.Flaps))
		m.grace.WithLabelValues(n.Node).Set(n.Grace.Seconds())
	}
	m.held.Set(boolValue(hold.Held))
	m.override.Set(boolValue(hold.Overridden))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
