package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
)

// scrape reads http://addr/metrics as Prometheus would.
func scrape(addr string) (map[string]*dto.MetricFamily, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// gauge sums the values of a family's series whose labels include want
// (counters and gauges; histograms count their samples).
func gauge(mfs map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	var sum float64
series:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if have[want[i]] != want[i+1] {
				continue series
			}
		}
		switch {
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, true
}

// nonBaseUnit matches metric names in units other than seconds and bytes.
var nonBaseUnit = regexp.MustCompile(`_(ms|us|ns|millis|milliseconds|microseconds|nanoseconds|minutes|hours|days|kb|mb|gb|kib|mib|gib|kilobytes|megabytes|gigabytes|bits)(_total|_bucket|_sum|_count)?$`)

// checkNames reports names that do not follow rehome's conventions: every
// family is rehome_<role>_... (or the Go runtime's go_/process_/promhttp_),
// in base units, with no label naming a shard or a trace.
func checkNames(role string, mfs map[string]*dto.MetricFamily) []string {
	var bad []string
	for name, mf := range mfs {
		switch {
		case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"), strings.HasPrefix(name, "promhttp_"):
			continue
		case !strings.HasPrefix(name, "rehome_"+role+"_"):
			bad = append(bad, name+": not rehome_"+role+"_...")
		case nonBaseUnit.MatchString(name):
			bad = append(bad, name+": not in base units")
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "shard", "shard_id", "trace_id", "span_id", "task", "key", "object":
					bad = append(bad, name+": label "+lp.GetName())
				}
			}
		}
	}
	return bad
}

// TestEveryServiceServesMetrics scrapes /metrics of every process of a dev
// cluster (detector, planner and movers at the addresses processes.json
// records, storage nodes on their API address), checks the names, and
// follows a throttled heal on the planner's gauges: under-replicated rises
// when a node is lost and returns to 0.
func TestEveryServiceServesMetrics(t *testing.T) {
	c := startDev(t, "--nodes", "5", "--racks", "5", "--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "1s",
		"--planner-flag=--max-bytes-per-sec=2000000")
	st := waitHealthy(t, c, 5)
	c.putRandom(t, 30, 256<<10)

	addrs := map[string]string{} // process id -> metrics address
	roles := map[string]string{}
	for _, p := range c.processes() {
		if p.Role == "storage" {
			if p.Metrics != "" {
				t.Errorf("storage %s has a metrics address %q; storage serves /metrics on its API", p.ID, p.Metrics)
			}
			continue
		}
		if p.Metrics == "" {
			t.Fatalf("processes.json: %s (%s) has no metrics address", p.ID, p.Role)
		}
		addrs[p.ID], roles[p.ID] = p.Metrics, p.Role
	}
	for _, n := range st.Nodes {
		addrs[n.ID], roles[n.ID] = n.Addr, "storage"
	}
	if len(addrs) != 5+1+1+2+1+1 { // storage, detector, planner, movers, s3 gateway, console
		t.Fatalf("metrics addresses %v: want 11 processes", addrs)
	}
	// One S3 request (unsigned: refused) so the gateway's series exist.
	if resp, err := http.Get(c.getenv("AWS_ENDPOINT_URL") + "/"); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous S3 request: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	required := map[string][]string{
		"detector": {"rehome_detector_node_state", "rehome_detector_heartbeat_age_seconds", "rehome_detector_detection_delay_seconds", "rehome_detector_malformed_events_total"},
		"planner": {"rehome_planner_under_replicated_shards", "rehome_planner_lost_shards", "rehome_planner_repair_bytes_remaining",
			"rehome_planner_repaired_bytes_total", "rehome_planner_tasks_in_flight", "rehome_planner_stalled"},
		"mover":   {"rehome_mover_task_duration_seconds", "rehome_mover_tasks_in_flight", "rehome_mover_bytes_copied_total", "rehome_mover_malformed_events_total"},
		"s3":      {"rehome_s3_requests_total", "rehome_s3_request_duration_seconds"},
		"storage": {"rehome_storage_shards", "rehome_storage_used_bytes", "rehome_storage_malformed_events_total"},
	}
	for id, addr := range addrs {
		mfs, err := scrape(addr)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		for _, b := range checkNames(roles[id], mfs) {
			t.Errorf("%s: %s", id, b)
		}
		for _, name := range required[roles[id]] {
			if _, ok := mfs[name]; !ok {
				t.Errorf("%s: %s missing from /metrics", id, name)
			}
		}
	}
	if t.Failed() {
		return
	}

	planner := addrs["planner"]
	plannerValue := func(name string) float64 {
		mfs, err := scrape(planner)
		if err != nil {
			return -1
		}
		v, _ := gauge(mfs, name)
		return v
	}
	victim := "storage-3"
	c.signal(t, victim, syscall.SIGKILL)
	maxUnder := 0.0
	waitFor(t, 30*time.Second, "under-replicated shards counted on the planner's /metrics", func() bool {
		maxUnder = max(maxUnder, plannerValue("rehome_planner_under_replicated_shards"))
		return maxUnder > 0
	})
	waitFor(t, 60*time.Second, "under-replicated back to 0 on the planner's /metrics", func() bool {
		return plannerValue("rehome_planner_under_replicated_shards") == 0 && plannerValue("rehome_planner_repair_bytes_remaining") == 0
	})
	if got := plannerValue("rehome_planner_repaired_bytes_total"); got <= 0 {
		t.Errorf("repaired bytes total %v after the heal, want > 0", got)
	}
	var copied float64
	for id, role := range roles {
		if role != "mover" {
			continue
		}
		mfs, err := scrape(addrs[id])
		if err != nil {
			t.Fatal(err)
		}
		v, _ := gauge(mfs, "rehome_mover_bytes_copied_total")
		copied += v
	}
	det, err := scrape(addrs["detector"])
	if err != nil {
		t.Fatal(err)
	}
	down, _ := gauge(det, "rehome_detector_node_state", "node", victim, "state", "down")
	delays, _ := gauge(det, "rehome_detector_detection_delay_seconds")
	t.Logf("under-replicated peaked at >= %v; movers copied %v bytes; detector: %s down=%v, %v detection delays", maxUnder, copied, victim, down, delays)
	if copied <= 0 || down != 1 || delays < 1 {
		t.Fatalf("after the heal: movers copied %v bytes, detector says %s down=%v with %v detection delays; want > 0, 1, >= 1", copied, victim, down, delays)
	}

	// Garbage on the subjects each service consumes is dropped and counted
	// by subject.
	// (as the admin: the operator may not publish on these subjects)
	nc, err := bus.Connect(c.adminURL, "e2e-garbage", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte("not an event")
	if err := nc.Publish(event.HeartbeatPrefix+"storage-1", garbage); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{event.DonePrefix + "storage-1", event.TaskPrefix + "storage-1"} {
		if _, err := js.Publish(t.Context(), subj, garbage); err != nil {
			t.Fatal(err)
		}
	}
	malformed := func(id, subject string) float64 {
		mfs, err := scrape(addrs[id])
		if err != nil {
			return 0
		}
		v, _ := gauge(mfs, "rehome_"+roles[id]+"_malformed_events_total", "subject", subject)
		return v
	}
	waitFor(t, 20*time.Second, "malformed events counted by detector, planner and a mover", func() bool {
		return malformed("detector", "heartbeat") >= 1 && malformed("planner", "rehome.repair.done") >= 1 &&
			malformed("mover-1", "task")+malformed("mover-2", "task") >= 1
	})
}
