package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/shardapi"
)

// failedOn returns the payloads of the repair failures reported against node.
func (l *eventLog) failedOn(node string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for i, s := range l.subjects {
		if s == "rehome.repair.failed."+node {
			out = append(out, string(l.data[i]))
		}
	}
	return out
}

// filler is a large shard being written slowly to a node by another writer:
// from the moment the node accepts it, it holds all the room the node had
// left (the store reserves a write's bytes when it begins).
type filler struct {
	id   string
	size int64
	body *io.PipeWriter
	res  chan error
}

// zeroSHA256 is the hex SHA-256 of n zero bytes.
func zeroSHA256(n int64) string {
	h := sha256.New()
	_, _ = io.CopyN(h, zeroReader{}, n)
	return hex.EncodeToString(h.Sum(nil))
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// fillerSlack is the room a filler leaves: enough for the copies in flight
// to the node (the planner writes at most a few at once to one node) and for
// a few more, so that the filler itself is never refused: a refused write
// would flag the node full before any copy was refused.
const fillerSlack = 128 << 10

// startFiller begins a PUT of a zero-filled shard taking all but fillerSlack
// bytes of the room node has left, and returns once the node accepted it
// (its temp file exists). Repair copies land meanwhile: if one took the
// room between the inventory and the PUT (the node answers 507 at once), it
// measures again, a few times.
func startFiller(t *testing.T, c *cluster, node, addr string, capacity int64) *filler {
	t.Helper()
	f, err := startFillerPart(t, c, node, addr, capacity, fillerPart{id: "filler-1"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// fillerPart names one of several fillers of a node: the room the others
// already hold, and the largest shard it may be (0: no limit).
type fillerPart struct {
	id          string
	held, limit int64
}

// errTooFull: the node has too little room left for a filler.
var errTooFull = errors.New("too full for a filler")

// startFillerPart is startFiller for one part; it fails with errTooFull
// when the node has too little room left, and after a few refusals.
func startFillerPart(t *testing.T, c *cluster, node, addr string, capacity int64, part fillerPart) (*filler, error) {
	t.Helper()
	var last error
	for range 3 {
		f, err := tryFiller(t, c, node, addr, capacity, part)
		if err == nil || errors.Is(err, errTooFull) {
			return f, err
		}
		last = err
	}
	return nil, fmt.Errorf("filler never accepted by %s: %w", node, last)
}

// tryFiller is one attempt of startFillerPart; the error is the node's
// refusal of the filler before its write began.
func tryFiller(t *testing.T, c *cluster, node, addr string, capacity int64, part fillerPart) (*filler, error) {
	t.Helper()
	sc := shardapi.New(c.token())
	ctx := context.Background()
	inv, err := sc.List(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	var used int64
	for _, s := range inv.Shards {
		used += s.Size
	}
	f := &filler{id: part.id, size: capacity - used - part.held - fillerSlack, res: make(chan error, 1)}
	if part.limit > 0 {
		f.size = min(f.size, part.limit)
	}
	if f.size <= 8<<20 { // above the server's drain limit, a refusal is answered at once
		return nil, fmt.Errorf("%s has %d bytes used and %d held of %d: %w", node, used, part.held, capacity, errTooFull)
	}
	pr, pw := io.Pipe()
	f.body = pw
	go func() { f.res <- sc.Put(ctx, addr, f.id, zeroSHA256(f.size), f.size, pr) }()
	go func() { _, _ = pw.Write(make([]byte, 4096)) }() // the first bytes: the write has begun
	tmp := filepath.Join(c.dir, node, "shards", f.id[:2], ".tmp-"+f.id+"-*")
	var refused error
	waitFor(t, 10*time.Second, "the filler's write begun on "+node, func() bool {
		select {
		case err := <-f.res:
			refused = fmt.Errorf("filler of %d bytes (%d used of %d): %w", f.size, used, capacity, err)
			return true
		default:
		}
		m, _ := filepath.Glob(tmp)
		return len(m) > 0
	})
	if refused != nil {
		pw.Close()
		return nil, refused
	}
	return f, nil
}

// finish sends the rest of the filler's bytes and waits for the node to
// store it.
func (f *filler) finish(t *testing.T) {
	t.Helper()
	go func() {
		_, err := io.CopyN(f.body, zeroReader{}, f.size-4096)
		f.body.CloseWithError(err)
	}()
	select {
	case err := <-f.res:
		if err != nil {
			t.Fatalf("filler put: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("filler put did not finish")
	}
}

// TestNodeFillsMidRebuild: a node dies and its replicas are rebuilt; one of
// the rebuild's targets fills up midway (another writer takes its room). Its
// copies answer 507, it says it is full in its heartbeat, the planner
// re-homes those replicas elsewhere and stops choosing it, and the heal ends
// with every object intact and the node shown full; a delete gives it room
// again.
//
// Every node gets the same --capacity: the planner accounts for the shards
// it places, so it never overfills a node whose capacity it knows; the room
// must go to something it does not know about, as on a disk shared with
// other data.
func TestNodeFillsMidRebuild(t *testing.T) {
	const capacity = 32 << 20
	c := startDev(t, "--nodes", "5", "--racks", "5", "--grace", "2s", "--suspect-after", "1s", "--heartbeat", "250ms",
		"--capacity", fmt.Sprint(capacity),
		// A slow heal, so that the node fills while copies still come its way.
		"--planner-flag=--max-bytes-per-sec=600000")
	waitHealthy(t, c, 5)
	want := c.putRandom(t, 300, 16<<10)
	oc := c.objects(t)

	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	victim, full := st.Nodes[0], st.Nodes[1]
	events := c.tailEvents(t)
	t.Logf("killing %s (%d shards); %s will fill mid-rebuild", victim.ID, victim.Shards, full.ID)
	c.signal(t, victim.ID, syscall.SIGKILL)

	// The rebuild has landed copies on the node: now its disk fills.
	waitFor(t, 30*time.Second, "a rebuilt copy on "+full.ID, func() bool { return events.saw("rehome.repair.done." + full.ID) })
	f := startFiller(t, c, full.ID, full.Addr, capacity)
	t.Logf("%s filled with %s (%d bytes) while the rebuild runs", full.ID, f.id, f.size)

	if out, err := c.rehome("heal", "status", "--follow", "--interval", "200ms"); err != nil {
		t.Fatalf("heal status --follow: %v\n%s", err, out)
	}
	// The writer that filled the node finishes its shard: the node is full
	// for good (until a delete).
	f.finish(t)

	// Copies sent to the full node were refused with 507 and re-planned,
	// each once: no dead letter, no retries on that node.
	refused := 0
	for _, d := range events.failedOn(full.ID) {
		if strings.Contains(d, "507") {
			refused++
		}
	}
	if refused == 0 {
		t.Fatalf("no copy to %s was refused: the node did not fill mid-rebuild (failures: %v)", full.ID, events.failedOn(full.ID))
	}
	if events.saw("rehome.repair.dead.") {
		t.Errorf("a task was dead-lettered: %s", events.first("rehome.repair.dead."))
	}
	t.Logf("%d copies refused by the full node and re-planned; tasks per target: %v", refused, events.taskTargets())

	// The operator sees the node full, in JSON and in the table.
	var n control.NodeStatus
	waitFor(t, 10*time.Second, full.ID+" shown full", func() bool {
		st, err = c.status()
		for _, x := range st.Nodes {
			if x.ID == full.ID {
				n = x
			}
		}
		return err == nil && n.Full
	})
	if st.UnderReplicated != 0 || st.Lost != 0 || st.BytesRemaining != 0 {
		t.Fatalf("after heal: under-replicated %d lost %d bytes remaining %d", st.UnderReplicated, st.Lost, st.BytesRemaining)
	}
	out, err := c.rehome("cluster", "status")
	if err != nil {
		t.Fatal(err)
	}
	if !statusLineHas(out, full.ID, " full") {
		t.Fatalf("cluster status does not show %s full:\n%s", full.ID, out)
	}

	// Every object: three live copies, none on the dead node, and its bytes.
	for name := range want {
		in, err := oc.Inspect(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range in.Shards {
			if len(sv.Nodes) != 3 || distinct(sv.Nodes) != 3 || contains(sv.Nodes, victim.ID) {
				t.Fatalf("%s shard %s on %v: want 3 distinct live nodes", name, sv.ID, sv.Nodes)
			}
		}
	}
	c.readBack(t, oc, want)

	// Every service but the killed node still runs.
	for _, p := range c.processes() {
		if p.ID != victim.ID && !alive(p.PID) {
			t.Errorf("%s (pid %d) is not running", p.ID, p.PID)
		}
	}

	// Room comes back: the filler is deleted, and the node accepts shards again.
	if err := shardapi.New(c.token()).Delete(context.Background(), full.Addr, f.id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, full.ID+" no longer full", func() bool {
		out, err := c.rehome("cluster", "status")
		return err == nil && statusLineHas(out, full.ID, "") && !statusLineHas(out, full.ID, " full")
	})
}

// abort ends the filler's write unfinished: the node drops its temp file
// and gets back the room the filler held. It does not wait for the node.
func (f *filler) abort() {
	f.body.CloseWithError(errFillerAborted)
}

var errFillerAborted = errors.New("filler aborted: room given back")

// statusLineHas reports whether the table line of node in `cluster status`
// output contains s.
func statusLineHas(out, node, s string) bool {
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, " "+node+" ") {
			return strings.Contains(line, s)
		}
	}
	return false
}
