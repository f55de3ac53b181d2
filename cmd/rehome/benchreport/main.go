// Command benchreport turns the output of `go test -bench` over rehome's
// packages into the table of SPEC §6: each figure with rehome's value, the
// baseline measured in the same run, the ratio, the target and pass/short. It
// prints the table and writes the same as JSON with the machine it ran on,
// the commit it measured (and whether the tree was dirty) and the output file
// it read; -markdown prints the README's table.
//
//	go test -run '^$' -bench . ./... | tee bench/out.txt
//	go run ./cmd/rehome/benchreport -in bench/out.txt -json bench/results.json
//	go run ./cmd/rehome/benchreport -in bench/out.txt -markdown   # the README table
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Source names what a report measured: the commit (git rev-parse HEAD),
// whether the work tree had uncommitted changes besides the report's own
// files, and the raw `go test -bench` output it was read from (kept
// committed beside results.json).
type Source struct {
	Commit string `json:"commit"`
	Dirty  bool   `json:"dirty"`
	Out    string `json:"out"`
}

// Report is results.json: the machine, what was measured, and the table.
type Report struct {
	Machine Machine `json:"machine"`
	Source  *Source `json:"source,omitempty"`
	Figures []Row   `json:"figures"`
}

// gitSource returns the commit checked out in the current directory and
// whether its tree is dirty, ignoring the files named in own (the report's
// input and output, which a bench run rewrites).
func gitSource(own ...string) (commit string, dirty bool, err error) {
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "", false, fmt.Errorf("git rev-parse HEAD: %w", err)
	}
	args := []string{"status", "--porcelain", "--", "."}
	for _, f := range own {
		if f != "" && f != "-" {
			args = append(args, ":(exclude)"+f)
		}
	}
	st, err := exec.Command("git", args...).Output()
	if err != nil {
		return "", false, fmt.Errorf("git status: %w", err)
	}
	return strings.TrimSpace(string(out)), len(bytes.TrimSpace(st)) > 0, nil
}

// Markdown renders rows as the README's performance table: values and
// baselines exactly as results.json holds them (shortest float form),
// ratios to 3 significant digits, so a test can hold the README to the file.
// Rows the run did not measure are left out (results.json keeps them).
func Markdown(rows []Row) string {
	num := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatFloat(*p, 'f', -1, 64)
	}
	ratio := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatFloat(*p, 'g', 3, 64)
	}
	var b strings.Builder
	b.WriteString("| figure | rehome | baseline | ratio | target | status |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.Status == statusNotRun {
			continue
		}
		v := num(r.Value)
		if r.Unit != "" && r.Value != nil {
			v += " " + r.Unit
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Figure, v, num(r.Baseline), ratio(r.Ratio), r.Target, r.Status)
	}
	return b.String()
}

// statusNotRun is the status of a figure the output did not measure.
const statusNotRun = "not run"

// measurement is one benchmark line: its metrics by unit.
type measurement map[string]float64

// figure is one row of SPEC §6: where its value (and baseline) come from.
type figure struct {
	Name     string
	Bench    string // benchmark name without the -N suffix
	Value    string // metric unit of rehome's value
	Baseline string // metric unit of the same-run baseline ("" if none)
	Target   string
	// Pass judges the value and, for a figure with a baseline, the ratio
	// value / baseline of one run. Nil for an informative figure, which is
	// reported without pass or fail.
	Pass      func(v, ratio float64) bool
	ValueUnit string
}

// Row is one line of the report.
type Row struct {
	Figure   string   `json:"figure"`
	Bench    string   `json:"bench"`
	Value    *float64 `json:"value,omitempty"`
	Unit     string   `json:"unit"`
	Baseline *float64 `json:"baseline,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"`
	Target   string   `json:"target"`
	Status   string   `json:"status"` // pass, short, not run, no baseline, informative
}

// Machine describes where the run happened.
type Machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	MemoryGB string `json:"memory_gb"`
	Go       string `json:"go"`
	Date     string `json:"date"`
}

var figures = []figure{
	{Name: "repair throughput vs plain checksummed fsynced copy (6 nodes / 3 racks)", Bench: "BenchmarkRepairThroughput/6nodes_3racks",
		Value: "rehome_MBps", Baseline: "baseline_MBps", ValueUnit: "MB/s", Target: ">= 0.8x",
		Pass: func(_, r float64) bool { return r >= 0.8 }},
	{Name: "repair throughput vs plain copy (6 nodes / 6 racks)", Bench: "BenchmarkRepairThroughput/6nodes_6racks",
		Value: "rehome_MBps", Baseline: "baseline_MBps", ValueUnit: "MB/s", Target: ">= 0.8x",
		Pass: func(_, r float64) bool { return r >= 0.8 }},
	{Name: "repair throughput vs plain copy (12 nodes / 4 racks)", Bench: "BenchmarkRepairThroughput/12nodes_4racks",
		Value: "rehome_MBps", Baseline: "baseline_MBps", ValueUnit: "MB/s", Target: ">= 0.8x",
		Pass: func(_, r float64) bool { return r >= 0.8 }},
	{Name: "verdict -> healthy, ~500 MB lost, 6 nodes / 3 racks", Bench: "BenchmarkRepairThroughput/6nodes_3racks",
		Value: "verdict_to_healthy_seconds", ValueUnit: "s", Target: "<= 4 s (SeaweedFS shell repair: 16.5 s)",
		Pass: func(v, _ float64) bool { return v <= 4 }},
	{Name: "spread of re-homed replicas over survivors, writes (max/mean, 6 racks)", Bench: "BenchmarkRepairThroughput/6nodes_6racks",
		Value: "write_spread", ValueUnit: "", Target: "<= 1.25", Pass: func(v, _ float64) bool { return v <= 1.25 }},
	{Name: "spread of re-homed replicas over survivors, reads (max/mean, 6 racks)", Bench: "BenchmarkRepairThroughput/6nodes_6racks",
		Value: "read_spread", ValueUnit: "", Target: "<= 1.5", Pass: func(v, _ float64) bool { return v <= 1.5 }},
	{Name: "false down verdicts, 100 pauses of 0.2-5 s, 12 s grace", Bench: "BenchmarkFalseVerdictsUnderPauses",
		Value: "false_downs", ValueUnit: "verdicts", Target: "0", Pass: func(v, _ float64) bool { return v == 0 }},
	{Name: "detection overshoot past suspect+grace, p99", Bench: "BenchmarkDetectionDelay",
		Value: "overshoot_p99_heartbeats", ValueUnit: "heartbeats", Target: "<= 1 heartbeat", Pass: func(v, _ float64) bool { return v <= 1 }},
	{Name: "planning a node loss: 10 M shards on 100 nodes", Bench: "BenchmarkPlanNodeLoss10M",
		Value: "ns/op", ValueUnit: "ns", Target: "<= 1 s", Pass: func(v, _ float64) bool { return v <= 1e9 }},
	{Name: "planner memory per shard (10 M shards)", Bench: "BenchmarkPlanNodeLoss10M",
		Value: "B/shard", ValueUnit: "bytes", Target: "<= 115 B (100 + the node → shards index)", Pass: func(v, _ float64) bool { return v <= 115 }},
	// Issue #18: the control plane at 10 M shards, through a real JetStream.
	{Name: "planner cold start from 10 M placement entries in KV until it acts", Bench: "BenchmarkControlPlane10M",
		Value: "cold_start_s", ValueUnit: "s", Target: "<= 60 s", Pass: func(v, _ float64) bool { return v <= 60 }},
	{Name: "standby takeover at 10 M shards on 1,000 nodes until the first task", Bench: "BenchmarkControlPlane10M",
		Value: "takeover_s", ValueUnit: "s", Target: "<= 5 s", Pass: func(v, _ float64) bool { return v <= 5 }},
	{Name: "planner lock time for one node's down verdict (10 M shards)", Bench: "BenchmarkControlPlane10M",
		Value: "verdict_lock_ms", ValueUnit: "ms", Target: "<= 50 ms", Pass: func(v, _ float64) bool { return v <= 50 }},
	{Name: "status call p99 during a rack outage (10 M shards)", Bench: "BenchmarkControlPlane10M",
		Value: "status_p99_ms", ValueUnit: "ms", Target: "<= 50 ms", Pass: func(v, _ float64) bool { return v <= 50 }},
	{Name: "heartbeat handling p99 during a rack outage (10 M shards, bucket bound)", Bench: "BenchmarkControlPlane10M",
		Value: "heartbeat_p99_ms", ValueUnit: "ms", Target: "<= 50 ms", Pass: func(v, _ float64) bool { return v <= 50 }},
	{Name: "placement metadata per shard in planner memory (JetStream run, 10 M)", Bench: "BenchmarkControlPlane10M",
		Value: "heap_B/shard", ValueUnit: "bytes", Target: "(informative)"},
	{Name: "placement metadata per shard in JetStream's store (one KV key per shard)", Bench: "BenchmarkControlPlane10M",
		Value: "kv_B/shard", ValueUnit: "bytes", Target: "(informative)"},
	{Name: "control messages per repaired shard, all counted (events, KV writes, acks, pulls)", Bench: "BenchmarkControlMessagesPerRepairedShard",
		Value: "control_msgs_per_shard", ValueUnit: "msgs", Target: "<= 4", Pass: func(v, _ float64) bool { return v <= 4 }},
	{Name: "client GET p99 during a rebuild vs idle (open loop, kill -> healthy)", Bench: "BenchmarkGetLatencyDuringRebuild",
		Value: "rebuild_p99_ms", Baseline: "idle_p99_ms", ValueUnit: "ms", Target: "<= 2x",
		Pass: func(_, r float64) bool { return r <= 2 }},
	{Name: "repair throughput under that client load vs unloaded", Bench: "BenchmarkGetLatencyDuringRebuild",
		Value: "repair_loaded_MBps", Baseline: "repair_unloaded_MBps", ValueUnit: "MB/s", Target: ">= 0.5x",
		Pass: func(_, r float64) bool { return r >= 0.5 }},
	{Name: "erasure rebuild vs in-process rebuild from the same piece files (32 stripes, 4 MiB pieces)", Bench: "BenchmarkRebuildStripes/piece=4MiB/lost=1",
		Value: "MB/s", Baseline: "inproc-MB/s", ValueUnit: "MB/s", Target: ">= 0.7x",
		Pass: func(_, r float64) bool { return r >= 0.7 }},
	{Name: "erasure decode step vs reedsolomon Reconstruct (4 MiB pieces)", Bench: "BenchmarkRebuildStripes/piece=4MiB/lost=1",
		Value: "step-MB/s", Baseline: "rs-MB/s", ValueUnit: "MB/s", Target: "(informative)"},
	{Name: "repair network bytes per rebuilt byte (4+2)", Bench: "BenchmarkRebuildStripes/piece=4MiB/lost=1",
		Value: "read-B/rebuilt-B", ValueUnit: "bytes", Target: "expect K = 4", Pass: func(v, _ float64) bool { return v <= 4.01 }},
	// SPEC §8, §11: membership (issue #16).
	{Name: "drain of a node holding ~500 MB vs repair of the same bytes (6 nodes / 3 racks)", Bench: "BenchmarkDrainVsRepair",
		Value: "drain_MBps", Baseline: "repair_MBps", ValueUnit: "MB/s", Target: ">= 0.8x",
		Pass: func(_, r float64) bool { return r >= 0.8 }},
	{Name: "status samples under-replicated during that drain", Bench: "BenchmarkDrainVsRepair",
		Value: "under_replicated_samples", ValueUnit: "samples", Target: "0", Pass: func(v, _ float64) bool { return v == 0 }},
	{Name: "rebalance after adding 1 node to 6: widest fill deviation from the mean", Bench: "BenchmarkRebalanceAfterAddingANode",
		Value: "band_pp", ValueUnit: "pp", Target: "<= 5 pp", Pass: func(v, _ float64) bool { return v <= 5 }},
	{Name: "bytes that rebalance moved vs the least that reaches the band", Bench: "BenchmarkRebalanceAfterAddingANode",
		Value: "moved_vs_minimum", ValueUnit: "", Target: "<= 1.1x", Pass: func(v, _ float64) bool { return v <= 1.1 }},
	{Name: "client GET p99 during that rebalance vs idle (open loop)", Bench: "BenchmarkRebalanceAfterAddingANode",
		Value: "get_p99_rebalance_ms", Baseline: "get_p99_idle_ms", ValueUnit: "ms", Target: "<= 1.5x",
		Pass: func(_, r float64) bool { return r <= 1.5 }},
	// SPEC §10, §11: the simulator (cmd/rehome/sim; restore times are virtual).
	{Name: "fault schedules per hour on 2 cores, 30 nodes (rehome sim)", Bench: "BenchmarkSimSchedules",
		Value: "schedules/h", ValueUnit: "schedules/h", Target: ">= 10000", Pass: func(v, _ float64) bool { return v >= 10000 }},
	{Name: "loss probability, 1% of 5 000 nodes at once, RF 3: copysets (scatter width 2) vs random placement", Bench: "BenchmarkSimLoss",
		Value: "copyset_loss_%", Baseline: "random_loss_%", ValueUnit: "%", Target: "<= 0.2% (random: ~100%)",
		Pass: func(v, _ float64) bool { return v <= 0.2 }},
	{Name: "time to restore one node's loss, 100 nodes (300 GiB per node)", Bench: "BenchmarkSimRestore/nodes=100/random",
		Value: "restore_s", ValueUnit: "s", Target: "(informative)"},
	{Name: "time to restore one node's loss, 1 000 nodes", Bench: "BenchmarkSimRestore/nodes=1000/random",
		Value: "restore_s", ValueUnit: "s", Target: "(informative)"},
	{Name: "time to restore one node's loss, 10 000 nodes", Bench: "BenchmarkSimRestore/nodes=10000/random",
		Value: "restore_s", ValueUnit: "s", Target: "(informative)"},
	{Name: "time to restore one node's loss, 100 nodes, copysets (scatter width 2)", Bench: "BenchmarkSimRestore/nodes=100/copyset/scatter=2",
		Value: "restore_s", ValueUnit: "s", Target: "(informative: the cost of copysets)"},
	{Name: "loss probability, 1% of 5 000 nodes at once, 4+2 stripes placed at random", Bench: "BenchmarkSimLoss",
		Value: "ec4+2_loss_%", ValueUnit: "%", Target: "(informative)"},
	// Issue 19: one rack lost, a second failure during repair, a rack then
	// a node, for RF 3 and 4+2 (30 nodes in 6 racks, 50 seeds each).
	{Name: "runs losing data, one rack lost, RF 3", Bench: "BenchmarkSimScenarios/rack/random",
		Value: "loss_runs_%", ValueUnit: "%", Target: "(informative)"},
	{Name: "runs losing data, one rack lost, 4+2", Bench: "BenchmarkSimScenarios/rack/ec4+2",
		Value: "loss_runs_%", ValueUnit: "%", Target: "(informative)"},
	{Name: "runs losing data, a second failure during repair, RF 3", Bench: "BenchmarkSimScenarios/second/random",
		Value: "loss_runs_%", ValueUnit: "%", Target: "(informative)"},
	{Name: "runs losing data, a second failure during repair, 4+2", Bench: "BenchmarkSimScenarios/second/ec4+2",
		Value: "loss_runs_%", ValueUnit: "%", Target: "(informative)"},
	{Name: "runs losing data, a rack then a node during repair, RF 3", Bench: "BenchmarkSimScenarios/rack+node/random",
		Value: "loss_runs_%", ValueUnit: "%", Target: "(informative)"},
	{Name: "runs losing data, a rack then a node during repair, 4+2", Bench: "BenchmarkSimScenarios/rack+node/ec4+2",
		Value: "loss_runs_%", ValueUnit: "%", Target: "(informative)"},
	{Name: "time some shard at RF-2 (a stripe two pieces short), one rack lost, RF 3", Bench: "BenchmarkSimScenarios/rack/random",
		Value: "at_rf-2_s", ValueUnit: "s", Target: "(informative)"},
	{Name: "time some stripe two pieces short, one rack lost, 4+2", Bench: "BenchmarkSimScenarios/rack/ec4+2",
		Value: "at_rf-2_s", ValueUnit: "s", Target: "(informative)"},
	{Name: "time some shard at RF-2, a second failure during repair, RF 3", Bench: "BenchmarkSimScenarios/second/random",
		Value: "at_rf-2_s", ValueUnit: "s", Target: "(informative)"},
	{Name: "time some stripe two pieces short, a second failure during repair, 4+2", Bench: "BenchmarkSimScenarios/second/ec4+2",
		Value: "at_rf-2_s", ValueUnit: "s", Target: "(informative)"},
	// SPEC §11: the S3 gateway (aws-sdk-go-v2 against `rehome dev`).
	{Name: "S3 PUT of 1 GiB (SDK multipart) vs rehome put, same run", Bench: "BenchmarkS3PutGet1GiB",
		Value: "s3_put_MBps", Baseline: "cli_put_MBps", ValueUnit: "MB/s", Target: ">= 0.8x",
		Pass: func(_, r float64) bool { return r >= 0.8 }},
	{Name: "S3 GET of 1 GiB (SDK multipart) vs rehome get, same run", Bench: "BenchmarkS3PutGet1GiB",
		Value: "s3_get_MBps", Baseline: "cli_get_MBps", ValueUnit: "MB/s", Target: ">= 0.8x",
		Pass: func(_, r float64) bool { return r >= 0.8 }},
	{Name: "S3 gateway peak RSS, 5 GiB multipart upload", Bench: "BenchmarkS3GatewayRSS5GiBMultipart",
		Value: "peak_rss_MiB", ValueUnit: "MiB", Target: "<= 256 MiB", Pass: func(v, _ float64) bool { return v <= 256 }},
	{Name: "ListObjectsV2 over 100 000 keys, every page of 1 000", Bench: "BenchmarkS3ListObjectsV2",
		Value: "all_pages_ms", ValueUnit: "ms", Target: "<= 2 s", Pass: func(v, _ float64) bool { return v <= 2000 }},
	{Name: "ListObjectsV2 over 100 000 keys, first page of 1 000", Bench: "BenchmarkS3ListObjectsV2",
		Value: "first_page_ms", ValueUnit: "ms", Target: "<= 50 ms", Pass: func(v, _ float64) bool { return v <= 50 }},
	{Name: "S3 GET time to first byte p99, one node dead vs healthy", Bench: "BenchmarkS3GetTTFBNodeDead",
		Value: "dead_p99_ms", Baseline: "healthy_p99_ms", ValueUnit: "ms", Target: "<= 2x",
		Pass: func(_, r float64) bool { return r <= 2 }},
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

// parse reads go test -bench output and returns the runs of each
// benchmark, in order: one measurement (metrics by unit) per result line
// (several with -count).
func parse(r io.Reader) (map[string][]measurement, error) {
	runs := map[string][]measurement{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		fields := strings.Fields(m[4])
		ms := measurement{}
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				break
			}
			ms[fields[i+1]] = v
		}
		runs[m[1]] = append(runs[m[1]], ms)
	}
	return runs, sc.Err()
}

// median of vs (the mean of the middle two for an even count).
func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// report builds the table. A figure without a baseline takes the median of
// its value over the runs. A figure with one takes, from the runs that
// measured both, the run whose ratio value / baseline is the median (the
// lower of the middle two for an even count), so the row's three numbers
// come from one run; with no run measuring the baseline the row says "no
// baseline" and fails. An informative figure is reported without a verdict.
func report(runs map[string][]measurement) []Row {
	var rows []Row
	for _, f := range figures {
		row := Row{Figure: f.Name, Bench: f.Bench, Unit: f.ValueUnit, Target: f.Target, Status: statusNotRun}
		rs, ok := findBench(runs, f.Bench)
		var vs []float64
		for _, m := range rs {
			if v, ok := m[f.Value]; ok {
				vs = append(vs, v)
			}
		}
		if !ok || len(vs) == 0 {
			rows = append(rows, row)
			continue
		}
		var v, ratio float64
		if f.Baseline == "" {
			v = median(vs)
			row.Value = &v
		} else {
			type pair struct{ v, b, r float64 }
			var pairs []pair
			for _, m := range rs {
				v, vok := m[f.Value]
				b, bok := m[f.Baseline]
				if vok && bok && b > 0 {
					pairs = append(pairs, pair{v, b, v / b})
				}
			}
			if len(pairs) == 0 {
				v = median(vs)
				row.Value = &v
				row.Status = "no baseline"
				rows = append(rows, row)
				continue
			}
			slices.SortFunc(pairs, func(a, b pair) int { return cmp.Compare(a.r, b.r) })
			p := pairs[(len(pairs)-1)/2]
			v, ratio = p.v, p.r
			row.Value, row.Baseline, row.Ratio = &p.v, &p.b, &p.r
		}
		switch {
		case f.Pass == nil:
			row.Status = "informative"
		case f.Pass(v, ratio):
			row.Status = "pass"
		default:
			row.Status = "short"
		}
		rows = append(rows, row)
	}
	return rows
}

// findBench matches a benchmark name exactly, or by prefix for sub-benchmarks
// whose names carry sizes.
func findBench(runs map[string][]measurement, name string) ([]measurement, bool) {
	if m, ok := runs[name]; ok {
		return m, true
	}
	for k, m := range runs {
		if strings.HasPrefix(k, name) {
			return m, true
		}
	}
	return nil, false
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %g kB", &kb); err == nil {
			m.MemoryGB = strconv.FormatFloat(kb/(1<<20), 'f', 1, 64)
		}
	}
	return m
}

func fmtNum(p *float64) string {
	if p == nil {
		return "-"
	}
	v := *p
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e6:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 1e6:
		return strconv.FormatFloat(v, 'g', 4, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

func run() error {
	in := flag.String("in", "-", "go test -bench output (- for stdin)")
	jsonOut := flag.String("json", "", "also write the report as JSON here")
	markdown := flag.Bool("markdown", false, "print the README's markdown table instead of the text table")
	ran := flag.Bool("ran", false, "only the figures this output measured (a run of some benchmarks, e.g. make bench BENCH=Drain)")
	flag.Parse()
	var r io.Reader = os.Stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	ms, err := parse(r)
	if err != nil {
		return fmt.Errorf("read benchmark output: %w", err)
	}
	rows := report(ms)
	if *ran {
		rows = slices.DeleteFunc(rows, func(r Row) bool { return r.Status == statusNotRun })
	}
	mc := machine()
	commit, dirty, err := gitSource(*in, *jsonOut)
	if err != nil {
		return err
	}
	rep := Report{Machine: mc, Source: &Source{Commit: commit, Dirty: dirty, Out: *in}, Figures: rows}
	if *markdown {
		fmt.Print(Markdown(rows))
		return writeReport(*jsonOut, rep)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "FIGURE\tREHOME\tBASELINE\tRATIO\tTARGET\tSTATUS\n")
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s\t%s\n", row.Figure, fmtNum(row.Value), row.Unit, fmtNum(row.Baseline), fmtNum(row.Ratio), row.Target, row.Status)
	}
	tw.Flush()
	fmt.Printf("\nmachine: %s, %d cores, %s GB, %s, %s\ncommit: %s (dirty: %t), from %s\n", mc.CPU, mc.Cores, mc.MemoryGB, mc.Go, mc.Date, commit, dirty, *in)
	return writeReport(*jsonOut, rep)
}

// writeReport writes rep as indented JSON to path ("" writes nothing).
func writeReport(path string, rep Report) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}
