// Package devcluster runs rehome's local cluster: an embedded NATS server with
// JetStream in this process, and every service as its own OS process of the
// same binary, supervised until the context ends.
package devcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/cmd/rehome/credstore"
	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/services/s3"
	"github.com/rehome/rehome/shared/access"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/embedded"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/shardapi"
)

// Config describes the local cluster.
type Config struct {
	Dir          string        // data dir: nats/, storage-N/, logs/, processes.json, secrets.env
	Nodes        int           // storage nodes, named storage-1..N
	Racks        int           // racks rack-1..R; nodes are dealt round-robin
	Movers       int           // mover processes
	Planners     int           // planner processes (one acts, the others stand by)
	PlannerArgs  []string      // extra flags for every planner (throttles)
	DetectorArgs []string      // extra flags for the detector (flap damping)
	StorageArgs  []string      // extra flags for every storage node (scrub)
	NATSPort     int           // embedded server's client port
	S3Port       int           // the S3 gateway's port on 127.0.0.1 (0: no gateway)
	ConsolePort  int           // the operator's page's port on 127.0.0.1 (0: no console)
	Grace        time.Duration // detector grace after suspicion
	SuspectAfter time.Duration // silence before suspicion
	Heartbeat    time.Duration // storage heartbeat interval
	MaxSilent    float64       // detector's mass-silence share (0: its default)
	Capacity     int64         // per-node capacity in bytes (0: the filesystem's)
	Exe          string        // the rehome binary to start children from
	LogLevel     string
	// OTLPEndpoint, when set, turns tracing on in every child: it gets
	// OTEL_EXPORTER_OTLP_ENDPOINT=OTLPEndpoint and OTEL_TRACES_EXPORTER=otlp
	// (OTLP over HTTP unless OTEL_EXPORTER_OTLP_PROTOCOL says otherwise).
	OTLPEndpoint string
	// TLS runs the bus and every storage node's API over TLS with a
	// development PKI in <dir>/tls (see tls.go); MTLS (implies TLS) also
	// requires client certificates on both.
	TLS, MTLS bool
}

// Validate rejects a configuration that cannot run.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("dev: --dir is required")
	case c.Nodes < 1 || c.Nodes > 64:
		return fmt.Errorf("dev: --nodes %d: want 1-64", c.Nodes)
	case c.Racks < 1 || c.Racks > c.Nodes:
		return fmt.Errorf("dev: --racks %d: want 1-%d (no more racks than nodes)", c.Racks, c.Nodes)
	case c.Planners < 1 || c.Planners > 5:
		return fmt.Errorf("dev: --planners %d: want 1-5", c.Planners)
	case c.Movers < 1:
		return fmt.Errorf("dev: --movers %d: want at least 1", c.Movers)
	case c.NATSPort < 1 || c.NATSPort > 65535:
		return fmt.Errorf("dev: --nats-port %d: want 1-65535", c.NATSPort)
	case c.S3Port < 0 || c.S3Port > 65535 || c.S3Port == c.NATSPort:
		return fmt.Errorf("dev: --s3-port %d: want 0 (no gateway) or 1-65535, not the NATS port", c.S3Port)
	case c.ConsolePort < 0 || c.ConsolePort > 65535 || (c.ConsolePort > 0 && (c.ConsolePort == c.NATSPort || c.ConsolePort == c.S3Port)):
		return fmt.Errorf("dev: --console-port %d: want 0 (no console) or 1-65535, not the NATS or S3 port", c.ConsolePort)
	case !(c.MaxSilent > 0 && c.MaxSilent <= 1): // NaN too
		return fmt.Errorf("dev: --max-silent-share %v: want a share in (0, 1]", c.MaxSilent)
	case c.Grace <= 0 || c.SuspectAfter <= 0 || c.Heartbeat <= 0:
		return errors.New("dev: --grace, --suspect-after and --heartbeat must be positive")
	}
	return nil
}

// Process is one line of processes.json.
type Process struct {
	Role    string   `json:"role"`
	ID      string   `json:"id"`
	Rack    string   `json:"rack,omitempty"`
	PID     int      `json:"pid"`
	Running bool     `json:"running"`
	Args    []string `json:"args"`
	Log     string   `json:"log"`
	// Metrics is the host:port serving /metrics (and /healthz) for the
	// detector, planners and movers; storage nodes serve /metrics on their
	// shard API address instead (rehome cluster status lists it).
	Metrics string `json:"metrics,omitempty"`
}

type child struct {
	Process
	cmd  *exec.Cmd
	done chan struct{}
}

// Cluster is a running local cluster.
type Cluster struct {
	cfg      Config
	log      *slog.Logger
	url      string
	token    string
	sysURL   string         // NATS URL with system-account credentials (disconnect events)
	creds    *credstore.Set // bus users (one per role and per storage node), token
	adminURL string         // c.url with the admin's credentials (this supervisor)
	// childEnv is extra KEY=value every child's env file carries.
	childEnv map[string]string
	tls      *devTLS    // nil unless Config.TLS or Config.MTLS
	mu       sync.Mutex // guards children and their Process fields
	children []*child
	fileMu   sync.Mutex // serialises writes of processes.json
}

// Run starts the cluster, prints how to use it to out, and blocks until ctx
// ends; then it stops every child (SIGTERM, SIGKILL after 10 s) and the NATS
// server. It returns an error only if the cluster could not start.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return err
	}
	cfg.Dir = dir
	for _, d := range []string{dir, filepath.Join(dir, "logs"), filepath.Join(dir, "nats"), filepath.Join(dir, envDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
	}
	secretsPath := filepath.Join(dir, "secrets.env")
	creds, err := loadCredentials(cfg)
	if err != nil {
		return err
	}
	token := creds.Token
	ncfg := embedded.Config{Host: "127.0.0.1", Port: cfg.NATSPort, StoreDir: filepath.Join(dir, "nats"),
		SystemUser: creds.System.Name, SystemPassword: creds.System.Password, Users: creds.List()}
	dtls, err := setupTLS(cfg, &ncfg)
	if err != nil {
		return err
	}
	srv, err := embedded.Start(ncfg)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	c := &Cluster{cfg: cfg, log: log, url: srv.ClientURL(), token: token, sysURL: ncfg.SystemURL(srv.ClientURL()),
		creds: creds, childEnv: map[string]string{}}
	c.useTLS(dtls)
	admin, _ := creds.User(access.Admin, "")
	c.adminURL = admin.URL(c.url)
	// secrets.env equips an operator's shell: the bus as the operator user
	// (reads everything, sends operator requests) and the storage token.
	operator, _ := creds.User(access.Operator, "")
	secrets := map[string]string{bus.EnvURL: operator.URL(c.url), shardapi.EnvToken: token}
	if cfg.S3Port > 0 {
		// The same line equips `aws` and every AWS SDK for the gateway.
		secrets["AWS_ACCESS_KEY_ID"], secrets["AWS_SECRET_ACCESS_KEY"] = creds.S3AccessKey, creds.S3SecretKey
		secrets["AWS_ENDPOINT_URL"], secrets["AWS_REGION"] = c.s3URL(), s3.DefaultConfig().Region
	}
	if cfg.ConsolePort > 0 {
		secrets[EnvConsoleURL] = c.consoleURL()
	}
	if err := envfile.Write(secretsPath, c.withTLSEnv(secrets)); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	adminEnv := c.withTLSEnv(map[string]string{bus.EnvURL: c.adminURL, shardapi.EnvToken: token})
	if err := envfile.Write(filepath.Join(dir, envDir, "admin.env"), adminEnv); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := c.ensure(ctx); err != nil {
		return err
	}
	defer c.stopAll()
	if err := c.startAll(); err != nil {
		return err
	}
	c.waitReady(ctx)
	c.banner(out)
	<-ctx.Done()
	fmt.Fprintln(out, "\nstopping the cluster...")
	return nil
}

func (c *Cluster) ensure(ctx context.Context) error {
	nc, err := bus.Connect(c.adminURL, "rehome-dev", 5*time.Second, c.busOpts()...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return bus.Ensure(ectx, js, bus.Config{Replicas: 1})
}

func (c *Cluster) startAll() error {
	cfg := c.cfg
	common := []string{"--log-level", cfg.LogLevel}
	for i := 1; i <= cfg.Nodes; i++ {
		id := storageID(i)
		rack := fmt.Sprintf("rack-%d", (i-1)%cfg.Racks+1)
		args := append([]string{"storage", "--id", id, "--rack", rack, "--dir", filepath.Join(cfg.Dir, id),
			"--heartbeat", cfg.Heartbeat.String()}, append(cfg.StorageArgs, common...)...)
		if cfg.Capacity > 0 {
			args = append(args, "--capacity", strconv.FormatInt(cfg.Capacity, 10))
		}
		args = append(args, c.storageTLSArgs()...)
		if err := c.start("storage", id, rack, args); err != nil {
			return err
		}
	}
	if err := c.start("detector", "detector", "", append([]string{"detector",
		"--grace", cfg.Grace.String(), "--suspect-after", cfg.SuspectAfter.String(),
		"--max-silent-share", strconv.FormatFloat(cfg.MaxSilent, 'g', -1, 64)}, append(cfg.DetectorArgs, common...)...)); err != nil {
		return err
	}
	for i := 1; i <= cfg.Planners; i++ {
		id := "planner"
		if cfg.Planners > 1 {
			id = fmt.Sprintf("planner-%d", i)
		}
		args := append(append([]string{"planner", "--id", id}, cfg.PlannerArgs...), common...)
		if err := c.start("planner", id, "", args); err != nil {
			return err
		}
	}
	for i := 1; i <= cfg.Movers; i++ {
		id := fmt.Sprintf("mover-%d", i)
		if err := c.start("mover", id, "", append([]string{"mover", "--id", id}, common...)); err != nil {
			return err
		}
	}
	if cfg.S3Port > 0 {
		if err := c.start("s3", s3ID, "", append([]string{"s3", "--id", s3ID, "--listen", c.s3Addr()}, common...)); err != nil {
			return err
		}
	}
	if cfg.ConsolePort > 0 {
		if err := c.start("console", consoleID, "", append([]string{"console", "--listen", c.consoleAddr()}, common...)); err != nil {
			return err
		}
	}
	return nil
}

// EnvConsoleURL names the secrets.env line with the console's address.
const EnvConsoleURL = "REHOME_CONSOLE_URL"

// consoleID names the dev cluster's console (it reads the bus as the operator).
const consoleID = "console"

func (c *Cluster) consoleAddr() string { return fmt.Sprintf("127.0.0.1:%d", c.cfg.ConsolePort) }
func (c *Cluster) consoleURL() string  { return "http://" + c.consoleAddr() }

// s3ID names the dev cluster's S3 gateway.
const s3ID = "s3-1"

func (c *Cluster) s3Addr() string { return fmt.Sprintf("127.0.0.1:%d", c.cfg.S3Port) }
func (c *Cluster) s3URL() string  { return "http://" + c.s3Addr() }

// start launches one child with its output in logs/<id>.log. The child dies
// with this process (Pdeathsig) and is in its own process group, so a terminal's
// Ctrl-C reaches only the supervisor, which then stops children in order.
func (c *Cluster) start(role, id, rack string, args []string) error {
	metrics := ""
	if role != "storage" {
		addr, err := freeAddr()
		if err != nil {
			return fmt.Errorf("dev: metrics address for %s: %w", id, err)
		}
		metrics = addr
		args = append(args, "--metrics", metrics)
	}
	envPath, err := c.writeChildEnv(role, id)
	if err != nil {
		return err
	}
	args = append(args, "--env-file", envPath)
	logPath := filepath.Join(c.cfg.Dir, "logs", id+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	cmd := exec.Command(c.cfg.Exe, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), c.otlpEnv()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("dev: start %s: %w", id, err)
	}
	ch := &child{
		Process: Process{Role: role, ID: id, Rack: rack, PID: cmd.Process.Pid, Running: true,
			Args: append([]string{c.cfg.Exe}, args...), Log: logPath, Metrics: metrics},
		cmd: cmd, done: make(chan struct{}),
	}
	c.mu.Lock()
	c.children = append(c.children, ch)
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		lf.Close()
		c.mu.Lock()
		ch.Running = false
		c.mu.Unlock()
		close(ch.done)
		c.log.Info("process exited", "id", id, "pid", ch.PID, "status", fmt.Sprint(err))
		if err := c.writeProcesses(); err != nil {
			c.log.Error("write processes.json", "err", err)
		}
	}()
	return c.writeProcesses()
}

// writeProcesses rewrites processes.json atomically from the children's state.
func (c *Cluster) writeProcesses() error {
	c.fileMu.Lock()
	defer c.fileMu.Unlock()
	c.mu.Lock()
	list := make([]Process, 0, len(c.children))
	for _, ch := range c.children {
		list = append(list, ch.Process)
	}
	c.mu.Unlock()
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(c.cfg.Dir, "processes.json"), append(b, '\n'), 0o644)
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	children := append([]*child(nil), c.children...)
	c.mu.Unlock()
	for _, ch := range children {
		_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(10 * time.Second)
	for _, ch := range children {
		select {
		case <-ch.done:
		case <-deadline:
			_ = ch.cmd.Process.Kill()
			<-ch.done
		}
	}
}

// otlpEnv is the environment that points a child's traces at the OTLP
// endpoint (nothing when none is configured).
func (c *Cluster) otlpEnv() []string {
	if c.cfg.OTLPEndpoint == "" {
		return nil
	}
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + c.cfg.OTLPEndpoint, "OTEL_TRACES_EXPORTER=otlp"}
}

// freeAddr returns a loopback address whose port is free now, for a child to
// bind a moment later. It picks below Linux's ephemeral range (32768+), so
// the many outgoing connections of a busy machine cannot take the port in
// between, as they can one the kernel handed out for ":0".
func freeAddr() (string, error) {
	var err error
	for range 50 {
		var ln net.Listener
		ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+mrand.IntN(12000))))
		if err == nil {
			addr := ln.Addr().String()
			ln.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free port in 20000-31999: %w", err)
}

func (c *Cluster) pidOf(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.children {
		if ch.ID == id {
			return ch.PID
		}
	}
	return 0
}

// waitReady polls the planner until it sees every storage node, so the
// banner's commands work as soon as they are printed. It gives up quietly
// after a while: the logs say what is wrong.
func (c *Cluster) waitReady(ctx context.Context) {
	nc, err := bus.Connect(c.adminURL, "rehome-dev", 5*time.Second, c.busOpts()...)
	if err != nil {
		return
	}
	defer nc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		var st control.ClusterStatus
		err := bus.Call(cctx, nc, event.CtlStatus, struct{}{}, &st)
		cancel()
		if err == nil && len(st.Nodes) >= c.cfg.Nodes && c.s3Ready() && c.consoleReady() {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	c.log.Warn("cluster not ready after 30s; see the logs dir")
}

// s3Ready reports whether the gateway (if any) accepts connections.
func (c *Cluster) s3Ready() bool { return c.cfg.S3Port == 0 || accepts(c.s3Addr()) }

// consoleReady reports whether the console (if any) accepts connections.
func (c *Cluster) consoleReady() bool { return c.cfg.ConsolePort == 0 || accepts(c.consoleAddr()) }

// accepts reports whether addr accepts a TCP connection.
func accepts(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func (c *Cluster) banner(out io.Writer) {
	cfg := c.cfg
	fmt.Fprintf(out, `rehome dev: %d storage nodes on %d racks, detector, %d planner(s), %d movers
  NATS      %s
  data dir  %s   (logs in logs/, processes in processes.json)
  grace     %s after %s of silence
%s%s%s
In another shell:
  set -a; . %s; set +a
  bin/rehome put README.md && bin/rehome inspect README.md
  aws s3 mb s3://backups && aws s3 cp README.md s3://backups/   # with the S3 gateway
  kill -9 %d        # storage-1; its shards are re-homed after the grace
  bin/rehome heal status --follow

Ctrl-C stops every process.
`, cfg.Nodes, cfg.Racks, cfg.Planners, cfg.Movers, c.url, cfg.Dir, cfg.Grace, cfg.SuspectAfter, c.telemetryLines(), c.s3Line(), c.consoleLine(),
		filepath.Join(cfg.Dir, "secrets.env"), c.pidOf("storage-1"))
}

// consoleLine is the banner's line on the console.
func (c *Cluster) consoleLine() string {
	if c.cfg.ConsolePort == 0 {
		return ""
	}
	return "  console   " + c.consoleURL() + "   (log in with the operator's user and password from REHOME_NATS_URL in secrets.env)\n"
}

// s3Line is the banner's line on the S3 gateway.
func (c *Cluster) s3Line() string {
	if c.cfg.S3Port == 0 {
		return ""
	}
	return "  S3        " + c.s3URL() + "   (keys and endpoint in secrets.env)\n"
}

// telemetryLines are the banner's lines on metrics and traces.
func (c *Cluster) telemetryLines() string {
	var b strings.Builder
	line := func(id, url string) {
		label := "            "
		if b.Len() == 0 {
			label = "  metrics   "
		}
		fmt.Fprintf(&b, "%s%-10s %s\n", label, id, url)
	}
	c.mu.Lock()
	for _, ch := range c.children {
		if ch.Metrics != "" {
			line(ch.ID, "http://"+ch.Metrics+"/metrics")
		}
	}
	c.mu.Unlock()
	line("storage-N", c.storageScheme()+"://<addr>/metrics (addresses: rehome cluster status)")
	if c.cfg.OTLPEndpoint != "" {
		fmt.Fprintf(&b, "  traces    OTLP to %s (one trace per incident, root span rehome.node.down)\n", c.cfg.OTLPEndpoint)
	}
	return b.String()
}

// envSystemURL names, in the detector's env file, the NATS URL with
// system-account credentials, which detectors use to see connections close
// (`rehome detector --system-nats`).
const envSystemURL = "REHOME_SYSTEM_NATS_URL"

func writeAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
