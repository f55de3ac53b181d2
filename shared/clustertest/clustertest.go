// Package clustertest gives tests a whole rehome in the test process: a real
// embedded JetStream (bustest), the planner and storage nodes on real disks
// in temp dirs, on loopback. It is its own module because it runs services,
// which depend on the shared module.
package clustertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/rehome/rehome/services/planner"
	"github.com/rehome/rehome/services/storage"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/shardapi"
)

// Token is the storage API's bearer token in every test cluster.
const Token = "storage-token"

// Cluster is a running test cluster. Ctx ends when the test does (or Stop
// a node with Stops[id]).
type Cluster struct {
	T     testing.TB
	Env   *bustest.Env
	Ctx   context.Context
	Nodes map[string]*storage.Service
	Stops map[string]context.CancelFunc

	wait []chan error
}

// Quiet is a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Start runs one planner and nodes storage nodes (storage-1..N, dealt
// round-robin onto rack-1..racks) until the test ends, and returns once the
// planner knows every node (the cluster takes writes).
func Start(t testing.TB, nodes, racks int) *Cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{T: t, Env: bustest.Start(t), Ctx: ctx, Nodes: map[string]*storage.Service{}, Stops: map[string]context.CancelFunc{}}
	t.Cleanup(func() {
		cancel()
		for _, w := range c.wait {
			select {
			case <-w:
			case <-time.After(10 * time.Second):
				t.Error("a service did not stop within 10s")
			}
		}
	})
	pl, err := planner.New(planner.DefaultConfig(), c.Env.NC, c.Env.JS, Quiet(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	c.Go(pl.Run, ctx)
	for i := 1; i <= nodes; i++ {
		id := fmt.Sprintf("storage-%d", i)
		cfg := storage.DefaultConfig()
		cfg.ID, cfg.Rack, cfg.Dir, cfg.Token = id, fmt.Sprintf("rack-%d", (i-1)%racks+1), t.TempDir(), Token
		cfg.Listen = "127.0.0.1:0"
		cfg.HeartbeatInterval = 200 * time.Millisecond
		svc, err := storage.New(cfg, c.Env.NC, c.Env.JS, Quiet())
		if err != nil {
			t.Fatal(err)
		}
		nctx, stop := context.WithCancel(ctx)
		c.Nodes[id], c.Stops[id] = svc, stop
		c.Go(svc.Run, nctx)
	}
	bustest.Eventually(t, 30*time.Second, "the planner knows every node", c.Writable)
	return c
}

// Go runs f(ctx) in a goroutine that the test's cleanup waits for.
func (c *Cluster) Go(f func(context.Context) error, ctx context.Context) {
	done := make(chan error, 1)
	c.wait = append(c.wait, done)
	go func() { done <- f(ctx) }()
}

// Shards is a storage API client with the cluster's token.
func (c *Cluster) Shards() *shardapi.Client { return shardapi.New(Token) }

// Writable reports whether the acting planner answers and knows every node
// with an address.
func (c *Cluster) Writable() bool {
	ctx, cancel := context.WithTimeout(c.Ctx, 2*time.Second)
	defer cancel()
	var st control.ClusterStatus
	if err := bus.Call(ctx, c.Env.NC, event.CtlStatus, control.StatusRequest{}, &st); err != nil {
		return false
	}
	up := 0
	for _, n := range st.Nodes {
		if n.Addr != "" {
			up++
		}
	}
	return up == len(c.Nodes)
}
