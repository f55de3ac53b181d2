package s3

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	s3sdk "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rehome/rehome/services/storage"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/clustertest"
	"github.com/rehome/rehome/shared/shardapi"
)

// testCluster is a whole rehome in the test process (clustertest: a real
// JetStream, a planner, storage nodes on real disks) and one gateway, on
// loopback.
type testCluster struct {
	*clustertest.Cluster
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
	testToken  = clustertest.Token
)

func quiet() *slog.Logger { return clustertest.Quiet() }

// startCluster runs nodes storage nodes over racks racks, a planner and a
// gateway until the test ends.
func startCluster(t testing.TB, nodes, racks int) *testCluster {
	t.Helper()
	cl := clustertest.Start(t, nodes, racks)
	c := &testCluster{Cluster: cl, t: t, env: cl.Env, ctx: cl.Ctx, nodes: cl.Nodes, stops: cl.Stops}
	gcfg := DefaultConfig()
	gcfg.Listen, gcfg.AccessKey, gcfg.SecretKey = "127.0.0.1:0", testAccess, testSecret
	var err error
	c.gw, err = New(c.ctx, gcfg, c.env.NC, c.env.JS, shardapi.New(testToken), quiet())
	if err != nil {
		t.Fatal(err)
	}
	c.Go(c.gw.Run, c.ctx)
	c.endpoint = "http://" + c.gw.Addr()
	bustest.Eventually(t, 30*time.Second, "the gateway serves", func() bool {
		resp, err := http.Get(c.endpoint + "/") // unsigned: any answer means it serves
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return c
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
