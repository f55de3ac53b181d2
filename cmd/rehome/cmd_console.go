package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/rehome/rehome/services/console"
	"github.com/rehome/rehome/shared/bus"
)

func consoleCmd(g *globals) *cobra.Command {
	var f serviceFlags
	cfg := console.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "console [--listen :8080]",
		Short: "serve the operator's live web page (stateless: run any number)",
		Long: "Serves the operator's page on --listen. It reads the bus with the credentials in its NATS URL " +
			"(the operator's, $" + bus.EnvURL + ") and asks the browser to log in with the same user and password; " +
			"an open bus leaves the page open.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.User, cfg.Password = console.CredentialsFromURL(bus.URL(g.natsURL)) // read after --env-file
			return g.runService(cmd.Context(), "console", &f, func(env *serviceEnv) (service, error) {
				return console.New(cfg, env.nc, env.js, env.log, time.Now)
			})
		},
	}
	f.register(cmd, true)
	fl := cmd.Flags()
	fl.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP listen address (port 0 picks one)")
	fl.StringVar(&cfg.TraceUI, "trace-ui", "", "a trace viewer's base URL (Jaeger: http://host:16686); incidents link to URL/trace/<id>")
	fl.DurationVar(&cfg.SessionTTL, "session-ttl", cfg.SessionTTL, "how long a login lasts")
	return cmd
}
