package storage

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/shardapi"
	"github.com/rehome/rehome/shared/tlsconf"
)

// tlsNode starts a full storage node serving HTTPS with the dev PKI d,
// requiring client certificates when mtls.
func tlsNode(t *testing.T, env *bustest.Env, d tlsconf.Dev, token string, mtls bool) *running {
	t.Helper()
	clientCA := ""
	if mtls {
		clientCA = d.CA
	}
	srvCfg, err := tlsconf.Server(d.ServerCert, d.ServerKey, clientCA)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = "storage-tls", "rack-1", t.TempDir()
	cfg.Token = token
	cfg.TLS = srvCfg
	cfg.HeartbeatInterval = 100 * time.Millisecond
	return startService(t, env, cfg)
}

func tlsClient(t *testing.T, token string, f tlsconf.Files) *shardapi.Client {
	t.Helper()
	cfg, err := tlsconf.Client(f)
	if err != nil {
		t.Fatal(err)
	}
	c := shardapi.NewTLS(token, cfg)
	t.Cleanup(c.HTTP.CloseIdleConnections)
	return c
}

func TestHTTPS(t *testing.T) {
	env := bustest.Start(t)
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n := tlsNode(t, env, d, "tok", false)
	addr := n.svc.Addr()
	ctx := testCtx(t)
	body := data(1, 1<<20+17)

	c := tlsClient(t, "tok", d.Client(false))
	if err := c.Put(ctx, addr, "tls-1", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatalf("PUT over HTTPS: %v", err)
	}
	rc, info, err := c.Get(ctx, addr, "tls-1")
	if err != nil {
		t.Fatalf("GET over HTTPS: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, body) || info.SHA256 != sum(body) {
		t.Fatalf("GET over HTTPS: %d bytes (want %d), sha %s, err %v", len(got), len(body), info.SHA256, err)
	}

	// shardapi.New takes the CA from the environment: what movers and the
	// CLI use.
	t.Setenv(tlsconf.EnvCA, d.CA)
	t.Setenv(tlsconf.EnvCert, "")
	t.Setenv(tlsconf.EnvKey, "")
	fromEnv := shardapi.New("tok")
	t.Cleanup(fromEnv.HTTP.CloseIdleConnections)
	if inv, err := fromEnv.List(ctx, addr); err != nil || len(inv.Shards) != 1 {
		t.Fatalf("list with the CA from the environment: %+v %v", inv, err)
	}
	// An unreadable CA fails every request with a clear error, never plain HTTP.
	t.Setenv(tlsconf.EnvCA, d.CA+".missing")
	if _, err := shardapi.New("tok").List(ctx, addr); err == nil || !strings.Contains(err.Error(), "ca.pem.missing") {
		t.Fatalf("list with an unreadable CA: want an error naming it, got %v", err)
	}

	// Plain HTTP gets a 400, and a client trusting another CA refuses the node.
	code, _ := do(t, "GET", "http://"+addr+"/v1/shards", nil, map[string]string{"Authorization": "Bearer tok"})
	if code != http.StatusBadRequest {
		t.Fatalf("plain HTTP to an HTTPS node answered %d, want 400", code)
	}
	plain := shardapi.NewTLS("tok", nil)
	t.Cleanup(plain.HTTP.CloseIdleConnections)
	// A PUT may see its connection reset instead: the node answers 400 and
	// closes while the body is still on its way. Either way nothing is stored
	// (checked below).
	if err := plain.Put(ctx, addr, "tls-2", sum(body), int64(len(body)), bytes.NewReader(body)); err == nil ||
		statusCode(err) != http.StatusBadRequest && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("plain PUT to an HTTPS node: %v, want 400 or a reset connection", err)
	}
	wrong := tlsClient(t, "tok", other.Client(false))
	var unknown x509.UnknownAuthorityError
	if err := wrong.Put(ctx, addr, "tls-3", sum(body), int64(len(body)), bytes.NewReader(body)); !errors.As(err, &unknown) {
		t.Fatalf("PUT trusting another CA: want unknown authority, got %v", err)
	}
	// The token still applies over TLS.
	if _, err := tlsClient(t, "", d.Client(false)).List(ctx, addr); statusCode(err) != http.StatusUnauthorized {
		t.Fatalf("list without the token over HTTPS: %v, want 401", err)
	}
	inv, err := c.List(ctx, addr)
	if err != nil || len(inv.Shards) != 1 || inv.Shards[0].ID != "tls-1" {
		t.Fatalf("after the refused writes the node holds %+v (%v), want only tls-1", inv.Shards, err)
	}
	// The node is still serving.
	if _, err := c.Head(ctx, addr, "tls-1"); err != nil {
		t.Fatalf("HEAD after the refusals: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	env := bustest.Start(t)
	d, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconf.GenerateDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n := tlsNode(t, env, d, "tok", true)
	addr := n.svc.Addr()
	ctx := testCtx(t)
	body := data(2, 4096)

	c := tlsClient(t, "tok", d.Client(true))
	if err := c.Put(ctx, addr, "m-1", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatalf("PUT with a client certificate: %v", err)
	}
	if _, err := tlsClient(t, "", d.Client(true)).List(ctx, addr); statusCode(err) != http.StatusUnauthorized {
		t.Fatalf("client certificate without the token: %v, want 401", err)
	}
	for name, f := range map[string]tlsconf.Files{
		"no client certificate":            d.Client(false),
		"client certificate of another CA": {CA: d.CA, Cert: other.ClientCert, Key: other.ClientKey},
	} {
		cl := tlsClient(t, "tok", f)
		err := cl.Put(ctx, addr, "m-2", sum(body), int64(len(body)), bytes.NewReader(body))
		if err == nil || statusCode(err) != 0 {
			t.Fatalf("%s: PUT answered %v, want the handshake refused", name, err)
		}
	}
	if inv, err := c.List(ctx, addr); err != nil || len(inv.Shards) != 1 {
		t.Fatalf("after the refused writes: %+v %v, want one shard", inv, err)
	}
}
