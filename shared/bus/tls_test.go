package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/embedded"
	"github.com/rehome/rehome/shared/tlsconf"
)

// startTLS runs an embedded server requiring TLS with the dev PKI d (and
// client certificates when mtls).
func startTLS(t *testing.T, d tlsconf.Dev, mtls bool) *server.Server {
	t.Helper()
	cfg := embedded.Config{Port: -1, StoreDir: t.TempDir(), TLSCert: d.ServerCert, TLSKey: d.ServerKey}
	if mtls {
		cfg.TLSClientCA = d.CA
	}
	s, err := embedded.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// clearTLSEnv makes the test independent of the caller's environment.
func clearTLSEnv(t *testing.T) {
	for _, k := range []string{tlsconf.EnvCA, tlsconf.EnvCert, tlsconf.EnvKey} {
		t.Setenv(k, "")
	}
}

func setTLSEnv(t *testing.T, f tlsconf.Files) {
	clearTLSEnv(t)
	for _, kv := range f.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// roundTrip checks that nc really works: JetStream answers over it and a
// core message comes back.
func roundTrip(t *testing.T, nc *nats.Conn) {
	t.Helper()
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Error("connection is not TLS")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Ensure(ctx, js, bus.Config{}); err != nil {
		t.Fatalf("Ensure over TLS: %v", err)
	}
	sub, err := nc.SubscribeSync("tls.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("tls.test", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if string(msg.Data) != "hello" {
		t.Fatalf("round trip: got %q", msg.Data)
	}
}

func TestConnectTLS(t *testing.T) {
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := startTLS(t, d, false)
	url := s.ClientURL()
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("ClientURL of a TLS server is %s, want tls://", url)
	}
	plainURL := "nats://" + strings.TrimPrefix(url, "tls://")

	t.Run("CA from the environment", func(t *testing.T) {
		setTLSEnv(t, d.Client(false))
		for _, u := range []string{url, plainURL} {
			nc, err := bus.Connect(u, "test", 5*time.Second)
			if err != nil {
				t.Fatalf("connect to %s with the CA: %v", u, err)
			}
			roundTrip(t, nc)
		}
	})
	t.Run("explicit option beats the environment", func(t *testing.T) {
		setTLSEnv(t, other.Client(false))
		cfg, err := tlsconf.Client(d.Client(false))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := bus.Connect(url, "test", 5*time.Second, bus.WithTLS(cfg))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, nc)
	})
	t.Run("refused without the CA", func(t *testing.T) {
		clearTLSEnv(t)
		for _, u := range []string{url, plainURL} {
			start := time.Now()
			nc, err := bus.Connect(u, "test", 3*time.Second)
			if err == nil {
				nc.Close()
				t.Fatalf("connected to %s without the CA", u)
			}
			if !strings.Contains(err.Error(), u) || time.Since(start) > 10*time.Second {
				t.Fatalf("want a prompt error naming %s, got %v after %s", u, err, time.Since(start))
			}
		}
	})
	t.Run("refused with another CA", func(t *testing.T) {
		setTLSEnv(t, other.Client(false))
		nc, err := bus.Connect(url, "test", 3*time.Second)
		if err == nil {
			nc.Close()
			t.Fatal("connected trusting another CA")
		}
		if !errors.Is(err, nats.ErrTLS) && !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("want a certificate error, got %v", err)
		}
	})
	t.Run("unreadable CA is a clear error", func(t *testing.T) {
		setTLSEnv(t, tlsconf.Files{CA: t.TempDir() + "/missing.pem"})
		_, err := bus.Connect(url, "test", 3*time.Second)
		if err == nil || !strings.Contains(err.Error(), "missing.pem") {
			t.Fatalf("want an error naming the CA file, got %v", err)
		}
	})
}

// TestConnectTLSRefusesPlainServer: a client told to use TLS never falls
// back to a plain-text server.
func TestConnectTLSRefusesPlainServer(t *testing.T) {
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := embedded.Start(embedded.Config{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	setTLSEnv(t, d.Client(false))
	nc, err := bus.Connect(s.ClientURL(), "test", 3*time.Second)
	if err == nil {
		nc.Close()
		t.Fatal("a TLS client connected to a plain server")
	}
	if !errors.Is(err, nats.ErrSecureConnWanted) {
		t.Fatalf("want %v, got %v", nats.ErrSecureConnWanted, err)
	}
	// Without TLS asked for, the same server still works.
	nc, err = bus.Connect(s.ClientURL(), "test", 3*time.Second, bus.WithTLS(nil))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestConnectMutualTLS(t *testing.T) {
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := startTLS(t, d, true)

	setTLSEnv(t, d.Client(true))
	nc, err := bus.Connect(s.ClientURL(), "test", 5*time.Second)
	if err != nil {
		t.Fatalf("connect with the client certificate: %v", err)
	}
	roundTrip(t, nc)

	for name, f := range map[string]tlsconf.Files{
		"no client certificate":             d.Client(false),
		"client certificate of another CA":  {CA: d.CA, Cert: other.ClientCert, Key: other.ClientKey},
		"server certificate used as client": {CA: d.CA, Cert: d.ServerCert, Key: d.ServerKey},
	} {
		cfg, err := tlsconf.Client(f)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := bus.Connect(s.ClientURL(), "test", 3*time.Second, bus.WithTLS(cfg))
		if err == nil {
			// A TLS 1.3 server refuses a client certificate after the
			// client's handshake finished: the connection must not work.
			err = nc.Flush()
			nc.Close()
		}
		if err == nil {
			t.Errorf("%s: connected", name)
		}
	}
}
