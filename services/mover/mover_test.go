package mover_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/metricstest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/services/storage"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

const (
	token   = "test-token"
	timeout = 20 * time.Second
)

// cluster is a test bus with storage nodes, movers and a recorder of results.
type cluster struct {
	t      testing.TB
	env    *bustest.Env
	shards *shardapi.Client
	nodes  map[string]*storage.Service
	dirs   map[string]string // data directory of each storage node

	mu     sync.Mutex
	done   []event.Done
	failed []event.Failed
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	c := &cluster{t: t, env: bustest.Start(t), shards: shardapi.New(token), nodes: map[string]*storage.Service{}, dirs: map[string]string{}}
	// A plain NATS subscriber sees every report, even one the stream dedups.
	for prefix, sink := range map[string]func([]byte){
		event.DonePrefix: func(b []byte) {
			var d event.Done
			if event.Decode(b, &d) == nil {
				c.mu.Lock()
				c.done = append(c.done, d)
				c.mu.Unlock()
			}
		},
		event.FailedPrefix: func(b []byte) {
			var f event.Failed
			if event.Decode(b, &f) == nil {
				c.mu.Lock()
				c.failed = append(c.failed, f)
				c.mu.Unlock()
			}
		},
	} {
		if _, err := c.env.NC.Subscribe(prefix+">", func(m *nats.Msg) { sink(m.Data) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.env.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// run starts f in the background and, at cleanup, cancels it and checks
// that it returned nil promptly.
func run(t testing.TB, what string, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("%s Run returned %v, want nil on shutdown", what, err)
			}
		case <-time.After(timeout):
			t.Errorf("%s Run did not return within %s of cancel", what, timeout)
		}
	})
}

// storage starts a real storage node and waits until it is registered.
func (c *cluster) storage(id string) string {
	c.t.Helper()
	return c.storageWith(id, nil)
}

// storageWith is storage with cfg edited by edit (nil: defaults).
func (c *cluster) storageWith(id string, edit func(*storage.Config)) string {
	c.t.Helper()
	cfg := storage.DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir, cfg.Token = id, "rack-1", c.t.TempDir(), token
	c.dirs[id] = cfg.Dir
	cfg.HeartbeatInterval = 200 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	svc, err := storage.New(cfg, c.env.NC, c.env.JS, testLogger(c.t))
	if err != nil {
		c.t.Fatal(err)
	}
	run(c.t, "storage "+id, svc.Run)
	// Runs before the node stops: a spare connection would hold its shutdown up.
	c.t.Cleanup(c.shards.HTTP.CloseIdleConnections)
	c.nodes[id] = svc
	kv := c.kv()
	bustest.Eventually(c.t, timeout, id+" registered", func() bool {
		e, err := kv.Get(context.Background(), id)
		if err != nil {
			return false
		}
		var n model.Node
		return json.Unmarshal(e.Value(), &n) == nil && n.Addr == svc.Addr()
	})
	return svc.Addr()
}

func (c *cluster) kv() jetstream.KeyValue {
	kv, err := c.env.JS.KeyValue(context.Background(), bus.BucketNodes)
	if err != nil {
		c.t.Fatal(err)
	}
	return kv
}

// register writes a node record by hand (for nodes that are not real storage).
func (c *cluster) register(id, addr string) {
	c.t.Helper()
	b, _ := json.Marshal(model.Node{V: model.Version, ID: id, Rack: "rack-9", Addr: addr, BootID: "b", Started: time.Now()})
	if _, err := c.kv().Put(context.Background(), id, b); err != nil {
		c.t.Fatal(err)
	}
}

// deadAddr returns an address nothing listens on.
func deadAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// mover starts a mover with cfg (zero fields defaulted) and returns it.
func (c *cluster) mover(cfg mover.Config) *mover.Service {
	c.t.Helper()
	cfg.Token = token
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	m, err := mover.New(cfg, c.env.NC, c.env.JS, nil, testLogger(c.t))
	if err != nil {
		c.t.Fatal(err)
	}
	run(c.t, "mover "+cfg.ID, m.Run)
	return m
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (c *cluster) put(node, shard string, data []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.shards.Put(ctx, c.nodes[node].Addr(), shard, shaHex(data), int64(len(data)), bytes.NewReader(data)); err != nil {
		c.t.Fatal(err)
	}
}

// read returns what node holds under shard, or nil if it holds nothing.
func (c *cluster) read(node, shard string) []byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	body, _, err := c.shards.Get(ctx, c.nodes[node].Addr(), shard)
	if errors.Is(err, shardapi.ErrNotFound) {
		return nil
	}
	if err != nil {
		c.t.Fatal(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

func copyTask(id, shard string, data []byte, target string, sources ...string) *event.Task {
	return &event.Task{Task: id, Incident: "inc-1", Shard: shard, Kind: event.KindCopy, Sources: sources,
		Target: target, Bytes: int64(len(data)), SHA256: shaHex(data)}
}

func (c *cluster) publish(t *event.Task) {
	c.t.Helper()
	if err := bus.Publish(context.Background(), c.env.JS, event.TaskPrefix+t.Target, t, ""); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) publishRaw(subject string, data []byte) {
	c.t.Helper()
	if _, err := c.env.JS.Publish(context.Background(), subject, data); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) doneFor(task string) []event.Done {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event.Done
	for _, d := range c.done {
		if d.Task == task {
			out = append(out, d)
		}
	}
	return out
}

func (c *cluster) failedFor(task string) []event.Failed {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event.Failed
	for _, f := range c.failed {
		if f.Task == task {
			out = append(out, f)
		}
	}
	return out
}

// queued is how many tasks are still in the work queue.
func (c *cluster) queued() uint64 {
	s, err := c.env.JS.Stream(context.Background(), bus.StreamTasks)
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	return info.State.Msgs
}

func (c *cluster) waitQueueEmpty() {
	c.t.Helper()
	bustest.Eventually(c.t, timeout, "work queue empty", func() bool { return c.queued() == 0 })
}

func TestCopyTaskLandsVerifiedBytesOnTheTarget(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	data := randomBytes(t, 3<<20+17)
	c.put("storage-a", "shard-1", data)
	m := c.mover(mover.Config{ID: "m1"})

	c.publish(copyTask("task-1", "shard-1", data, "storage-b", "storage-a"))
	bustest.Eventually(t, timeout, "done event for task-1", func() bool { return len(c.doneFor("task-1")) == 1 })

	d := c.doneFor("task-1")[0]
	if d.Shard != "shard-1" || d.Kind != event.KindCopy || d.Source != "storage-a" || d.Target != "storage-b" ||
		d.Bytes != int64(len(data)) || d.Incident != "inc-1" || d.DurationMS < 0 {
		t.Fatalf("done event = %+v", d)
	}
	if got := c.read("storage-b", "shard-1"); !bytes.Equal(got, data) {
		t.Fatalf("storage-b holds %d bytes, want the %d bytes of storage-a", len(got), len(data))
	}
	// The report is durable on the events stream, on the target's subject.
	s, err := c.env.JS.Stream(context.Background(), bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(context.Background(), event.DonePrefix+"storage-b")
	if err != nil {
		t.Fatalf("no done event on %s: %v", event.DonePrefix+"storage-b", err)
	}
	var stored event.Done
	if err := event.Decode(raw.Data, &stored); err != nil || stored.Task != "task-1" {
		t.Fatalf("stored done event %s: %v", raw.Data, err)
	}
	c.waitQueueEmpty()
	reg := m.Registry()
	if got := metricstest.Value(t, reg, "rehome_mover_bytes_copied_total"); got != float64(len(data)) {
		t.Fatalf("bytes copied metric = %v, want %d", got, len(data))
	}
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "copy", "result", "done"); got != 1 {
		t.Fatalf("tasks done metric = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_task_duration_seconds", "kind", "copy"); got != 1 {
		t.Fatalf("task duration observations = %v, want 1", got)
	}
	bustest.Eventually(t, timeout, "nothing in flight", func() bool {
		return metricstest.Value(t, reg, "rehome_mover_tasks_in_flight") == 0
	})
}

func TestRedeliveredTaskIsDoneWithoutASecondWrite(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	data := randomBytes(t, 200_000)
	c.put("storage-a", "shard-1", data)
	m := c.mover(mover.Config{ID: "m1"})

	task := copyTask("task-1", "shard-1", data, "storage-b", "storage-a")
	c.publish(task)
	bustest.Eventually(t, timeout, "first done", func() bool { return len(c.doneFor("task-1")) == 1 })
	written := metricstest.Value(t, c.nodes["storage-b"].Registry(), "rehome_storage_bytes_written_total")
	if written != float64(len(data)) {
		t.Fatalf("storage-b wrote %v bytes, want %d", written, len(data))
	}

	// The same task again, as after a lost ack.
	c.publish(task)
	bustest.Eventually(t, timeout, "second done", func() bool { return len(c.doneFor("task-1")) == 2 })
	if d := c.doneFor("task-1")[1]; d.Source != "" || d.Bytes != int64(len(data)) {
		t.Fatalf("second done = %+v, want no source (nothing copied) and the shard's bytes", d)
	}
	c.waitQueueEmpty()
	if got := metricstest.Value(t, c.nodes["storage-b"].Registry(), "rehome_storage_bytes_written_total"); got != written {
		t.Fatalf("storage-b wrote again: %v bytes, want still %v", got, written)
	}
	reg := m.Registry()
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "copy", "result", "already_present"); got != 1 {
		t.Fatalf("already_present = %v, want 1", got)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_bytes_copied_total"); got != float64(len(data)) {
		t.Fatalf("bytes copied = %v, want %d (one copy)", got, len(data))
	}
	if !bytes.Equal(c.read("storage-b", "shard-1"), data) {
		t.Fatal("storage-b lost its copy")
	}
}

func TestDeadFirstSourceFallsBackToTheNext(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	c.register("storage-dead", deadAddr(t))
	data := randomBytes(t, 100_000)
	c.put("storage-a", "shard-1", data)
	c.mover(mover.Config{ID: "m1"})

	c.publish(copyTask("task-1", "shard-1", data, "storage-b", "storage-dead", "storage-unregistered", "storage-a"))
	bustest.Eventually(t, timeout, "done", func() bool { return len(c.doneFor("task-1")) == 1 })
	if d := c.doneFor("task-1")[0]; d.Source != "storage-a" {
		t.Fatalf("done from %q, want storage-a", d.Source)
	}
	if !bytes.Equal(c.read("storage-b", "shard-1"), data) {
		t.Fatal("storage-b does not hold the shard")
	}
	if f := c.failedFor("task-1"); len(f) != 0 {
		t.Fatalf("failed events %+v for a task that succeeded", f)
	}
}

func TestSourceWithOtherBytesFailsAndLeavesNothing(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	want := randomBytes(t, 50_000)
	other := randomBytes(t, 50_000) // what storage-a really holds under that id
	c.put("storage-a", "shard-1", other)
	m := c.mover(mover.Config{ID: "m1"})

	c.publish(copyTask("task-1", "shard-1", want, "storage-b", "storage-a"))
	bustest.Eventually(t, timeout, "failed event", func() bool { return len(c.failedFor("task-1")) == 1 })
	f := c.failedFor("task-1")[0]
	if !f.Final || f.Attempt != 1 || f.Target != "storage-b" || f.Shard != "shard-1" || !strings.Contains(f.Error, "storage-a") || f.Side != event.SideSource {
		t.Fatalf("failed event = %+v, want a final failure of the source naming storage-a", f)
	}
	c.waitQueueEmpty()
	if got := c.read("storage-b", "shard-1"); got != nil {
		t.Fatalf("storage-b holds %d bytes of a shard that failed", len(got))
	}
	if got := metricstest.Value(t, m.Registry(), "rehome_mover_tasks_total", "kind", "copy", "result", "failed"); got != 1 {
		t.Fatalf("failed metric = %v, want 1", got)
	}
}

// liar serves a shard's announced checksum and size with bytes that do not
// match them, as a node with a silent disk error and no verification would.
func liar(t *testing.T, data []byte) string {
	bad := append([]byte{}, data...)
	bad[len(bad)-1] ^= 0xff
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(shardapi.HeaderSHA256, shaHex(data))
		w.Header().Set("Content-Length", strconv.Itoa(len(bad)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(bad)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestCorruptStreamFromSourceNeverReachesTheTarget(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-b")
	data := randomBytes(t, 1<<20)
	c.register("storage-liar", liar(t, data))
	c.mover(mover.Config{ID: "m1"})

	c.publish(copyTask("task-1", "shard-1", data, "storage-b", "storage-liar"))
	bustest.Eventually(t, timeout, "failed event", func() bool { return len(c.failedFor("task-1")) == 1 })
	f := c.failedFor("task-1")[0]
	if !f.Final || !strings.Contains(f.Error, "hash") || f.Side != event.SideSource {
		t.Fatalf("failed event = %+v, want a final checksum failure of the source", f)
	}
	if got := c.read("storage-b", "shard-1"); got != nil {
		t.Fatalf("storage-b kept %d corrupt bytes", len(got))
	}
	if got := metricstest.Value(t, c.nodes["storage-b"].Registry(), "rehome_storage_bytes_written_total"); got != 0 {
		t.Fatalf("storage-b wrote %v bytes", got)
	}
	c.waitQueueEmpty()
}

func TestUnreachableTargetIsRetriedThenGivenUp(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.register("storage-gone", deadAddr(t))
	data := randomBytes(t, 10_000)
	c.put("storage-a", "shard-1", data)
	m := c.mover(mover.Config{ID: "m1", MaxDeliver: 3})

	c.publish(copyTask("task-1", "shard-1", data, "storage-gone", "storage-a"))
	bustest.Eventually(t, timeout, "three failed attempts", func() bool { return len(c.failedFor("task-1")) == 3 })
	for i, f := range c.failedFor("task-1") {
		if f.Attempt != i+1 || f.Final != (i == 2) || f.Target != "storage-gone" || f.Side != event.SideTarget {
			t.Fatalf("failed event %d = %+v, want attempt %d of the target, final only on the last", i, f, i+1)
		}
	}
	c.waitQueueEmpty()
	reg := m.Registry()
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "copy", "result", "retry"); got != 2 {
		t.Fatalf("retry metric = %v, want 2", got)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "copy", "result", "failed"); got != 1 {
		t.Fatalf("failed metric = %v, want 1", got)
	}
	if len(c.doneFor("task-1")) != 0 {
		t.Fatal("done event for a task that could not run")
	}
}

func TestGarbageTasksAreDroppedAndCountedWhileValidOnesFlow(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	data := randomBytes(t, 10_000)
	c.put("storage-a", "shard-1", data)
	m := c.mover(mover.Config{ID: "m1"})

	subject := event.TaskPrefix + "storage-b"
	good, _ := event.Encode(copyTask("task-ok", "shard-1", data, "storage-b", "storage-a"))
	wrongVersion := bytes.Replace(good, []byte(`"v":1`), []byte(`"v":7`), 1)
	wrongSubject, _ := event.Encode(copyTask("task-x", "shard-1", data, "storage-a", "storage-b"))
	c.publishRaw(subject, []byte("not json"))
	c.publishRaw(subject, wrongVersion)
	c.publishRaw(subject, randomBytes(t, 64<<10))
	c.publishRaw(subject, []byte(`{"v":1,"task":"t","shard":"../../etc","kind":"copy","target":"storage-b"}`))
	c.publishRaw(subject, wrongSubject)
	c.publishRaw(subject, good)

	bustest.Eventually(t, timeout, "valid task done", func() bool { return len(c.doneFor("task-ok")) == 1 })
	bustest.Eventually(t, timeout, "5 malformed tasks counted", func() bool {
		return metricstest.Value(t, m.Registry(), "rehome_mover_malformed_events_total", "subject", "task") == 5
	})
	c.waitQueueEmpty()
	if !bytes.Equal(c.read("storage-b", "shard-1"), data) {
		t.Fatal("valid task did not copy")
	}
}

func TestDeleteTaskRemovesTheShard(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-b")
	data := randomBytes(t, 10_000)
	c.put("storage-b", "shard-1", data)
	c.mover(mover.Config{ID: "m1"})

	del := func(id string) *event.Task {
		return &event.Task{Task: id, Shard: "shard-1", Kind: event.KindDelete, Target: "storage-b", SHA256: shaHex(data)}
	}
	c.publish(del("del-1"))
	bustest.Eventually(t, timeout, "delete done", func() bool { return len(c.doneFor("del-1")) == 1 })
	if d := c.doneFor("del-1")[0]; d.Kind != event.KindDelete || d.Target != "storage-b" || d.Bytes != 0 {
		t.Fatalf("done = %+v", d)
	}
	if got := c.read("storage-b", "shard-1"); got != nil {
		t.Fatal("shard still on storage-b after delete")
	}
	// Deleting what is already gone is done too.
	c.publish(del("del-2"))
	bustest.Eventually(t, timeout, "second delete done", func() bool { return len(c.doneFor("del-2")) == 1 })
	c.waitQueueEmpty()
}

func TestTwoMoversShareTheQueue(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	const n = 20
	tasks := make([]*event.Task, n)
	for i := range tasks {
		data := randomBytes(t, 64<<10)
		shard := fmt.Sprintf("shard-%d", i)
		c.put("storage-a", shard, data)
		tasks[i] = copyTask(fmt.Sprintf("task-%d", i), shard, data, "storage-b", "storage-a")
	}
	m1 := c.mover(mover.Config{ID: "m1", Workers: 2})
	m2 := c.mover(mover.Config{ID: "m2", Workers: 2})
	// Both movers are waiting on the shared consumer before work arrives.
	bustest.Eventually(t, timeout, "both movers pulling", func() bool {
		cons, err := c.env.JS.Consumer(context.Background(), bus.StreamTasks, bus.MoverConsumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumWaiting >= 2
	})
	for _, tk := range tasks {
		c.publish(tk)
	}
	bustest.Eventually(t, timeout, "all tasks done", func() bool {
		for _, tk := range tasks {
			if len(c.doneFor(tk.Task)) == 0 {
				return false
			}
		}
		return true
	})
	c.waitQueueEmpty()
	var total float64
	for _, m := range []*mover.Service{m1, m2} {
		reg := m.Registry()
		done := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "copy", "result", "done")
		if done == 0 {
			t.Errorf("mover %s did no work", m.Config().ID)
		}
		if again := metricstest.Value(t, reg, "rehome_mover_tasks_total", "kind", "copy", "result", "already_present"); again != 0 {
			t.Errorf("mover %s saw %v tasks already done (processed twice)", m.Config().ID, again)
		}
		total += done
	}
	if total != n {
		t.Fatalf("movers did %v copies in all, want %d", total, n)
	}
	for _, tk := range tasks {
		if got := len(c.doneFor(tk.Task)); got != 1 {
			t.Fatalf("%s reported done %d times", tk.Task, got)
		}
	}
}

func TestTaskAbandonedUntilMaxDeliverIsGivenUp(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	data := randomBytes(t, 1000)
	c.put("storage-a", "shard-1", data)
	cfg := mover.Config{ID: "m1", AckWait: time.Second, MaxDeliver: 1}
	// A mover that takes the task and dies: pull it through the shared
	// consumer and never answer.
	ctx := context.Background()
	cons, err := c.env.JS.CreateOrUpdateConsumer(ctx, bus.StreamTasks, jetstream.ConsumerConfig{
		Durable: bus.MoverConsumer, Description: "rehome movers: repair tasks", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: cfg.AckWait, MaxDeliver: cfg.MaxDeliver, MaxAckPending: mover.DefaultConfig().MaxAckPending,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.publish(copyTask("task-1", "shard-1", data, "storage-b", "storage-a"))
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(collect(batch.Messages())); got != 1 {
		t.Fatalf("fetched %d tasks, want 1", got)
	}
	c.mover(cfg)

	bustest.Eventually(t, timeout, "final failure after max deliveries", func() bool { return len(c.failedFor("task-1")) == 1 })
	if f := c.failedFor("task-1")[0]; !f.Final || !strings.Contains(f.Error, "deliveries") {
		t.Fatalf("failed event = %+v", f)
	}
	c.waitQueueEmpty()
}

func collect(ch <-chan jetstream.Msg) []jetstream.Msg {
	var out []jetstream.Msg
	for m := range ch {
		out = append(out, m)
	}
	return out
}

func TestRunFailsWithoutTheTaskStream(t *testing.T) {
	env := bustest.Start(t)
	if err := env.JS.DeleteStream(context.Background(), bus.StreamTasks); err != nil {
		t.Fatal(err)
	}
	m, err := mover.New(mover.DefaultConfig(), env.NC, env.JS, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := m.Run(ctx); err == nil || !strings.Contains(err.Error(), bus.StreamTasks) {
		t.Fatalf("Run = %v, want an error naming %s", err, bus.StreamTasks)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	env := bustest.Start(t)
	for _, cfg := range []mover.Config{
		{Workers: -1},
		{BackoffMin: time.Second, BackoffMax: time.Millisecond},
		{AckWait: time.Millisecond},
	} {
		if _, err := mover.New(cfg, env.NC, env.JS, nil, nil); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
	if _, err := mover.New(mover.Config{}, nil, nil, nil, nil); err == nil {
		t.Error("New without NATS succeeded")
	}
	m, err := mover.New(mover.Config{}, env.NC, env.JS, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Config(), mover.DefaultConfig(); got != want {
		t.Fatalf("zero config became %+v, want the defaults %+v", got, want)
	}
}

// slowSource serves data in pieces with a pause between them; while hold is
// open, the first request stops halfway and waits for it to close.
type slowSource struct {
	data  []byte
	pause time.Duration
	hold  chan struct{}

	mu   sync.Mutex
	gets int
}

func (s *slowSource) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.gets++
		first := s.gets == 1
		s.mu.Unlock()
		w.Header().Set(shardapi.HeaderSHA256, shaHex(s.data))
		w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
		if r.Method != http.MethodGet {
			return
		}
		rc := http.NewResponseController(w)
		const pieces = 10
		step := len(s.data) / pieces
		for i := 0; i < pieces; i++ {
			end := (i + 1) * step
			if i == pieces-1 {
				end = len(s.data)
			}
			if _, err := w.Write(s.data[i*step : end]); err != nil {
				return
			}
			_ = rc.Flush()
			if first && s.hold != nil && i == pieces/2 {
				select {
				case <-s.hold:
				case <-r.Context().Done():
				}
				return
			}
			time.Sleep(s.pause)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func (s *slowSource) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets
}

func TestLongCopyIsKeptAliveAndNotRedelivered(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-b")
	src := &slowSource{data: randomBytes(t, 1<<20), pause: 350 * time.Millisecond}
	c.register("storage-slow", src.start(t))
	m := c.mover(mover.Config{ID: "m1", AckWait: 1500 * time.Millisecond})

	c.publish(copyTask("task-1", "shard-1", src.data, "storage-b", "storage-slow"))
	bustest.Eventually(t, timeout, "done", func() bool { return len(c.doneFor("task-1")) == 1 })
	if d := c.doneFor("task-1")[0]; d.DurationMS < 3000 {
		t.Fatalf("copy took %d ms; the test needs it to outlast AckWait twice", d.DurationMS)
	}
	if n := src.requests(); n != 1 {
		t.Fatalf("source served %d GETs, want 1: the task was redelivered during the copy", n)
	}
	if f := c.failedFor("task-1"); len(f) != 0 {
		t.Fatalf("failed events: %+v", f)
	}
	if got := metricstest.Value(t, m.Registry(), "rehome_mover_tasks_total", "kind", "copy", "result", "done"); got != 1 {
		t.Fatalf("done metric = %v", got)
	}
	if !bytes.Equal(c.read("storage-b", "shard-1"), src.data) {
		t.Fatal("target does not hold the bytes")
	}
}

func TestShutdownAbortsACopyAndHandsTheTaskBack(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-b")
	src := &slowSource{data: randomBytes(t, 1<<20), hold: make(chan struct{})}
	defer close(src.hold)
	c.register("storage-slow", src.start(t))

	m1, err := mover.New(mover.Config{ID: "m1", Token: token, ShutdownGrace: 300 * time.Millisecond}, c.env.NC, c.env.JS, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- m1.Run(ctx) }()

	c.publish(copyTask("task-1", "shard-1", src.data, "storage-b", "storage-slow"))
	bustest.Eventually(t, timeout, "copy under way", func() bool {
		return metricstest.Value(t, m1.Registry(), "rehome_mover_tasks_in_flight") == 1 && src.requests() == 1
	})
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(timeout):
		t.Fatal("Run did not return after cancel")
	}
	if got := metricstest.Value(t, m1.Registry(), "rehome_mover_tasks_total", "kind", "copy", "result", "aborted"); got != 1 {
		t.Fatalf("aborted metric = %v, want 1", got)
	}
	if got := c.read("storage-b", "shard-1"); got != nil {
		t.Fatalf("an aborted copy left %d bytes on the target", len(got))
	}
	if len(c.failedFor("task-1")) != 0 || len(c.doneFor("task-1")) != 0 {
		t.Fatal("an aborted copy was reported")
	}
	// Handed back at once (not after the 30 s AckWait): the next mover finishes it.
	c.mover(mover.Config{ID: "m2"})
	bustest.Eventually(t, timeout, "done by the second mover", func() bool { return len(c.doneFor("task-1")) == 1 })
	if !bytes.Equal(c.read("storage-b", "shard-1"), src.data) {
		t.Fatal("target does not hold the bytes")
	}
	c.waitQueueEmpty()
}

// BenchmarkCopy measures repair throughput: b.N tasks, each streaming a
// 16 MiB shard between two real storage nodes on this machine.
func BenchmarkCopy(b *testing.B) {
	c := newCluster(b)
	c.storage("storage-a")
	c.storage("storage-b")
	const size = 16 << 20
	data := randomBytes(b, size)
	tasks := make([]*event.Task, b.N)
	for i := range tasks {
		shard := fmt.Sprintf("shard-%d", i)
		c.put("storage-a", shard, data)
		tasks[i] = copyTask(fmt.Sprintf("task-%d", i), shard, data, "storage-b", "storage-a")
	}
	c.mover(mover.Config{ID: "m1"})
	b.SetBytes(size)
	b.ResetTimer()
	for _, tk := range tasks {
		c.publish(tk)
	}
	bustest.Eventually(b, 10*time.Minute, "all copies done", func() bool { return len(c.doneFor(tasks[len(tasks)-1].Task)) == 1 && c.queued() == 0 })
	b.StopTimer()
}

// TestMoverRequestsAreRepairTraffic checks that every storage request a
// mover makes for a task carries the repair class, so nodes serve clients first.
func TestMoverRequestsAreRepairTraffic(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-b")
	data := randomBytes(t, 100_000)
	var (
		mu      sync.Mutex
		classes []string
	)
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		classes = append(classes, r.Method+" "+r.Header.Get(shardapi.HeaderClass))
		mu.Unlock()
		w.Header().Set(shardapi.HeaderSHA256, shaHex(data))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if r.Method == http.MethodGet {
			_, _ = w.Write(data)
		}
	}))
	t.Cleanup(src.Close)
	c.register("storage-src", src.Listener.Addr().String())
	c.mover(mover.Config{ID: "m1"})

	c.publish(copyTask("task-1", "shard-1", data, "storage-b", "storage-src"))
	bustest.Eventually(t, timeout, "done event for task-1", func() bool { return len(c.doneFor("task-1")) == 1 })
	if got := c.read("storage-b", "shard-1"); !bytes.Equal(got, data) {
		t.Fatalf("storage-b holds %d bytes, want %d", len(got), len(data))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(classes) == 0 {
		t.Fatal("the source saw no request")
	}
	for _, cl := range classes {
		if !strings.HasSuffix(cl, " "+shardapi.ClassRepair) {
			t.Fatalf("source saw %q, want every request marked %q", classes, shardapi.ClassRepair)
		}
	}
}
