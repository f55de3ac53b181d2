//go:build stack

package stacktest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Names the compose stack gives its containers and network (deploy/compose.yaml).
const (
	network      = "rehome-net"
	cliContainer = "rehome-cli"
	storagePort  = "7000"
	metricsPort  = "9100"
	suspectAfter = 3 * time.Second // the detector's default
)

// stack is the running compose stack as the tests see it: the docker client,
// the host's rehome CLI (bus-only commands, through the published NATS ports),
// the cli container (commands that reach the storage nodes) and a directory
// both see.
type stack struct {
	docker  string
	bin     string
	env     []string // the host CLI's environment: REHOME_NATS_URL, REHOME_TOKEN
	token   string
	hostDir string // where the test writes files...
	cliDir  string // ...and where the cli container sees them
	jaeger  string
	grace   time.Duration
	prefix  string // object keys of this run start with it

	mu      sync.Mutex
	objects map[string]object // what was stored, by key
	events  *eventLog
}

// object is what the test stored under a key.
type object struct {
	sha     string
	size    int64
	erasure bool
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// newStack describes the running stack from the environment `make stack-test`
// sets (defaults: paths relative to this package, docker from PATH). It skips
// the test when no Docker engine answers and fails when the stack is not up.
func newStack(t *testing.T) *stack {
	t.Helper()
	docker := getenv("DOCKER", "docker")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("stack tests skipped: no Docker engine answers (%s info: %v: %s)", docker, err, strings.TrimSpace(string(out)))
	}
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	s := &stack{
		docker:  docker,
		bin:     abs(getenv("REHOME_BIN", "../../bin/rehome")),
		hostDir: abs(getenv("REHOME_STACK_WORKDIR", "../.build/stacktest")),
		jaeger:  getenv("REHOME_STACK_JAEGER", "http://127.0.0.1:16686"),
		grace:   10 * time.Second,
		prefix:  fmt.Sprintf("st%d-", time.Now().Unix()),
		objects: map[string]object{},
	}
	if g := os.Getenv("REHOME_STACK_GRACE"); g != "" {
		d, err := time.ParseDuration(g)
		if err != nil {
			t.Fatalf("REHOME_STACK_GRACE: %v", err)
		}
		s.grace = d
	}
	root := abs(getenv("REHOME_STACK_CLI_ROOT", "../.."))
	rel, err := filepath.Rel(root, s.hostDir)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("REHOME_STACK_WORKDIR %s must lie under REHOME_STACK_CLI_ROOT %s (mounted at /work in %s)", s.hostDir, root, cliContainer)
	}
	s.cliDir = "/work/" + filepath.ToSlash(rel)

	secrets := abs(getenv("REHOME_STACK_ENV", "../.build/secrets.env"))
	b, err := os.ReadFile(secrets)
	if err != nil {
		t.Fatalf("the stack's secrets (written by make stack-up): %v", err)
	}
	s.env = os.Environ()
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		s.env = append(s.env, k+"="+v)
		if k == "REHOME_TOKEN" {
			s.token = v
		}
	}
	if _, err := os.Stat(s.bin); err != nil {
		t.Fatalf("the rehome CLI (make build): %v", err)
	}
	if st, err := s.dockerOut("inspect", "-f", "{{.State.Running}}", cliContainer); err != nil || strings.TrimSpace(st) != "true" {
		t.Fatalf("the stack is not running (start it with make stack-up, or run make stack-test): %v", err)
	}
	if err := os.MkdirAll(filepath.Join(s.hostDir, "got"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.hostDir) })
	return s
}

// run runs a command with env, bounded by timeout, and returns its stdout; the
// error carries stderr.
func run(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// dockerOut runs the docker client.
func (s *stack) dockerOut(args ...string) (string, error) {
	return run(60*time.Second, nil, s.docker, args...)
}

// dockerDo runs the docker client and fails the test on an error.
func (s *stack) dockerDo(t *testing.T, args ...string) {
	t.Helper()
	if _, err := s.dockerOut(args...); err != nil {
		t.Fatal(err)
	}
}

// host runs the host's rehome CLI (bus-only commands) and returns its stdout.
func (s *stack) host(args ...string) (string, error) {
	return run(30*time.Second, s.env, s.bin, args...)
}

// inCLI runs rehome inside the cli container, in the test's directory: the
// commands that talk to storage nodes (put, get) need the stack's network.
func (s *stack) inCLI(args ...string) (string, error) {
	return s.dockerOut(append([]string{"exec", "-w", s.cliDir, cliContainer, "/rehome"}, args...)...)
}

// eventually polls cond every 250 ms until it returns nil, failing the test
// with what and the last error after timeout. It returns the time it took.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting until %s: %v", timeout, what, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ---- events ---------------------------------------------------------------

// ev is one line of `rehome events --json`, stamped with its arrival.
type ev struct {
	at      time.Time
	Subject string          `json:"subject"`
	Data    json.RawMessage `json:"data"`
}

// eventLog records every event the host's `rehome events --json` prints.
type eventLog struct {
	mu   sync.Mutex
	list []ev
}

// startEvents tails the events for the test's lifetime and waits until the
// tail is live (a heal.progress event, published every second, arrived).
func (s *stack) startEvents(t *testing.T) {
	t.Helper()
	l := &eventLog{}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, s.bin, "events", "--json")
	cmd.Env = s.env
	cmd.Stderr = os.Stderr
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
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var e ev
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue
			}
			e.at = time.Now()
			l.mu.Lock()
			l.list = append(l.list, e)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; _ = cmd.Wait() })
	s.events = l
	eventually(t, 30*time.Second, "the event tail is live", func() error {
		if len(l.since(time.Time{}, "rehome.heal.progress")) == 0 {
			return fmt.Errorf("no rehome.heal.progress event yet")
		}
		return nil
	})
}

// since returns the events that arrived at or after mark whose subject starts
// with prefix.
func (l *eventLog) since(mark time.Time, prefix string) []ev {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ev
	for _, e := range l.list {
		if !e.at.Before(mark) && strings.HasPrefix(e.Subject, prefix) {
			out = append(out, e)
		}
	}
	return out
}

// ---- cluster views ----------------------------------------------------------

// nodeStatus and clusterStatus are `rehome cluster status --json` (SPEC §3).
type nodeStatus struct {
	ID     string `json:"id"`
	Rack   string `json:"rack"`
	State  string `json:"state"`
	Addr   string `json:"addr"`
	Shards int    `json:"shards"`
	Bytes  int64  `json:"bytes"`
}

type clusterStatus struct {
	Nodes           []nodeStatus `json:"nodes"`
	Shards          int          `json:"shards"`
	UnderReplicated int          `json:"under_replicated"`
	Lost            int          `json:"lost"`
	BytesRemaining  int64        `json:"bytes_remaining"`
	InFlight        int          `json:"in_flight"`
}

func (c clusterStatus) node(id string) nodeStatus {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nodeStatus{ID: id, State: "absent"}
}

func (s *stack) status() (clusterStatus, error) {
	var st clusterStatus
	out, err := s.host("cluster", "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("cluster status --json: %w", err)
	}
	return st, nil
}

// inspection is `rehome inspect KEY --json` (SPEC §3).
type inspection struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Layout struct {
		RF int `json:"rf"`
		K  int `json:"k"`
		M  int `json:"m"`
	} `json:"layout"`
	Shards []struct {
		ID        string   `json:"id"`
		Nodes     []string `json:"nodes"`
		DownNodes []string `json:"down_nodes"`
	} `json:"shards"`
}

func (s *stack) inspect(key string) (inspection, error) {
	var in inspection
	out, err := s.host("inspect", key, "--json")
	if err != nil {
		return in, err
	}
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		return in, fmt.Errorf("inspect --json: %w", err)
	}
	return in, nil
}

// keys returns the stored keys, sorted.
func (s *stack) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ks []string
	for k := range s.objects {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// redundancy checks every stored object's shards: each replicated chunk on at
// least RF live nodes (exactly RF, and no down holder left in the map, when
// exact), each erasure-coded piece on one live node. It returns the shard ids
// the map places on each node.
func (s *stack) redundancy(exact bool) (map[string][]string, error) {
	byNode := map[string][]string{}
	for _, k := range s.keys() {
		in, err := s.inspect(k)
		if err != nil {
			return nil, err
		}
		want := in.Layout.RF
		if in.Layout.K > 0 {
			want = 1
		}
		for _, sh := range in.Shards {
			switch {
			case len(sh.Nodes) < want:
				return nil, fmt.Errorf("%s: shard %s on %d live nodes %v, want %d", k, sh.ID, len(sh.Nodes), sh.Nodes, want)
			case exact && len(sh.Nodes) != want:
				return nil, fmt.Errorf("%s: shard %s on %d nodes %v, want exactly %d (surplus not trimmed)", k, sh.ID, len(sh.Nodes), sh.Nodes, want)
			case exact && len(sh.DownNodes) > 0:
				return nil, fmt.Errorf("%s: shard %s still lists down holders %v", k, sh.ID, sh.DownNodes)
			}
			for _, n := range sh.Nodes {
				byNode[n] = append(byNode[n], sh.ID)
			}
		}
	}
	return byNode, nil
}

// ---- objects ------------------------------------------------------------------

// writeFile writes size deterministic pseudo-random bytes to the test
// directory and returns their checksum.
func (s *stack) writeFile(t *testing.T, name string, size int, seed uint64) object {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	if err := os.WriteFile(filepath.Join(s.hostDir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return object{sha: hex.EncodeToString(sum[:]), size: int64(size)}
}

// put stores files (keys = file names) through the cli container, retrying
// for up to retryFor (a write across a NATS leader election may need a second
// try; a retry that finds the key already stored checks it holds these bytes).
// It records the objects as expected.
func (s *stack) put(t *testing.T, retryFor time.Duration, files map[string]object, extra ...string) {
	t.Helper()
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		args := append([]string{"put", n}, extra...)
		var failures []string
		took := eventually(t, retryFor+time.Second, "rehome put "+n+" succeeds", func() error {
			_, err := s.inCLI(args...)
			if err != nil && len(failures) > 0 && strings.Contains(err.Error(), "exists") {
				in, ierr := s.inspect(n)
				if ierr == nil && in.SHA256 == files[n].sha {
					return nil // an earlier try got through
				}
			}
			if err != nil {
				failures = append(failures, err.Error())
			}
			return err
		})
		if len(failures) > 0 {
			t.Logf("put %s: %d failed tries before success %.1f s later: %s", n, len(failures), took.Seconds(), strings.Join(failures, "; "))
		}
		s.mu.Lock()
		s.objects[n] = files[n]
		s.mu.Unlock()
	}
}

// verifyAll reads every stored object back through the cli container and
// compares its bytes' checksum with what was written.
func (s *stack) verifyAll() error {
	for _, k := range s.keys() {
		s.mu.Lock()
		o := s.objects[k]
		s.mu.Unlock()
		if _, err := s.inCLI("get", k, "-o", "got/"+k); err != nil {
			return err
		}
		p := filepath.Join(s.hostDir, "got", k)
		b, err := os.ReadFile(p)
		os.Remove(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != o.sha || int64(len(b)) != o.size {
			return fmt.Errorf("%s: read %d bytes sha256 %s, wrote %d bytes sha256 %s", k, len(b), got, o.size, o.sha)
		}
	}
	return nil
}

// ---- containers ------------------------------------------------------------------

// ip returns a container's address on the stack's network (reachable from
// the host on Linux).
func (s *stack) ip(name string) (string, error) {
	out, err := s.dockerOut("inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, name)
	ip := strings.TrimSpace(out)
	if err == nil && (ip == "" || ip == "<no value>") {
		err = fmt.Errorf("%s has no address on %s", name, network)
	}
	return ip, err
}

// health returns a container's health status ("healthy", "starting", ...) or
// its state when it has no health check.
func (s *stack) health(name string) string {
	out, err := s.dockerOut("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", name)
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(out)
}

// waitHealthy starts name if it is not running and waits until it is healthy.
func (s *stack) waitHealthy(t *testing.T, name string) {
	t.Helper()
	if out, _ := s.dockerOut("inspect", "-f", "{{.State.Running}}", name); strings.TrimSpace(out) != "true" {
		s.dockerDo(t, "start", name)
	}
	eventually(t, 60*time.Second, name+" is healthy", func() error {
		if h := s.health(name); h != "healthy" {
			return fmt.Errorf("%s is %s", name, h)
		}
		return nil
	})
}

// httpGet fetches url (with the storage token when auth) and returns the body.
func (s *stack) httpGet(url string, auth bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// acting reports whether a planner container acts (its rehome_planner_acting
// gauge is 1).
func (s *stack) acting(name string) (bool, error) {
	ip, err := s.ip(name)
	if err != nil {
		return false, err
	}
	b, err := s.httpGet("http://"+ip+":"+metricsPort+"/metrics", false)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rehome_planner_acting "); ok {
			return strings.TrimSpace(v) == "1", nil
		}
	}
	return false, fmt.Errorf("%s: no rehome_planner_acting in /metrics", name)
}

// inventory lists the shard ids a storage node holds on disk (GET /v1/shards).
func (s *stack) inventory(node string) ([]string, error) {
	ip, err := s.ip("rehome-" + node)
	if err != nil {
		return nil, err
	}
	b, err := s.httpGet("http://"+ip+":"+storagePort+"/v1/shards", true)
	if err != nil {
		return nil, err
	}
	var inv struct {
		Shards []struct {
			ID string `json:"id"`
		} `json:"shards"`
	}
	if err := json.Unmarshal(b, &inv); err != nil {
		return nil, fmt.Errorf("%s inventory: %w", node, err)
	}
	var ids []string
	for _, sh := range inv.Shards {
		ids = append(ids, sh.ID)
	}
	return ids, nil
}
