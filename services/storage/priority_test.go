package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/shardapi"
)

const throttledSeries = "rehome_storage_repair_throttled_seconds_total"

// startPriorityAPI is startAPI with the repair gate on: repair paced to pace
// bytes per second while busy, busy for window after a client transfer.
func startPriorityAPI(t *testing.T, pace int64, window time.Duration) *testNode {
	t.Helper()
	dir := t.TempDir()
	store, err := disk.Open(dir, disk.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg := prometheus.NewRegistry()
	a := &api{store: store, node: "storage-t", maxShard: DefaultMaxShardBytes,
		prio: newPriority(pace, window, DefaultRepairNice, reg), m: newMetrics(reg, store, 0), reg: reg, log: testLogger(t)}
	srv := httptest.NewServer(a.handler())
	t.Cleanup(srv.Close)
	return &testNode{addr: strings.TrimPrefix(srv.URL, "http://"), dir: dir, store: store}
}

func readAll(ctx context.Context, c *shardapi.Client, addr, id string) ([]byte, error) {
	body, _, err := c.Get(ctx, addr, id)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(body)
}

// A client's GET is served at once while a repair stream through the same
// node is paced, and the repair stream still completes with every byte.
func TestForegroundGetIsServedWhileRepairIsPaced(t *testing.T) {
	const pace = 1 << 20 // the floor, bytes per second
	n := startPriorityAPI(t, pace, time.Minute)
	c := shardapi.New("")
	ctx := testCtx(t)
	big, small := data(1, 12<<20), data(2, 64<<10)
	for id, b := range map[string][]byte{"big": big, "small": small} {
		// Client PUTs: from here on the node is serving clients.
		if err := c.Put(ctx, n.addr, id, sum(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}

	type result struct {
		b    []byte
		err  error
		took time.Duration
	}
	repair := make(chan result, 1)
	start := time.Now()
	go func() {
		b, err := readAll(shardapi.AsRepair(ctx), c, n.addr, "big")
		repair <- result{b, err, time.Since(start)}
	}()
	bustest.Eventually(t, 10*time.Second, "repair stream paced", func() bool { return scrape(t, n.addr, throttledSeries) > 0 })

	got, err := readAll(ctx, c, n.addr, "small")
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("client GET during a paced repair: %d bytes, %v", len(got), err)
	}
	select {
	case r := <-repair:
		t.Fatalf("the repair stream (12 MiB, paced from 4 MiB/s up) ended before the client's GET was answered, after %s (err %v)", r.took, r.err)
	default:
	}

	r := <-repair
	if r.err != nil || !bytes.Equal(r.b, big) {
		t.Fatalf("repair GET: %d of %d bytes, %v", len(r.b), len(big), r.err)
	}
}

// The gate's pace follows the clients' latency: windows of client reads
// alone teach it their idle latency; windows where repair runs and client
// reads are slow cut the pace down to the floor; windows where they are
// fine raise it again.
func TestRepairPaceFollowsClientLatency(t *testing.T) {
	const floor = 1 << 20
	p := newPriority(floor, time.Minute, 0, nil)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	ctx := context.Background()
	pace := func() float64 { return float64(p.lim.Limit()) }
	// window runs one pacing window: repair moves a byte if repair, the
	// clients' reads take lat.
	window := func(repair bool, lat time.Duration) {
		if repair {
			if err := p.wait(ctx, 1); err != nil {
				t.Fatal(err)
			}
		}
		for range minPaceSamples {
			p.observe(lat)
		}
		now = now.Add(paceTick)
	}
	window(false, time.Millisecond) // opens the first window
	start := pace()
	for range 3 {
		window(false, time.Millisecond)
	}
	if pace() <= start {
		t.Fatalf("pace went from %.0f to %.0f while clients ran at their idle latency with no repair: want it raised, so repair starts unpaced", start, pace())
	}
	for range 10 {
		window(true, 5*time.Millisecond)
	}
	if pace() != floor {
		t.Fatalf("pace %.0f after repair slowed clients 5x for 1 s, want the floor %d", pace(), floor)
	}
	for range 10 {
		window(true, time.Millisecond)
	}
	if pace() <= 4*floor {
		t.Fatalf("pace %.0f after 1 s of repair with clients at their idle latency, want it raised well above the floor", pace())
	}
}

// With no client traffic repair runs unpaced; once a client transfer has
// been served, a repair PUT is paced and still lands intact.
func TestRepairRunsUnpacedUntilClientsArrive(t *testing.T) {
	n := startPriorityAPI(t, 1<<20, time.Minute)
	c := shardapi.New("")
	ctx := testCtx(t)
	rctx := shardapi.AsRepair(ctx)
	first, second := data(3, 1<<20), data(4, 1<<20)
	if err := c.Put(rctx, n.addr, "first", sum(first), int64(len(first)), bytes.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(rctx, c, n.addr, "first"); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("repair GET: %d bytes, %v", len(got), err)
	}
	if got := scrape(t, n.addr, throttledSeries); got != 0 {
		t.Fatalf("repair waited %v s on a node without clients, want 0", got)
	}

	if _, err := readAll(ctx, c, n.addr, "first"); err != nil { // a client's read
		t.Fatal(err)
	}
	if err := c.Put(rctx, n.addr, "second", sum(second), int64(len(second)), bytes.NewReader(second)); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, n.addr, throttledSeries); got <= 0 {
		t.Fatalf("repair PUT after a client's GET: throttled %v s, want > 0", got)
	}
	if info, err := c.Head(ctx, n.addr, "second"); err != nil || info.SHA256 != sum(second) {
		t.Fatalf("repaired shard: %+v, %v", info, err)
	}
}

// A paced repair stream stops waiting when its context ends; a node
// without a gate lets everything through.
func TestRepairWaitEndsWithItsContext(t *testing.T) {
	p := newPriority(1<<20, time.Minute, 0, nil)
	done := p.serve() // a client transfer in flight: the node is busy
	defer done()
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.wait(ctx, repairChunk); err != nil { // the burst
		t.Fatal(err)
	}
	cancel()
	if err := p.wait(ctx, repairChunk); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with an ended context = %v, want context.Canceled", err)
	}
	var none *priority // no gate: everything passes
	none.serve()()
	if err := none.wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if r := none.repairReader(ctx, strings.NewReader("x")); r == nil {
		t.Fatal("nil gate returned no reader")
	}
}

// TestRepairPaceConfig checks the pace's defaults and that a pace no transfer
// deadline could live with is refused in one line.
func TestRepairPaceConfig(t *testing.T) {
	d := DefaultConfig()
	if d.RepairPaceBytesPerSec != DefaultRepairPaceBytesPerSec || d.RepairBusyWindow != DefaultRepairBusyWindow {
		t.Fatalf("defaults: pace %d window %s", d.RepairPaceBytesPerSec, d.RepairBusyWindow)
	}
	base := Config{ID: "s", Rack: "r", Dir: "/d"}
	if c, err := base.withDefaults(); err != nil || c.RepairPaceBytesPerSec != 0 || c.RepairBusyWindow != DefaultRepairBusyWindow {
		t.Fatalf("zero pace: %+v, %v; want kept (no pacing) and the default window", c, err)
	}
	for _, pace := range []int64{-1, 1000} {
		c := base
		c.RepairPaceBytesPerSec = pace
		if _, err := c.withDefaults(); err == nil || !strings.Contains(err.Error(), "repair pace") {
			t.Fatalf("pace %d: err %v, want a repair pace error", pace, err)
		}
	}
}

// While the node serves clients a background stream (rebalancing) is
// charged to the background bucket as well as the repair one, at a quarter
// of the floor; a repair stream is not; with no clients neither waits.
func TestBackgroundStreamsArePacedHarderThanRepair(t *testing.T) {
	const floor = 4 << 20
	p := newPriority(floor, time.Minute, 0, nil)
	if got := float64(p.bg.Limit()); got != floor*backgroundShare {
		t.Fatalf("background rate %.0f, want %.0f", got, floor*backgroundShare)
	}
	ctx := context.Background()
	bg := shardapi.WithClass(ctx, shardapi.ClassBackground)
	full := p.bg.Tokens()
	if err := p.wait(bg, 1000); err != nil { // idle: nothing is charged
		t.Fatal(err)
	}
	if p.bg.Tokens() < full {
		t.Fatalf("background bucket charged on an idle node: %.0f of %.0f tokens left", p.bg.Tokens(), full)
	}
	done := p.serve()
	defer done()
	if err := p.wait(shardapi.AsRepair(ctx), 1000); err != nil {
		t.Fatal(err)
	}
	if p.bg.Tokens() < full {
		t.Fatalf("a repair stream was charged to the background bucket: %.0f of %.0f tokens left", p.bg.Tokens(), full)
	}
	if err := p.wait(bg, 1000); err != nil {
		t.Fatal(err)
	}
	if left := p.bg.Tokens(); left > full-900 {
		t.Fatalf("a background stream on a busy node left %.0f of %.0f tokens, want 1000 taken", left, full)
	}
}
