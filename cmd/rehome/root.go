package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/shardapi"
	"github.com/rehome/rehome/shared/tlsconf"
)

// globals are the flags every command shares.
type globals struct {
	natsURL string
	envFile string
	tlsCA   string
	timeout time.Duration

	urlFrom string // where the bus URL came from (findSecrets), for errors
}

// run parses args, runs the command and returns the process exit code.
func run(args []string) (int, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(&globals{})
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		return 1, err
	}
	return 0, nil
}

// newRoot builds the whole command tree over g. Every command group (a
// command with subcommands and nothing to run itself) refuses an unknown or
// missing subcommand with an error instead of printing help and exiting 0.
func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "rehome",
		Short:         "rehome keeps every shard of a distributed store at full redundancy",
		SilenceUsage:  true,
		SilenceErrors: true,
		// --env-file is read before anything else looks at the environment.
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if g.envFile != "" {
				if err := envfile.Load(g.envFile); err != nil {
					return err
				}
			}
			if g.tlsCA != "" {
				// Every client (bus, storage API, healthcheck) reads the CA
				// from the environment.
				return os.Setenv(tlsconf.EnvCA, g.tlsCA)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.natsURL, "nats", "", "NATS URL (default $"+bus.EnvURL+", then the one in ./"+defaultSecrets+", then "+bus.DefaultURL+")")
	root.PersistentFlags().StringVar(&g.envFile, "env-file", "", "read KEY=value lines (e.g. "+bus.EnvURL+", "+shardapi.EnvToken+") from this file first, overriding the environment")
	root.PersistentFlags().StringVar(&g.tlsCA, "tls-ca", "", "speak TLS to the bus and the storage nodes, trusting this PEM CA (default $"+tlsconf.EnvCA+")")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 5*time.Second, "how long to wait for the bus and the planner")
	root.AddCommand(
		devCmd(g),
		putCmd(g), getCmd(g), lsCmd(g), rmCmd(g), inspectCmd(g),
		clusterCmd(g), healCmd(g), eventsCmd(g), nodeCmd(g), rebalanceCmd(g),
		simCmd(), storageCmd(g), detectorCmd(g), plannerCmd(g), moverCmd(g), s3Cmd(g), consoleCmd(g), healthcheckCmd(), authCmd(),
	)
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands gives every group under root (a command with
// subcommands and no Run of its own) a RunE that fails naming the unknown
// subcommand, or the missing one. Cobra would print the group's help and
// exit 0, and a script would take a typo for success.
func refuseUnknownSubcommands(root *cobra.Command) {
	for _, c := range root.Commands() {
		refuseUnknownSubcommands(c)
		if !c.HasSubCommands() || c.Runnable() {
			continue
		}
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			var names []string
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			if len(args) == 0 {
				return fmt.Errorf("%s needs a subcommand: %s", cmd.CommandPath(), strings.Join(names, ", "))
			}
			return fmt.Errorf("unknown command %q for %q: want one of %s", args[0], cmd.CommandPath(), strings.Join(names, ", "))
		}
	}
}

// oneLine folds a multi-line error into one line for stderr.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// session is a CLI's connection to the bus.
type session struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func (s *session) Close() { s.nc.Close() }

// connect dials the bus named by --nats / $REHOME_NATS_URL (or found in
// ./rehome-data/secrets.env, see findSecrets), failing within the timeout
// with a message naming the URL, where it came from and what to source.
func (g *globals) connect(name string) (*session, error) {
	if err := g.findSecrets(); err != nil {
		return nil, err
	}
	url := bus.URL(g.natsURL)
	nc, err := bus.Connect(url, name, g.timeout)
	if err != nil {
		return nil, fmt.Errorf("%w; %s", err, g.connectHint(err))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream at %s: %w", bus.Redact(url), err)
	}
	return &session{nc: nc, js: js}, nil
}

// shardClient returns a storage API client using $REHOME_TOKEN.
func shardClient() *shardapi.Client {
	return shardapi.New(os.Getenv(shardapi.EnvToken))
}

// callOnce connects to the bus, sends one control request to the acting
// planner, decodes its reply into out and disconnects, all within timeout.
func (g *globals) callOnce(ctx context.Context, subject string, req, out any, timeout time.Duration) error {
	s, err := g.connect("rehome-cli")
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return bus.Call(ctx, s.nc, subject, req, out)
}

// callCtx bounds one control call by the --timeout flag.
func (g *globals) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.timeout)
}
