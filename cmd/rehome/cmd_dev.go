package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rehome/rehome/cmd/rehome/devcluster"
	"github.com/rehome/rehome/shared/telemetry"
)

func devCmd(_ *globals) *cobra.Command {
	cfg := devcluster.Config{
		Dir: "rehome-data", Nodes: 6, Racks: 3, Movers: 2, Planners: 1, NATSPort: 4222,
		Grace: 10 * time.Second, SuspectAfter: 3 * time.Second, Heartbeat: time.Second, MaxSilent: 0.5, LogLevel: "info",
	}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run the local cluster (embedded NATS + every service as its own process) until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("dev: find own binary: %w", err)
			}
			cfg.Exe = exe
			return devcluster.Run(cmd.Context(), cfg, cmd.OutOrStdout(), telemetry.Logger(os.Stderr, "dev", cfg.LogLevel))
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Dir, "dir", cfg.Dir, "data directory (NATS store, node disks, logs, processes.json, secrets.env)")
	fl.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "storage nodes (storage-1..N)")
	fl.IntVar(&cfg.Racks, "racks", cfg.Racks, "racks; nodes are dealt round-robin onto rack-1..R")
	fl.IntVar(&cfg.Movers, "movers", cfg.Movers, "mover processes")
	fl.IntVar(&cfg.Planners, "planners", cfg.Planners, "planner processes (one acts at a time, the others stand by)")
	fl.StringArrayVar(&cfg.StorageArgs, "storage-flag", nil, "extra flag for every storage node, repeatable (e.g. --storage-flag=--scrub-rate=0)")
	fl.StringArrayVar(&cfg.DetectorArgs, "detector-flag", nil, "extra flag for the detector, repeatable (e.g. --detector-flag=--flap-window=5m)")
	fl.StringArrayVar(&cfg.PlannerArgs, "planner-flag", nil, "extra flag for every planner, repeatable (e.g. --planner-flag=--max-bytes-per-sec=50000000)")
	fl.IntVar(&cfg.NATSPort, "nats-port", cfg.NATSPort, "embedded NATS client port")
	fl.IntVar(&cfg.ConsolePort, "console-port", 8080, "the operator's page's port on 127.0.0.1 (0: none; secrets.env gets REHOME_CONSOLE_URL)")
	fl.IntVar(&cfg.S3Port, "s3-port", 9000, "the S3 gateway's port on 127.0.0.1 (0: no gateway; secrets.env gets the AWS_* lines)")
	fl.DurationVar(&cfg.Grace, "grace", cfg.Grace, "silence past suspicion before a node is down")
	fl.DurationVar(&cfg.SuspectAfter, "suspect-after", cfg.SuspectAfter, "silence before a node is suspect")
	fl.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "storage heartbeat interval")
	fl.Float64Var(&cfg.MaxSilent, "max-silent-share", cfg.MaxSilent, "hold down verdicts when more than this share of nodes is silent at once")
	fl.Int64Var(&cfg.Capacity, "capacity", 0, "per-node capacity in bytes (0: the filesystem's size)")
	fl.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "children's log level: info or debug")
	fl.StringVar(&cfg.OTLPEndpoint, "otlp", "", "send every child's traces to this OTLP endpoint (e.g. http://127.0.0.1:4318; sets OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_TRACES_EXPORTER=otlp)")
	fl.BoolVar(&cfg.TLS, "tls", false, "TLS on the bus and every storage node's API, with a development CA kept in <dir>/tls (secrets.env gets REHOME_TLS_CA)")
	fl.BoolVar(&cfg.MTLS, "mtls", false, "as --tls, and require client certificates on both (secrets.env also gets REHOME_TLS_CERT and REHOME_TLS_KEY)")
	return cmd
}
