package s3

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	s3sdk "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rehome/rehome/services/planner"
	"github.com/rehome/rehome/services/storage"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/shardapi"
)

// testCluster is a whole rehome in the test process: a real JetStream, a
// planner, storage nodes on real disks and one gateway, on loopback.
type testCluster struct {
	t        testing.TB
	env      *bustest.Env
	ctx      context.Context
	endpoint string // http://127.0.0.1:port
	gw       *Gateway
	nodes    map[string]*storage.Service
	stops    map[string]context.CancelFunc
}

const (
	testAccess = "AKREHOMETEST"
	testSecret = "secret-of-the-test-gateway"
	testToken  = "storage-token"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startCluster runs nodes storage nodes over racks racks, a planner and a
// gateway until the test ends.
func startCluster(t testing.TB, nodes, racks int) *testCluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &testCluster{t: t, env: bustest.Start(t), ctx: ctx, nodes: map[string]*storage.Service{}, stops: map[string]context.CancelFunc{}}
	var wait []chan error
	t.Cleanup(func() {
		cancel()
		for _, w := range wait {
			select {
			case <-w:
			case <-time.After(10 * time.Second):
				t.Error("a service did not stop within 10s")
			}
		}
	})
	run := func(f func(context.Context) error, ctx context.Context) {
		done := make(chan error, 1)
		wait = append(wait, done)
		go func() { done <- f(ctx) }()
	}
	pcfg := planner.DefaultConfig()
	pl, err := planner.New(pcfg, c.env.NC, c.env.JS, quiet(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	run(pl.Run, ctx)
	for i := 1; i <= nodes; i++ {
		id := fmt.Sprintf("storage-%d", i)
		cfg := storage.DefaultConfig()
		cfg.ID, cfg.Rack, cfg.Dir, cfg.Token = id, fmt.Sprintf("rack-%d", (i-1)%racks+1), t.TempDir(), testToken
		cfg.Listen = "127.0.0.1:0"
		cfg.HeartbeatInterval = 200 * time.Millisecond
		svc, err := storage.New(cfg, c.env.NC, c.env.JS, quiet())
		if err != nil {
			t.Fatal(err)
		}
		nctx, stop := context.WithCancel(ctx)
		c.nodes[id], c.stops[id] = svc, stop
		run(svc.Run, nctx)
	}
	gcfg := DefaultConfig()
	gcfg.Listen, gcfg.AccessKey, gcfg.SecretKey = "127.0.0.1:0", testAccess, testSecret
	c.gw, err = New(ctx, gcfg, c.env.NC, c.env.JS, shardapi.New(testToken), quiet())
	if err != nil {
		t.Fatal(err)
	}
	run(c.gw.Run, ctx)
	c.endpoint = "http://" + c.gw.Addr()
	// Ready when the planner allocates: every node registered and a lease held.
	bustest.Eventually(t, 30*time.Second, "the cluster takes writes", func() bool {
		resp, err := http.Get(c.endpoint + "/") // unsigned: any answer means it serves
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && c.writable()
	})
	return c
}

// writable reports whether the acting planner answers and knows every node.
func (c *testCluster) writable() bool {
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	var st control.ClusterStatus
	if err := bus.Call(ctx, c.env.NC, event.CtlStatus, control.StatusRequest{}, &st); err != nil {
		return false
	}
	up := 0
	for _, n := range st.Nodes {
		if n.Addr != "" {
			up++
		}
	}
	return up == len(c.nodes)
}

// sdk returns an aws-sdk-go-v2 S3 client for the gateway, with the SDK's
// defaults (checksums and trailers on PUT) left as they are.
func (c *testCluster) sdk(secret string) *s3sdk.Client {
	cfg := aws.Config{
		Region:           "us-east-1",
		Credentials:      credentials.NewStaticCredentialsProvider(testAccess, secret, ""),
		RetryMaxAttempts: 1,
	}
	return s3sdk.NewFromConfig(cfg, func(o *s3sdk.Options) {
		o.BaseEndpoint = aws.String(c.endpoint)
		o.UsePathStyle = true
	})
}
