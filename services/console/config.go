// Package console is rehome's operator page: a stateless HTTP server that
// reads the bus with the operator's credentials and shows racks and nodes,
// the heal's totals charted over the last hour, rate and ETAs, incidents
// with their timelines, and paused heals and held verdicts, live over
// server-sent events. Every asset is embedded; the page needs no network.
package console

import (
	"errors"
	"net/url"
	"strings"
	"time"
)

// Config sets up a console.
type Config struct {
	// Listen is the HTTP listen address (":8080"; port 0 picks one).
	Listen string
	// TraceUI, when set, is a trace viewer's base URL (Jaeger:
	// http://host:16686); incidents link to TraceUI/trace/<trace id>.
	TraceUI string
	// User and Password are what the browser must log in with: the
	// operator's bus credentials. Both empty leave the page open.
	User, Password string
	// SessionTTL is how long a login lasts.
	SessionTTL time.Duration
	// Window is how far back the charts and incidents reach.
	Window time.Duration
	// Poll is how often the cluster's status is asked for (and the least
	// often the page hears from the console).
	Poll time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Listen: ":8080", SessionTTL: 12 * time.Hour, Window: time.Hour, Poll: time.Second}
}

// Validate rejects a config the console cannot serve with.
func (c Config) Validate() error {
	switch {
	case (c.User == "") != (c.Password == ""):
		return errors.New("console: a user without a password (or the reverse)")
	case c.SessionTTL <= 0 || c.Window <= 0 || c.Poll <= 0:
		return errors.New("console: session TTL, window and poll interval must be positive")
	}
	if c.TraceUI != "" {
		u, err := url.Parse(c.TraceUI)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("console: --trace-ui wants an http(s) URL such as http://127.0.0.1:16686")
		}
	}
	return nil
}

// Open reports whether the page asks for no login.
func (c Config) Open() bool { return c.User == "" }

// CredentialsFromURL returns the user and password in a NATS URL (the first
// of a comma-separated list that carries any), or empty strings for an open bus.
func CredentialsFromURL(natsURL string) (user, password string) {
	for _, p := range strings.Split(natsURL, ",") {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		pw, _ := u.User.Password()
		return u.User.Username(), pw
	}
	return "", ""
}
