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
	if got := ms["BenchmarkPlanNodeLoss10M"]["ns/op"]; got != 5e8 {
		t.Fatalf("median ns/op = %v, want 5e8", got)
	}
	status := map[string]string{}
	for _, r := range report(ms) {
		status[r.Figure] = r.Status
	}
	if s := status["planning a node loss: 10 M shards on 100 nodes"]; s != "pass" {
		t.Errorf("planning: %s, want pass (median 0.5 s)", s)
	}
	if s := status["control messages per repaired shard"]; s != "short" {
		t.Errorf("control messages: %s, want short (5.5 > 4)", s)
	}
	if s := status["false down verdicts, 100 pauses of 0.2-5 s, 12 s grace"]; s != "not run" {
		t.Errorf("false verdicts: %s, want not run", s)
	}
}
