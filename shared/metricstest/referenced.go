package metricstest

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Files that query the services' metrics, relative to the repository root: the
// alert rules and the Grafana dashboard. Every rehome_* name in them must be a
// metric some service registers.
var Files = []string{
	"deploy/prometheus/rules.yml",
	"deploy/grafana/rehome.json",
}

// ServicePrefixes are the metric name prefixes of the services, one each.
var ServicePrefixes = []string{"rehome_storage_", "rehome_detector_", "rehome_planner_", "rehome_mover_", "rehome_s3_"}

var metricName = regexp.MustCompile(`rehome_[a-z0-9_]*[a-z0-9]`)

// RepoRoot is the nearest directory above the working directory that holds
// deploy/prometheus/rules.yml (a test runs in its package's directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, Files[0])); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatalf("no %s above the working directory", Files[0])
		}
		dir = up
	}
}

// Referenced maps each rehome_* name found in Files to the files using it.
// Histogram series names (_bucket, _count, _sum) are kept as written;
// CheckReferenced resolves them.
func Referenced(t testing.TB) map[string][]string {
	t.Helper()
	root := RepoRoot(t)
	refs := map[string][]string{}
	for _, f := range Files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, n := range metricName.FindAllString(string(b), -1) {
			if !seen[n] {
				seen[n] = true
				refs[n] = append(refs[n], f)
			}
		}
	}
	return refs
}

// CheckReferenced fails t for every name in Files that starts with prefix and
// that g does not expose: neither a metric family of that name nor, for a name
// ending in _bucket, _count or _sum, a series of a histogram (or summary) so
// named without the suffix. g must have at least one series in each vector the
// files use (a vector with no children gathers nothing). It returns how many
// names it checked, so a caller can tell the files do use its metrics.
func CheckReferenced(t testing.TB, g prometheus.Gatherer, prefix string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	types := map[string]dto.MetricType{}
	for _, mf := range mfs {
		types[mf.GetName()] = mf.GetType()
	}
	refs := Referenced(t)
	names := make([]string, 0, len(refs))
	for n := range refs {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if exposed(types, n) {
			continue
		}
		t.Errorf("%s (used in %s) is not a metric the service registers", n, strings.Join(refs[n], ", "))
	}
	return len(names)
}

func exposed(types map[string]dto.MetricType, name string) bool {
	if _, ok := types[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch types[base] {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			return true
		case dto.MetricType_SUMMARY:
			return suffix != "_bucket"
		}
	}
	return false
}
