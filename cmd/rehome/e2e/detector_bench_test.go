package e2e

// Detector benchmarks through the real binary (SPEC §6): false down verdicts
// while storage processes are paused with SIGSTOP, and the CPU of a `rehome
// detector` process watching 1000 simulated nodes. They run under `make
// bench` (go test -run '^$' -bench .), one experiment per b.N iteration.
//
// Sizes: REHOME_BENCH_QUICK=1 runs a smaller experiment; REHOME_BENCH_PAUSES,
// REHOME_BENCH_NODES and REHOME_BENCH_WINDOW (a duration) override one size.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/benchenv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/embedded"
	"github.com/rehome/rehome/shared/event"
)

// heartbeatWatch records when each node was last heard and the sizes of the
// heartbeats storage nodes really send. Safe for concurrent use.
type heartbeatWatch struct {
	mu    sync.Mutex
	last  map[string]time.Time
	n     int
	bytes int
}

func watchHeartbeats(b *testing.B, nc *nats.Conn) *heartbeatWatch {
	b.Helper()
	w := &heartbeatWatch{last: map[string]time.Time{}}
	sub, err := nc.Subscribe(event.HeartbeatPrefix+"*", func(m *nats.Msg) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.last[event.LastToken(m.Subject)] = time.Now()
		w.n++
		w.bytes += len(m.Data)
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

// heardSince reports whether node beat after t.
func (w *heartbeatWatch) heardSince(node string, t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last[node].After(t)
}

// meanSize returns the mean heartbeat payload seen, in bytes.
func (w *heartbeatWatch) meanSize() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == 0 {
		return 0
	}
	return float64(w.bytes) / float64(w.n)
}

// countVerdicts reads every verdict in the REHOME_EVENTS stream and returns
// how many there are per state (subject rehome.node.<state>.<node>).
func countVerdicts(b *testing.B, js jetstream.JetStream) map[string]int {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"rehome.node.>"},
	})
	if err != nil {
		b.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	counts := map[string]int{}
	for remaining := info.NumPending; remaining > 0; {
		batch, err := cons.Fetch(int(min(remaining, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			if md, err := msg.Metadata(); err == nil {
				remaining = md.NumPending
			}
			if parts := strings.Split(msg.Subject(), "."); len(parts) == 4 {
				counts[parts[2]]++
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			b.Fatal(err)
		}
		if got == 0 {
			b.Fatalf("read %s: %d verdicts still pending but none delivered", bus.StreamEvents, remaining)
		}
	}
	return counts
}

// BenchmarkFalseVerdictsUnderPauses runs `rehome dev --nodes 6 --racks 3
// --grace 12s` (suspect after 3 s, heartbeat 1 s) and pauses storage
// processes (SIGSTOP, then SIGCONT) for random 0.2–5 s, on up to 2 nodes at a
// time (never more than half the nodes), 100 pauses (REHOME_BENCH_QUICK: 20).
// A node is paused again only after it was heard once since its last resume,
// so every silence is one pause. No node dies, so every down verdict in the
// REHOME_EVENTS stream is false (SPEC §6 target: 0); suspect verdicts are
// expected for the long pauses and reported for information.
func BenchmarkFalseVerdictsUnderPauses(b *testing.B) {
	const (
		nodes    = 6
		lanes    = 2 // pauses under way at once
		minPause = 200 * time.Millisecond
		maxPause = 5 * time.Second
		suspect  = 3 * time.Second
	)
	pauses := 100
	if benchenv.Quick() {
		pauses = 20
	}
	pauses = benchenv.Int("REHOME_BENCH_PAUSES", pauses)

	for range b.N {
		c := startDev(b, "--nodes", strconv.Itoa(nodes), "--racks", "3", "--grace", "12s")
		waitHealthy(b, c, nodes)
		pids := map[string]int{}
		for _, p := range c.processes() {
			if p.Role == "storage" && p.PID > 0 {
				pids[p.ID] = p.PID
			}
		}
		if len(pids) != nodes {
			b.Fatalf("processes.json lists %d storage processes, want %d: %+v", len(pids), nodes, c.processes())
		}
		// Whatever happens, no process is left stopped.
		b.Cleanup(func() {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		})
		nc, err := bus.Connect(c.url, "bench-pauses", 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		hb := watchHeartbeats(b, nc)
		// Count from after every node's first up verdict.
		var before map[string]int
		waitFor(b, 30*time.Second, "every node's up verdict in "+bus.StreamEvents, func() bool {
			before = countVerdicts(b, js)
			return before["up"] >= nodes
		})

		var (
			mu        sync.Mutex
			issued    int
			paused    = map[string]bool{}
			resumed   = map[string]time.Time{}
			longOnes  int // pauses of at least suspect-after
			longest   time.Duration
			maxAtOnce int
		)
		ids := make([]string, 0, len(pids))
		for id := range pids {
			ids = append(ids, id)
		}
		begin := time.Now()
		var wg sync.WaitGroup
		for lane := range lanes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(lane)))
				for {
					mu.Lock()
					if issued >= pauses {
						mu.Unlock()
						return
					}
					victim := ""
					for _, j := range rng.Perm(len(ids)) {
						id := ids[j]
						if !paused[id] && hb.heardSince(id, resumed[id]) {
							victim = id
							break
						}
					}
					if victim == "" || len(paused) >= nodes/2 {
						mu.Unlock()
						time.Sleep(20 * time.Millisecond)
						continue
					}
					issued++
					paused[victim] = true
					maxAtOnce = max(maxAtOnce, len(paused))
					d := minPause + time.Duration(rng.Int64N(int64(maxPause-minPause)+1))
					if d >= suspect {
						longOnes++
					}
					longest = max(longest, d)
					mu.Unlock()

					pid := pids[victim]
					if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
						b.Errorf("SIGSTOP %s (pid %d): %v", victim, pid, err)
					}
					time.Sleep(d) // the pause itself
					if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
						b.Errorf("SIGCONT %s (pid %d): %v", victim, pid, err)
					}
					mu.Lock()
					delete(paused, victim)
					resumed[victim] = time.Now()
					mu.Unlock()
					time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(begin)
		// Every node beats again; a down verdict could only have come from a
		// silence longer than suspect + grace, which no pause produced.
		waitHealthy(b, c, nodes)
		after := countVerdicts(b, js)

		falseDowns := after["down"] - before["down"]
		suspects := after["suspect"] - before["suspect"]
		ups := after["up"] - before["up"]
		size := hb.meanSize()
		b.ReportMetric(float64(pauses), "pauses")
		b.ReportMetric(float64(falseDowns), "false_downs")
		b.ReportMetric(float64(suspects), "suspect_verdicts")
		b.ReportMetric(float64(longOnes), "pauses_over_suspect_after")
		b.ReportMetric(size, "heartbeat_payload_bytes")
		verdict := "meets"
		if falseDowns > 0 {
			verdict = "MISSES"
		}
		b.Logf("false verdicts under pauses: %d pauses of %s-%s (%d of them >= %s, longest %s) on %d storage processes, up to %d at once, in %s: %d false downs, %d suspect and %d up verdicts (grace 12s); real heartbeat payload %.0f B; %s target 0 false downs",
			pauses, minPause, maxPause, longOnes, suspect, longest.Round(10*time.Millisecond), nodes, maxAtOnce, elapsed.Round(time.Second),
			falseDowns, suspects, ups, size, verdict)
	}
}

// procCPU returns the user+system CPU time of process pid from
// /proc/<pid>/stat (fields 14 and 15, in USER_HZ = 100 ticks per second on
// Linux) and its resident set size in bytes from /proc/<pid>/status.
func procCPU(pid int) (cpu time.Duration, rss int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[14-3], 10, 64)
	stime, err2 := strconv.ParseInt(f[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	const userHZ = 100
	cpu = time.Duration(utime+stime) * time.Second / userHZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return cpu, rss, nil
}

// feedHeartbeats publishes, until ctx ends, a heartbeat every interval for
// each of n simulated nodes, their phases spread evenly over the interval.
// Payloads carry every field storage sends, at values of a real node's size.
func feedHeartbeats(ctx context.Context, nc *nats.Conn, n int, interval time.Duration) {
	type sim struct {
		hb   event.Heartbeat
		next time.Time
	}
	start := time.Now()
	nodes := make([]*sim, n)
	for i := range nodes {
		var boot [16]byte
		_, _ = rand.Read(boot[:])
		nodes[i] = &sim{
			hb: event.Heartbeat{
				Node: fmt.Sprintf("storage-%04d", i+1), Rack: fmt.Sprintf("rack-%d", i%8+1),
				Addr:   fmt.Sprintf("10.0.%d.%d:7070", i/250, i%250+1),
				BootID: fmt.Sprintf("%x-%x-%x-%x-%x", boot[0:4], boot[4:6], boot[6:8], boot[8:10], boot[10:16]),
				Shards: 250_000 + i, UsedBytes: 1_234_567_890_123, CapacityBytes: 4_000_787_030_016,
			},
			next: start.Add(time.Duration(i) * interval / time.Duration(n)),
		}
	}
	tk := time.NewTicker(min(interval/100, 10*time.Millisecond))
	defer tk.Stop()
	for {
		now := time.Now()
		for _, s := range nodes {
			if now.Before(s.next) {
				continue
			}
			s.hb.Header = event.Header{TS: now.UTC()}
			if data, err := event.Encode(&s.hb); err == nil {
				_ = nc.Publish(event.HeartbeatPrefix+s.hb.Node, data)
			}
			s.next = s.next.Add(interval)
			if s.next.Before(now) {
				s.next = now.Add(interval)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// BenchmarkDetectorCPUPer1000Nodes starts `rehome detector` as its own
// process against an embedded NATS server in this process, feeds it 1000
// simulated nodes' heartbeats at 1 s, waits until it announced every node up,
// then reads its CPU time from /proc/<pid>/stat over a 10 s window
// (REHOME_BENCH_QUICK: 5 s) and reports it as a share of one core per 1000
// nodes, with the process's resident memory.
func BenchmarkDetectorCPUPer1000Nodes(b *testing.B) {
	const interval = time.Second
	nodes := benchenv.Int("REHOME_BENCH_NODES", 1000)
	window := 10 * time.Second
	if benchenv.Quick() {
		window = 5 * time.Second
	}
	window = benchenv.Duration("REHOME_BENCH_WINDOW", window)

	for range b.N {
		dir := b.TempDir()
		srv, err := embedded.Start(embedded.Config{Port: -1, StoreDir: filepath.Join(dir, "nats")})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		url := srv.ClientURL()
		nc, err := bus.Connect(url, "bench-feeder", 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		ectx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = bus.Ensure(ectx, js, bus.Config{})
		cancel()
		if err != nil {
			b.Fatal(err)
		}

		var (
			mu sync.Mutex
			up = map[string]bool{}
		)
		sub, err := nc.Subscribe(event.UpPrefix+"*", func(m *nats.Msg) {
			mu.Lock()
			up[event.LastToken(m.Subject)] = true
			mu.Unlock()
		})
		if err != nil {
			b.Fatal(err)
		}
		sub.SetPendingLimits(-1, -1)
		b.Cleanup(func() { _ = sub.Unsubscribe() })

		fctx, stopFeed := context.WithCancel(context.Background())
		fed := make(chan struct{})
		go func() { defer close(fed); feedHeartbeats(fctx, nc, nodes, interval) }()
		b.Cleanup(func() { stopFeed(); <-fed })

		logf, err := os.Create(filepath.Join(dir, "detector.log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(rehomeBin, "detector", "--nats", url)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait(); logf.Close() }()
		b.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Signal(syscall.SIGINT)
			}
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			if b.Failed() {
				out, _ := os.ReadFile(filepath.Join(dir, "detector.log"))
				if len(out) > 4000 {
					out = out[len(out)-4000:]
				}
				b.Logf("==== detector log (tail)\n%s", out)
			}
		})
		pid := cmd.Process.Pid
		waitFor(b, 60*time.Second, fmt.Sprintf("detector announced all %d nodes up", nodes), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(up) == nodes
		})
		c0, _, err := procCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		waitFor(b, window+5*time.Second, "measurement window", func() bool { return time.Since(t0) >= window })
		c1, rss, err := procCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		wall := time.Since(t0)
		share := (c1 - c0).Seconds() / wall.Seconds()
		perK := share * 100 * 1000 / float64(nodes)
		b.ReportMetric(perK, "detector_cpu_percent_per_1000_nodes")
		b.ReportMetric(float64(rss)/(1<<20), "detector_rss_MiB")
		b.Logf("detector CPU: `rehome detector` process, %d simulated nodes at 1 beat/%s: %s CPU in %s = %.2f%% of one core (%.2f%% per 1000 nodes), RSS %.1f MiB; startup incl. %d first up verdicts: %s CPU",
			nodes, interval, c1-c0, wall.Round(10*time.Millisecond), share*100, perK, float64(rss)/(1<<20), nodes, c0)
	}
}
