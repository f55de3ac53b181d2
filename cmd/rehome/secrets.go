package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"

	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/shardapi"
)

// defaultSecrets is where `rehome dev` (default --dir rehome-data) leaves
// the operator's secrets, relative to the directory it ran in.
const defaultSecrets = "rehome-data/secrets.env"

// sourceCmd is the line that equips a shell with a cluster's secrets.
const sourceCmd = "set -a; . " + defaultSecrets + "; set +a"

// findSecrets equips the process once, before the first connection: with no
// --env-file and neither $REHOME_NATS_URL nor $REHOME_TOKEN set, it loads
// ./rehome-data/secrets.env when it exists (SPEC §5), without overriding
// anything set. It records where the bus URL comes from in g.urlFrom, for
// connection errors.
func (g *globals) findSecrets() error {
	if g.urlFrom != "" {
		return nil
	}
	switch {
	case g.natsURL != "":
		g.urlFrom = "--nats"
	case g.envFile != "" && os.Getenv(bus.EnvURL) != "":
		g.urlFrom = "--env-file " + g.envFile
	case g.envFile == "" && os.Getenv(bus.EnvURL) == "" && os.Getenv(shardapi.EnvToken) == "":
		found, err := envfile.LoadUnset(defaultSecrets)
		if err != nil {
			return err
		}
		switch {
		case found && os.Getenv(bus.EnvURL) != "":
			g.urlFrom = "./" + defaultSecrets
		case found:
			g.urlFrom = fmt.Sprintf("the default, ./%s names no %s", defaultSecrets, bus.EnvURL)
		default:
			g.urlFrom = fmt.Sprintf("the default, no --nats, no $%s, no ./%s in %s", bus.EnvURL, defaultSecrets, cwd())
		}
	case os.Getenv(bus.EnvURL) != "":
		g.urlFrom = "$" + bus.EnvURL
	default:
		g.urlFrom = fmt.Sprintf("the default, no --nats, no $%s", bus.EnvURL)
	}
	return nil
}

// cwd is the working directory for messages ("." if unknown).
func cwd() string {
	d, err := os.Getwd()
	if err != nil {
		return "."
	}
	return d
}

// connectHint explains a failed connection in one clause: where the URL came
// from and what would equip the shell.
func (g *globals) connectHint(err error) string {
	from := "URL from " + g.urlFrom
	var fix string
	switch {
	case errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked):
		fix = "the bus refused these credentials: source the cluster's secrets (" + sourceCmd + ") or pass --env-file DIR/secrets.env"
	default:
		fix = "nothing answered: is the cluster running (make run, or rehome dev)? its secrets equip this shell: " + sourceCmd
	}
	if g.urlFrom == "./"+defaultSecrets {
		if abs, aerr := filepath.Abs(defaultSecrets); aerr == nil {
			from = "URL from " + abs
		}
	}
	return from + "; " + fix
}
