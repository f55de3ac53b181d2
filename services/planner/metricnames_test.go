package planner

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// TestRulesAndDashboardUsePlannerMetrics: every rehome_planner_* name in the
// alert rules and the Grafana dashboard is a metric the planner registers.
func TestRulesAndDashboardUsePlannerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry() // as New builds it
	m := newMetrics(reg)
	// the vectors get their series as tasks and checks happen
	m.issued.WithLabelValues(event.KindCopy)
	m.checks.WithLabelValues("ok")
	if metricstest.CheckReferenced(t, reg, "rehome_planner_") == 0 {
		t.Error("the rules and the dashboard use no planner metric")
	}
}
