package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/rehome/rehome/services/detector"
	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/services/planner"
	"github.com/rehome/rehome/services/storage"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/shardapi"
	"github.com/rehome/rehome/shared/telemetry"
)

// serviceFlags are shared by every `rehome <service>` command.
type serviceFlags struct {
	replicas int
	metrics  string
	logLevel string
	connect  time.Duration
	role     string // the command's name: storage, detector, planner, mover
}

func (f *serviceFlags) register(cmd *cobra.Command, metrics bool) {
	f.role = cmd.Name()
	cmd.Flags().IntVar(&f.replicas, "replicas", 1, "replicas of rehome's streams and buckets (3 on a NATS cluster)")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "info or debug")
	cmd.Flags().DurationVar(&f.connect, "connect-timeout", 60*time.Second, "how long to keep trying to reach NATS at start")
	if metrics {
		cmd.Flags().StringVar(&f.metrics, "metrics", "", "serve /metrics and /healthz on this address (e.g. 127.0.0.1:9100)")
	}
}

// serviceEnv is what a service is wired with.
type serviceEnv struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	shutdown func(context.Context) error // flushes traces
}

// traceFlushTimeout bounds the flush of buffered spans at exit.
const traceFlushTimeout = 5 * time.Second

// close flushes the spans still buffered (bounded by traceFlushTimeout) and
// closes the bus connection.
func (e *serviceEnv) close() {
	ctx, cancel := context.WithTimeout(context.Background(), traceFlushTimeout)
	defer cancel()
	if err := e.shutdown(ctx); err != nil {
		e.log.Warn("flushing traces", "err", err)
	}
	e.nc.Close()
}

// startService sets up tracing (telemetry.Setup: off unless the OTEL_*
// environment asks for it; service.name rehome-<role>, instance name),
// connects to NATS (retrying until --connect-timeout), ensures rehome's
// streams and buckets exist and returns the wiring. The caller calls close.
func (g *globals) startService(ctx context.Context, name string, f *serviceFlags) (env *serviceEnv, err error) {
	log := telemetry.Logger(os.Stderr, name, f.logLevel)
	shutdown, err := telemetry.Setup(ctx, "rehome-"+f.role, telemetry.WithInstance(name), telemetry.WithLogger(log))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = shutdown(context.Background())
		}
	}()
	if telemetry.Enabled() {
		log.Info("tracing on", "service_name", "rehome-"+f.role)
	}
	url := bus.URL(g.natsURL)
	deadline := time.Now().Add(f.connect)
	var nc *nats.Conn
	for {
		nc, err = bus.Connect(url, name, 2*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		log.Warn("waiting for NATS", "url", bus.Redact(url), "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	// The server's asynchronous refusals (a permission this role lacks, a
	// slow consumer) would otherwise go unseen.
	nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil {
			log.Warn("bus error", "subject", sub.Subject, "err", err)
			return
		}
		log.Warn("bus error", "err", err)
	})
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	ectx, cancel := context.WithTimeout(ctx, f.connect)
	defer cancel()
	if err := bus.Ensure(ectx, js, bus.Config{Replicas: f.replicas}); err != nil {
		nc.Close()
		return nil, err
	}
	log.Info("connected", "url", nc.ConnectedUrlRedacted())
	return &serviceEnv{nc: nc, js: js, log: log, shutdown: shutdown}, nil
}

// serveMetrics serves reg on /metrics and the bus connection's health on
// /healthz until ctx ends. An empty addr serves nothing.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, nc *nats.Conn, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !nc.IsConnected() {
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("metrics", "addr", ln.Addr().String())
	return nil
}

// service is what runService runs: a blocking Run and its metrics.
type service interface {
	Run(ctx context.Context) error
	Registry() *prometheus.Registry
}

// runService connects, builds the service with build, serves its metrics and
// runs it until the command's context ends.
func (g *globals) runService(ctx context.Context, name string, f *serviceFlags, build func(*serviceEnv) (service, error)) error {
	env, err := g.startService(ctx, name, f)
	if err != nil {
		return err
	}
	defer env.close()
	svc, err := build(env)
	if err != nil {
		return err
	}
	if err := serveMetrics(ctx, f.metrics, svc.Registry(), env.nc, env.log); err != nil {
		return err
	}
	return svc.Run(ctx)
}

func storageCmd(g *globals) *cobra.Command {
	var f serviceFlags
	var tf serverTLSFlags
	cfg := storage.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "storage --id ID --rack RACK --dir DIR",
		Short: "run one storage node (shard HTTP API, heartbeats)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.ID == "" || cfg.Rack == "" || cfg.Dir == "" {
				return errors.New("storage needs --id, --rack and --dir")
			}
			if cfg.Token == "" {
				cfg.Token = os.Getenv(shardapi.EnvToken)
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			tlsCfg, err := tf.config()
			if err != nil {
				return err
			}
			cfg.TLS = tlsCfg
			env, err := g.startService(cmd.Context(), cfg.ID, &f)
			if err != nil {
				return err
			}
			defer env.close()
			svc, err := storage.New(cfg, env.nc, env.js, env.log)
			if err != nil {
				return err
			}
			env.log.Info("storage node listening", "addr", svc.Addr(), "rack", cfg.Rack, "dir", cfg.Dir)
			return svc.Run(cmd.Context())
		},
	}
	f.register(cmd, false)
	tf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&cfg.ID, "id", "", "stable node identity (e.g. storage-3)")
	fl.StringVar(&cfg.Rack, "rack", "", "rack (failure domain) of this node")
	fl.StringVar(&cfg.Dir, "dir", "", "data directory")
	fl.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP listen address (port 0 picks one)")
	fl.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "address others use to reach this node (default: the bound listen address)")
	fl.Int64Var(&cfg.CapacityBytes, "capacity", cfg.CapacityBytes, "capacity in bytes (0: the filesystem's size)")
	fl.DurationVar(&cfg.HeartbeatInterval, "heartbeat", cfg.HeartbeatInterval, "heartbeat interval")
	fl.StringVar(&cfg.Token, "token", "", "storage API bearer token (default $"+shardapi.EnvToken+")")
	fl.Int64Var(&cfg.ScrubBytesPerSec, "scrub-rate", cfg.ScrubBytesPerSec, "background checksum scrub, bytes per second (0: off)")
	fl.DurationVar(&cfg.ScrubEvery, "scrub-every", cfg.ScrubEvery, "start a scrub pass this long after the previous one began")
	fl.DurationVar(&cfg.ScrubDelay, "scrub-delay", cfg.ScrubDelay, "first scrub pass this long after start")
	fl.Int64Var(&cfg.RepairPaceBytesPerSec, "repair-pace", cfg.RepairPaceBytesPerSec, "lowest repair pace through this node, bytes per second, while it serves clients; the pace adapts to client latency above it (0: never pace)")
	fl.IntVar(&cfg.RepairNice, "repair-nice", cfg.RepairNice, "CPU priority (nice value, 1-19) of repair and scrub threads: clients get the cores first (0: the process's own)")
	return cmd
}

func detectorCmd(g *globals) *cobra.Command {
	var f serviceFlags
	cfg := detector.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "detector",
		Short: "run a failure detector (heartbeats -> suspect/down/up verdicts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.SystemURL == "" {
				cfg.SystemURL = os.Getenv(envSystemURL) // read after --env-file
			}
			return g.runService(cmd.Context(), "detector", &f, func(env *serviceEnv) (service, error) {
				return detector.New(cfg, env.nc, env.js, env.log, time.Now)
			})
		},
	}
	f.register(cmd, true)
	fl := cmd.Flags()
	fl.DurationVar(&cfg.SuspectAfter, "suspect-after", cfg.SuspectAfter, "silence after which a node is suspect")
	fl.DurationVar(&cfg.Grace, "grace", cfg.Grace, "further silence after which a suspect node is down")
	fl.Float64Var(&cfg.MaxSilentShare, "max-silent-share", cfg.MaxSilentShare, "hold down verdicts when more than this share of nodes is silent at once")
	fl.DurationVar(&cfg.FlapWindow, "flap-window", cfg.FlapWindow, "suspect episodes within this window count as flaps")
	fl.IntVar(&cfg.FlapThreshold, "flap-threshold", cfg.FlapThreshold, "flaps tolerated before the grace doubles per flap")
	fl.DurationVar(&cfg.MaxGrace, "max-grace", cfg.MaxGrace, "cap of the damped grace (0: 10 x grace; = grace turns damping off)")
	fl.StringVar(&cfg.SystemURL, "system-nats", "", "NATS URL with system-account credentials: suspect a node as soon as its connection closes (default $"+envSystemURL+")")
	return cmd
}

// envSystemURL names the environment variable with the detector's
// system-account NATS URL.
const envSystemURL = "REHOME_SYSTEM_NATS_URL"

func plannerCmd(g *globals) *cobra.Command {
	var f serviceFlags
	cfg := planner.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "planner",
		Short: "run the planner (placement map, repair plans)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			return g.runService(cmd.Context(), cfg.ID, &f, func(env *serviceEnv) (service, error) {
				return planner.New(cfg, env.nc, env.js, env.log, time.Now)
			})
		},
	}
	f.register(cmd, true)
	fl := cmd.Flags()
	fl.StringVar(&cfg.ID, "id", cfg.ID, "planner name (lease holder, logs)")
	fl.IntVar(&cfg.PerNodeIn, "per-node-in", cfg.PerNodeIn, "concurrent repairs writing to one node")
	fl.IntVar(&cfg.PerNodeOut, "per-node-out", cfg.PerNodeOut, "concurrent repairs reading from one node")
	fl.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "concurrent repairs cluster-wide")
	fl.IntVar(&cfg.Batch, "batch", cfg.Batch, "most shards (16 MiB or less, 64 MiB in all) of one source->target pair per copy task; a batch takes one repair slot (1: no batching)")
	fl.DurationVar(&cfg.TaskTimeout, "task-timeout", cfg.TaskTimeout, "re-plan a task with no result after this long")
	fl.DurationVar(&cfg.StallAfter, "stall-after", cfg.StallAfter, "report a stall when nothing was verified for this long while work remains")
	fl.Int64Var(&cfg.MaxBytesPerSec, "max-bytes-per-sec", cfg.MaxBytesPerSec, "cap on repair bytes per second cluster-wide (0: no cap)")
	fl.Float64Var(&cfg.MaxFill, "max-fill", cfg.MaxFill, "never choose a repair target fuller than this share of its capacity")
	fl.Var(percentPoints{&cfg.BalanceBand}, "balance-band", "rebalance until every node's fill is within this many percentage points of the mean (0: never rebalance)")
	fl.StringVar(&cfg.Placement, "placement", cfg.Placement, "where new replicated shards go: random (least filled) or copyset (a few fixed rack-distinct groups; repairs stay inside them)")
	fl.IntVar(&cfg.ScatterWidth, "scatter-width", cfg.ScatterWidth, "with --placement copyset: about how many other nodes share shards with one node (lower: rarer loss, slower restore)")
	fl.IntVar(&cfg.MaxAttempts, "max-attempts", cfg.MaxAttempts, "attempts per shard before it is reported failed and parked")
	fl.DurationVar(&cfg.RetryLater, "retry-later", cfg.RetryLater, "how long a parked shard waits before it is tried again")
	fl.BoolVar(&cfg.AutoHeal, "auto-heal", cfg.AutoHeal, "check a node's inventory and heal it in place when it rejoins with a new boot id or returns from down")
	fl.DurationVar(&cfg.OrphanScan, "orphan-scan", cfg.OrphanScan, "how often to sweep every up node for copies the map does not know (0: never)")
	fl.DurationVar(&cfg.OrphanGrace, "orphan-grace", cfg.OrphanGrace, "delete a copy the map does not know only when its file is older than this")
	fl.Float64Var(&cfg.OrphanMaxShare, "orphan-max-share", cfg.OrphanMaxShare, "delete nothing on a node when more than this share of its inventory is unknown to the map")
	return cmd
}

func moverCmd(g *globals) *cobra.Command {
	var f serviceFlags
	cfg := mover.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "mover",
		Short: "run a mover (copies shards for repair tasks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Token == "" {
				cfg.Token = os.Getenv(shardapi.EnvToken)
			}
			name := "mover"
			if cfg.ID != "" {
				name = cfg.ID
			}
			return g.runService(cmd.Context(), name, &f, func(env *serviceEnv) (service, error) {
				return mover.New(cfg, env.nc, env.js, nil, env.log)
			})
		},
	}
	f.register(cmd, true)
	fl := cmd.Flags()
	fl.StringVar(&cfg.ID, "id", "", "mover name in logs")
	fl.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent tasks")
	fl.StringVar(&cfg.Token, "token", "", "storage API bearer token (default $"+shardapi.EnvToken+")")
	return cmd
}

func healthcheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "healthcheck URL",
		Short: "probe a service's health URL (exit 0 when it answers 2xx)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
			if err != nil {
				return err
			}
			client, err := healthClient()
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("%s answered %s", args[0], resp.Status)
			}
			return nil
		},
	}
}

// percentPoints is a flag in percentage points ("5") stored as a share (0.05).
type percentPoints struct{ share *float64 }

func (p percentPoints) String() string {
	if p.share == nil {
		return "0"
	}
	return strconv.FormatFloat(*p.share*100, 'g', -1, 64)
}

func (p percentPoints) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "pp"), 64)
	if err != nil || v < 0 || v >= 100 {
		return fmt.Errorf("want percentage points between 0 and 100, e.g. 5")
	}
	*p.share = v / 100
	return nil
}

func (percentPoints) Type() string { return "pp" }
