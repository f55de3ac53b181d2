package planner_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/metricstest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/services/planner"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

const deadline = 20 * time.Second

// harness plays detector, storage nodes and movers around a real planner.
type harness struct {
	t     *testing.T
	env   *bustest.Env
	ctx   context.Context
	nodes []model.Node
	rack  map[string]string
	// placementsBefore is the map's holders before a failure (for checkHealed).
	placementsBefore map[string][]string
}

func newHarness(t *testing.T, n, racks int) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h := &harness{t: t, env: bustest.Start(t), ctx: ctx, rack: map[string]string{}}
	kv, err := h.env.JS.KeyValue(ctx, bus.BucketNodes)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		nd := model.Node{V: 1, ID: fmt.Sprintf("storage-%d", i), Rack: fmt.Sprintf("rack-%d", (i-1)%racks+1),
			Addr: fmt.Sprintf("127.0.0.1:%d", 7000+i), BootID: "boot", CapacityBytes: 1 << 30, Started: time.Now()}
		b, _ := json.Marshal(nd)
		if _, err := kv.Put(ctx, nd.ID, b); err != nil {
			t.Fatal(err)
		}
		hb := &event.Heartbeat{Node: nd.ID, Rack: nd.Rack, Addr: nd.Addr, BootID: "boot", CapacityBytes: 1 << 30}
		if err := bus.Publish(ctx, h.env.JS, event.HeartbeatPrefix+nd.ID, hb, ""); err != nil {
			t.Fatal(err)
		}
		h.nodes = append(h.nodes, nd)
		h.rack[nd.ID] = nd.Rack
	}
	return h
}

func testLogger() *slog.Logger {
	if os.Getenv("PLANNER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// runningPlanner is a planner started by the harness.
type runningPlanner struct {
	svc  *planner.Service
	nc   *nats.Conn
	stop func() // cancel and wait: a clean shutdown, Run must return nil
	// crash cuts the planner's connection (no lease release, no draining)
	// and then cancels it, as a killed process would.
	crash func()
}

// runPlanner runs a planner until stop or crash is called (or the test ends).
func (h *harness) runPlanner(cfg planner.Config) *runningPlanner {
	h.t.Helper()
	nc, err := bus.Connect(h.env.URL, "planner", 5*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	svc, err := planner.New(cfg, nc, js, testLogger(), time.Now)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	wait := func(wantNil bool) {
		select {
		case err := <-done:
			if err != nil && wantNil {
				h.t.Errorf("planner Run returned %v, want nil on shutdown", err)
			}
		case <-time.After(deadline):
			h.t.Error("planner did not stop")
		}
	}
	rp := &runningPlanner{svc: svc, nc: nc}
	rp.stop = func() {
		once.Do(func() {
			cancel()
			wait(true)
			nc.Close()
		})
	}
	rp.crash = func() {
		once.Do(func() {
			nc.Close()
			cancel()
			h.t.Cleanup(func() { wait(false) })
		})
	}
	h.t.Cleanup(rp.stop)
	return rp
}

// startPlanner runs a planner until the returned stop is called (or the test
// ends) and waits until a planner answers control calls.
func (h *harness) startPlanner(cfg planner.Config) (*planner.Service, func()) {
	h.t.Helper()
	rp := h.runPlanner(cfg)
	bustest.Eventually(h.t, deadline, "planner answers status", func() bool {
		var st control.ClusterStatus
		return h.call(event.CtlStatus, struct{}{}, &st) == nil
	})
	return rp.svc, rp.stop
}

// subscribeDecoded decodes every message on subject into a channel (up to
// 1024 waiting; more are dropped) until the test ends.
func subscribeDecoded[T any, P interface {
	*T
	event.Payload
}](tb testing.TB, nc *nats.Conn, subject string) <-chan T {
	tb.Helper()
	out := make(chan T, 1024)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var v T
		if event.Decode(m.Data, P(&v)) == nil {
			select {
			case out <- v:
			default:
			}
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return out
}

func (h *harness) call(subject string, req, out any) error {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	return bus.Call(ctx, h.env.NC, subject, req, out)
}

func (h *harness) status() control.ClusterStatus {
	h.t.Helper()
	var st control.ClusterStatus
	if err := h.call(event.CtlStatus, struct{}{}, &st); err != nil {
		h.t.Fatalf("status: %v", err)
	}
	return st
}

func (h *harness) heal() event.Progress {
	h.t.Helper()
	var p event.Progress
	if err := h.call(event.CtlHealStatus, struct{}{}, &p); err != nil {
		h.t.Fatalf("heal status: %v", err)
	}
	return p
}

// manifest builds an object of n chunks of size bytes (contents derived from key).
func manifest(key string, n int, size int64) model.Manifest {
	id := "obj-" + hex.EncodeToString([]byte(key))
	m := model.Manifest{V: 1, Key: key, ID: id, Layout: model.Layout{RF: 3}, ChunkSize: size, Created: time.Now().UTC()}
	whole := sha256.New()
	for i := 0; i < n; i++ {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", key, i)))
		whole.Write(sum[:])
		m.Shards = append(m.Shards, model.ShardRef{ID: fmt.Sprintf("%s-c%06d", id, i), Stripe: i, Size: size, SHA256: hex.EncodeToString(sum[:])})
		m.Size += size
	}
	m.SHA256 = hex.EncodeToString(whole.Sum(nil))
	return m
}

// put allocates and commits an object as the CLI would, every replica acknowledged.
func (h *harness) put(key string, chunks int, size int64) (model.Manifest, control.CommitRequest) {
	h.t.Helper()
	m := manifest(key, chunks, size)
	req := control.AllocateRequest{Key: key, Layout: m.Layout}
	for _, s := range m.Shards {
		req.Shards = append(req.Shards, control.ShardSpec{ID: s.ID, Stripe: s.Stripe, Size: s.Size})
	}
	var alloc control.AllocateReply
	if err := h.call(event.CtlAllocate, req, &alloc); err != nil {
		h.t.Fatalf("allocate %s: %v", key, err)
	}
	if len(alloc.Allocations) != chunks {
		h.t.Fatalf("%d allocations for %d chunks", len(alloc.Allocations), chunks)
	}
	commit := control.CommitRequest{Manifest: m, Nodes: map[string][]string{}}
	for i, a := range alloc.Allocations {
		if a.Shard != m.Shards[i].ID || len(a.Nodes) != 3 {
			h.t.Fatalf("allocation %d: %+v", i, a)
		}
		racks := map[string]bool{}
		for _, ep := range a.Nodes {
			commit.Nodes[a.Shard] = append(commit.Nodes[a.Shard], ep.Node)
			racks[ep.Rack] = true
			if ep.Addr == "" {
				h.t.Fatalf("endpoint without address: %+v", ep)
			}
		}
		if len(racks) != 3 {
			h.t.Fatalf("allocation %s spans racks %v, want 3", a.Shard, racks)
		}
	}
	if err := h.call(event.CtlCommit, commit, nil); err != nil {
		h.t.Fatalf("commit %s: %v", key, err)
	}
	return m, commit
}

func (h *harness) setState(node string, st model.State) {
	h.t.Helper()
	kv, err := h.env.JS.KeyValue(h.ctx, bus.BucketLiveness)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := json.Marshal(model.Liveness{V: 1, Node: node, State: st, Since: time.Now().UTC(), Reason: "test"})
	if _, err := kv.Put(h.ctx, node, b); err != nil {
		h.t.Fatal(err)
	}
}

// mover consumes the work queue like the movers' shared consumer, records
// every task and answers copies and rebuilds through answer (nil: always
// done), after work (nil: at once), which stands for the time a copy takes.
// A rebuild done gets one Done per rebuilt piece and each shard of a
// batched copy is recorded and answered alone, as the real movers do.
type mover struct {
	mu     sync.Mutex
	tasks  []event.Task
	msgs   int // copy task messages taken (a batch is one)
	answer func(event.Task) *event.Failed
	work   time.Duration
}

func (mv *mover) copies() map[string][]event.Task {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	out := map[string][]event.Task{}
	for _, t := range mv.tasks {
		if t.Kind == event.KindCopy {
			out[t.Shard] = append(out[t.Shard], t)
		}
	}
	return out
}

func (mv *mover) rebuilds() []event.Task {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	var out []event.Task
	for _, t := range mv.tasks {
		if t.Kind == event.KindRebuild {
			out = append(out, t)
		}
	}
	return out
}

func (mv *mover) deletes() []event.Task {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	var out []event.Task
	for _, t := range mv.tasks {
		if t.Kind == event.KindDelete {
			out = append(out, t)
		}
	}
	return out
}

// runMover starts a mover until the returned stop is called.
func (h *harness) runMover(mv *mover) (stop func()) {
	h.t.Helper()
	cons, err := h.env.JS.CreateOrUpdateConsumer(h.ctx, bus.StreamTasks, jetstream.ConsumerConfig{
		Durable: bus.MoverConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			batch, err := cons.Fetch(16, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				continue
			}
			for msg := range batch.Messages() {
				var queued event.Task
				if err := event.Decode(msg.Data(), &queued); err != nil {
					h.t.Errorf("mover got a malformed task: %v", err)
					_ = msg.Term()
					continue
				}
				if queued.Kind == event.KindCopy {
					mv.mu.Lock()
					mv.msgs++
					mv.mu.Unlock()
				}
				for _, t := range queued.Members() { // each shard of a batch alone, as the movers do
					mv.mu.Lock()
					mv.tasks = append(mv.tasks, t)
					answer, work := mv.answer, mv.work
					mv.mu.Unlock()
					if work > 0 { // the copy itself takes work (or ends with the test)
						select {
						case <-time.After(work):
						case <-ctx.Done():
						}
					}
					var f *event.Failed
					if answer != nil && t.Kind != event.KindDelete {
						f = answer(t)
					}
					switch {
					case f != nil:
						err = bus.Publish(ctx, h.env.JS, event.FailedPrefix+t.Target, f, "")
					case t.Kind == event.KindRebuild:
						for _, p := range t.Rebuild {
							err = errors.Join(err, bus.Publish(ctx, h.env.JS, event.DonePrefix+p.Node, &event.Done{
								Task: t.Task, Incident: t.Incident, Shard: p.Shard, Kind: t.Kind, Target: p.Node,
								Source: strings.Join(t.Sources[:t.K], ","), Bytes: p.Size, DurationMS: 1}, "done-"+t.Task+"-"+p.Shard))
						}
					default:
						err = bus.Publish(ctx, h.env.JS, event.DonePrefix+t.Target, &event.Done{
							Task: t.Task, Incident: t.Incident, Shard: t.Shard, Kind: t.Kind, Target: t.Target,
							Source: first(t.Sources), Bytes: t.Bytes, DurationMS: 1}, "done-"+t.Task)
					}
					if err != nil && ctx.Err() == nil {
						h.t.Errorf("mover publish: %v", err)
					}
				}
				_ = msg.Ack()
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	h.t.Cleanup(stop)
	return stop
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// placements reads the whole placement map.
func (h *harness) placements() map[string]model.Placement {
	h.t.Helper()
	kv, err := h.env.JS.KeyValue(h.ctx, bus.BucketPlacement)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]model.Placement{}
	keys, err := kv.ListKeys(h.ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	for k := range keys.Keys() {
		e, err := kv.Get(h.ctx, k)
		if err != nil {
			h.t.Fatal(err)
		}
		var p model.Placement
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			h.t.Fatal(err)
		}
		out[k] = p
	}
	return out
}

// checkHealed asserts every entry has 3 live holders in 3 racks.
func (h *harness) checkHealed(down ...string) {
	h.t.Helper()
	for id, p := range h.placements() {
		racks := map[string]bool{}
		live := 0
		for _, n := range p.Nodes {
			if slices.Contains(down, n) {
				continue
			}
			live++
			racks[h.rack[n]] = true
		}
		if live != 3 || len(racks) != 3 {
			h.t.Errorf("shard %s: %d live holders in racks %v (nodes %v)", id, live, racks, p.Nodes)
		}
		for _, d := range down {
			if !slices.Contains(p.Nodes, d) && slices.Contains(h.placementsBefore[id], d) {
				h.t.Errorf("shard %s: down holder %s dropped from the map", id, d)
			}
		}
	}
}

// setStateSeen sets a node's liveness and waits until the planner's status shows it.
func (h *harness) setStateSeen(node string, st model.State) {
	h.t.Helper()
	h.setState(node, st)
	bustest.Eventually(h.t, deadline, node+" seen "+string(st), func() bool {
		for _, n := range h.status().Nodes {
			if n.ID == node {
				return n.State == st
			}
		}
		return false
	})
}

func (h *harness) waitHealthy() control.ClusterStatus {
	h.t.Helper()
	var st control.ClusterStatus
	bustest.Eventually(h.t, deadline, "cluster healthy again", func() bool {
		st = h.status()
		return st.UnderReplicated == 0 && st.InFlight == 0 && st.Lost == 0
	})
	return st
}

func fastConfig() planner.Config {
	cfg := planner.DefaultConfig()
	cfg.TickInterval = 50 * time.Millisecond
	cfg.ProgressInterval = 100 * time.Millisecond
	cfg.LeaseTTL = 2 * time.Second
	return cfg
}

func TestRepairAfterNodeLoss(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	for i := 0; i < 30; i++ {
		h.put(fmt.Sprintf("object-%02d", i), 1+i%3, 1000)
	}
	st := h.status()
	if st.Objects != 30 || st.Shards != 60 || st.UnderReplicated != 0 || len(st.Nodes) != 6 {
		t.Fatalf("status after writes: %+v", st)
	}
	total := 0
	for _, n := range st.Nodes {
		total += n.Shards
		if n.Shards < 25 || n.Shards > 35 {
			t.Errorf("node %s holds %d of 180 replicas: unbalanced", n.ID, n.Shards)
		}
	}
	if total != 180 {
		t.Fatalf("nodes hold %d replicas, want 180", total)
	}
	h.placementsBefore = map[string][]string{}
	lostHere := 0
	for id, p := range h.placements() {
		h.placementsBefore[id] = p.Nodes
		if slices.Contains(p.Nodes, "storage-1") {
			lostHere++
		}
	}

	progress := subscribeDecoded[event.Progress](t, h.env.NC, event.HealProgress)

	h.setState("storage-1", model.StateDown)
	bustest.Eventually(t, deadline, "loss seen", func() bool { return h.status().UnderReplicated == lostHere })
	if p := h.heal(); p.BytesRemaining != int64(lostHere)*1000 || p.UnderReplicated != lostHere {
		t.Fatalf("heal status %+v, want %d shards / %d bytes", p, lostHere, lostHere*1000)
	}
	mv := &mover{}
	h.runMover(mv)
	st = h.waitHealthy()
	h.checkHealed("storage-1")
	for shard, ts := range mv.copies() {
		if len(ts) != 1 {
			t.Errorf("shard %s got %d copy tasks, want 1", shard, len(ts))
		}
		task := ts[0]
		if task.Target != "storage-4" || task.Sources[0] == "storage-1" || task.Attempt != 1 ||
			len(task.SHA256) != 64 || task.Bytes != 1000 || task.Incident == "" {
			t.Errorf("task %+v", task)
		}
	}
	if got := len(mv.copies()); got != lostHere {
		t.Errorf("%d shards copied, want %d", got, lostHere)
	}
	mv.mu.Lock()
	msgs := mv.msgs
	mv.mu.Unlock()
	if msgs*4 > lostHere { // one target, a few sources: batches of up to 32
		t.Errorf("%d copy task messages for %d small shards: they should travel batched", msgs, lostHere)
	}
	p := h.heal()
	if p.UnderReplicated != 0 || p.BytesRemaining != 0 || p.ETASeconds != 0 || p.VerifiedBytes != int64(lostHere)*1000 {
		t.Errorf("heal status after repair %+v", p)
	}
	bustest.Eventually(t, deadline, "a progress event with a rate", func() bool {
		select {
		case p := <-progress:
			return p.RateBytesPerSec > 0
		default:
			return false
		}
	})
	if st.Shards != 60 {
		t.Errorf("status %+v", st)
	}
}

func TestCommitConflictRetryAndDelete(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	mv := &mover{}
	h.runMover(mv)
	_, commit := h.put("dup", 2, 10)

	// A retried identical commit succeeds; another object under the key conflicts.
	if err := h.call(event.CtlCommit, commit, nil); err != nil {
		t.Fatalf("retried commit: %v", err)
	}
	other := commit
	other.Manifest = manifest("dup", 1, 10)
	other.Manifest.ID = "another-object"
	other.Manifest.Shards[0].ID = "another-object-c000000"
	other.Nodes = map[string][]string{"another-object-c000000": {"storage-1", "storage-2", "storage-3"}}
	err := h.call(event.CtlCommit, other, nil)
	if !errors.Is(err, control.ErrConflict) || err.Error() != "object dup exists" {
		t.Fatalf("commit over an existing key: %v, want conflict %q", err, "object dup exists")
	}
	if st := h.status(); st.Objects != 1 || st.Shards != 2 {
		t.Fatalf("a refused commit left traces: %+v", st)
	}
	// Overwrite replaces it and schedules the old shards' deletion.
	other.Overwrite = true
	if err := h.call(event.CtlCommit, other, nil); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	bustest.Eventually(t, deadline, "old shards unmapped and deleted", func() bool {
		st := h.status()
		return st.Objects == 1 && st.Shards == 1 && len(mv.deletes()) == 6
	})

	// Delete: not found, then found.
	err = h.call(event.CtlDelete, control.DeleteRequest{Key: "missing"}, nil)
	if !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("delete of a missing key: %v", err)
	}
	om, _ := h.put("other", 3, 10)
	if st := h.status(); st.Objects != 2 || st.Shards != 4 {
		t.Fatalf("status %+v", st)
	}
	h.setState("storage-6", model.StateDown) // its copies get no delete task
	bustest.Eventually(t, deadline, "storage-6 seen down", func() bool { return h.status().Nodes[5].State == model.StateDown })
	h.waitHealthy()
	before := h.placements()
	if err := h.call(event.CtlDelete, control.DeleteRequest{Key: "other"}, nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	st := h.status()
	if st.Objects != 1 || st.Shards != 1 {
		t.Fatalf("status after delete: %+v", st)
	}
	want := map[string]bool{}
	for _, sh := range om.Shards {
		for _, n := range before[sh.ID].Nodes {
			if n != "storage-6" {
				want["delete-"+sh.ID+"-"+n] = true
			}
		}
	}
	bustest.Eventually(t, deadline, "delete tasks for every live copy of the deleted object", func() bool {
		got := map[string]bool{}
		for _, d := range mv.deletes() {
			if d.Shard[:len(om.ID)] == om.ID {
				got[d.Task] = true
			}
		}
		return len(got) == len(want)
	})
	for _, d := range mv.deletes() {
		if d.Shard[:len(om.ID)] == om.ID && !want[d.Task] {
			t.Errorf("unexpected delete task %s", d.Task)
		}
	}
	// Invalid requests are refused as invalid.
	bad := commit
	bad.Manifest.Shards = nil
	if err := h.call(event.CtlCommit, bad, nil); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("invalid manifest: %v", err)
	}
	bad = commit
	bad.Nodes = map[string][]string{}
	if err := h.call(event.CtlCommit, bad, nil); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("commit without nodes: %v", err)
	}
	if err := h.call(event.CtlAllocate, control.AllocateRequest{Key: "x", Layout: model.Layout{RF: 7},
		Shards: []control.ShardSpec{{ID: "s", Size: 1}}}, nil); err == nil || errors.Is(err, model.ErrInvalid) {
		t.Fatalf("allocate rf 7 on 6 nodes: %v, want an unavailable refusal", err)
	}
}

func TestRestartMidRepairIssuesNoDuplicates(t *testing.T) {
	h := newHarness(t, 6, 3)
	_, stop := h.startPlanner(fastConfig())
	for i := 0; i < 20; i++ {
		h.put(fmt.Sprintf("o%02d", i), 2, 100)
	}
	h.placementsBefore = map[string][]string{}
	for id, p := range h.placements() {
		h.placementsBefore[id] = p.Nodes
	}
	h.setState("storage-1", model.StateDown)
	// No mover yet: the planner fills storage-4's two write slots (PerNodeIn).
	queued := func() int { return len(h.queuedTasks()) }
	bustest.Eventually(t, deadline, "two tasks queued", func() bool { return queued() == 2 })
	stop()

	h.startPlanner(fastConfig())
	// Several ticks of the new planner: it must add nothing.
	bustest.Consistently(t, 300*time.Millisecond, "restarted planner queues the same 2 tasks", func() bool { return queued() == 2 })
	mv := &mover{}
	h.runMover(mv)
	h.waitHealthy()
	h.checkHealed("storage-1")
	for shard, ts := range mv.copies() {
		if len(ts) != 1 {
			t.Errorf("shard %s got %d copy tasks across the restart, want 1", shard, len(ts))
		}
	}
}

func TestFailedCopyIsReplanned(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	h.put("f", 1, 100)
	var failedOnce sync.Map
	mv := &mover{answer: func(task event.Task) *event.Failed {
		if _, loaded := failedOnce.LoadOrStore(task.Shard, true); loaded {
			return nil
		}
		return &event.Failed{Task: task.Task, Shard: task.Shard, Kind: task.Kind, Target: task.Target,
			Error: "disk on fire", Attempt: task.Attempt, Final: true}
	}}
	h.runMover(mv)
	p := h.placements()
	var holder string
	for _, pl := range p {
		holder = pl.Nodes[0]
	}
	h.setStateSeen(holder, model.StateDown)
	h.waitHealthy()
	if len(mv.copies()) != 1 {
		t.Fatalf("copies %+v, want tasks for the one shard", mv.copies())
	}
	for shard, ts := range mv.copies() {
		if len(ts) != 2 || ts[0].Attempt != 1 || ts[1].Attempt != 2 || ts[0].Task == ts[1].Task {
			t.Fatalf("shard %s tasks %+v: want attempt 1 (failed) then 2", shard, ts)
		}
	}
}

func TestStallIsReportedOnce(t *testing.T) {
	h := newHarness(t, 6, 3)
	cfg := fastConfig()
	cfg.StallAfter = 500 * time.Millisecond
	h.startPlanner(cfg)
	h.put("s", 1, 100)
	var mu sync.Mutex
	stalls := 0
	sub, err := h.env.NC.Subscribe(event.HealStalled, func(m *nats.Msg) {
		var s event.Stalled
		if event.Decode(m.Data, &s) == nil && s.UnderReplicated == 1 {
			mu.Lock()
			stalls++
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for _, pl := range h.placements() {
		h.setState(pl.Nodes[0], model.StateDown)
	}
	bustest.Eventually(t, deadline, "stalled reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return stalls > 0 && h.heal().Stalled
	})
	// Ten more progress rounds, still stalled: announced once.
	bustest.Consistently(t, time.Second, "stall announced once", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return stalls == 1
	})
}

func TestLostShardIsAnnounced(t *testing.T) {
	h := newHarness(t, 6, 3)
	h.startPlanner(fastConfig())
	m, _ := h.put("gone", 1, 100)
	lost := make(chan event.Lost, 4)
	sub, err := h.env.NC.Subscribe(event.LostPrefix+"*", func(msg *nats.Msg) {
		var l event.Lost
		if event.Decode(msg.Data, &l) == nil {
			lost <- l
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for _, n := range h.placements()[m.Shards[0].ID].Nodes {
		h.setState(n, model.StateDown)
	}
	select {
	case l := <-lost:
		if l.Shard != m.Shards[0].ID || l.Key != "gone" || len(l.Nodes) != 3 {
			t.Fatalf("lost event %+v", l)
		}
	case <-time.After(deadline):
		t.Fatal("no lost event")
	}
	if st := h.status(); st.Lost != 1 || st.UnderReplicated != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestGarbageIsDroppedAndCounted(t *testing.T) {
	h := newHarness(t, 6, 3)
	svc, _ := h.startPlanner(fastConfig())
	for _, subj := range []string{event.DonePrefix + "storage-1", event.FailedPrefix + "storage-2"} {
		for _, junk := range []string{"not json", `{"v":2,"shard":"x","target":"storage-1"}`, `{"v":1,"shard":"../etc","target":"storage-1"}`, `{}`} {
			if _, err := h.env.JS.Publish(h.ctx, subj, []byte(junk)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, subj := range []string{event.CtlAllocate, event.CtlCommit, event.CtlDelete} {
		msg, err := h.env.NC.Request(subj, []byte("{{{"), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: no answer to garbage: %v", subj, err)
		}
		if err := control.DecodeReply(msg.Data, nil); !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("%s: garbage answered %v, want invalid", subj, err)
		}
	}
	if err := h.call(event.CtlAllocate, control.AllocateRequest{Key: "k", Layout: model.Layout{RF: 3},
		Shards: []control.ShardSpec{{ID: "a/b", Size: 1}}}, nil); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("bad shard id: %v", err)
	}
	if err := h.env.NC.Publish(event.HeartbeatPrefix+"storage-1", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	kv, _ := h.env.JS.KeyValue(h.ctx, bus.BucketPlacement)
	if _, err := kv.Put(h.ctx, "junk", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	lkv, _ := h.env.JS.KeyValue(h.ctx, bus.BucketLiveness)
	if _, err := lkv.Put(h.ctx, "storage-1", []byte(`{"v":1,"node":"storage-1","state":"exploded"}`)); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, deadline, "malformed input counted", func() bool {
		return metricstest.Value(t, svc.Registry(), "rehome_planner_malformed_events_total") >= 8+3+1+1+1+1
	})
	if st := h.status(); st.Shards != 0 || len(st.Nodes) != 6 || st.Nodes[0].State != model.StateUp {
		t.Fatalf("status after garbage: %+v", st)
	}
	h.put("still-works", 1, 1)
}

// TestRehomeSpreadsOverSurvivors: with one node per rack, the replicas a dead
// node held are spread evenly over the five survivors.
func TestRehomeSpreadsOverSurvivors(t *testing.T) {
	h := newHarness(t, 6, 6)
	h.startPlanner(fastConfig())
	for i := 0; i < 100; i++ {
		h.put(fmt.Sprintf("o%03d", i), 1, 16<<10)
	}
	h.placementsBefore = map[string][]string{}
	for id, p := range h.placements() {
		h.placementsBefore[id] = p.Nodes
	}
	victim := h.status().Nodes[0]
	h.setStateSeen(victim.ID, model.StateDown)
	mv := &mover{}
	h.runMover(mv)
	h.waitHealthy()
	h.checkHealed(victim.ID)
	per := map[string]int{}
	total := 0
	for _, ts := range mv.copies() {
		per[ts[0].Target]++
		total++
	}
	maxN := 0
	for _, n := range per {
		maxN = max(maxN, n)
	}
	mean := float64(total) / 5
	if total != victim.Shards || len(per) != 5 || float64(maxN)/mean > 1.25 {
		t.Fatalf("re-homed %d of %d replicas as %v: max/mean %.2f, want 5 survivors and <= 1.25", total, victim.Shards, per, float64(maxN)/mean)
	}
}

// TestCopysetPlacementKeepsShardsOnFewGroups: under --placement copyset,
// new shards land on a few fixed rack-distinct groups of nodes (9 nodes,
// scatter width 2: one permutation, 3 groups), where random placement
// spreads them over many; a node's loss is repaired inside the groups
// (every shard that lost the same node goes to the same new one).
func TestCopysetPlacementKeepsShardsOnFewGroups(t *testing.T) {
	for _, tc := range []struct {
		placement string
		maxGroups int
	}{{planner.PlacementCopyset, 3}, {planner.PlacementRandom, 0}} {
		t.Run(tc.placement, func(t *testing.T) {
			h := newHarness(t, 9, 3)
			cfg := fastConfig()
			cfg.Placement, cfg.ScatterWidth = tc.placement, 2
			h.startPlanner(cfg)
			groups := map[string]int{}
			for i := 0; i < 30; i++ {
				_, commit := h.put(fmt.Sprintf("object-%02d", i), 1, 1000)
				for _, nodes := range commit.Nodes {
					groups[fmt.Sprint(slices.Sorted(slices.Values(nodes)))]++
				}
			}
			t.Logf("%s: 30 shards on %d groups of nodes", tc.placement, len(groups))
			if tc.maxGroups > 0 && len(groups) > tc.maxGroups {
				t.Fatalf("copyset placement used %d groups, want at most %d: %v", len(groups), tc.maxGroups, groups)
			}
			if tc.maxGroups > 0 {
				// storage-1 dies: each of its groups' shards goes to one new node.
				before := h.placements()
				h.setStateSeen("storage-1", model.StateDown) // else "healthy" may come before the verdict
				mv := &mover{}
				h.runMover(mv)
				h.waitHealthy()
				h.checkHealed("storage-1")
				targets := map[string]map[string]bool{} // survivors -> targets
				for shard, ts := range mv.copies() {
					survivors := slices.DeleteFunc(slices.Clone(before[shard].Nodes), func(n string) bool { return n == "storage-1" })
					key := fmt.Sprint(slices.Sorted(slices.Values(survivors)))
					if targets[key] == nil {
						targets[key] = map[string]bool{}
					}
					for _, task := range ts {
						targets[key][task.Target] = true
					}
				}
				if len(targets) == 0 {
					t.Fatal("storage-1 held nothing: the repair check proves nothing")
				}
				for survivors, tg := range targets {
					if len(tg) != 1 {
						t.Errorf("shards surviving on %s were repaired onto %d nodes %v, want one", survivors, len(tg), tg)
					}
				}
			}
			if tc.maxGroups == 0 && len(groups) <= 3 {
				t.Fatalf("random placement used only %d groups: the comparison proves nothing", len(groups))
			}
		})
	}
	cfg := planner.DefaultConfig()
	cfg.Placement = "clustered"
	if _, err := planner.New(cfg, nil, nil, testLogger(), time.Now); err == nil || !strings.Contains(err.Error(), `placement "clustered"`) {
		t.Fatalf("New with placement clustered: %v, want a refusal naming it", err)
	}
}
