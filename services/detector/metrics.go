package detector

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/detector/liveness"
	"github.com/rehome/rehome/shared/model"
)

// metrics are the detector's prometheus series, on its own registry.
type metrics struct {
	nodeState  *prometheus.GaugeVec
	age        *prometheus.GaugeVec
	verdicts   *prometheus.CounterVec
	delay      prometheus.Histogram
	held       prometheus.Gauge
	malformed  *prometheus.CounterVec
	failedPubs prometheus.Counter
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
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_detector_malformed_events_total",
			Help: "Messages dropped because they were not well-formed version-1 payloads.",
		}, []string{"subject"}),
		failedPubs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_detector_announce_errors_total",
			Help: "Failed attempts to record or publish a verdict (retried on the next tick).",
		}),
	}
	reg.MustRegister(m.nodeState, m.age, m.verdicts, m.delay, m.held, m.malformed, m.failedPubs)
	for _, s := range []string{"heartbeat", "liveness"} {
		m.malformed.WithLabelValues(s)
	}
	for _, s := range states[:3] {
		m.verdicts.WithLabelValues(string(s))
	}
	return m
}

// observe refreshes the per-node gauges from a tracker snapshot.
func (m *metrics) observe(nodes []liveness.NodeInfo, held bool, now time.Time) {
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
	}
	if held {
		m.held.Set(1)
	} else {
		m.held.Set(0)
	}
}
