package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/tlsconf"
)

// secretsOnly points the CLI's environment at secrets.env and nothing else
// rehome reads (PATH and HOME only besides), as a fresh shell after
// `set -a; . <dir>/secrets.env`, and returns the file's assignments.
func secretsOnly(t *testing.T, c *cluster) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "secrets.env"))
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	c.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, line := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(line, "=")
		kv[k] = v
		c.env = append(c.env, line)
	}
	return kv
}

// without returns env minus the given keys.
func without(env []string, keys ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, x := range keys {
			drop = drop || k == x
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// getAll reads every object back through `rehome get -o` and compares bytes.
func getAll(t *testing.T, c *cluster, want map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	for name, b := range want {
		out := filepath.Join(dir, name)
		if _, err := c.rehome("get", name, "-o", out); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("get %s: bytes differ (%v)", name, err)
		}
	}
}

// TestTLSClusterHeals runs `rehome dev --tls`: the bus and every storage
// node speak TLS only, the CLI works from secrets.env alone, a client
// without the CA is refused, and a killed node still heals with every
// object intact (movers copy over HTTPS).
func TestTLSClusterHeals(t *testing.T) {
	c := startDev(t, "--tls", "--nodes", "4", "--racks", "4", "--grace", "2s", "--suspect-after", "1s", "--heartbeat", "250ms")
	secrets := secretsOnly(t, c)
	if ca := secrets[tlsconf.EnvCA]; ca != filepath.Join(c.dir, "tls", "ca.pem") {
		t.Fatalf("secrets.env: %s=%q, want <dir>/tls/ca.pem", tlsconf.EnvCA, ca)
	}
	if u := secrets[bus.EnvURL]; !strings.HasPrefix(u, "tls://") {
		t.Fatalf("secrets.env: the bus URL does not say tls://")
	}
	if _, ok := secrets[tlsconf.EnvCert]; ok {
		t.Fatalf("secrets.env names a client certificate without --mtls")
	}
	st := waitHealthy(t, c, 4)
	want := c.putRandom(t, 24, 48<<10)

	// Without the CA the CLI reaches neither the bus nor a node: one line,
	// exit 1, naming the certificate problem.
	noCA := &cluster{t: t, dir: c.dir, env: without(c.env, tlsconf.EnvCA)}
	if _, err := noCA.rehome("cluster", "status"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("cluster status without the CA: want a certificate error, got %v", err)
	}
	// --tls-ca names it on the command line instead.
	if _, err := noCA.rehome("--tls-ca", secrets[tlsconf.EnvCA], "cluster", "status"); err != nil {
		t.Fatalf("cluster status with --tls-ca: %v", err)
	}
	addr := st.Nodes[0].Addr
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain HTTP to storage node %s answered %d, want 400", addr, resp.StatusCode)
	}
	if _, err := c.rehome("healthcheck", "https://"+addr+"/healthz"); err != nil {
		t.Fatalf("healthcheck over HTTPS with the CA: %v", err)
	}

	st, err = c.status()
	if err != nil {
		t.Fatal(err)
	}
	victim := st.Nodes[0]
	for _, n := range st.Nodes {
		if n.Shards > victim.Shards {
			victim = n
		}
	}
	pid := 0
	for _, p := range c.processes() {
		if p.ID == victim.ID {
			pid = p.PID
		}
	}
	if pid == 0 || victim.Shards == 0 {
		t.Fatalf("no victim: %+v pid %d", victim, pid)
	}
	t.Logf("killing %s (pid %d, %d shards)", victim.ID, pid, victim.Shards)
	c.killNode(t, victim.ID, pid)
	if out, err := c.rehome("heal", "status", "--follow", "--interval", "200ms"); err != nil {
		t.Fatalf("heal status --follow: %v\n%s", err, out)
	}
	st, err = c.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.UnderReplicated != 0 || st.Lost != 0 {
		t.Fatalf("after heal: under-replicated %d lost %d", st.UnderReplicated, st.Lost)
	}
	getAll(t, c, want)
}

// TestMutualTLSCluster runs `rehome dev --mtls`: secrets.env carries the
// client certificate, with it the CLI writes and reads, without it the bus
// and the nodes refuse the CLI.
func TestMutualTLSCluster(t *testing.T) {
	c := startDev(t, "--mtls", "--nodes", "3", "--racks", "3", "--heartbeat", "250ms")
	secrets := secretsOnly(t, c)
	for _, k := range []string{tlsconf.EnvCA, tlsconf.EnvCert, tlsconf.EnvKey} {
		if !strings.HasPrefix(secrets[k], filepath.Join(c.dir, "tls")+"/") {
			t.Fatalf("secrets.env: %s=%q, want a file in <dir>/tls", k, secrets[k])
		}
	}
	waitHealthy(t, c, 3)
	want := c.putRandom(t, 4, 32<<10)
	getAll(t, c, want)

	noCert := &cluster{t: t, dir: c.dir, env: without(c.env, tlsconf.EnvCert, tlsconf.EnvKey)}
	// TLS 1.3 refuses a missing client certificate after the client's side
	// of the handshake: the error says tls, not always why.
	if _, err := noCert.rehome("cluster", "status"); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("cluster status without the client certificate: want a TLS refusal, got %v", err)
	}
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noCert.rehome("healthcheck", "https://"+st.Nodes[0].Addr+"/healthz"); err == nil {
		t.Fatal("a storage node answered a client without a certificate")
	}
	if _, err := c.rehome("healthcheck", "https://"+st.Nodes[0].Addr+"/healthz"); err != nil {
		t.Fatalf("healthcheck with the client certificate: %v", err)
	}
}
