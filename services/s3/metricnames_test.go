package s3

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/shared/metricstest"
)

// TestRulesAndDashboardUseS3Metrics: every rehome_s3_* name in the alert rules
// and the Grafana dashboard is a metric the gateway registers.
func TestRulesAndDashboardUseS3Metrics(t *testing.T) {
	reg := prometheus.NewRegistry() // as New builds it
	m := newMetrics(reg)
	m.observe("GetObject", http.StatusOK, time.Millisecond) // one request answered
	if metricstest.CheckReferenced(t, reg, "rehome_s3_") == 0 {
		t.Error("the rules and the dashboard use no S3 metric")
	}
}
