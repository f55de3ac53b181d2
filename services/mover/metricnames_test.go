package mover

import (
	"testing"

	"github.com/rehome/rehome/shared/metricstest"
)

// TestRulesAndDashboardUseMoverMetrics: every rehome_mover_* name in the
// alert rules and the Grafana dashboard is a metric the mover registers.
func TestRulesAndDashboardUseMoverMetrics(t *testing.T) {
	m := newMetrics() // the registry Service.Registry returns
	if metricstest.CheckReferenced(t, m.reg, "rehome_mover_") == 0 {
		t.Error("the rules and the dashboard use no mover metric")
	}
}
