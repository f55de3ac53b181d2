//go:build stack

package stacktest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"
)

// prometheus is the stack's Prometheus HTTP API (REHOME_STACK_PROM_PORT).
func prometheus() string {
	return "http://127.0.0.1:" + getenv("REHOME_STACK_PROM_PORT", "19090")
}

// promGet decodes the data of a Prometheus API answer into out.
func promGet(path string, out any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(prometheus() + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("GET %s: %d, %w", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("GET %s: %s %s", path, body.Status, body.Error)
	}
	return json.Unmarshal(body.Data, out)
}

// scrapesEveryService waits until Prometheus has scraped every target of its
// configuration successfully: the 6 storage nodes and every other role.
func (s *stack) scrapesEveryService(t *testing.T) {
	t.Helper()
	var seen int
	eventually(t, 60*time.Second, "Prometheus scrapes every service", func() error {
		var data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := promGet("/api/v1/targets?state=active", &data); err != nil {
			return err
		}
		var bad []string
		for _, tg := range data.ActiveTargets {
			if tg.Health != "up" {
				bad = append(bad, fmt.Sprintf("%s %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
			}
		}
		seen = len(data.ActiveTargets)
		if seen < 16 || len(bad) > 0 {
			sort.Strings(bad)
			return fmt.Errorf("%d targets, not up: %s", seen, strings.Join(bad, "; "))
		}
		return nil
	})
	t.Logf("Prometheus scrapes %d targets, all up", seen)
}

// alert is one entry of Prometheus's /api/v1/alerts.
type alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// alerts lists the pending and firing alerts named name.
func alerts(name string) ([]alert, error) {
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	if err := promGet("/api/v1/alerts", &data); err != nil {
		return nil, err
	}
	var out []alert
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name {
			out = append(out, a)
		}
	}
	return out, nil
}

// alertFires waits until Prometheus fires name for node (its rule's `for`
// included) and returns how long that took.
func (s *stack) alertFires(t *testing.T, name, node string, within time.Duration) time.Duration {
	t.Helper()
	return eventually(t, within, name+" fires for "+node, func() error {
		list, err := alerts(name)
		if err != nil {
			return err
		}
		for _, a := range list {
			if a.Labels["node"] == node && a.State == "firing" {
				return nil
			}
		}
		return fmt.Errorf("%s alerts now: %v", name, list)
	})
}

// alertClears waits until name is neither pending nor firing for node.
func (s *stack) alertClears(t *testing.T, name, node string, within time.Duration) {
	t.Helper()
	eventually(t, within, name+" clears for "+node, func() error {
		list, err := alerts(name)
		if err != nil {
			return err
		}
		for _, a := range list {
			if a.Labels["node"] == node {
				return fmt.Errorf("still %s: %v", a.State, a.Labels)
			}
		}
		return nil
	})
}
