package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/rehome/rehome/shared/shardapi"
)

func TestPullLandsVerifiedBytesOnce(t *testing.T) {
	src := startAPI(t, nodeOpts{token: "tok"})
	dst := startAPI(t, nodeOpts{token: "tok"})
	c := shardapi.New("tok")
	ctx := testCtx(t)
	body := data(21, 3<<20+17)
	if err := c.Put(ctx, src.addr, "pulled", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	created, err := c.Pull(ctx, dst.addr, "pulled", src.addr, sum(body), int64(len(body)))
	if err != nil || !created {
		t.Fatalf("pull = %v, %v; want created", created, err)
	}
	got, err := readAll(ctx, c, dst.addr, "pulled")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("target reads back %d bytes (%v), want the %d pulled", len(got), err, len(body))
	}
	// Again: already there, the source is not needed.
	created, err = c.Pull(ctx, dst.addr, "pulled", "127.0.0.1:1", sum(body), int64(len(body)))
	if err != nil || created {
		t.Fatalf("second pull = %v, %v; want present", created, err)
	}
	// Held with other bytes: a conflict, nothing pulled.
	other := data(22, 100)
	if _, err := c.Pull(ctx, dst.addr, "pulled", src.addr, sum(other), int64(len(other))); !errors.Is(err, shardapi.ErrConflict) {
		t.Fatalf("pull over other bytes: %v, want a conflict", err)
	}
	if files := shardFiles(t, dst.dir); len(files) != 1 {
		t.Fatalf("target holds files %v, want the one shard", files)
	}
}

func TestPullFromACorruptSourceKeepsNothing(t *testing.T) {
	src := startAPI(t, nodeOpts{})
	dst := startAPI(t, nodeOpts{})
	c := shardapi.New("")
	ctx := testCtx(t)
	body := data(23, 1<<20)
	if err := c.Put(ctx, src.addr, "rotten", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	flipOnDisk(t, src.dir, "rotten", int64(len(body)/2))

	_, err := c.Pull(ctx, dst.addr, "rotten", src.addr, sum(body), int64(len(body)))
	if !errors.Is(err, shardapi.ErrSourceCorrupt) {
		t.Fatalf("pull from a damaged source: %v, want ErrSourceCorrupt (424)", err)
	}
	if files := shardFiles(t, dst.dir); len(files) != 0 {
		t.Fatalf("target kept %v after a corrupt pull", files)
	}
	if _, err := c.Head(ctx, dst.addr, "rotten"); !errors.Is(err, shardapi.ErrNotFound) {
		t.Fatalf("target HEAD after a corrupt pull: %v, want 404", err)
	}
	// The source sent its disk's bytes unverified; asked, it finds the damage
	// and quarantines the shard.
	if _, err := c.Verify(ctx, src.addr, "rotten"); !errors.Is(err, shardapi.ErrChecksum) {
		t.Fatalf("verify on the damaged source: %v, want ErrChecksum (422)", err)
	}
	if _, err := c.Head(ctx, src.addr, "rotten"); !errors.Is(err, shardapi.ErrNotFound) {
		t.Fatalf("source still serves the damaged shard: %v", err)
	}
	if q, _ := os.ReadDir(filepath.Join(src.dir, "quarantine")); len(q) != 1 {
		t.Fatalf("source quarantine holds %v", q)
	}
}

func TestPullFromAnUnusableSourceIs502(t *testing.T) {
	src := startAPI(t, nodeOpts{})
	dst := startAPI(t, nodeOpts{})
	c := shardapi.New("")
	ctx := testCtx(t)
	body := data(24, 1000)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for name, source := range map[string]string{"absent shard": src.addr, "nothing listening": dead} {
		if _, err := c.Pull(ctx, dst.addr, "nowhere", source, sum(body), int64(len(body))); !errors.Is(err, shardapi.ErrSource) {
			t.Errorf("%s: pull = %v, want ErrSource (502)", name, err)
		}
	}
	if files := shardFiles(t, dst.dir); len(files) != 0 {
		t.Fatalf("target kept %v", files)
	}
}

func TestPullRequestsAreChecked(t *testing.T) {
	n := startAPI(t, nodeOpts{token: "tok"})
	url := "http://" + n.addr + "/v1/shards/abc/pull"
	auth := map[string]string{"Authorization": "Bearer tok"}
	good := `{"source":"127.0.0.1:9","sha256":"` + strings.Repeat("a", 64) + `","size":10}`
	for _, tc := range []struct {
		name, url, body string
		hdr             map[string]string
		want            int
	}{
		{"no token", url, good, nil, http.StatusUnauthorized},
		{"not json", url, "{", auth, http.StatusBadRequest},
		{"no source", url, `{"sha256":"` + strings.Repeat("a", 64) + `","size":10}`, auth, http.StatusBadRequest},
		{"source with a path", url, `{"source":"h:1/x","sha256":"` + strings.Repeat("a", 64) + `","size":10}`, auth, http.StatusBadRequest},
		{"bad checksum", url, `{"source":"h:1","sha256":"xyz","size":10}`, auth, http.StatusBadRequest},
		{"negative size", url, `{"source":"h:1","sha256":"` + strings.Repeat("a", 64) + `","size":-1}`, auth, http.StatusBadRequest},
		{"too large", url, `{"source":"h:1","sha256":"` + strings.Repeat("a", 64) + `","size":1099511627776}`, auth, http.StatusRequestEntityTooLarge},
		{"bad id", "http://" + n.addr + "/v1/shards/a..b/pull", good, auth, http.StatusBadRequest},
	} {
		if code, msg := do(t, "POST", tc.url, strings.NewReader(tc.body), tc.hdr); code != tc.want {
			t.Errorf("%s: %d %q, want %d", tc.name, code, msg, tc.want)
		}
	}
	if files := shardFiles(t, n.dir); len(files) != 0 {
		t.Fatalf("node kept %v", files)
	}
}

// fileConns counts, over every connection a listener accepted, the bytes
// handed to the connection's ReadFrom as a length-limited *os.File: what
// net.TCPConn sends with sendfile(2), the file never copied through user space.
type fileConns struct {
	net.Listener
	fromFile atomic.Int64
}

func (l *fileConns) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &fileConn{TCPConn: c.(*net.TCPConn), l: l}, nil
}

type fileConn struct {
	*net.TCPConn
	l *fileConns
}

func (c *fileConn) ReadFrom(r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	_, isFile := func() (*os.File, bool) {
		if !ok {
			return nil, false
		}
		f, ok := lr.R.(*os.File)
		return f, ok
	}()
	n, err := c.TCPConn.ReadFrom(r)
	if isFile {
		c.l.fromFile.Add(n)
	}
	return n, err
}

// A repair GET hands the shard file itself to the connection (sendfile),
// also when it is traced (the span's writer wraps the response); a client's
// GET, verified as it streams, does not.
func TestRepairGetHandsTheFileToTheConnection(t *testing.T) {
	var watched *fileConns
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	n := startAPI(t, nodeOpts{tp: tp, wrap: func(l net.Listener) net.Listener { watched = &fileConns{Listener: l}; return watched }})
	c := shardapi.New("")
	ctx := testCtx(t)
	body := data(25, 2<<20+5)
	if err := c.Put(ctx, n.addr, "zero", sum(body), int64(len(body)), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(ctx, c, n.addr, "zero")
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("client GET: %d bytes, %v", len(got), err)
	}
	if f := watched.fromFile.Load(); f != 0 {
		t.Fatalf("a client GET sent %d bytes straight from the file", f)
	}
	spanCtx, span := tp.Tracer("test").Start(ctx, "copy")
	defer span.End()
	for _, rctx := range []context.Context{ctx, spanCtx} {
		before := watched.fromFile.Load()
		got, err = readAll(shardapi.AsRepair(rctx), c, n.addr, "zero")
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("repair GET: %d bytes, %v", len(got), err)
		}
		// All but the first bytes, which net/http copies before it hands
		// the rest to the connection.
		if f := watched.fromFile.Load() - before; f < int64(len(body))-4096 {
			t.Fatalf("a repair GET (traced: %v) sent %d of %d bytes straight from the file", rctx == spanCtx, f, len(body))
		}
	}
	if len(rec.Ended()) == 0 {
		t.Fatal("the traced repair GET left no span")
	}
}
