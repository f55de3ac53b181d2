package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/services/s3"
	"github.com/rehome/rehome/shared/bus"
)

// TestAuthInitGateways: `rehome auth init --s3 s3-1,s3-2` gives each gateway
// a bus user of its own and both the one key pair, and the operator's
// secrets the AWS variables that reach the first gateway; a second run
// keeps every secret.
func TestAuthInitGateways(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	secrets := filepath.Join(t.TempDir(), "secrets.env")
	args := []string{"auth", "init", "--dir", dir, "--secrets", secrets, "--nats", "nats://nats-1:4222",
		"--host-nats", "nats://127.0.0.1:14222", "--storage", "storage-1", "--planners", "planner-1",
		"--s3", "s3-1,s3-2", "--s3-endpoint", "http://127.0.0.1:19000"}
	if code, err := run(args); code != 0 {
		t.Fatalf("auth init: %v", err)
	}
	read := func(path string) map[string]string {
		t.Helper()
		kv, err := envfile.Read(path)
		if err != nil || len(kv) == 0 {
			t.Fatalf("%s: %v %v", path, kv, err)
		}
		return kv
	}
	gw1, gw2, sec := read(filepath.Join(dir, "s3-1.env")), read(filepath.Join(dir, "s3-2.env")), read(secrets)
	if !strings.HasPrefix(gw1[bus.EnvURL], "nats://gateway-s3-1:") || !strings.HasPrefix(gw2[bus.EnvURL], "nats://gateway-s3-2:") {
		t.Fatalf("gateway bus URLs: not each its own user")
	}
	if gw1[s3.EnvAccessKey] == "" || gw1[s3.EnvAccessKey] != gw2[s3.EnvAccessKey] || gw1[s3.EnvSecretKey] != gw2[s3.EnvSecretKey] ||
		gw1["REHOME_TOKEN"] == "" {
		t.Fatal("gateways: not one key pair for both, or no token")
	}
	if sec["AWS_ACCESS_KEY_ID"] != gw1[s3.EnvAccessKey] || sec["AWS_SECRET_ACCESS_KEY"] != gw1[s3.EnvSecretKey] ||
		sec["AWS_ENDPOINT_URL"] != "http://127.0.0.1:19000" || sec["AWS_REGION"] != "us-east-1" ||
		!strings.HasPrefix(sec[bus.EnvURL], "nats://operator:") {
		t.Fatalf("secrets: AWS_ENDPOINT_URL=%q AWS_REGION=%q", sec["AWS_ENDPOINT_URL"], sec["AWS_REGION"])
	}
	for _, f := range []string{"cli.env", "planner-1.env", "storage-1.env", "admin.env"} {
		if kv := read(filepath.Join(dir, f)); kv[s3.EnvAccessKey] != "" || kv["AWS_SECRET_ACCESS_KEY"] != "" {
			t.Errorf("%s holds the S3 key pair", f)
		}
	}
	conf, err := os.ReadFile(filepath.Join(dir, "auth.conf"))
	if err != nil || !strings.Contains(string(conf), `"gateway-s3-1"`) || !strings.Contains(string(conf), `"gateway-s3-2"`) {
		t.Fatalf("auth.conf lacks the gateways' users: %v", err)
	}

	if code, err := run(args); code != 0 {
		t.Fatalf("auth init again: %v", err)
	}
	if again := read(filepath.Join(dir, "s3-1.env")); again[s3.EnvSecretKey] != gw1[s3.EnvSecretKey] || again[bus.EnvURL] != gw1[bus.EnvURL] {
		t.Fatal("a second auth init changed a gateway's secrets")
	}

	if code, _ := run([]string{"auth", "init", "--dir", dir, "--nats", "nats://nats-1:4222", "--s3-endpoint", "http://x"}); code == 0 {
		t.Fatal("--s3-endpoint without --s3 was accepted")
	}
	if code, _ := run([]string{"auth", "init", "--dir", dir, "--nats", "nats://nats-1:4222", "--s3", "s3.1"}); code == 0 {
		t.Fatal("a gateway name with a dot was accepted")
	}
}
