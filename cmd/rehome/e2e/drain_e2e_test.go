package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/objects"
	"github.com/rehome/rehome/shared/shardapi"
)

// workload writes new objects and reads back old ones until stopped,
// checking every byte; it records what it wrote and when.
type workload struct {
	c      *cluster
	prefix string
	oc     *objects.Client
	mu     sync.Mutex
	want   map[string][]byte
	writes map[string]time.Time
	errs   []error
	stop   chan struct{}
	done   chan struct{}
}

// startWorkload writes seed objects named prefix-seed-N, then goes on
// writing prefix-live-N and reading the seed objects back until finish.
func (c *cluster) startWorkload(t *testing.T, prefix string, seed int) *workload {
	t.Helper()
	w := &workload{c: c, prefix: prefix, oc: c.objects(t), want: map[string][]byte{}, writes: map[string]time.Time{},
		stop: make(chan struct{}), done: make(chan struct{})}
	for i := 0; i < seed; i++ {
		w.put(context.Background(), fmt.Sprintf("%s-seed-%03d", prefix, i))
	}
	if len(w.errs) > 0 {
		t.Fatal(w.errs[0])
	}
	go w.run()
	return w
}

func (w *workload) put(ctx context.Context, key string) {
	b := make([]byte, 64<<10)
	_, _ = rand.Read(b)
	if _, err := w.oc.Put(ctx, key, bytes.NewReader(b), int64(len(b)), objects.PutOptions{}); err != nil {
		w.mu.Lock()
		w.errs = append(w.errs, fmt.Errorf("put %s: %w", key, err))
		w.mu.Unlock()
		return
	}
	w.mu.Lock()
	w.want[key], w.writes[key] = b, time.Now()
	w.mu.Unlock()
}

func (w *workload) run() {
	defer close(w.done)
	ctx := context.Background()
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		w.put(ctx, fmt.Sprintf("%s-live-%04d", w.prefix, i))
		w.mu.Lock()
		key := fmt.Sprintf("%s-seed-%03d", w.prefix, i%len(w.want))
		want, ok := w.want[key]
		w.mu.Unlock()
		if !ok {
			continue
		}
		var buf bytes.Buffer
		if _, err := w.oc.Get(ctx, key, &buf); err != nil || !bytes.Equal(buf.Bytes(), want) {
			w.mu.Lock()
			w.errs = append(w.errs, fmt.Errorf("get %s during the drain: %v (bytes equal %v)", key, err, bytes.Equal(buf.Bytes(), want)))
			w.mu.Unlock()
		}
	}
}

// finish stops the client and fails on any error it met.
func (w *workload) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	if len(w.errs) > 0 {
		t.Fatalf("%d client errors, first: %v", len(w.errs), w.errs[0])
	}
}

// sampleStatus records cluster status every 25 ms (a drain of a few MB
// takes a few hundred) until stopped and returns the highest
// under-replicated count seen, and how many samples.
func (c *cluster) sampleStatus() (stop func() (maxUnder, samples int)) {
	quit, done := make(chan struct{}), make(chan struct{})
	var maxUnder, samples int
	go func() {
		defer close(done)
		for {
			if st, err := c.status(); err == nil {
				samples++
				maxUnder = max(maxUnder, st.UnderReplicated)
			}
			select {
			case <-quit:
				return
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	return func() (int, int) { close(quit); <-done; return maxUnder, samples }
}

// TestDrainWhileClientsWriteAndRead drains storage-3 while a client writes
// and reads: no status sample shows an under-replicated shard, every object
// reads back, new writes never land on the draining node, it ends empty
// (map and disk) and `node remove` forgets it.
func TestDrainWhileClientsWriteAndRead(t *testing.T) {
	c := startDev(t, append([]string{"--nodes", "6", "--racks", "3"}, detectorTiming...)...)
	waitHealthy(t, c, 6)
	events := c.tailEvents(t)
	w := c.startWorkload(t, "drain", 120)
	stopSampling := c.sampleStatus()

	if _, err := c.rehome("node", "remove", "storage-1"); err == nil || !strings.Contains(err.Error(), "drain it first") {
		t.Fatalf("remove of a live node: %v, want a refusal saying to drain it first", err)
	}
	out, err := c.rehome("node", "drain", "storage-3")
	if err != nil || !strings.Contains(out, "draining storage-3") {
		t.Fatalf("node drain: %v\n%s", err, out)
	}
	started := time.Now()
	if st, _ := c.status(); !nodeIn(st.Nodes, "storage-3", "draining") {
		t.Fatalf("storage-3 not shown draining: %+v", st.Nodes)
	}
	if out, err := c.rehome("node", "drain", "status", "storage-3", "--follow", "--interval", "200ms"); err != nil || !strings.Contains(out, "drained") {
		t.Fatalf("drain status --follow: %v\n%s", err, out)
	}
	w.finish(t)
	maxUnder, samples := stopSampling()
	t.Logf("drain took %s; %d status samples, max under-replicated %d; %d objects", time.Since(started).Round(time.Millisecond), samples, maxUnder, len(w.want))
	if maxUnder != 0 || samples < 3 {
		t.Fatalf("%d samples, max under-replicated %d: a drain must never lower redundancy", samples, maxUnder)
	}
	for _, subj := range []string{"rehome.node.draining.storage-3", "rehome.node.drained.storage-3"} {
		waitFor(t, 10*time.Second, "event "+subj, func() bool { return events.saw(subj) })
	}

	ctx := context.Background()
	for key, b := range w.want {
		var buf bytes.Buffer
		if _, err := w.oc.Get(ctx, key, &buf); err != nil || !bytes.Equal(buf.Bytes(), b) {
			t.Fatalf("get %s after the drain: %v", key, err)
		}
		in, err := w.oc.Inspect(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range in.Shards {
			if contains(sv.Nodes, "storage-3") || len(sv.Nodes) != 3 || distinct(sv.Racks) != 3 {
				t.Fatalf("%s shard %s on %v (racks %v) after the drain (written %s after it began)", key, sv.ID, sv.Nodes, sv.Racks, w.writes[key].Sub(started))
			}
		}
	}
	// The node's disk empties as the trims' deletes run.
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	addr := ""
	for _, n := range st.Nodes {
		if n.ID == "storage-3" {
			addr = n.Addr
		}
	}
	sc := shardapi.New(c.token())
	waitFor(t, 30*time.Second, "storage-3's disk empty", func() bool {
		inv, err := sc.List(ctx, addr)
		return err == nil && len(inv.Shards) == 0
	})
	if out, err := c.rehome("node", "remove", "storage-3"); err != nil {
		t.Fatalf("remove of the drained node: %v\n%s", err, out)
	}
	if st, _ := c.status(); nodeIn(st.Nodes, "storage-3", "") {
		t.Fatalf("storage-3 still in status after remove: %+v", st.Nodes)
	}
}

// TestNodeDiesDuringADrain: storage-1 is killed while storage-3 drains;
// repair goes first, and both finish with every object intact.
func TestNodeDiesDuringADrain(t *testing.T) {
	c := startDev(t, append([]string{"--nodes", "6", "--racks", "3"}, detectorTiming...)...)
	waitHealthy(t, c, 6)
	w := c.startWorkload(t, "die", 150)
	w.finish(t)
	if _, err := c.rehome("node", "drain", "storage-3"); err != nil {
		t.Fatal(err)
	}
	pid := 0
	for _, p := range c.processes() {
		if p.ID == "storage-1" {
			pid = p.PID
		}
	}
	c.killNode(t, "storage-1", pid)
	if out, err := c.rehome("heal", "status", "--follow", "--interval", "200ms"); err != nil {
		t.Fatalf("heal status --follow: %v\n%s", err, out)
	}
	if out, err := c.rehome("node", "drain", "status", "storage-3", "--follow", "--interval", "200ms"); err != nil {
		t.Fatalf("drain status --follow: %v\n%s", err, out)
	}
	ctx := context.Background()
	for key, b := range w.want {
		var buf bytes.Buffer
		if _, err := w.oc.Get(ctx, key, &buf); err != nil || !bytes.Equal(buf.Bytes(), b) {
			t.Fatalf("get %s: %v", key, err)
		}
		in, err := w.oc.Inspect(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range in.Shards {
			if contains(sv.Nodes, "storage-3") || contains(sv.Nodes, "storage-1") || len(sv.Nodes) != 3 || distinct(sv.Racks) != 3 {
				t.Fatalf("%s shard %s on %v (racks %v), want 3 racks, neither storage-1 nor storage-3", key, sv.ID, sv.Nodes, sv.Racks)
			}
		}
	}
	// Dead and fully re-homed, storage-1 may be removed: it leaves status,
	// and the map stops listing it as a down holder.
	if out, err := c.rehome("node", "remove", "storage-1"); err != nil {
		t.Fatalf("node remove storage-1 (dead, re-homed): %v\n%s", err, out)
	}
	if st, _ := c.status(); nodeIn(st.Nodes, "storage-1", "") {
		t.Fatalf("storage-1 still in status after remove: %+v", st.Nodes)
	}
	bustest.CheckEvery(t, time.Minute, 200*time.Millisecond, func() error {
		for key := range w.want {
			in, err := w.oc.Inspect(ctx, key)
			if err != nil {
				return err
			}
			for _, sv := range in.Shards {
				if contains(sv.DownNodes, "storage-1") {
					return fmt.Errorf("%s shard %s still lists removed storage-1 (down holders %v)", key, sv.ID, sv.DownNodes)
				}
			}
		}
		return nil
	})
}

// nodeIn reports whether nodes lists id (in state, unless state is "").
func nodeIn(nodes []control.NodeStatus, id, state string) bool {
	for _, n := range nodes {
		if n.ID == id && (state == "" || string(n.State) == state) {
			return true
		}
	}
	return false
}
