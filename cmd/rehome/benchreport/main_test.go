package main

import (
	"strings"
	"testing"
)

func TestParseTakesMediansAndReportsStatus(t *testing.T) {
	out := `goos: linux
BenchmarkPlanNodeLoss10M-2   3   500000000 ns/op   91.95 B/shard
BenchmarkPlanNodeLoss10M-2   3   300000000 ns/op   91.95 B/shard
BenchmarkPlanNodeLoss10M-2   3   2000000000 ns/op   91.95 B/shard
BenchmarkControlMessagesPerRepairedShard-2  1  5 ns/op  5.5 control_msgs_per_shard
--- BENCH: something
PASS
`
	ms, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]string{}
	for _, r := range report(ms) {
		status[r.Figure] = r.Status
		if r.Figure == "planning a node loss: 10 M shards on 100 nodes" && (r.Value == nil || *r.Value != 5e8) {
			t.Fatalf("planning: value %v, want the median 5e8", r.Value)
		}
	}
	if s := status["planning a node loss: 10 M shards on 100 nodes"]; s != "pass" {
		t.Errorf("planning: %s, want pass (median 0.5 s)", s)
	}
	if s := status["control messages per repaired shard, all counted (events, KV writes, acks, pulls)"]; s != "short" {
		t.Errorf("control messages: %s, want short (5.5 > 4)", s)
	}
	if s := status["false down verdicts, 100 pauses of 0.2-5 s, 12 s grace"]; s != "not run" {
		t.Errorf("false verdicts: %s, want not run", s)
	}
}

func TestS3Rows(t *testing.T) {
	out := `BenchmarkS3PutGet1GiB-2  1  9813499836 ns/op  198.8 cli_get_MBps  145.3 cli_put_MBps  0.9306 get_ratio  256.0 object_MiB  0.6254 put_ratio  185.0 s3_get_MBps  90.90 s3_put_MBps
BenchmarkS3GatewayRSS5GiBMultipart-2  1  10712996521 ns/op  23.77 idle_rss_MiB  1024 object_MiB  145.6 peak_rss_MiB  107.2 upload_MBps
BenchmarkS3ListObjectsV2-2  1  95707896280 ns/op  2541.5 all_pages_ms  52.60 delimiter_ms  21.39 first_page_ms  20000 keys  216.2 puts_per_s
BenchmarkS3GetTTFBNodeDead-2  1  23200238495 ns/op  22.91 dead_p50_ms  49.49 dead_p99_ms  0 errors  23.11 healthy_p50_ms  51.52 healthy_p99_ms  0.9607 ratio
`
	checkStatuses(t, out, map[string]string{
		"S3 PUT of 1 GiB (SDK multipart) vs rehome put, same run": "short",
		"S3 GET of 1 GiB (SDK multipart) vs rehome get, same run": "pass",
		"S3 gateway peak RSS, 5 GiB multipart upload":             "pass",
		"ListObjectsV2 over 100 000 keys, every page of 1 000":    "short",
		"ListObjectsV2 over 100 000 keys, first page of 1 000":    "pass",
		"S3 GET time to first byte p99, one node dead vs healthy": "pass",
	})
}

// checkStatuses reports out (benchmark output) and fails unless each figure
// named in want is in the report with the status want gives it.
func checkStatuses(t *testing.T, out string, want map[string]string) {
	t.Helper()
	ms, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range report(ms) {
		if s, ok := want[r.Figure]; ok {
			if r.Status != s {
				t.Errorf("%s: %s, want %s", r.Figure, r.Status, s)
			}
			delete(want, r.Figure)
		}
	}
	if len(want) != 0 {
		t.Errorf("rows missing from the report: %v", want)
	}
}

// A ratio row takes its three numbers from one run (the run with the median
// ratio), never the median value over the median baseline; a row whose
// baseline was not measured fails; an informative row has no verdict.
func TestRatiosComeFromOneRunAndNeedTheirBaseline(t *testing.T) {
	out := `BenchmarkRebuildStripes/piece=4MiB/lost=1-2  10  1 ns/op  100 MB/s  1000 inproc-MB/s  900 step-MB/s  950 rs-MB/s
BenchmarkRebuildStripes/piece=4MiB/lost=1-2  10  1 ns/op  300 MB/s  400 inproc-MB/s  900 step-MB/s  950 rs-MB/s
BenchmarkRebuildStripes/piece=4MiB/lost=1-2  10  1 ns/op  200 MB/s  250 inproc-MB/s  900 step-MB/s  950 rs-MB/s
BenchmarkRepairThroughput/6nodes_6racks-2  1  1 ns/op  900 rehome_MBps  1.2 write_spread  1.1 read_spread
BenchmarkGetLatencyDuringRebuild-2  1  1 ns/op  7 rebuild_p99_ms  0.5 ratio
`
	ms, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]Row{}
	for _, r := range report(ms) {
		rows[r.Figure] = r
	}
	ec := rows["erasure rebuild vs in-process rebuild from the same piece files (32 stripes, 4 MiB pieces)"]
	// Ratios per run: 0.1, 0.75, 0.8: the median run is the second.
	if ec.Value == nil || ec.Baseline == nil || ec.Ratio == nil || *ec.Value != 300 || *ec.Baseline != 400 || *ec.Ratio != 0.75 || ec.Status != "pass" {
		t.Errorf("erasure row = %+v, want 300 / 400 = 0.75 from one run, pass", ec)
	}
	if r := rows["repair throughput vs plain copy (6 nodes / 6 racks)"]; r.Status != "no baseline" || r.Ratio != nil {
		t.Errorf("repair row without a baseline = %+v, want no ratio and status no baseline", r)
	}
	// The benchmark's own ratio metric does not stand in for a baseline.
	if r := rows["client GET p99 during a rebuild vs idle (open loop, kill -> healthy)"]; r.Status != "no baseline" {
		t.Errorf("GET row without idle p99 = %+v, want status no baseline", r)
	}
	if r := rows["erasure decode step vs reedsolomon Reconstruct (4 MiB pieces)"]; r.Status != "informative" {
		t.Errorf("decode step row = %+v, want informative", r)
	}
}

// The membership rows (issue #16) read the drain and rebalance benchmarks'
// metrics; a drain that saw an under-replicated sample fails, and the GET
// row needs its idle baseline.
func TestMembershipRows(t *testing.T) {
	out := `BenchmarkDrainVsRepair-2  1  65189827141 ns/op  85.18 drain_MBps  503.3 drained_MB  1.257 ratio  67.75 repair_MBps  218.0 status_samples  1 under_replicated_samples
BenchmarkRebalanceAfterAddingANode-2  1  51963573501 ns/op  4.436 band_pp  1.115 get_p99_ratio  186.3 get_p99_rebalance_ms  234.9 moved_MB  1.212 moved_vs_minimum  4.297 rebalance_seconds
`
	checkStatuses(t, out, map[string]string{
		"drain of a node holding ~500 MB vs repair of the same bytes (6 nodes / 3 racks)": "pass",
		"status samples under-replicated during that drain":                               "short",
		"rebalance after adding 1 node to 6: widest fill deviation from the mean":         "pass",
		"bytes that rebalance moved vs the least that reaches the band":                   "short",
		"client GET p99 during that rebalance vs idle (open loop)":                        "no baseline",
	})
}
