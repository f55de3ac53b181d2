package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/services/s3"
	"github.com/rehome/rehome/shared/bus"
)

// TestDevRunsAnS3Gateway: `rehome dev` runs one S3 gateway as its own
// process (role s3, id s3-1, its own bus user and the installation's key
// pair in its env file), serving /healthz on its metrics address and S3 on
// the endpoint secrets.env gives the aws CLI and AWS SDKs.
func TestDevRunsAnS3Gateway(t *testing.T) {
	c := startDev(t, "--nodes", "3", "--racks", "3")
	waitHealthy(t, c, 3)

	var gw *struct{ metrics, args string }
	for _, p := range c.processes() {
		if p.Role == "s3" {
			if gw != nil || p.ID != "s3-1" || !p.Running || !alive(p.PID) || p.Metrics == "" {
				t.Fatalf("processes.json: gateway %+v", p)
			}
			gw = &struct{ metrics, args string }{p.Metrics, strings.Join(p.Args, " ")}
		}
	}
	if gw == nil {
		t.Fatalf("processes.json lists no gateway: %+v", c.processes())
	}

	endpoint := c.getenv("AWS_ENDPOINT_URL")
	if !strings.HasPrefix(endpoint, "http://127.0.0.1:") || !strings.Contains(gw.args, "--listen "+strings.TrimPrefix(endpoint, "http://")) ||
		c.getenv("AWS_REGION") != "us-east-1" || len(c.getenv("AWS_ACCESS_KEY_ID")) != 20 || c.getenv("AWS_SECRET_ACCESS_KEY") == "" {
		t.Fatalf("secrets.env: AWS_ENDPOINT_URL=%q AWS_REGION=%q, gateway args %q", endpoint, c.getenv("AWS_REGION"), gw.args)
	}
	env, err := envfile.Read(filepath.Join(c.dir, "env", "s3-1.env"))
	if err != nil {
		t.Fatal(err)
	}
	if env[s3.EnvAccessKey] != c.getenv("AWS_ACCESS_KEY_ID") || env[s3.EnvSecretKey] != c.getenv("AWS_SECRET_ACCESS_KEY") ||
		!strings.Contains(env[bus.EnvURL], "//gateway-s3-1:") || env["REHOME_TOKEN"] != c.getenv("REHOME_TOKEN") {
		t.Fatal("env/s3-1.env: not the gateway's user, or not the key pair and token of secrets.env")
	}

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + gw.metrics + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("gateway /healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = client.Get(endpoint + "/")
	if err != nil {
		t.Fatalf("S3 endpoint %s: %v", endpoint, err)
	}
	resp.Body.Close()
}
