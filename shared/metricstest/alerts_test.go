package metricstest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rehome/rehome/shared/testtool"
)

// promtool finds Prometheus's promtool (Debian package prometheus; .ci/run
// installs it) or skips, saying so (fails in CI: testtool.Missing).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		testtool.Missing(t, "promtool not installed (apt-get install prometheus): alert rules not checked")
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestAlertRules: the rules load, and their unit tests (input series and the
// alerts expected, or not, at given times) pass.
func TestAlertRules(t *testing.T) {
	dir := filepath.Join(RepoRoot(t), "deploy", "prometheus")
	out := runPromtool(t, dir, "check", "rules", "rules.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules: %s", out)
	}
	out = runPromtool(t, dir, "test", "rules", "rules_test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %s", out)
	}
	t.Log(strings.TrimSpace(out))
}

type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboardQueries: the dashboard is JSON Grafana can import, every panel
// queries something, and every query is valid PromQL (promtool checks them
// as recording rules).
func TestDashboardQueries(t *testing.T) {
	root := RepoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "rehome.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("rehome.json: %v", err)
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
				continue
			}
			expr, _ := json.Marshal(q.Expr) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: dashboard:q%d\n        expr: %s\n", n, expr)
			n++
		}
	}
	if n == 0 {
		t.Fatal("the dashboard has no queries")
	}
	file := filepath.Join(t.TempDir(), "dashboard.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "", "check", "rules", file)
}

// TestReferencedMetricsBelongToAService: each rehome_* name in the rules and the
// dashboard has a service's prefix, so that service's test checks it exists
// (services/*/metricnames_test.go).
func TestReferencedMetricsBelongToAService(t *testing.T) {
	refs := Referenced(t)
	if len(refs) == 0 {
		t.Fatal("no rehome_* metric found in the rules and the dashboard")
	}
	for n, files := range refs {
		ok := false
		for _, p := range ServicePrefixes {
			ok = ok || strings.HasPrefix(n, p)
		}
		if !ok {
			t.Errorf("%s (used in %s) has no service's prefix (%s)", n, strings.Join(files, ", "), strings.Join(ServicePrefixes, " "))
		}
	}
}

// TestStackScrapesEveryService: the compose stack's Prometheus config is valid
// and lists every service that serves metrics: each storage node on its shard
// API port, every other role with --metrics on 9100.
func TestStackScrapesEveryService(t *testing.T) {
	root := RepoRoot(t)
	compose, err := os.ReadFile(filepath.Join(root, "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	config, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	services := 0
	// A service is a two-space-indented name; its block the deeper lines below.
	service := regexp.MustCompile(`(?m)^  ([a-z0-9-]+):\n((?:(?:    .*)?\n)*)`)
	for _, m := range service.FindAllStringSubmatch(string(compose), -1) {
		name, block := m[1], m[2]
		var target string
		switch {
		case strings.HasPrefix(name, "storage-"):
			target = name + ":7000"
		case strings.Contains(block, `"--metrics", "0.0.0.0:9100"`):
			target = name + ":9100"
		default:
			continue
		}
		services++
		if !strings.Contains(string(config), target) {
			t.Errorf("deploy/prometheus/prometheus.yml does not scrape %s (service %s)", target, name)
		}
	}
	if services < 14 {
		t.Fatalf("found %d services with metrics in deploy/compose.yaml, want the stack's 6 storage nodes and 8 other roles at least", services)
	}
	out := runPromtool(t, filepath.Join(root, "deploy", "prometheus"), "check", "config", "--syntax-only", "prometheus.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check config: %s", out)
	}
}
