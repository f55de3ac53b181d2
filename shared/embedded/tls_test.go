package embedded_test

import (
	"strings"
	"testing"

	"github.com/rehome/rehome/shared/embedded"
	"github.com/rehome/rehome/shared/tlsconf"
)

func TestStartTLS(t *testing.T) {
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := embedded.Start(embedded.Config{Port: -1, StoreDir: t.TempDir(), TLSCert: d.ServerCert, TLSKey: d.ServerKey})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if u := s.ClientURL(); !strings.HasPrefix(u, "tls://") {
		t.Fatalf("ClientURL %s, want tls://", u)
	}
}

func TestStartTLSBadFilesFailsClearly(t *testing.T) {
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]embedded.Config{
		"cert without key":      {TLSCert: d.ServerCert},
		"client CA without key": {TLSClientCA: d.CA},
		"missing client CA":     {TLSCert: d.ServerCert, TLSKey: d.ServerKey, TLSClientCA: d.CA + ".missing"},
	} {
		cfg.Port, cfg.StoreDir = -1, t.TempDir()
		s, err := embedded.Start(cfg)
		if err == nil {
			s.Shutdown()
			t.Errorf("%s: server started", name)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "embedded nats: tls: ") || strings.Contains(msg, "\n") {
			t.Errorf("%s: want one line naming TLS, got %q", name, msg)
		}
	}
}
