package detector

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/detector/liveness"
	"github.com/rehome/rehome/shared/metricstest"
	"github.com/rehome/rehome/shared/model"
)

// TestRulesAndDashboardUseDetectorMetrics: every rehome_detector_* name in the
// alert rules and the Grafana dashboard is a metric the detector registers.
func TestRulesAndDashboardUseDetectorMetrics(t *testing.T) {
	reg := prometheus.NewRegistry() // as New builds it
	m := newMetrics(reg, 20*time.Second)
	// one node seen, so the per-node vectors have series to gather
	m.observe([]liveness.NodeInfo{{Node: "storage-1", State: model.StateUp, LastHeard: time.Now()}}, liveness.Hold{}, time.Now())
	if metricstest.CheckReferenced(t, reg, "rehome_detector_") == 0 {
		t.Error("the rules and the dashboard use no detector metric")
	}
}
