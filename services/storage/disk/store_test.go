package disk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"

	"github.com/rehome/rehome/shared/model"
)

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func openStore(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts, nil)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(t *testing.T, s *Store, id string, data []byte) bool {
	t.Helper()
	created, err := s.Put(id, shaHex(data), int64(len(data)), bytes.NewReader(data))
	if err != nil {
		t.Fatalf("put %s: %v", id, err)
	}
	return created
}

func readAll(s *Store, id string) ([]byte, error) {
	r, _, err := s.Get(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// files lists every regular file under dir/shards (relative paths).
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, shardsDirName), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func quarantined(t *testing.T, s *Store) []string {
	t.Helper()
	es, err := os.ReadDir(s.QuarantineDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestHeaderRoundTripsAndCatchesEveryBitFlip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		h := header{Size: r.Int64N(1 << 40)}
		for j := range h.SHA256 {
			h.SHA256[j] = byte(r.Uint32())
		}
		b := h.encode()
		got, err := decodeHeader(b[:])
		if err != nil || got != h {
			t.Fatalf("round trip of %+v gave %+v, %v", h, got, err)
		}
		bit := r.IntN(HeaderSize * 8)
		b[bit/8] ^= 1 << (bit % 8)
		if _, err := decodeHeader(b[:]); !errors.Is(err, errBadHeader) {
			t.Fatalf("flipping bit %d went unnoticed", bit)
		}
	}
}

func TestPutGetDeleteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	data := randBytes(1, 1<<20+17)
	if !put(t, s, "obj1-s0", data) {
		t.Fatal("first put not reported as created")
	}
	got, err := readAll(s, "obj1-s0")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (err %v), want the %d written", len(got), err, len(data))
	}
	info, err := s.Stat("obj1-s0")
	if err != nil || info.Size != int64(len(data)) || info.SHA256 != shaHex(data) {
		t.Fatalf("stat = %+v, %v", info, err)
	}
	if n, used := s.Usage(); n != 1 || used != int64(len(data)) {
		t.Fatalf("usage = %d shards, %d bytes", n, used)
	}
	if err := s.Delete("obj1-s0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("obj1-s0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := readAll(s, "obj1-s0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if n, used := s.Usage(); n != 0 || used != 0 {
		t.Fatalf("usage after delete = %d shards, %d bytes", n, used)
	}
	if f := files(t, dir); len(f) != 0 {
		t.Fatalf("files left after delete: %v", f)
	}
}

func TestPutAcceptsAnyReaderShape(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	data := randBytes(12, 70_000)
	readers := map[string]io.Reader{
		"data with EOF": iotest.DataErrReader(bytes.NewReader(data)),
		"one byte":      iotest.OneByteReader(bytes.NewReader(data)),
		"half":          iotest.HalfReader(bytes.NewReader(data)),
	}
	for name, r := range readers {
		id := strings.ReplaceAll(name, " ", "-")
		if _, err := s.Put(id, shaHex(data), int64(len(data)), r); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, err := readAll(s, id); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: read back %v", name, err)
		}
	}
}

func TestEmptyShard(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	put(t, s, "e", nil)
	got, err := readAll(s, "e")
	if err != nil || len(got) != 0 {
		t.Fatalf("empty shard read %d bytes, %v", len(got), err)
	}
}

func TestPutIsIdempotentAndRefusesAnotherChecksum(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	data := randBytes(2, 4096)
	put(t, s, "k", data)
	if put(t, s, "k", data) {
		t.Fatal("re-put of identical shard reported created")
	}
	other := randBytes(3, 4096)
	_, err := s.Put("k", shaHex(other), int64(len(other)), bytes.NewReader(other))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("conflicting put: %v, want ErrConflict", err)
	}
	got, _ := readAll(s, "k")
	if !bytes.Equal(got, data) {
		t.Fatal("conflicting put changed the stored bytes")
	}
	if f := files(t, dir); len(f) != 1 {
		t.Fatalf("files after re-puts: %v", f)
	}
}

func TestBadBodiesLeaveNoFile(t *testing.T) {
	data := randBytes(4, 10000)
	cases := []struct {
		name string
		sha  string
		size int64
		body io.Reader
		want error
	}{
		{"wrong checksum", shaHex([]byte("other")), 10000, bytes.NewReader(data), ErrChecksum},
		{"short body", shaHex(data), 10001, bytes.NewReader(data), ErrSize},
		{"long body", shaHex(data[:9999]), 9999, bytes.NewReader(data), ErrSize},
		{"ok but for the checksum, last bytes with EOF", shaHex(data[:1]), 10000, iotest.DataErrReader(bytes.NewReader(data)), ErrChecksum},
		{"read error", shaHex(data), 10000, io.MultiReader(bytes.NewReader(data[:10]), iotestErr{}), ErrRead},
		{"bad checksum syntax", "xyz", 10000, bytes.NewReader(data), model.ErrInvalid},
		{"negative size", shaHex(data), -1, bytes.NewReader(data), model.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{})
			created, err := s.Put("id1", c.sha, c.size, c.body)
			if created || !errors.Is(err, c.want) {
				t.Fatalf("put = %v, %v; want %v", created, err, c.want)
			}
			if f := files(t, dir); len(f) != 0 {
				t.Fatalf("files left behind: %v", f)
			}
			if n, used := s.Usage(); n != 0 || used != 0 {
				t.Fatalf("usage = %d, %d", n, used)
			}
		})
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestCapacityIsEnforced(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{CapacityBytes: 10000})
	a, b := randBytes(5, 6000), randBytes(6, 6000)
	put(t, s, "a", a)
	if _, err := s.Put("b", shaHex(b), 6000, bytes.NewReader(b)); !errors.Is(err, ErrFull) {
		t.Fatalf("put over capacity: %v, want ErrFull", err)
	}
	if f := files(t, dir); len(f) != 1 {
		t.Fatalf("files: %v", f)
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	put(t, s, "b", b)
}

func TestIsFullRecognisesENOSPC(t *testing.T) {
	err := &fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	if !IsFull(err) || !errors.Is(writeErr("x", err), ErrFull) {
		t.Fatal("ENOSPC not classified as full")
	}
	if IsFull(&fs.PathError{Op: "write", Path: "x", Err: syscall.EIO}) {
		t.Fatal("EIO classified as full")
	}
}

func TestReopenRemovesTempFilesAndKeepsShards(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for i, id := range []string{"a", "ab1", "ab2", "zz-top", strings.Repeat("x", 128)} {
		want[id] = randBytes(uint64(10+i), 1000*(i+1))
		put(t, s, id, want[id])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash mid-write leaves temp files next to the shards.
	leftovers := []string{
		filepath.Join(dir, shardsDirName, "ab", tmpPrefix+"ab3-123"),
		filepath.Join(dir, shardsDirName, tmpPrefix+"stray"),
	}
	for _, p := range leftovers {
		if err := os.WriteFile(p, []byte("half a shard"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2 := openStore(t, dir, Options{})
	for _, p := range leftovers {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("leftover %s still there (%v)", p, err)
		}
	}
	list := s2.List()
	if len(list) != len(want) {
		t.Fatalf("reopened store lists %d shards, want %d", len(list), len(want))
	}
	var total int64
	for _, info := range list {
		data := want[info.ID]
		if info.Size != int64(len(data)) || info.SHA256 != shaHex(data) {
			t.Fatalf("index entry %+v does not describe what was written", info)
		}
		got, err := readAll(s2, info.ID)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %s after reopen: %v", info.ID, err)
		}
		total += info.Size
	}
	if _, used := s2.Usage(); used != total {
		t.Fatalf("used = %d, want %d", used, total)
	}
}

func TestSecondOpenOfSameDirIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	if _, err := Open(dir, Options{}, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	s.Close()
	s2 := openStore(t, dir, Options{})
	s2.Close()
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func TestFlippedDataByteIsCaughtOnReadAndQuarantined(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	data := randBytes(7, 700_000)
	put(t, s, "bad1", data)
	put(t, s, "good", data[:1000])
	flipByte(t, s.path("bad1"), HeaderSize+123_456)

	got, err := readAll(s, "bad1")
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of damaged shard: %v, want ErrCorrupt", err)
	}
	if len(got) >= len(data) {
		t.Fatalf("reader handed out all %d bytes of a damaged shard", len(got))
	}
	if _, err := s.Stat("bad1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("damaged shard still indexed: %v", err)
	}
	if q := quarantined(t, s); len(q) != 1 || !strings.HasPrefix(q[0], "bad1.") {
		t.Fatalf("quarantine holds %v", q)
	}
	if s.ChecksumFailures() != 1 {
		t.Fatalf("checksum failures = %d", s.ChecksumFailures())
	}
	if n, used := s.Usage(); n != 1 || used != 1000 {
		t.Fatalf("usage = %d, %d", n, used)
	}
	// The node can be healed with a good copy.
	put(t, s, "bad1", data)
	if got, err := readAll(s, "bad1"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("re-put after quarantine: %v", err)
	}
}

func TestDamagedHeaderIsQuarantinedAtOpenAndOnRead(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(8, 5000)
	put(t, s, "h1", data)
	put(t, s, "h2", data)
	put(t, s, "h3", data)
	flipByte(t, s.path("h1"), 20) // inside the stored checksum
	if err := os.Truncate(s.path("h2"), HeaderSize+100); err != nil {
		t.Fatal(err)
	}
	// Damage found while open: Get refuses and quarantines.
	if _, _, err := s.Get("h1"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("get with damaged header: %v", err)
	}
	s.Close()
	s2 := openStore(t, dir, Options{})
	if list := s2.List(); len(list) != 1 || list[0].ID != "h3" {
		t.Fatalf("after reopen the store lists %+v, want only h3", list)
	}
	if q := quarantined(t, s2); len(q) != 2 {
		t.Fatalf("quarantine holds %v, want h1 and h2", q)
	}
}

func TestQuarantineSparesAReplacement(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	data := randBytes(9, 3000)
	put(t, s, "r", data)
	flipByte(t, s.path("r"), HeaderSize+5)
	rd, _, err := s.Get("r")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	// Meanwhile the shard is deleted and written again, correctly.
	if err := s.Delete("r"); err != nil {
		t.Fatal(err)
	}
	put(t, s, "r", data)
	if _, err := io.ReadAll(rd); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("old reader: %v, want ErrCorrupt", err)
	}
	if got, err := readAll(s, "r"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("replacement lost after quarantine of the old file: %v", err)
	}
}

func TestInvalidIDsNeverTouchTheDisk(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	data := []byte("x")
	for _, id := range []string{"", "..", "../evil", "a/b", "a\x00b", "a.b", strings.Repeat("y", 129), "/abs"} {
		if _, err := s.Put(id, shaHex(data), 1, bytes.NewReader(data)); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("put %q: %v, want ErrInvalid", id, err)
		}
		if _, _, err := s.Get(id); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("get %q: %v", id, err)
		}
		if err := s.Delete(id); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("delete %q: %v", id, err)
		}
	}
	if f := files(t, dir); len(f) != 0 {
		t.Fatalf("files created: %v", f)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil")); err == nil {
		t.Fatal("a file escaped the store directory")
	}
}

func TestConcurrentPutsOfOneShardCreateItOnce(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	data := randBytes(11, 300_000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.Put("same", shaHex(data), int64(len(data)), bytes.NewReader(data))
			if err != nil {
				t.Error(err)
			}
			// Readers race with the writers and must only ever see whole shards.
			if got, err := readAll(s, "same"); err == nil && !bytes.Equal(got, data) {
				t.Error("reader saw a partial shard")
			}
			mu.Lock()
			if c {
				created++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if created != 1 {
		t.Fatalf("%d puts reported created, want 1", created)
	}
	if f := files(t, dir); len(f) != 1 {
		t.Fatalf("files: %v", f)
	}
}
