package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/history"
	"github.com/rehome/rehome/shared/shardapi"
)

// switchFiles is the real filesystem until readOnly is set; then every change
// fails with EROFS, as on a disk the kernel remounted read-only.
type switchFiles struct{ readOnly atomic.Bool }

func (f *switchFiles) check(op, path string) error {
	if f.readOnly.Load() {
		return &fs.PathError{Op: op, Path: path, Err: syscall.EROFS}
	}
	return nil
}

// OpenFile fails an open for writing (the store's LOCK file) when read-only.
func (f *switchFiles) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE) != 0 {
		if err := f.check("open", name); err != nil {
			return nil, err
		}
	}
	return os.OpenFile(name, flag, perm)
}

func (f *switchFiles) CreateTemp(dir, pattern string) (disk.File, error) {
	if err := f.check("open", dir); err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, pattern)
}

func (f *switchFiles) Rename(oldpath, newpath string) error {
	if err := f.check("rename", newpath); err != nil {
		return err
	}
	return os.Rename(oldpath, newpath)
}

func (f *switchFiles) Mkdir(name string, perm fs.FileMode) error {
	if err := f.check("mkdir", name); err != nil {
		return err
	}
	return os.Mkdir(name, perm)
}

func (f *switchFiles) Remove(name string) error {
	if err := f.check("remove", name); err != nil {
		return err
	}
	return os.Remove(name)
}

func (f *switchFiles) Free(string) (int64, error) { return 1 << 40, nil }

func TestPutOnReadOnlyDiskIs507AndLeavesNoFile(t *testing.T) {
	ro := &switchFiles{}
	n := startAPI(t, nodeOpts{files: ro})
	c := shardapi.New("")
	ctx := testCtx(t)
	a, b := data(1, 50_000), data(2, 50_000)
	if err := c.Put(ctx, n.addr, "a", sum(a), int64(len(a)), bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	ro.readOnly.Store(true)
	err := c.Put(ctx, n.addr, "b", sum(b), int64(len(b)), bytes.NewReader(b))
	if !errors.Is(err, shardapi.ErrFull) || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("put on a read-only disk: %v, want 507 naming the read-only disk", err)
	}
	if f := shardFiles(t, n.dir); len(f) != 1 {
		t.Fatalf("files: %v, want only shard a", f)
	}
	// Reads still work.
	rc, _, err := c.Get(ctx, n.addr, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("get from a read-only node: %v", err)
	}
	if !n.store.Condition().ReadOnly {
		t.Fatal("store not read-only after EROFS")
	}
}

// heartbeatsOf subscribes to node's heartbeats.
func heartbeatsOf(t *testing.T, env *bustest.Env, node string) func(ok func(event.Heartbeat) bool) event.Heartbeat {
	t.Helper()
	sub, err := env.NC.SubscribeSync(event.HeartbeatPrefix + node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := env.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	return func(ok func(event.Heartbeat) bool) event.Heartbeat { return nextHeartbeat(t, sub, ok) }
}

func TestFullNodeSaysSoAtOnceServesReadsAndRecovers(t *testing.T) {
	env := bustest.Start(t)
	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = "storage-1", "rack-1", t.TempDir()
	cfg.CapacityBytes = 100_000
	// One beat at start, then none for an hour: a beat saying full can only
	// come from the change itself.
	cfg.HeartbeatInterval = time.Hour
	next := heartbeatsOf(t, env, cfg.ID)
	r := startService(t, env, cfg)
	addr := r.svc.Addr()
	if hb := next(func(event.Heartbeat) bool { return true }); hb.Full || hb.ReadOnly {
		t.Fatalf("first heartbeat %+v: an empty node is not full", hb)
	}

	c := shardapi.New("")
	ctx := testCtx(t)
	a, b := data(3, 60_000), data(4, 60_000)
	if err := c.Put(ctx, addr, "a", sum(a), int64(len(a)), bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	err := c.Put(ctx, addr, "b", sum(b), int64(len(b)), bytes.NewReader(b))
	if !errors.Is(err, shardapi.ErrFull) {
		t.Fatalf("put beyond capacity: %v, want 507", err)
	}
	start := time.Now()
	hb := next(func(hb event.Heartbeat) bool { return hb.Full })
	t.Logf("full heartbeat %v after the refusal: %+v", time.Since(start), hb)
	if hb.ReadOnly || hb.UsedBytes != int64(len(a)) {
		t.Fatalf("full heartbeat %+v", hb)
	}
	if got := scrape(t, addr, "rehome_storage_full"); got != 1 {
		t.Fatalf("rehome_storage_full = %v, want 1", got)
	}
	if got := scrape(t, addr, "rehome_storage_read_only"); got != 0 {
		t.Fatalf("rehome_storage_read_only = %v, want 0", got)
	}
	// A full node still serves what it holds.
	rc, _, err := c.Get(ctx, addr, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("get from a full node: %v", err)
	}
	// Room comes back with a delete: the node says so at once, and takes b.
	if err := c.Delete(ctx, addr, "a"); err != nil {
		t.Fatal(err)
	}
	next(func(hb event.Heartbeat) bool { return !hb.Full })
	if got := scrape(t, addr, "rehome_storage_full"); got != 0 {
		t.Fatalf("rehome_storage_full = %v after the delete, want 0", got)
	}
	if err := c.Put(ctx, addr, "b", sum(b), int64(len(b)), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	awaitConditions(t, env, cfg.ID, history.KindFull, history.KindWritable)
}

// awaitConditions polls the events stream until node's history of disk
// conditions is want, in order.
func awaitConditions(t *testing.T, env *bustest.Env, node string, want ...string) {
	t.Helper()
	bustest.CheckFor(t, 15*time.Second, func() error {
		log := history.NewLog()
		if err := history.Read(testCtx(t), env.JS, time.Time{}, []string{event.ConditionPrefix + node}, log.Add); err != nil {
			return err
		}
		var seen []string
		for _, e := range log.Node(node) {
			seen = append(seen, e.Kind)
		}
		if !slices.Equal(seen, want) {
			return fmt.Errorf("condition events of %s: %v, want %v", node, seen, want)
		}
		return nil
	})
}

func TestReadOnlyNodeSaysSoUntilItsDiskIsWritable(t *testing.T) {
	env := bustest.Start(t)
	ro := &switchFiles{}
	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = "storage-1", "rack-1", t.TempDir()
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.files = ro
	next := heartbeatsOf(t, env, cfg.ID)
	r := startService(t, env, cfg)
	addr := r.svc.Addr()

	c := shardapi.New("")
	ctx := testCtx(t)
	a := data(5, 10_000)
	ro.readOnly.Store(true)
	err := c.Put(ctx, addr, "a", sum(a), int64(len(a)), bytes.NewReader(a))
	if !errors.Is(err, shardapi.ErrFull) {
		t.Fatalf("put on a read-only disk: %v, want 507", err)
	}
	next(func(hb event.Heartbeat) bool { return hb.ReadOnly && !hb.Full })
	if got := scrape(t, addr, "rehome_storage_read_only"); got != 1 {
		t.Fatalf("rehome_storage_read_only = %v, want 1", got)
	}
	// The disk is remounted read-write: the periodic recheck notices.
	ro.readOnly.Store(false)
	next(func(hb event.Heartbeat) bool { return !hb.ReadOnly })
	if err := c.Put(ctx, addr, "a", sum(a), int64(len(a)), bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	if f := shardFiles(t, cfg.Dir); len(f) != 1 {
		t.Fatalf("files: %v, want shard a only (no probe or temp file left)", f)
	}
	awaitConditions(t, env, cfg.ID, history.KindReadOnly, history.KindWritable)
}

func TestNodeStartingOnReadOnlyDiskServesReadsAndSaysSoFromItsFirstHeartbeat(t *testing.T) {
	env := bustest.Start(t)
	cfg := DefaultConfig()
	cfg.ID, cfg.Rack, cfg.Dir = "storage-1", "rack-1", t.TempDir()
	cfg.HeartbeatInterval = 50 * time.Millisecond
	a, b := data(7, 40_000), data(8, 1000)
	seed, err := disk.Open(cfg.Dir, disk.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Put("a", sum(a), int64(len(a)), bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	seed.Close()

	ro := &switchFiles{}
	ro.readOnly.Store(true)
	cfg.files = ro
	next := heartbeatsOf(t, env, cfg.ID)
	r := startService(t, env, cfg)
	addr := r.svc.Addr()
	if hb := next(func(event.Heartbeat) bool { return true }); !hb.ReadOnly || hb.UsedBytes != int64(len(a)) {
		t.Fatalf("first heartbeat of a node on a read-only disk: %+v, want read_only with shard a counted", hb)
	}

	c := shardapi.New("")
	ctx := testCtx(t)
	rc, _, err := c.Get(ctx, addr, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("get from a node started read-only: %v (identical: %v)", err, bytes.Equal(got, a))
	}
	err = c.Put(ctx, addr, "b", sum(b), int64(len(b)), bytes.NewReader(b))
	if !errors.Is(err, shardapi.ErrFull) || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("put on a node started read-only: %v, want 507 naming the read-only disk", err)
	}
	if f := shardFiles(t, cfg.Dir); len(f) != 1 {
		t.Fatalf("files: %v, want only shard a", f)
	}

	// The disk is remounted read-write: the periodic recheck notices.
	ro.readOnly.Store(false)
	next(func(hb event.Heartbeat) bool { return !hb.ReadOnly })
	if err := c.Put(ctx, addr, "b", sum(b), int64(len(b)), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}
