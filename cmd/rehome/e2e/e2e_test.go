// Package e2e drives the real rehome binary: `rehome dev` as separate OS
// processes, objects written and read through the CLI and the objects client,
// a storage node killed with SIGKILL, and the heal checked as an operator would.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/cmd/rehome/devcluster"
	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/history"
	"github.com/rehome/rehome/shared/objects"
	"github.com/rehome/rehome/shared/shardapi"
)

var rehomeBin string

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	os.Exit(code)
}

// buildAndRun uses $REHOME_BIN (what `make test` builds) or builds the binary.
func buildAndRun(m *testing.M) (int, error) {
	rehomeBin = os.Getenv("REHOME_BIN")
	if rehomeBin == "" {
		dir, err := os.MkdirTemp("", "rehome-e2e-bin")
		if err != nil {
			return 1, err
		}
		defer os.RemoveAll(dir)
		rehomeBin = filepath.Join(dir, "rehome")
		out, err := exec.Command("go", "build", "-o", rehomeBin, "github.com/rehome/rehome/cmd/rehome").CombinedOutput()
		if err != nil {
			return 1, fmt.Errorf("build rehome: %v\n%s", err, out)
		}
	}
	return m.Run(), nil
}

// cluster is a running `rehome dev`.
type cluster struct {
	t        testing.TB
	dir      string
	url      string // the bus as the operator (secrets.env)
	adminURL string // the bus as the admin (env/admin.env)
	env      []string
	cmd      *exec.Cmd
	done     chan error
}

// freePort returns a port free now, below Linux's ephemeral range so that
// outgoing connections cannot take it before rehome dev binds it.
func freePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+mrand.IntN(12000)))
		if err == nil {
			defer ln.Close()
			return ln.Addr().(*net.TCPAddr).Port
		}
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

func startDev(t testing.TB, args ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	c := &cluster{t: t, dir: dir, url: fmt.Sprintf("nats://127.0.0.1:%d", port), done: make(chan error, 1)}
	// Every cluster gets its own S3 and console ports (args may say
	// --s3-port or --console-port again: the last wins).
	all := append([]string{"dev", "--dir", dir, "--nats-port", fmt.Sprint(port), "--s3-port", fmt.Sprint(freePort(t)),
		"--console-port", fmt.Sprint(freePort(t))}, args...)
	c.cmd = exec.Command(rehomeBin, all...)
	logf, err := os.Create(filepath.Join(dir, "dev.out"))
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			dumpLogs(t, dir)
		}
	})
	// secrets.env equips a shell (and this test) with the URL and token.
	waitFor(t, 30*time.Second, "secrets.env written", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "secrets.env"))
		if err != nil {
			return false
		}
		c.env = append(os.Environ(), strings.Fields(string(b))...)
		return strings.Contains(string(b), "REHOME_TOKEN=")
	})
	// Tests talk to the bus as the operator, like a user who sourced
	// secrets.env; adminURL is for the few that play a service.
	c.url = c.getenv(bus.EnvURL)
	admin, err := envfile.Read(filepath.Join(dir, "env", "admin.env"))
	if err != nil || admin[bus.EnvURL] == "" {
		t.Fatalf("env/admin.env: %v %v", admin, err)
	}
	c.adminURL = admin[bus.EnvURL]
	return c
}

// getenv returns the value of key in the CLI's environment (secrets.env
// over the test's own).
func (c *cluster) getenv(key string) string {
	v := ""
	for _, kv := range c.env {
		if x, ok := strings.CutPrefix(kv, key+"="); ok {
			v = x
		}
	}
	return v
}

func (c *cluster) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func dumpLogs(t testing.TB, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	files = append(files, filepath.Join(dir, "dev.out"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("==== %s (tail)\n%s", f, b)
	}
}

// rehome runs the CLI against the cluster and returns stdout; stderr is in the error.
func (c *cluster) rehome(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rehomeBin, args...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("rehome %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (c *cluster) status() (control.ClusterStatus, error) {
	var st control.ClusterStatus
	out, err := c.rehome("cluster", "status", "--json")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(out), &st)
}

func (c *cluster) processes() []devcluster.Process {
	var ps []devcluster.Process
	b, err := os.ReadFile(filepath.Join(c.dir, "processes.json"))
	if err == nil {
		_ = json.Unmarshal(b, &ps)
	}
	return ps
}

func (c *cluster) objects(t testing.TB) *objects.Client {
	t.Helper()
	nc, err := bus.Connect(c.url, "e2e", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := objects.New(context.Background(), nc, js, shardapi.New(c.token()))
	if err != nil {
		t.Fatal(err)
	}
	return oc
}

// token is the storage API token rehome dev wrote into secrets.env.
func (c *cluster) token() string {
	return c.getenv(shardapi.EnvToken)
}

// eventLog collects the subjects `rehome events --json` prints.
type eventLog struct {
	mu       sync.Mutex
	subjects []string
	data     []json.RawMessage
}

// first returns the payload of the first event whose subject has prefix.
func (l *eventLog) first(prefix string) json.RawMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range l.subjects {
		if strings.HasPrefix(s, prefix) {
			return l.data[i]
		}
	}
	return nil
}

func (l *eventLog) saw(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.subjects {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// tailEvents runs `rehome events --json` until the test ends; every line must
// be {"subject":...,"data":{... "v":1 ...}}.
func (c *cluster) tailEvents(t *testing.T) *eventLog {
	t.Helper()
	log := &eventLog{}
	c.tailLines(t, nil, func(raw []byte) {
		var line struct {
			Subject string          `json:"subject"`
			Data    json.RawMessage `json:"data"`
		}
		var v struct {
			V int `json:"v"`
		}
		if err := json.Unmarshal(raw, &line); err != nil || json.Unmarshal(line.Data, &v) != nil || v.V != 1 {
			t.Errorf("events --json printed a line that is not a v1 event: %q", raw)
			return
		}
		log.mu.Lock()
		log.subjects = append(log.subjects, line.Subject)
		log.data = append(log.data, line.Data)
		log.mu.Unlock()
	})
	// Wait until the subscription is live: progress events arrive every second.
	waitFor(t, 10*time.Second, "events tail running", func() bool { return log.saw("rehome.heal.progress") })
	return log
}

// tailLines runs `rehome events --json` (plus extra arguments) until the
// test ends and hands each line it prints to each, on one goroutine.
func (c *cluster) tailLines(t *testing.T, extra []string, each func(line []byte)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, rehomeBin, append([]string{"events", "--json"}, extra...)...)
	cmd.Env = c.env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			each(sc.Bytes())
		}
	}()
	t.Cleanup(func() { cancel(); _ = cmd.Wait(); <-done })
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	bustest.CheckEvery(t, timeout, 100*time.Millisecond, func() error {
		if cond() {
			return nil
		}
		return errors.New("waiting for: " + what)
	})
}

func waitHealthy(t testing.TB, c *cluster, nodes int) control.ClusterStatus {
	t.Helper()
	var st control.ClusterStatus
	waitFor(t, 60*time.Second, fmt.Sprintf("%d nodes up", nodes), func() bool {
		var err error
		st, err = c.status()
		if err != nil || len(st.Nodes) != nodes {
			return false
		}
		for _, n := range st.Nodes {
			if n.State != "up" {
				return false
			}
		}
		return true
	})
	return st
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// killNode sends SIGKILL to storage node id (process pid) and waits until
// the detector has declared it down.
func (c *cluster) killNode(t testing.TB, id string, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, id+" declared down", func() bool { return c.nodeState(id) == "down" })
}

// TestKillNodeHeals is the end-to-end: 6 nodes each in its own rack,
// 400 objects of 16 KiB, kill -9 the fullest node, wait for the heal, check
// placement, spread and bytes.
func TestKillNodeHeals(t *testing.T) {
	c := startDev(t, "--nodes", "6", "--racks", "6", "--grace", "2s", "--suspect-after", "1s", "--heartbeat", "250ms")
	waitHealthy(t, c, 6)
	ps := c.processes()
	if len(ps) != 6+1+1+2+1+1 { // storage, detector, planner, movers, s3 gateway, console
		t.Fatalf("processes.json lists %d processes, want 12: %+v", len(ps), ps)
	}

	// 400 objects of 16 KiB through one `rehome put` call.
	src := t.TempDir()
	want := map[string][]byte{}
	var files []string
	for i := 0; i < 400; i++ {
		b := make([]byte, 16<<10)
		_, _ = rand.Read(b)
		name := fmt.Sprintf("obj-%03d", i)
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = b
		files = append(files, p)
	}
	if _, err := c.rehome(append([]string{"put"}, files...)...); err != nil {
		t.Fatal(err)
	}
	// Writing an existing key is a one-line error, exit 1.
	_, err := c.rehome("put", files[0])
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("put of an existing key: want exit 1 naming the conflict, got %v", err)
	}

	oc := c.objects(t)
	ctx := context.Background()
	before := map[string]objects.Inspection{}
	for name := range want {
		in, err := oc.Inspect(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		before[name] = in
	}
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Shards != 400 || st.UnderReplicated != 0 {
		t.Fatalf("after put: shards %d under-replicated %d, want 400 and 0", st.Shards, st.UnderReplicated)
	}
	victim := st.Nodes[0]
	for _, n := range st.Nodes {
		if n.Shards > victim.Shards {
			victim = n
		}
	}
	pid := 0
	for _, p := range ps {
		if p.ID == victim.ID {
			pid = p.PID
		}
	}
	// The operator tails the events while the node dies.
	events := c.tailEvents(t)
	t.Logf("killing %s (pid %d, %d shards)", victim.ID, pid, victim.Shards)
	c.killNode(t, victim.ID, pid)
	// The operator's view: heal status --follow exits 0 once healthy.
	if out, err := c.rehome("heal", "status", "--follow", "--interval", "200ms"); err != nil {
		t.Fatalf("heal status --follow: %v\n%s", err, out)
	}
	st, err = c.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.UnderReplicated != 0 || st.Lost != 0 || st.BytesRemaining != 0 {
		t.Fatalf("after heal: under-replicated %d lost %d bytes remaining %d", st.UnderReplicated, st.Lost, st.BytesRemaining)
	}

	// The incident is visible on the event subjects, as JSON lines.
	for _, subj := range []string{"rehome.node.suspect." + victim.ID, "rehome.node.down." + victim.ID, "rehome.repair.plan.", "rehome.repair.task.", "rehome.repair.done.", "rehome.heal.progress"} {
		waitFor(t, 10*time.Second, "event "+subj, func() bool { return events.saw(subj) })
	}

	// The detector saw the node's NATS connection close before its silence
	// reached suspect-after (the server's disconnect event).
	if d := string(events.first("rehome.node.suspect." + victim.ID)); !strings.Contains(d, "connection") {
		t.Errorf("suspect verdict does not come from the closed connection: %s", d)
	}

	// Every shard: 3 live replicas on 3 distinct nodes in 3 racks, none on the victim.
	rehomed := map[string]int{}
	for name, b := range before {
		in, err := oc.Inspect(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for i, sv := range in.Shards {
			if len(sv.Nodes) != 3 || distinct(sv.Nodes) != 3 || distinct(sv.Racks) != 3 {
				t.Fatalf("%s shard %s: nodes %v racks %v, want 3 distinct nodes in 3 racks", name, sv.ID, sv.Nodes, sv.Racks)
			}
			for _, n := range sv.Nodes {
				if n == victim.ID {
					t.Fatalf("%s shard %s still counts the dead node %s as live", name, sv.ID, n)
				}
				if !contains(b.Shards[i].Nodes, n) {
					rehomed[n]++
				}
			}
		}
	}
	total, maxN := 0, 0
	for _, n := range rehomed {
		total += n
		maxN = max(maxN, n)
	}
	if total != victim.Shards {
		t.Fatalf("%d replicas re-homed, the victim held %d", total, victim.Shards)
	}
	mean := float64(total) / 5
	t.Logf("re-homed per survivor: %v (max/mean %.2f)", rehomed, float64(maxN)/mean)
	if len(rehomed) != 5 || float64(maxN)/mean > 1.25 {
		t.Fatalf("re-homed replicas spread %v over survivors: max/mean %.2f, want 5 survivors and <= 1.25", rehomed, float64(maxN)/mean)
	}

	// The victim's history tells the incident; each survivor's, the copies it took.
	h := c.nodeHistory(t, victim.ID)
	if len(h.entriesOf(history.KindSuspect)) != 1 || len(h.entriesOf(history.KindDown)) != 1 || len(h.entriesOf(history.KindPlan)) != 1 {
		t.Fatalf("history of %s: %+v, want one suspect, one down and one plan entry", victim.ID, h.Entries)
	}
	if len(h.Incidents) != 1 || h.Incidents[0].Repaired < victim.Shards || h.Incidents[0].PlannedShards != victim.Shards {
		t.Fatalf("incidents of %s: %+v, want one planning and repairing its %d shards", victim.ID, h.Incidents, victim.Shards)
	}
	for n, copies := range rehomed {
		took := c.nodeHistory(t, n).entriesOf(history.KindRepairTo)
		if len(took) != 1 || took[0].Shards < copies || took[0].Incident != h.Incidents[0].ID {
			t.Fatalf("history of %s: repairs to it %+v, want one line counting its %d new copies", n, took, copies)
		}
	}
	if out, err := c.rehome("node", "history", victim.ID); err != nil || !strings.Contains(out, "declared down") || !strings.Contains(out, h.Incidents[0].ID) {
		t.Fatalf("node history %s: %v\n%s", victim.ID, err, out)
	}
	if _, err := c.rehome("node", "history", "storage-99"); err == nil || !strings.Contains(err.Error(), "unknown node storage-99") {
		t.Fatalf("history of a node never seen: %v, want an unknown node error", err)
	}

	// Every object reads back byte-identical (a few through the CLI's -o).
	for name, b := range want {
		var buf bytes.Buffer
		if _, err := oc.Get(ctx, name, &buf); err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		if !bytes.Equal(buf.Bytes(), b) {
			t.Fatalf("get %s: bytes differ", name)
		}
	}
	for _, name := range []string{"obj-000", "obj-199", "obj-399"} {
		out := filepath.Join(t.TempDir(), name)
		if _, err := c.rehome("get", name, "-o", out); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, want[name]) {
			t.Fatalf("rehome get %s -o: bytes differ (%v)", name, err)
		}
	}

	// rm removes the object, and movers delete its shards from the nodes.
	gone := before["obj-007"].Shards[0].ID
	if _, err := c.rehome("rm", "obj-007"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.rehome("get", "obj-007"); err == nil || !strings.Contains(err.Error(), "no such object") {
		t.Fatalf("get after rm: want 'no such object', got %v", err)
	}
	if out, _ := c.rehome("ls"); strings.Contains(out, "obj-007") {
		t.Fatalf("ls still lists obj-007:\n%s", out)
	}
	waitFor(t, 20*time.Second, "shard "+gone+" deleted from every node", func() bool {
		st, err := c.status()
		if err != nil {
			return false
		}
		sc := shardapi.New(c.token())
		for _, n := range st.Nodes {
			if n.State != "up" {
				continue
			}
			inv, err := sc.List(ctx, n.Addr)
			if err != nil {
				return false
			}
			for _, sh := range inv.Shards {
				if sh.ID == gone {
					return false
				}
			}
		}
		return true
	})

	// Ctrl-C stops every process it started.
	c.stop()
	for _, p := range c.processes() {
		if p.PID != 0 && alive(p.PID) {
			t.Errorf("%s (pid %d) still running after dev stopped", p.ID, p.PID)
		}
	}
}

func distinct(xs []string) int {
	m := map[string]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return len(m)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestCLIWithoutBusFailsFast checks that with no NATS reachable the CLI fails
// within seconds with one line naming the URL it tried.
func TestCLIWithoutBusFailsFast(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	start := time.Now()
	cmd := exec.Command(rehomeBin, "cluster", "status", "--nats", url)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v", err)
	}
	msg := strings.TrimSpace(stderr.String())
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, url) {
		t.Fatalf("want one line naming %s, got %q", url, msg)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s to fail", d)
	}
}
