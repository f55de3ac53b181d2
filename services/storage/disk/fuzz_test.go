package disk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzShardFile puts arbitrary bytes where a shard file lives and opens the
// store: Open must succeed (a damaged file is quarantined, not fatal), and a
// shard it indexes either reads back as exactly the bytes its header
// promises or fails with ErrCorrupt. Bytes that do not match their checksum
// never reach a reader.
func FuzzShardFile(f *testing.F) {
	body := []byte("hello")
	h := header{Size: int64(len(body)), SHA256: sha256.Sum256(body)}
	b := h.encode()
	f.Add(append(b[:], body...))
	f.Fuzz(func(t *testing.T, file []byte) {
		const id = "obj-s0"
		dir := t.TempDir()
		fan := filepath.Join(dir, shardsDirName, fanOf(id))
		if err := os.MkdirAll(fan, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fan, id), file, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{CapacityBytes: 1 << 30}, nil)
		if err != nil {
			t.Fatalf("open with a damaged shard file: %v", err)
		}
		defer s.Close()
		info, err := s.Stat(id)
		if errors.Is(err, ErrNotFound) {
			if _, err := os.Stat(filepath.Join(fan, id)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("shard refused at open but still in place: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		rd, _, err := s.Get(id)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("get: %v, want ErrCorrupt", err)
			}
			return
		}
		got, err := io.ReadAll(rd)
		rd.Close()
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("read: %v, want ErrCorrupt", err)
			}
			return
		}
		sum := sha256.Sum256(got)
		if int64(len(got)) != info.Size || hex.EncodeToString(sum[:]) != info.SHA256 {
			t.Fatalf("served %d bytes with sha256 %x as a shard of %d bytes, sha256 %s", len(got), sum, info.Size, info.SHA256)
		}
	})
}
