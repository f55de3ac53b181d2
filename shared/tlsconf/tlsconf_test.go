package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/tlsconf"
)

// handshake runs one TLS handshake between server and client configs over
// loopback, dialling host, and returns the client's and the server's errors.
func handshake(t *testing.T, server, client *tls.Config, host string) (clientErr, serverErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.(*tls.Conn).Handshake(); err != nil {
			srvErr <- err
			return
		}
		// Echo one byte so that the client sees a refusal sent after its
		// side of the handshake finished (TLS 1.3 client certificates).
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			srvErr <- err
			return
		}
		_, err = c.Write(b)
		srvErr <- err
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cfg := client.Clone()
	cfg.ServerName = host
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort("127.0.0.1", port), cfg)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err = c.Write([]byte{7}); err == nil {
			_, err = io.ReadFull(c, make([]byte, 1))
		}
		c.Close()
	}
	return err, <-srvErr
}

func TestGenerateDevFilesAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	d, err := tlsconf.GenerateDev(dir, "storage.example", "10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if d != tlsconf.DevFiles(dir) {
		t.Fatalf("GenerateDev returned %+v, want DevFiles(dir)", d)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode: %v %v, want 0700", fi.Mode(), err)
	}
	for path, want := range map[string]os.FileMode{d.CA: 0o644, d.ServerCert: 0o644, d.ClientCert: 0o644, d.ServerKey: 0o600, d.ClientKey: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", filepath.Base(path), fi.Mode().Perm(), want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 5 {
		t.Errorf("dir holds %d files, want 5 (no temp files, no CA key)", len(entries))
	}
	leaf := readCert(t, d.ServerCert)
	for _, h := range []string{"127.0.0.1", "::1", "localhost", "storage.example", "10.1.2.3"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("server certificate does not cover %s: %v", h, err)
		}
	}
	if err := leaf.VerifyHostname("other.example"); err == nil {
		t.Error("server certificate covers a host it was not issued for")
	}
	if cli := readCert(t, d.ClientCert); cli.Subject.CommonName != "rehome-client" || len(cli.ExtKeyUsage) != 1 || cli.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("client certificate: CN %q usages %v", cli.Subject.CommonName, cli.ExtKeyUsage)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHandshake(t *testing.T) {
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	server := mustServer(t, d.ServerCert, d.ServerKey, "")
	mtls := mustServer(t, d.ServerCert, d.ServerKey, d.CA)
	client := mustClient(t, d.Client(false))
	withCert := mustClient(t, d.Client(true))
	wrongCA := mustClient(t, other.Client(false))
	wrongCert := mustClient(t, tlsconf.Files{CA: d.CA, Cert: other.ClientCert, Key: other.ClientKey})

	for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
		if cerr, serr := handshake(t, server, client, host); cerr != nil || serr != nil {
			t.Fatalf("TLS to %s: client %v, server %v", host, cerr, serr)
		}
	}
	if cerr, serr := handshake(t, mtls, withCert, "127.0.0.1"); cerr != nil || serr != nil {
		t.Fatalf("mTLS: client %v, server %v", cerr, serr)
	}

	var unknown x509.UnknownAuthorityError
	if cerr, _ := handshake(t, server, wrongCA, "127.0.0.1"); !errors.As(cerr, &unknown) {
		t.Fatalf("client trusting another CA: want unknown authority, got %v", cerr)
	}
	var hostErr x509.HostnameError
	if cerr, _ := handshake(t, server, client, "evil.example"); !errors.As(cerr, &hostErr) {
		t.Fatalf("server name not in the certificate: want hostname error, got %v", cerr)
	}
	if cerr, serr := handshake(t, mtls, client, "127.0.0.1"); cerr == nil || serr == nil {
		t.Fatalf("mTLS without a client certificate: want refused, got client %v server %v", cerr, serr)
	}
	if cerr, serr := handshake(t, mtls, wrongCert, "127.0.0.1"); cerr == nil || serr == nil {
		t.Fatalf("mTLS with a certificate of another CA: want refused, got client %v server %v", cerr, serr)
	}
	// A server certificate is not a client certificate (key usage).
	srvAsClient := mustClient(t, tlsconf.Files{CA: d.CA, Cert: d.ServerCert, Key: d.ServerKey})
	if cerr, serr := handshake(t, mtls, srvAsClient, "127.0.0.1"); cerr == nil || serr == nil {
		t.Fatalf("mTLS with a server certificate: want refused, got client %v server %v", cerr, serr)
	}
}

func mustServer(t *testing.T, cert, key, clientCA string) *tls.Config {
	t.Helper()
	c, err := tlsconf.Server(cert, key, clientCA)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustClient(t *testing.T, f tlsconf.Files) *tls.Config {
	t.Helper()
	c, err := tlsconf.Client(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnsureDevReuses(t *testing.T) {
	dir := t.TempDir()
	d, reused, err := tlsconf.EnsureDev(dir, "node-a")
	if err != nil || reused {
		t.Fatalf("first EnsureDev: reused %v err %v, want a new PKI", reused, err)
	}
	ca, _ := os.ReadFile(d.CA)
	if _, reused, err := tlsconf.EnsureDev(dir, "node-a"); err != nil || !reused {
		t.Fatalf("second EnsureDev: reused %v err %v, want reuse", reused, err)
	}
	if again, _ := os.ReadFile(d.CA); string(again) != string(ca) {
		t.Fatal("reuse rewrote the CA")
	}
	// A host the server certificate does not cover: a new PKI.
	if _, reused, err := tlsconf.EnsureDev(dir, "node-b"); err != nil || reused {
		t.Fatalf("EnsureDev for another host: reused %v err %v, want a new PKI", reused, err)
	}
	leaf := readCert(t, d.ServerCert)
	if leaf.VerifyHostname("node-b") != nil {
		t.Fatal("new server certificate does not cover node-b")
	}
	// A damaged file: a new PKI.
	if err := os.WriteFile(d.ClientKey, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, reused, err := tlsconf.EnsureDev(dir, "node-b"); err != nil || reused {
		t.Fatalf("EnsureDev over a damaged key: reused %v err %v, want a new PKI", reused, err)
	}
	if _, err := tlsconf.Client(d.Client(true)); err != nil {
		t.Fatalf("regenerated PKI does not load: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for name, f := range map[string]func() error{
		"client without CA":       func() error { _, err := tlsconf.Client(tlsconf.Files{}); return err },
		"client CA missing":       func() error { _, err := tlsconf.Client(tlsconf.Files{CA: missing}); return err },
		"client CA not PEM":       func() error { _, err := tlsconf.Client(tlsconf.Files{CA: junk}); return err },
		"client cert without key": func() error { _, err := tlsconf.Client(tlsconf.Files{CA: d.CA, Cert: d.ClientCert}); return err },
		"client key of another": func() error {
			_, err := tlsconf.Client(tlsconf.Files{CA: d.CA, Cert: d.ClientCert, Key: d.ServerKey})
			return err
		},
		"server without key":    func() error { _, err := tlsconf.Server(d.ServerCert, "", ""); return err },
		"server cert not PEM":   func() error { _, err := tlsconf.Server(junk, d.ServerKey, ""); return err },
		"server client CA junk": func() error { _, err := tlsconf.Server(d.ServerCert, d.ServerKey, junk); return err },
	} {
		err := f()
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "tls: ") || strings.Contains(msg, "\n") {
			t.Errorf("%s: want one line starting with tls:, got %q", name, msg)
		}
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv(tlsconf.EnvCA, "")
	t.Setenv(tlsconf.EnvCert, "")
	t.Setenv(tlsconf.EnvKey, "")
	if c, err := tlsconf.ClientFromEnv(); c != nil || err != nil {
		t.Fatalf("no CA in the environment: want plain (nil, nil), got %v %v", c, err)
	}
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range d.Client(true).Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	if got := tlsconf.FromEnv(); got != d.Client(true) {
		t.Fatalf("FromEnv = %+v, want %+v", got, d.Client(true))
	}
	c, err := tlsconf.ClientFromEnv()
	if err != nil || c == nil || c.RootCAs == nil || len(c.Certificates) != 1 {
		t.Fatalf("ClientFromEnv: %v %v", c, err)
	}
	if env := d.Client(false).Env(); len(env) != 1 || env[0] != tlsconf.EnvCA+"="+d.CA {
		t.Fatalf("Env without a certificate: %v", env)
	}
}
