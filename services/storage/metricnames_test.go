package storage

import (
	"testing"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/metricstest"
)

// TestRulesAndDashboardUseStorageMetrics: every rehome_storage_* name in the
// alert rules and the Grafana dashboard is a metric a storage node registers
// (its whole registry, as New assembles it: API, disk, scrubber, corrupt-copy
// reporter, inventory requests).
func TestRulesAndDashboardUseStorageMetrics(t *testing.T) {
	env := bustest.Start(t)
	svc, err := New(Config{ID: "storage-1", Rack: "rack-1", Dir: t.TempDir(), CapacityBytes: 1 << 20}, env.NC, env.JS, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if metricstest.CheckReferenced(t, svc.Registry(), "rehome_storage_") == 0 {
		t.Error("the rules and the dashboard use no storage metric")
	}
}
