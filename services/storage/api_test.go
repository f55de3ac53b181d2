package storage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/shardapi"
)

type testNode struct {
	addr  string
	dir   string
	store *disk.Store
}

type nodeOpts struct {
	token    string
	maxShard int64
	capacity int64
	files    disk.Files
	// wrap, when set, wraps the server's listener (to watch its connections).
	wrap func(net.Listener) net.Listener
	// tp, when set, serves requests carrying a trace context in spans of it.
	tp trace.TracerProvider
}

func startAPI(t testing.TB, o nodeOpts) *testNode {
	t.Helper()
	dir := t.TempDir()
	store, err := disk.Open(dir, disk.Options{CapacityBytes: o.capacity, Files: o.files}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if o.maxShard == 0 {
		o.maxShard = DefaultMaxShardBytes
	}
	reg := prometheus.NewRegistry()
	a := &api{
		store:    store,
		node:     "storage-t",
		token:    []byte(o.token),
		maxShard: o.maxShard,
		m:        newMetrics(reg, store, o.capacity),
		reg:      reg,
		log:      testLogger(t),
		source:   shardapi.New(o.token),
	}
	h := a.handler()
	if o.tp != nil {
		h = traced(h, o.tp)
	}
	srv := httptest.NewUnstartedServer(h)
	if o.wrap != nil {
		srv.Listener = o.wrap(srv.Listener)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return &testNode{addr: strings.TrimPrefix(srv.URL, "http://"), dir: dir, store: store}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// shardFiles lists every regular file under the node's shard directory.
func shardFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, "shards"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// do sends a raw request and returns the status code and body.
func do(t *testing.T, method, url string, body io.Reader, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func statusCode(err error) int {
	var se *shardapi.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// scrape returns the value of one series (exact name incl. labels) from
// /metrics, or -1 when it is absent.
func scrape(t *testing.T, addr, series string) float64 {
	t.Helper()
	code, body := do(t, "GET", "http://"+addr+"/metrics", nil, nil)
	if code != 200 {
		t.Fatalf("/metrics answered %d", code)
	}
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return -1
}

func TestShardRoundTrip(t *testing.T) {
	n := startAPI(t, nodeOpts{})
	c := shardapi.New("")
	ctx := testCtx(t)
	body := data(1, 3<<20+5)
	if err := c.Put(ctx, n.addr, "obj-0", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	rc, info, err := c.Get(ctx, n.addr, "obj-0")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("GET returned %d bytes (err %v), want the %d put", len(got), err, len(body))
	}
	if info.SHA256 != sum(body) || info.Size != int64(len(body)) {
		t.Fatalf("GET info = %+v", info)
	}
	hinfo, err := c.Head(ctx, n.addr, "obj-0")
	if err != nil || hinfo != info {
		t.Fatalf("HEAD = %+v, %v; want %+v", hinfo, err, info)
	}
	inv, err := c.List(ctx, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	want := shardapi.Inventory{Node: "storage-t", Shards: []shardapi.Info{info}}
	if fmt.Sprint(inv) != fmt.Sprint(want) {
		t.Fatalf("inventory = %+v, want %+v", inv, want)
	}
	if got := scrape(t, n.addr, "rehome_storage_shards"); got != 1 {
		t.Fatalf("rehome_storage_shards = %v", got)
	}
	if got := scrape(t, n.addr, "rehome_storage_bytes_written_total"); got != float64(len(body)) {
		t.Fatalf("bytes written = %v", got)
	}
	if got := scrape(t, n.addr, "rehome_storage_bytes_read_total"); got != float64(len(body)) {
		t.Fatalf("bytes read = %v", got)
	}
	if got := scrape(t, n.addr, `rehome_storage_requests_total{code="201",method="PUT"}`); got != 1 {
		t.Fatalf("PUT 201 count = %v", got)
	}

	if code, _ := do(t, "DELETE", "http://"+n.addr+"/v1/shards/obj-0", nil, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE answered %d, want 204", code)
	}
	if code, _ := do(t, "DELETE", "http://"+n.addr+"/v1/shards/obj-0", nil, nil); code != http.StatusNotFound {
		t.Fatalf("second DELETE answered %d, want 404", code)
	}
	if err := c.Delete(ctx, n.addr, "obj-0"); err != nil {
		t.Fatalf("client delete of an absent shard: %v", err)
	}
	if _, err := c.Head(ctx, n.addr, "obj-0"); !errors.Is(err, shardapi.ErrNotFound) {
		t.Fatalf("HEAD after delete: %v", err)
	}
	if _, _, err := c.Get(ctx, n.addr, "obj-0"); !errors.Is(err, shardapi.ErrNotFound) {
		t.Fatalf("GET after delete: %v", err)
	}
	if inv, _ := c.List(ctx, n.addr); inv.Shards == nil || len(inv.Shards) != 0 {
		t.Fatalf("inventory after delete = %+v, want an empty list", inv)
	}
	if f := shardFiles(t, n.dir); len(f) != 0 {
		t.Fatalf("files left after delete: %v", f)
	}
}

func TestPutAnswers(t *testing.T) {
	n := startAPI(t, nodeOpts{maxShard: 64 << 10})
	url := "http://" + n.addr + "/v1/shards/"
	c := shardapi.New("")
	ctx := testCtx(t)
	body := data(2, 50_000)
	hdr := map[string]string{shardapi.HeaderSHA256: sum(body)}

	if code, _ := do(t, "PUT", url+"p1", bytes.NewReader(body), hdr); code != http.StatusCreated {
		t.Fatalf("first PUT: %d, want 201", code)
	}
	if code, _ := do(t, "PUT", url+"p1", bytes.NewReader(body), hdr); code != http.StatusOK {
		t.Fatalf("identical re-PUT: %d, want 200", code)
	}
	upper := map[string]string{shardapi.HeaderSHA256: strings.ToUpper(sum(body))}
	if code, _ := do(t, "PUT", url+"p1", bytes.NewReader(body), upper); code != http.StatusOK {
		t.Fatalf("re-PUT with upper-case checksum: %d, want 200", code)
	}
	if err := c.Put(ctx, n.addr, "p1", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatalf("client re-put: %v", err)
	}
	other := data(3, 50_000)
	err := c.Put(ctx, n.addr, "p1", sum(other), int64(len(other)), bytes.NewReader(other))
	if !errors.Is(err, shardapi.ErrConflict) {
		t.Fatalf("conflicting put: %v, want 409", err)
	}
	err = c.Put(ctx, n.addr, "p2", sum(other), int64(len(body)), bytes.NewReader(body))
	if !errors.Is(err, shardapi.ErrChecksum) {
		t.Fatalf("put with wrong checksum: %v, want 422", err)
	}
	big := data(4, 64<<10+1)
	err = c.Put(ctx, n.addr, "p3", sum(big), int64(len(big)), bytes.NewReader(big))
	if statusCode(err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize put: %v, want 413", err)
	}
	if code, msg := do(t, "PUT", url+"p4", bytes.NewReader(body), nil); code != http.StatusBadRequest || !strings.Contains(msg, shardapi.HeaderSHA256) {
		t.Fatalf("PUT without checksum: %d %q, want 400 naming the header", code, msg)
	}
	if code, _ := do(t, "PUT", url+"p4", bytes.NewReader(body), map[string]string{shardapi.HeaderSHA256: "abc"}); code != http.StatusBadRequest {
		t.Fatalf("PUT with malformed checksum: %d, want 400", code)
	}
	// A body of unknown length (chunked) is refused.
	if code, _ := do(t, "PUT", url+"p5", io.MultiReader(bytes.NewReader(body)), hdr); code != http.StatusBadRequest {
		t.Fatalf("chunked PUT: %d, want 400", code)
	}
	// Only p1 exists on disk: every refused write left nothing behind.
	if f := shardFiles(t, n.dir); len(f) != 1 || filepath.Base(f[0]) != "p1" {
		t.Fatalf("files on disk: %v", f)
	}
	got, _ := n.store.Stat("p1")
	if got.SHA256 != sum(body) {
		t.Fatal("p1 changed")
	}
}

func TestPutOverCapacityIs507AndLeavesNoFile(t *testing.T) {
	n := startAPI(t, nodeOpts{capacity: 100_000})
	c := shardapi.New("")
	ctx := testCtx(t)
	a, b := data(5, 60_000), data(6, 60_000)
	if err := c.Put(ctx, n.addr, "a", sum(a), int64(len(a)), bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	err := c.Put(ctx, n.addr, "b", sum(b), int64(len(b)), bytes.NewReader(b))
	if !errors.Is(err, shardapi.ErrFull) {
		t.Fatalf("put beyond capacity: %v, want 507", err)
	}
	if f := shardFiles(t, n.dir); len(f) != 1 {
		t.Fatalf("files: %v", f)
	}
}

// rawRequest writes req on a fresh connection (closing the write side when
// halfClose) and returns the status line of the answer.
func rawRequest(t *testing.T, addr, req string, halfClose bool) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		_ = conn.(*net.TCPConn).CloseWrite()
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the answer to %.40q: %v", req, err)
	}
	return strings.TrimSpace(line)
}

func TestBodyShorterThanContentLengthIsRefused(t *testing.T) {
	n := startAPI(t, nodeOpts{})
	body := data(7, 100)
	req := fmt.Sprintf("PUT /v1/shards/short HTTP/1.1\r\nHost: x\r\n%s: %s\r\nContent-Length: 200\r\n\r\n%s",
		shardapi.HeaderSHA256, sum(body), body)
	if line := rawRequest(t, n.addr, req, true); !strings.Contains(line, " 400 ") {
		t.Fatalf("short body answered %q, want 400", line)
	}
	if f := shardFiles(t, n.dir); len(f) != 0 {
		t.Fatalf("files left: %v", f)
	}
}

func TestInvalidShardIDsAre4xx(t *testing.T) {
	n := startAPI(t, nodeOpts{})
	c := shardapi.New("")
	ctx := testCtx(t)
	body := []byte("x")
	ids := []string{"..", "a/b", "%2e%2e", "%2F", "a%2Fb", "%00", "a%00b", strings.Repeat("a", 129), "", "a.b", "../../etc/passwd", "%2e%2e%2fx", "a b"}
	for _, id := range ids {
		t.Run(fmt.Sprintf("%.20q", id), func(t *testing.T) {
			err := c.Put(ctx, n.addr, id, sum(body), 1, bytes.NewReader(body))
			if code := statusCode(err); code != http.StatusBadRequest {
				t.Errorf("PUT %q: %v, want 400", id, err)
			}
			if _, _, err := c.Get(ctx, n.addr, id); statusCode(err) != http.StatusBadRequest {
				t.Errorf("GET %q: %v, want 400", id, err)
			}
			if _, err := c.Head(ctx, n.addr, id); statusCode(err) != http.StatusBadRequest {
				t.Errorf("HEAD %q: %v, want 400", id, err)
			}
			if err := c.Delete(ctx, n.addr, id); statusCode(err) != http.StatusBadRequest {
				t.Errorf("DELETE %q: %v, want 400", id, err)
			}
		})
	}
	// Bytes a client library would refuse to send, written by hand.
	for _, path := range []string{"/v1/shards/a\x00b", "/v1/shards/../../x", "/v1/shards/a/../../b", "/v1/shards/\xff\xfe"} {
		line := rawRequest(t, n.addr, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n", false)
		if !strings.Contains(line, " 400 ") {
			t.Errorf("raw GET %q answered %q, want 400", path, line)
		}
	}
	if code, msg := do(t, "GET", "http://"+n.addr+"/v1/shards/a%2Fb", nil, nil); code != 400 || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
		t.Errorf("message for a bad id: %d %q, want a one-line 400", code, msg)
	}
	if code, body := do(t, "GET", "http://"+n.addr+"/healthz", nil, nil); code != 200 || body != "ok" {
		t.Fatalf("after bad requests /healthz answered %d %q", code, body)
	}
	if f := shardFiles(t, n.dir); len(f) != 0 {
		t.Fatalf("files created: %v", f)
	}
}

func TestFlippedByteOnDiskNeverReachesTheClient(t *testing.T) {
	n := startAPI(t, nodeOpts{})
	c := shardapi.New("")
	ctx := testCtx(t)
	body := data(8, 2<<20)
	if err := c.Put(ctx, n.addr, "rot", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(n.dir, "shards", "ro", "rot")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(disk.HeaderSize + len(body) - 10) // near the end: most bytes are already sent
	b := []byte{0}
	_, _ = f.ReadAt(b, off)
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	rc, _, err := c.Get(ctx, n.addr, "rot")
	if err == nil {
		got, rerr := io.ReadAll(rc)
		rc.Close()
		if rerr == nil {
			t.Fatalf("GET of a damaged shard succeeded with %d bytes (equal to the original: %v)", len(got), bytes.Equal(got, body))
		}
	}
	if _, err := c.Head(ctx, n.addr, "rot"); !errors.Is(err, shardapi.ErrNotFound) {
		t.Fatalf("HEAD after the failed read: %v, want 404", err)
	}
	inv, _ := c.List(ctx, n.addr)
	if len(inv.Shards) != 0 {
		t.Fatalf("damaged shard still in the inventory: %+v", inv)
	}
	q, _ := os.ReadDir(filepath.Join(n.dir, "quarantine"))
	if len(q) != 1 || !strings.HasPrefix(q[0].Name(), "rot.") {
		t.Fatalf("quarantine holds %v", q)
	}
	if got := scrape(t, n.addr, "rehome_storage_checksum_failures_total"); got != 1 {
		t.Fatalf("checksum failures metric = %v", got)
	}
	if got := scrape(t, n.addr, `rehome_storage_requests_total{code="aborted",method="GET"}`); got != 1 {
		t.Fatalf("aborted GET count = %v", got)
	}
	// A good copy can be put back.
	if err := c.Put(ctx, n.addr, "rot", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatalf("re-put after quarantine: %v", err)
	}
}

func TestToken(t *testing.T) {
	n := startAPI(t, nodeOpts{token: "s3cret"})
	ctx := testCtx(t)
	body := []byte("hello")
	for _, tok := range []string{"", "wrong", "s3cret2", "s3cre"} {
		c := shardapi.New(tok)
		if err := c.Put(ctx, n.addr, "t1", sum(body), 5, bytes.NewReader(body)); statusCode(err) != http.StatusUnauthorized {
			t.Fatalf("PUT with token %q: %v, want 401", tok, err)
		}
		if _, err := c.List(ctx, n.addr); statusCode(err) != http.StatusUnauthorized {
			t.Fatalf("list with token %q: %v, want 401", tok, err)
		}
		if _, err := c.Head(ctx, n.addr, "t1"); statusCode(err) != http.StatusUnauthorized {
			t.Fatalf("HEAD with token %q: %v, want 401", tok, err)
		}
		// Even a bad id is not revealed to an unauthenticated caller.
		if _, _, err := c.Get(ctx, n.addr, ".."); statusCode(err) != http.StatusUnauthorized {
			t.Fatalf("GET bad id with token %q: %v, want 401", tok, err)
		}
	}
	if code, _ := do(t, "GET", "http://"+n.addr+"/v1/shards", nil, map[string]string{"Authorization": "Basic czNjcmV0"}); code != 401 {
		t.Fatalf("basic auth answered %d, want 401", code)
	}
	c := shardapi.New("s3cret")
	if err := c.Put(ctx, n.addr, "t1", sum(body), 5, bytes.NewReader(body)); err != nil {
		t.Fatalf("PUT with the right token: %v", err)
	}
	if inv, err := c.List(ctx, n.addr); err != nil || len(inv.Shards) != 1 {
		t.Fatalf("list with the right token: %+v, %v", inv, err)
	}
	if code, body := do(t, "GET", "http://"+n.addr+"/healthz", nil, nil); code != 200 || body != "ok" {
		t.Fatalf("/healthz without token: %d %q", code, body)
	}
	if code, _ := do(t, "GET", "http://"+n.addr+"/metrics", nil, nil); code != 200 {
		t.Fatalf("/metrics without token: %d", code)
	}
}

func TestConcurrentClients(t *testing.T) {
	n := startAPI(t, nodeOpts{})
	c := shardapi.New("")
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 5 {
				id := fmt.Sprintf("c%d-%d", i, j)
				body := data(uint64(100*i+j), 20_000+i*j)
				if err := c.Put(ctx, n.addr, id, sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
					t.Error(err)
					return
				}
				rc, _, err := c.Get(ctx, n.addr, id)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, body) {
					t.Errorf("%s read back wrong (%v)", id, err)
				}
			}
		})
	}
	wg.Wait()
	if inv, _ := c.List(ctx, n.addr); len(inv.Shards) != 40 {
		t.Fatalf("inventory has %d shards, want 40", len(inv.Shards))
	}
}

func TestStatusOf(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{disk.ErrNotFound, 404},
		{fmt.Errorf("x: %w", disk.ErrConflict), 409},
		{disk.ErrChecksum, 422},
		{disk.ErrFull, 507},
		{fmt.Errorf("%w: shard x: read-only file system", disk.ErrReadOnly), 507},
		{disk.ErrSize, 400},
		{disk.ErrRead, 400},
		{disk.ErrCorrupt, 500},
		{errors.New("disk on fire"), 500},
	}
	for _, c := range cases {
		if got := statusOf(c.err); got != c.want {
			t.Errorf("statusOf(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	_, err := disk.ParseSHA256("nothex")
	if statusOf(err) != 400 {
		t.Errorf("invalid checksum maps to %d", statusOf(err))
	}
}

func TestPanicBecomes500(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := &api{m: newMetrics(reg, fakeUsage{}, 0), reg: reg, log: testLogger(t)}
	h := a.observe(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 {
		t.Fatalf("panicking handler answered %d", rec.Code)
	}
}

type fakeUsage struct{}

func (fakeUsage) Usage() (int, int64)       { return 0, 0 }
func (fakeUsage) ChecksumFailures() uint64  { return 0 }
func (fakeUsage) Condition() disk.Condition { return disk.Condition{} }
