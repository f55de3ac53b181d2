package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
	"github.com/rehome/rehome/shared/shardapi"
)

// scrubNode starts a node whose scrub runs only when asked (ScrubNow), at rate.
func scrubNode(t *testing.T, env *bustest.Env, id string, rate int64) *running {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = id, "rack-1", t.TempDir()
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.ScrubBytesPerSec = rate
	cfg.ScrubDelay = time.Hour
	return startService(t, env, cfg)
}

// putShards writes bodies as shards named prefix-00, prefix-01... and returns
// the ids.
func putShards(t *testing.T, addr, prefix string, bodies ...[]byte) []string {
	t.Helper()
	c := shardapi.New("")
	var ids []string
	for i, b := range bodies {
		id := fmt.Sprintf("%s-%02d", prefix, i)
		if err := c.Put(testCtx(t), addr, id, sum(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// flipOnDisk flips one bit of shard id's bytes (not its header) in dir.
func flipOnDisk(t *testing.T, dir, id string, off int64) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "shards", id[:2], id), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, disk.HeaderSize+off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, disk.HeaderSize+off); err != nil {
		t.Fatal(err)
	}
}

// corruptEvents reads every corrupt event of node from the events stream.
func corruptEvents(t *testing.T, env *bustest.Env, node string) []event.Corrupt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := env.JS.OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{event.CorruptPrefix + node},
	})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Corrupt
	for msg := range batch.Messages() {
		var c event.Corrupt
		if err := event.Decode(msg.Data(), &c); err != nil {
			t.Fatalf("corrupt event on %s does not decode: %v", msg.Subject(), err)
		}
		out = append(out, c)
	}
	return out
}

// inventory asks node for one page over the bus.
func inventory(t *testing.T, env *bustest.Env, node string, req any) (control.InventoryPage, error) {
	t.Helper()
	var page control.InventoryPage
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := bus.Call(ctx, env.NC, control.InventoryPrefix+node, req, &page)
	return page, err
}

// inventoryIDs walks node's whole inventory with pages of limit shards.
func inventoryIDs(t *testing.T, env *bustest.Env, node string, limit int) []string {
	t.Helper()
	var ids []string
	after := ""
	for range 1000 {
		page, err := inventory(t, env, node, control.InventoryRequest{After: after, Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.Shards {
			ids = append(ids, s.ID)
		}
		if page.Next == "" {
			return ids
		}
		after = page.Next
	}
	t.Fatal("inventory paging does not end")
	return nil
}

func metric(t *testing.T, svc *Service, name string, labels ...string) float64 {
	t.Helper()
	return metricstest.Value(t, svc.Registry(), name, labels...)
}

func TestScrubAndReadsQuarantineAndReportDamage(t *testing.T) {
	env := bustest.Start(t)
	n := scrubNode(t, env, "storage-s", 256<<20)
	svc := n.svc
	bodies := [][]byte{data(1, 300_000), data(2, 200_000), data(3, 100_000), data(4, 0)}
	ids := putShards(t, svc.Addr(), "sh", bodies...)
	var total int64
	for _, b := range bodies {
		total += int64(len(b))
	}

	// A clean pass verifies every byte and reports nothing.
	svc.ScrubNow()
	bustest.Eventually(t, 20*time.Second, "first scrub pass", func() bool {
		return metric(t, svc, "rehome_storage_scrub_passes_total") >= 1
	})
	if got := metric(t, svc, "rehome_storage_scrubbed_bytes_total"); got != float64(total) {
		t.Fatalf("scrubbed %v bytes in a clean pass, want %d", got, total)
	}
	if got := metric(t, svc, "rehome_storage_corrupt_shards_total"); got != 0 {
		t.Fatalf("clean pass found %v corrupt shards", got)
	}

	// A flipped byte is found by the next pass: quarantined, no longer served
	// nor listed, and reported as found by the scrub.
	flipOnDisk(t, svc.cfg.Dir, ids[0], 123_456)
	svc.ScrubNow()
	bustest.Eventually(t, 20*time.Second, "scrub finds the flipped byte", func() bool {
		return metric(t, svc, "rehome_storage_corrupt_shards_total", "found", "scrub") == 1
	})
	c := shardapi.New("")
	if _, err := c.Head(testCtx(t), svc.Addr(), ids[0]); !errors.Is(err, shardapi.ErrNotFound) {
		t.Fatalf("HEAD of the scrubbed-out shard: %v, want 404", err)
	}
	if got := inventoryIDs(t, env, "storage-s", 10); !slices.Equal(got, ids[1:]) {
		t.Fatalf("inventory after scrub = %v, want %v", got, ids[1:])
	}
	q, _ := os.ReadDir(filepath.Join(svc.cfg.Dir, "quarantine"))
	if len(q) != 1 || !strings.HasPrefix(q[0].Name(), ids[0]+".") {
		t.Fatalf("quarantine holds %v", q)
	}
	var evs []event.Corrupt
	bustest.Eventually(t, 15*time.Second, "corrupt event in the events stream", func() bool {
		evs = corruptEvents(t, env, "storage-s")
		return len(evs) >= 1
	})
	if e := evs[0]; e.Node != "storage-s" || e.Shard != ids[0] || e.Found != "scrub" || e.Reason == "" || e.TS.IsZero() {
		t.Fatalf("corrupt event = %+v", e)
	}

	// A read of another damaged shard reports found="read".
	flipOnDisk(t, svc.cfg.Dir, ids[1], 10)
	if rc, _, err := c.Get(testCtx(t), svc.Addr(), ids[1]); err == nil {
		_, rerr := io.ReadAll(rc)
		rc.Close()
		if rerr == nil {
			t.Fatal("GET of a damaged shard succeeded")
		}
	}
	bustest.Eventually(t, 15*time.Second, "corrupt event found by the read", func() bool {
		evs = corruptEvents(t, env, "storage-s")
		return len(evs) >= 2
	})
	if e := evs[1]; e.Shard != ids[1] || e.Found != "read" {
		t.Fatalf("second corrupt event = %+v, want %s found by a read", e, ids[1])
	}
	// Each damage is reported once: more passes add nothing.
	svc.ScrubNow()
	bustest.Eventually(t, 20*time.Second, "another pass", func() bool {
		return metric(t, svc, "rehome_storage_scrub_passes_total") >= 3
	})
	if evs = corruptEvents(t, env, "storage-s"); len(evs) != 2 {
		t.Fatalf("%d corrupt events, want 2: %+v", len(evs), evs)
	}
	if got := metric(t, svc, "rehome_storage_corrupt_reports_total", "result", "published"); got != 2 {
		t.Fatalf("published reports metric = %v", got)
	}
	// The good shards still read back intact.
	for i := 2; i < len(ids); i++ {
		rc, _, err := c.Get(testCtx(t), svc.Addr(), ids[i])
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, bodies[i]) {
			t.Fatalf("%s after scrubs: %v", ids[i], err)
		}
	}
}

func TestDamageFoundAtOpenIsReportedOnceRunning(t *testing.T) {
	env := bustest.Start(t)
	dir := t.TempDir()
	st, err := disk.Open(dir, disk.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := data(5, 5000)
	for _, id := range []string{"hd-1", "hd-2"} {
		if _, err := st.Put(id, sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	flipOnDisk(t, dir, "hd-1", -40) // inside the header's stored checksum

	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = "storage-o", "rack-1", dir
	n := startService(t, env, cfg)
	var evs []event.Corrupt
	bustest.Eventually(t, 15*time.Second, "corrupt event for the damaged header", func() bool {
		evs = corruptEvents(t, env, "storage-o")
		return len(evs) >= 1
	})
	if e := evs[0]; len(evs) != 1 || e.Shard != "hd-1" || e.Found != "open" {
		t.Fatalf("corrupt events = %+v, want hd-1 found at open", evs)
	}
	if got := inventoryIDs(t, env, "storage-o", 0); !slices.Equal(got, []string{"hd-2"}) {
		t.Fatalf("inventory = %v, want [hd-2]", got)
	}
	if got := metric(t, n.svc, "rehome_storage_corrupt_shards_total", "found", "open"); got != 1 {
		t.Fatalf("corrupt shards found at open = %v", got)
	}
}

func TestScrubRespectsItsRate(t *testing.T) {
	env := bustest.Start(t)
	const rate = 1 << 20 // 1 MiB/s over 6 MiB: a pass takes about 6 s
	n := scrubNode(t, env, "storage-r", rate)
	svc := n.svc
	body := data(6, 2<<20)
	putShards(t, svc.Addr(), "big", body, body, body)

	start := time.Now()
	svc.ScrubNow()
	bustest.Eventually(t, 15*time.Second, "scrub makes progress", func() bool {
		return metric(t, svc, "rehome_storage_scrubbed_bytes_total") >= 512<<10
	})
	// Loose on purpose: the token bucket allows burst + rate*t; allow 50% more.
	// Read the metric before the clock so elapsed can only be overestimated.
	bustest.Consistently(t, time.Second, "scrubbed bytes within the rate", func() bool {
		got := metric(t, svc, "rehome_storage_scrubbed_bytes_total")
		elapsed := time.Since(start).Seconds()
		limit := float64(scrubBurst(rate)) + 1.5*rate*elapsed
		if got > limit {
			t.Logf("scrubbed %.0f bytes in %.2fs at %d B/s: above %.0f", got, elapsed, rate, limit)
			return false
		}
		return true
	})
	if p := metric(t, svc, "rehome_storage_scrub_passes_total"); p != 0 && time.Since(start) < 4*time.Second {
		t.Fatalf("a 6 MiB pass at 1 MiB/s completed within %s", time.Since(start))
	}
}

func TestScrubRateZeroTurnsItOff(t *testing.T) {
	env := bustest.Start(t)
	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = "storage-z", "rack-1", t.TempDir()
	cfg.ScrubBytesPerSec = 0
	cfg.ScrubDelay = time.Millisecond
	cfg.ScrubEvery = 10 * time.Millisecond
	n := startService(t, env, cfg)
	svc := n.svc
	ids := putShards(t, svc.Addr(), "off", data(7, 100_000))
	flipOnDisk(t, cfg.Dir, ids[0], 5)
	svc.ScrubNow()
	bustest.Consistently(t, time.Second, "no scrub while off", func() bool {
		return metric(t, svc, "rehome_storage_scrubbed_bytes_total") == 0 &&
			metric(t, svc, "rehome_storage_scrub_passes_total") == 0
	})
	if got := inventoryIDs(t, env, "storage-z", 0); !slices.Equal(got, ids) {
		t.Fatalf("inventory = %v: the damaged shard is only found when read", got)
	}
}

func TestInventoryPagesOverTheBus(t *testing.T) {
	env := bustest.Start(t)
	n := scrubNode(t, env, "storage-i", 0)
	svc := n.svc
	var bodies [][]byte
	for i := range 25 {
		bodies = append(bodies, data(uint64(100+i), 10+i))
	}
	ids := putShards(t, svc.Addr(), "inv", bodies...)

	var pages []control.InventoryPage
	after := ""
	for range 10 {
		page, err := inventory(t, env, "storage-i", control.InventoryRequest{After: after, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, page)
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if len(pages) != 3 {
		t.Fatalf("%d pages for 25 shards at limit 10, want 3", len(pages))
	}
	var got []string
	for i, p := range pages {
		if p.Node != "storage-i" || p.BootID != svc.BootID() {
			t.Fatalf("page %d from node %q boot %q, want storage-i %q", i, p.Node, p.BootID, svc.BootID())
		}
		if want := []int{10, 10, 5}[i]; len(p.Shards) != want {
			t.Fatalf("page %d has %d shards, want %d", i, len(p.Shards), want)
		}
		if i < 2 && p.Next != p.Shards[len(p.Shards)-1].ID {
			t.Fatalf("page %d next %q, want its last id", i, p.Next)
		}
		for _, s := range p.Shards {
			got = append(got, s.ID)
			j := slices.Index(ids, s.ID)
			if j < 0 || s.Size != int64(len(bodies[j])) || s.SHA256 != sum(bodies[j]) {
				t.Fatalf("inventory entry %+v does not match what was written", s)
			}
		}
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("inventory ids %v, want %v", got, ids)
	}

	// Garbage is refused as invalid, never crashes the node.
	for _, raw := range []string{"not json", "[1,2]", `{"limit":-1}`, `{"limit":"ten"}`, `{"after":"../etc"}`, `{"after":"a.b"}`} {
		msg, err := env.NC.Request(control.InventoryPrefix+"storage-i", []byte(raw), 10*time.Second)
		if err != nil {
			t.Fatalf("request %q: %v", raw, err)
		}
		var out control.InventoryPage
		var re *control.RemoteError
		if err := control.DecodeReply(msg.Data, &out); !errors.As(err, &re) || re.Code != control.CodeInvalid {
			t.Fatalf("request %q answered %v, want an invalid refusal", raw, err)
		}
	}
	if err := env.NC.Publish(control.InventoryPrefix+"storage-i", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// An empty body asks for the first page of the maximum size.
	msg, err := env.NC.Request(control.InventoryPrefix+"storage-i", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var all control.InventoryPage
	if err := control.DecodeReply(msg.Data, &all); err != nil || len(all.Shards) != 25 || all.Next != "" {
		t.Fatalf("empty request: %d shards, next %q, %v", len(all.Shards), all.Next, err)
	}
	bustest.Eventually(t, 10*time.Second, "requests counted", func() bool {
		return metric(t, svc, "rehome_storage_inventory_requests_total", "result", "invalid") == 7 &&
			metric(t, svc, "rehome_storage_inventory_requests_total", "result", "ok") == 4 &&
			metric(t, svc, "rehome_storage_malformed_events_total", "subject", "rehome.ctl.inventory") == 7
	})
}

// fakeStore is an in-memory verifier for scheduler tests. With entered set,
// each Verify announces itself on entered and waits for release (or stop).
type fakeStore struct {
	mu       sync.Mutex
	shards   []disk.Info
	verified map[string]int
	entered  chan struct{}
	release  chan struct{}
	stop     chan struct{}
}

func (f *fakeStore) Page(after string, limit int) ([]disk.Info, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []disk.Info
	for _, s := range f.shards {
		if s.ID > after {
			if len(out) == limit {
				return out, true
			}
			out = append(out, s)
		}
	}
	return out, false
}

func (f *fakeStore) Verify(id string, pace func(int) error) (int64, error) {
	if f.entered != nil {
		select {
		case f.entered <- struct{}{}:
		case <-f.stop:
			return 0, errors.New("stopped")
		}
		select {
		case <-f.release:
		case <-f.stop:
			return 0, errors.New("stopped")
		}
	}
	f.mu.Lock()
	f.verified[id]++
	f.mu.Unlock()
	if err := pace(100); err != nil {
		return 0, err
	}
	return 100, nil
}

func TestScrubberSchedulesPassesAndServesRequests(t *testing.T) {
	fs := &fakeStore{verified: map[string]int{}}
	for i := range 2500 { // more than one scrubPage
		fs.shards = append(fs.shards, disk.Info{ID: fmt.Sprintf("f%05d", i), Size: 100})
	}
	reg := prometheus.NewRegistry()
	sc := newScrubber(fs, 1<<30, 20*time.Millisecond, 150*time.Millisecond, time.Now, testLogger(t), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sc.run(ctx, time.Now()); close(done) }()
	defer func() { cancel(); <-done }()
	bustest.Eventually(t, 15*time.Second, "periodic passes", func() bool {
		return metricstest.Value(t, reg, "rehome_storage_scrub_passes_total") >= 3
	})
	passes := metricstest.Value(t, reg, "rehome_storage_scrub_passes_total")
	fs.mu.Lock()
	for _, s := range fs.shards {
		if fs.verified[s.ID] < int(passes) {
			t.Errorf("%s verified %d times in %v passes", s.ID, fs.verified[s.ID], passes)
		}
	}
	fs.mu.Unlock()
	if got := metricstest.Value(t, reg, "rehome_storage_scrubbed_bytes_total"); got < passes*2500*100 {
		t.Fatalf("scrubbed bytes %v after %v passes of 250000", got, passes)
	}
}

func TestScrubNowDuringAPassRunsAnotherAfterIt(t *testing.T) {
	fs := &fakeStore{verified: map[string]int{}, entered: make(chan struct{}),
		release: make(chan struct{}), stop: make(chan struct{})}
	fs.shards = []disk.Info{{ID: "a", Size: 100}}
	reg := prometheus.NewRegistry()
	sc := newScrubber(fs, 1<<30, time.Hour, time.Hour, time.Now, testLogger(t), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sc.run(ctx, time.Now()); close(done) }()
	defer func() { close(fs.stop); cancel(); <-done }()
	passes := func() float64 { return metricstest.Value(t, reg, "rehome_storage_scrub_passes_total") }
	entered := func(what string) {
		t.Helper()
		select {
		case <-fs.entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not begin", what)
		}
	}

	sc.trigger()
	entered("the requested pass")
	sc.trigger() // asked during the pass: one more pass after it
	sc.trigger() // coalesces with the previous request
	fs.release <- struct{}{}
	entered("the pass asked for during the first")
	fs.release <- struct{}{}
	bustest.Eventually(t, 10*time.Second, "two passes", func() bool { return passes() == 2 })
	select {
	case <-fs.entered:
		t.Fatal("a third pass began: requests did not coalesce")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestScrubDue(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		lastBegan time.Time
		want      time.Time
	}{
		{time.Time{}, t0.Add(time.Minute)},                                // first pass: delay after start
		{t0.Add(time.Minute), t0.Add(time.Minute + 24*time.Hour)},         // then every after the last began
		{t0.Add(30 * time.Hour), t0.Add(54 * time.Hour)},                  // whatever the pass took
		{t0.Add(-48 * time.Hour), t0.Add(-24 * time.Hour)},                // overdue: due in the past, runs at once
		{t0.Add(time.Nanosecond), t0.Add(24*time.Hour + time.Nanosecond)}, // a pass right at start
	}
	for _, c := range cases {
		if got := scrubDue(t0, c.lastBegan, time.Minute, 24*time.Hour); !got.Equal(c.want) {
			t.Errorf("scrubDue(last began %v) = %v, want %v", c.lastBegan, got, c.want)
		}
	}
	if b := scrubBurst(1); b != disk.VerifyChunk {
		t.Errorf("burst at 1 B/s = %d, want one chunk", b)
	}
	if b := scrubBurst(160 << 20); b != 16<<20 {
		t.Errorf("burst at 160 MiB/s = %d, want 100 ms worth", b)
	}
}
