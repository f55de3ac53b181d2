package disk

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// readOnlyFiles is a faultFiles on which every change fails with EROFS, as
// on a filesystem mounted read-only.
func readOnlyFiles() *faultFiles {
	ff := newFaultFiles()
	for _, op := range []string{"lock", "create", "rename", "mkdir", "remove"} {
		ff.set(op, syscall.EROFS)
	}
	return ff
}

func TestStoreOnReadOnlyDiskStartsReadOnlyServesReadsAndRecovers(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	want := map[string][]byte{"a": randBytes(1, 3000), "ab1": randBytes(2, 70_000), "zz9": nil}
	for id, data := range want {
		put(t, s, id, data)
	}
	put(t, s, "h1", randBytes(3, 500))
	damaged, temp := s.path("h1"), filepath.Join(dir, shardsDirName, "ab", tmpPrefix+"ab2-1")
	s.Close()
	if err := os.Truncate(damaged, HeaderSize+10); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(temp, []byte("half a shard"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := files(t, dir)

	ff := readOnlyFiles()
	var seen conditions
	var mu sync.Mutex
	var quar []Quarantine
	s = openStore(t, dir, Options{Files: ff, OnCondition: seen.record, OnQuarantine: func(q Quarantine) {
		mu.Lock()
		defer mu.Unlock()
		quar = append(quar, q)
	}})
	if c := s.Condition(); !c.ReadOnly || c.Full {
		t.Fatalf("condition at start on a read-only disk: %+v, want read-only", c)
	}
	if got := s.List(); len(got) != len(want) {
		t.Fatalf("read-only store lists %+v, want %d shards (no damaged or temp file)", got, len(want))
	}
	for id, data := range want {
		got, err := readAll(s, id)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %s from a read-only store: %v (identical: %v)", id, err, bytes.Equal(got, data))
		}
	}
	if _, err := readAll(s, "h1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged shard on a read-only disk: %v, want ErrNotFound (never served)", err)
	}
	mu.Lock()
	if len(quar) != 1 || quar[0].ID != "h1" || quar[0].Found != FoundOpen {
		t.Fatalf("quarantines reported: %+v, want h1 found at open", quar)
	}
	mu.Unlock()

	// Another process cannot take the directory, whether its disk looks
	// read-only or writable to it.
	for _, opts := range []Options{{Files: readOnlyFiles()}, {}} {
		if _, err := Open(dir, opts, nil); !errors.Is(err, ErrLocked) {
			t.Fatalf("second open of a read-only store: %v, want ErrLocked", err)
		}
	}

	if _, err := s.Put("new1", shaHex([]byte("x")), 1, strings.NewReader("x")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("put on a read-only store: %v, want ErrReadOnly", err)
	}
	if got := files(t, dir); !slices.Equal(got, before) {
		t.Fatalf("files after a refused put: %v, want %v", got, before)
	}
	s.Recheck()
	if !s.Condition().ReadOnly {
		t.Fatal("recheck on a still read-only disk cleared the condition")
	}

	// The disk is remounted read-write: the recheck notices.
	for _, op := range []string{"lock", "create", "rename", "mkdir", "remove"} {
		ff.set(op, nil)
	}
	s.Recheck()
	if c := s.Condition(); c.Refusing() {
		t.Fatalf("condition after the disk became writable: %+v", c)
	}
	if got := seen.all(); !slices.Equal(got, []Condition{{}}) {
		t.Fatalf("conditions reported: %+v, want writable again once", got)
	}
	put(t, s, "new1", []byte("x"))
	if got, err := readAll(s, "new1"); err != nil || string(got) != "x" {
		t.Fatalf("read new1 after recovery: %q, %v", got, err)
	}
}

func TestReadOnlyDiskWithoutLockFileRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir, Options{Files: readOnlyFiles()}, nil)
	if !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), lockName) {
		t.Fatalf("open of a lockless store on a read-only disk: %v, want ErrReadOnly naming %s", err, lockName)
	}
	if _, err := os.Stat(filepath.Join(dir, lockName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LOCK file: %v, want none created", err)
	}
}
