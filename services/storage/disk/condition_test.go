package disk

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// faultFiles is the real filesystem with failures injected per operation:
// "lock", "create", "write", "sync", "close", "rename", "mkdir", "remove". A write
// fault lets writeAfter bytes of a file through first (a partial write), so
// the store must remove what the failed write left.
type faultFiles struct {
	osFiles
	mu         sync.Mutex
	faults     map[string]error
	writeAfter int64
	free       int64
}

func newFaultFiles() *faultFiles { return &faultFiles{faults: map[string]error{}, free: 1 << 40} }

func (f *faultFiles) set(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.faults, op)
		return
	}
	f.faults[op] = err
}

func (f *faultFiles) setFree(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.free = n
}

func (f *faultFiles) fault(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.faults[op]; err != nil {
		return &fs.PathError{Op: op, Path: "injected", Err: err}
	}
	return nil
}

// OpenFile fails an open for writing with the "lock" fault (Open's LOCK
// file); a read-only open goes through, as on a read-only filesystem.
func (f *faultFiles) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE) != 0 {
		if err := f.fault("lock"); err != nil {
			return nil, err
		}
	}
	return f.osFiles.OpenFile(name, flag, perm)
}

func (f *faultFiles) CreateTemp(dir, pattern string) (File, error) {
	if err := f.fault("create"); err != nil {
		return nil, err
	}
	file, err := f.osFiles.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: file, ff: f}, nil
}

func (f *faultFiles) Rename(oldpath, newpath string) error {
	if err := f.fault("rename"); err != nil {
		return err
	}
	return f.osFiles.Rename(oldpath, newpath)
}

func (f *faultFiles) Mkdir(name string, perm fs.FileMode) error {
	if err := f.fault("mkdir"); err != nil {
		return err
	}
	return f.osFiles.Mkdir(name, perm)
}

func (f *faultFiles) Remove(name string) error {
	if err := f.fault("remove"); err != nil {
		return err
	}
	return f.osFiles.Remove(name)
}

func (f *faultFiles) Free(string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.free, nil
}

type faultFile struct {
	File
	ff      *faultFiles
	written int64
}

func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.ff.fault("write"); err != nil {
		f.ff.mu.Lock()
		after := f.ff.writeAfter
		f.ff.mu.Unlock()
		if f.written+int64(len(p)) > after {
			n, _ := f.File.Write(p[:max(after-f.written, 0)])
			f.written += int64(n)
			return n, err
		}
	}
	n, err := f.File.Write(p)
	f.written += int64(n)
	return n, err
}

func (f *faultFile) Sync() error {
	if err := f.ff.fault("sync"); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	if err := f.ff.fault("close"); err != nil {
		f.File.Close()
		return err
	}
	return f.File.Close()
}

// conditions records what a store reports through Options.OnCondition.
type conditions struct {
	mu  sync.Mutex
	got []Condition
}

func (c *conditions) record(x Condition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, x)
}

func (c *conditions) all() []Condition {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func TestInjectedFullOrReadOnlyDiskLeavesNoFileAndFlipsCondition(t *testing.T) {
	full := Condition{Full: true}
	ro := Condition{ReadOnly: true}
	cases := []struct {
		op    string
		errno error
		want  error
		cond  Condition
	}{
		{"create", syscall.ENOSPC, ErrFull, full},
		{"write", syscall.ENOSPC, ErrFull, full},
		{"write", syscall.EDQUOT, ErrFull, full},
		{"sync", syscall.ENOSPC, ErrFull, full},
		{"close", syscall.EDQUOT, ErrFull, full},
		{"mkdir", syscall.ENOSPC, ErrFull, full},
		{"create", syscall.EROFS, ErrReadOnly, ro},
		{"write", syscall.EROFS, ErrReadOnly, ro},
		{"rename", syscall.EROFS, ErrReadOnly, ro},
		{"mkdir", syscall.EROFS, ErrReadOnly, ro},
	}
	for _, c := range cases {
		t.Run(c.op+"/"+c.errno.Error(), func(t *testing.T) {
			dir := t.TempDir()
			ff := newFaultFiles()
			ff.writeAfter = HeaderSize + 5000 // the header and part of the bytes reach the disk
			var seen conditions
			s := openStore(t, dir, Options{Files: ff, OnCondition: seen.record})
			old := randBytes(1, 3000)
			put(t, s, "zz-old", old) // its fan-out directory exists: "mkdir" faults hit only new ones

			ff.set(c.op, c.errno)
			ff.setFree(0)
			data := randBytes(2, 20000)
			created, err := s.Put("aa-new", shaHex(data), int64(len(data)), bytes.NewReader(data))
			if created || !errors.Is(err, c.want) {
				t.Fatalf("put with %s failing %v = %v, %v; want %v", c.op, c.errno, created, err, c.want)
			}
			if f := files(t, dir); !slices.Equal(f, []string{"shards/zz/zz-old"}) {
				t.Fatalf("files after the failed write: %v, want only the old shard", f)
			}
			if n, used := s.Usage(); n != 1 || used != int64(len(old)) {
				t.Fatalf("usage = %d shards %d bytes, want the old shard only", n, used)
			}
			if got := s.Condition(); got != c.cond {
				t.Fatalf("condition = %+v, want %+v", got, c.cond)
			}
			// A node that refuses writes still serves what it holds.
			if got, err := readAll(s, "zz-old"); err != nil || !bytes.Equal(got, old) {
				t.Fatalf("read while refusing writes: %v", err)
			}
			// Nothing changed yet (a read-only disk refuses every change, a
			// full one has no free space): a recheck keeps the condition.
			if c.errno == syscall.EROFS {
				ff.set("create", c.errno)
			}
			s.Recheck()
			if got := s.Condition(); got != c.cond {
				t.Fatalf("condition after a recheck with the fault still there = %+v, want %+v", got, c.cond)
			}
			// The fault ends (space freed, disk remounted read-write): the next
			// recheck says so, and writes succeed.
			ff.set(c.op, nil)
			ff.set("create", nil)
			ff.setFree(1 << 30)
			s.Recheck()
			if got := s.Condition(); got != (Condition{}) {
				t.Fatalf("condition after the fault ended = %+v, want none", got)
			}
			put(t, s, "aa-new", data)
			if got, want := seen.all(), []Condition{c.cond, {}}; !slices.Equal(got, want) {
				t.Fatalf("OnCondition saw %+v, want %+v", got, want)
			}
		})
	}
}

func TestCapacityRefusalIsFullUntilADeleteMakesRoom(t *testing.T) {
	dir := t.TempDir()
	var seen conditions
	s := openStore(t, dir, Options{CapacityBytes: 10000, OnCondition: seen.record})
	a, b, small := randBytes(5, 6000), randBytes(6, 6000), randBytes(7, 100)
	put(t, s, "a", a)
	if got := s.Condition(); got.Refusing() {
		t.Fatalf("condition with room = %+v", got)
	}
	if _, err := s.Put("b", shaHex(b), 6000, bytes.NewReader(b)); !errors.Is(err, ErrFull) {
		t.Fatalf("put over capacity: %v, want ErrFull", err)
	}
	if got := s.Condition(); !got.Full || got.ReadOnly {
		t.Fatalf("condition after a refusal = %+v, want full", got)
	}
	// A smaller shard still fits, but the node stays full for the refused size.
	put(t, s, "small", small)
	s.Recheck()
	if !s.Condition().Full {
		t.Fatal("full cleared while the refused size still does not fit")
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if got := s.Condition(); got.Refusing() {
		t.Fatalf("condition after a delete made room = %+v", got)
	}
	put(t, s, "b", b)
	if got, want := seen.all(), []Condition{{Full: true}, {}}; !slices.Equal(got, want) {
		t.Fatalf("OnCondition saw %+v, want %+v", got, want)
	}
}

func TestShardsFillingTheCapacityIsFull(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{CapacityBytes: 6000})
	put(t, s, "a", randBytes(5, 6000))
	if !s.Condition().Full {
		t.Fatal("a store whose shards fill its capacity is not full")
	}
	s.Close()
	s = openStore(t, dir, Options{CapacityBytes: 6000})
	if !s.Condition().Full {
		t.Fatal("reopened full store is not full")
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if s.Condition().Full {
		t.Fatal("empty store is full")
	}
}

func TestDeleteOnAReadOnlyDiskIsRefusedAndKeepsTheShard(t *testing.T) {
	dir := t.TempDir()
	ff := newFaultFiles()
	s := openStore(t, dir, Options{Files: ff})
	data := randBytes(3, 1000)
	put(t, s, "a", data)
	ff.set("remove", syscall.EROFS)
	if err := s.Delete("a"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("delete on a read-only disk: %v, want ErrReadOnly", err)
	}
	if got := s.Condition(); got != (Condition{ReadOnly: true}) {
		t.Fatalf("condition = %+v, want read-only", got)
	}
	if got, err := readAll(s, "a"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("shard after a refused delete: %v", err)
	}
	ff.set("remove", nil)
	s.Recheck()
	if err := s.Delete("a"); err != nil || s.Condition().Refusing() {
		t.Fatalf("delete after the disk came back: %v, condition %+v", err, s.Condition())
	}
}

func TestRecheckOfAHealthyStoreDoesNoIO(t *testing.T) {
	ff := newFaultFiles()
	s := openStore(t, t.TempDir(), Options{Files: ff})
	for _, op := range []string{"create", "write", "remove"} {
		ff.set(op, syscall.EIO)
	}
	s.Recheck() // a probe would fail with EIO; none is made
	if got := s.Condition(); got.Refusing() {
		t.Fatalf("condition = %+v", got)
	}
}
