// Package bustest gives tests a real embedded JetStream server with every
// rehome stream and bucket created, in a temp dir, on a free port.
package bustest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/embedded"
)

// Env is a running test bus.
type Env struct {
	Server *server.Server
	URL    string
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// Start runs a server for the test's lifetime; cleanup is registered on t.
func Start(t testing.TB) *Env {
	t.Helper()
	return StartWith(t, embedded.Config{}, func(url string) string { return url })
}

// StartWith is Start with cfg's users and system account, and its StoreDir
// if set (else a temp dir; the port is always a free one); the test's client connects to connect(the server's
// client URL), e.g. an admin user's URL, and creates the rehome streams.
func StartWith(t testing.TB, cfg embedded.Config, connect func(clientURL string) string) *Env {
	t.Helper()
	cfg.Port = -1
	if cfg.StoreDir == "" {
		cfg.StoreDir = t.TempDir()
	}
	s, err := embedded.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := bus.Connect(connect(s.ClientURL()), "test", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Ensure(ctx, js, bus.Config{}); err != nil {
		t.Fatal(err)
	}
	return &Env{Server: s, URL: s.ClientURL(), NC: nc, JS: js}
}

// Eventually polls cond every 20 ms until it holds or timeout passes, then
// fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	CheckFor(t, timeout, func() error {
		if cond() {
			return nil
		}
		return errors.New(msg)
	})
}

// CheckFor polls check every 20 ms until it returns nil or timeout passes,
// then fails the test with the last error check returned: say there what
// was last seen.
func CheckFor(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	CheckEvery(t, timeout, 20*time.Millisecond, check)
}

// CheckEvery is CheckFor polling every interval (a check that runs a
// command or walks many objects polls less often).
func CheckEvery(t testing.TB, timeout, interval time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// Consistently checks cond every 50 ms for the whole of d and fails the test
// with msg the first time it is false: a negative assertion needs a window.
func Consistently(t testing.TB, d time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if !cond() {
			t.Fatalf("within %s: %s no longer holds", d, msg)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
