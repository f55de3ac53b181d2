// Package disk stores immutable shards as self-describing files in a
// directory, with an in-memory index rebuilt from the file headers at Open.
//
// Layout under the store directory:
//
//	LOCK                  flock held while the store is open (one process per dir)
//	shards/<xx>/<id>      one file per shard, <xx> the first two characters of the id:
//	                      a HeaderSize header (magic, size, sha256, crc) then the bytes
//	shards/<xx>/.tmp-*    a write in progress; removed at Open (left by a crash)
//	quarantine/<id>.<ns>  shards that failed verification, kept for inspection
//
// Writes are atomic: temp file in the final directory, fsync, checksum
// verified, rename, fsync of the directory. Reads verify the checksum while
// they stream and withhold the final bytes until it matched; Verify re-reads
// a shard at a caller-set pace (the scrubber). A shard that fails is
// quarantined and reported through Options.OnQuarantine; the store itself
// never talks to anything but its directory. The index keeps its ids sorted,
// so Page serves an inventory a page at a time in O(log N + page). A write
// refused for lack of room (ErrFull) or by a read-only filesystem
// (ErrReadOnly) leaves the store refusing (its Condition) until Recheck, a
// delete or a write shows that room or writability came back.
package disk

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// Errors returned by the store; callers branch on them with errors.Is.
// Invalid ids and checksums wrap model.ErrInvalid.
var (
	ErrNotFound = errors.New("shard not found")
	ErrConflict = errors.New("shard exists with another checksum")
	ErrChecksum = errors.New("bytes do not match the declared checksum")
	ErrSize     = errors.New("body length differs from the declared size")
	ErrRead     = errors.New("reading the shard body failed")
	ErrFull     = errors.New("no space left for the shard")
	ErrReadOnly = errors.New("the store's filesystem is read-only")
	ErrCorrupt  = errors.New("stored shard failed verification and was quarantined")
	ErrLocked   = errors.New("store directory is in use by another process")
)

const (
	tmpPrefix     = ".tmp-"
	shardsDirName = "shards"
	quarDirName   = "quarantine"
	lockName      = "LOCK"
	copyBufSize   = 256 << 10
)

// Info describes one stored shard; SHA256 is lower-case hex.
type Info struct {
	ID     string
	Size   int64
	SHA256 string
}

// Options tune a store.
type Options struct {
	// CapacityBytes caps the sum of stored shard sizes (writes beyond it fail
	// with ErrFull). 0 means no cap other than the filesystem itself.
	CapacityBytes int64
	// OnQuarantine, when set, is called once for every shard the store
	// quarantines (moved aside and dropped from the index), after the store's
	// lock is released, on the goroutine that found the damage: Open's for
	// FoundOpen, a reader's for FoundRead, Verify's caller's for FoundScrub.
	// It must not block and must not call back into the store. It is how the
	// store reports damage without doing any I/O beyond its directory.
	OnQuarantine func(Quarantine)
	// OnCondition, when set, is called with the new Condition each time it
	// changes (a write refused for room or as read-only, room or
	// writability back), after the store's lock is released, on the
	// goroutine that changed it. It must not block and must not call back
	// into the store.
	OnCondition func(Condition)
	// Files is the filesystem shards are written and removed through (nil:
	// the real one). Tests inject failures (ENOSPC, EROFS) here.
	Files Files
}

// Found says how a damaged shard was discovered.
type Found string

// Ways a damaged shard is found.
const (
	FoundOpen  Found = "open"  // a damaged header while Open loaded the index
	FoundRead  Found = "read"  // a client read (Get) failed verification
	FoundScrub Found = "scrub" // a background re-verification (Verify) failed
)

// Quarantine describes one shard the store quarantined.
type Quarantine struct {
	ID     string
	Found  Found
	Reason string
}

type entry struct {
	size int64
	sum  [32]byte
}

func (e entry) info(id string) Info {
	return Info{ID: id, Size: e.size, SHA256: hex.EncodeToString(e.sum[:])}
}

// Store is a directory of shards plus its in-memory index. All methods are
// safe for concurrent use; a Store must not be used after Close.
type Store struct {
	dir      string
	shards   string
	quar     string
	capacity int64
	log      *slog.Logger
	lock     *os.File
	onQuar   func(Quarantine)
	onCond   func(Condition)
	files    Files

	mu       sync.RWMutex
	index    map[string]entry
	ids      sortedIDs // the keys of index, in order
	used     int64
	reserved int64
	fans     map[string]bool // fan-out directories known to exist
	// capNeed and fsNeed are the smallest writes refused for lack of room
	// in the capacity and on the filesystem since room last came back (0:
	// none); readOnly is set by an EROFS. See Condition.
	capNeed, fsNeed int64
	readOnly        bool
	cond            Condition // last condition reported to onCond

	checksumFailures atomic.Uint64
	tmpRemoved       int
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Open opens (creating if needed) the store in dir: it takes the directory
// lock, removes temp files a crash left behind, quarantines files whose header
// is damaged, and loads the index from the headers without reading the shard
// bytes. It fails with ErrLocked if another process holds dir. On a
// read-only filesystem (EROFS) it still opens an existing store: it locks
// LOCK through a read-only descriptor, leaves the temp and damaged files it
// cannot remove in place (never indexed, so never served) and starts with
// Condition.ReadOnly set, serving reads until Recheck finds the disk
// writable. A read-only store without a LOCK file fails with ErrReadOnly.
func Open(dir string, opts Options, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		dir:      dir,
		shards:   filepath.Join(dir, shardsDirName),
		quar:     filepath.Join(dir, quarDirName),
		capacity: opts.CapacityBytes,
		log:      log,
		onQuar:   opts.OnQuarantine,
		onCond:   opts.OnCondition,
		files:    opts.Files,
		index:    make(map[string]entry),
		fans:     make(map[string]bool),
	}
	if s.files == nil {
		s.files = osFiles{}
	}
	for _, d := range []string{dir, s.shards, s.quar} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	lf, ro, err := s.openLock()
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open store %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock store %s: %w", dir, err)
	}
	s.lock = lf
	if ro {
		s.readOnly = true
		log.Warn("store filesystem is read-only: serving reads, refusing writes until it is writable", "dir", dir)
	}
	if err := s.load(); err != nil {
		lf.Close()
		return nil, err
	}
	s.cond = s.condLocked()
	log.Info("store opened", "dir", dir, "shards", len(s.index), "used_bytes", s.used, "temp_files_removed", s.tmpRemoved)
	return s, nil
}

// openLock opens the LOCK file to flock: read-write, created if missing, or
// read-only (ro true) when the filesystem refuses the write as read-only
// (EROFS); a read-only open descriptor locks just as well. A read-only
// filesystem with no LOCK file cannot be locked, so Open refuses to start
// there rather than share the directory with another process unlocked.
func (s *Store) openLock() (f *os.File, ro bool, err error) {
	name := filepath.Join(s.dir, lockName)
	f, err = s.files.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o640)
	if err == nil {
		return f, false, nil
	}
	if !IsReadOnly(err) {
		return nil, false, fmt.Errorf("open store lock: %w", err)
	}
	f, rerr := s.files.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(rerr, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("open store %s: %w and it has no %s file to lock; start the node once on a writable disk", s.dir, ErrReadOnly, lockName)
	}
	if rerr != nil {
		return nil, false, fmt.Errorf("open store lock read-only: %w", rerr)
	}
	return f, true, nil
}

// Close releases the directory lock. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close()
	s.lock = nil
	return err
}

// load scans shards/ and fills the index (called once, before the store is shared).
func (s *Store) load() error {
	fans, err := os.ReadDir(s.shards)
	if err != nil {
		return fmt.Errorf("scan store: %w", err)
	}
	for _, fan := range fans {
		fanPath := filepath.Join(s.shards, fan.Name())
		if !fan.IsDir() {
			if strings.HasPrefix(fan.Name(), tmpPrefix) {
				s.removeTemp(fanPath)
			} else {
				s.log.Warn("ignoring unexpected file in store", "path", fanPath)
			}
			continue
		}
		s.fans[fan.Name()] = true
		files, err := os.ReadDir(fanPath)
		if err != nil {
			return fmt.Errorf("scan store: %w", err)
		}
		for _, f := range files {
			name, path := f.Name(), filepath.Join(fanPath, f.Name())
			switch {
			case strings.HasPrefix(name, tmpPrefix):
				s.removeTemp(path)
				continue
			case !f.Type().IsRegular() || model.ValidateShardID(name) != nil || fanOf(name) != fan.Name():
				s.log.Warn("ignoring unexpected file in store", "path", path)
				continue
			}
			h, err := readHeader(path)
			if errors.Is(err, errBadHeader) {
				s.checksumFailures.Add(1)
				s.log.Warn("shard file damaged at open, quarantining", "shard", name, "err", err)
				if IsReadOnly(s.moveToQuarantine(name, path)) {
					s.readOnly = true // left in place, never indexed or served
				}
				s.notify(Quarantine{ID: name, Found: FoundOpen, Reason: err.Error()})
				continue
			}
			if err != nil {
				return fmt.Errorf("load shard %s: %w", name, err)
			}
			s.index[name] = entry{size: h.Size, sum: h.SHA256}
			s.used += h.Size
		}
	}
	ids := make([]string, 0, len(s.index))
	for id := range s.index {
		ids = append(ids, id)
	}
	s.ids = newSortedIDs(ids)
	return nil
}

// add indexes a new shard; s.mu must be held for writing.
func (s *Store) add(id string, e entry) {
	s.index[id] = e
	s.used += e.size
	s.ids.insert(id)
}

// drop removes id from the index if present; s.mu must be held for writing.
func (s *Store) drop(id string) {
	if e, ok := s.index[id]; ok {
		delete(s.index, id)
		s.used -= e.size
		s.ids.remove(id)
	}
}

// removeTemp removes a temp file a crash left behind (temp files are never
// indexed); on a read-only filesystem it stays, and the store starts
// read-only.
func (s *Store) removeTemp(path string) {
	if err := s.files.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		if IsReadOnly(err) {
			s.readOnly = true
		}
		s.log.Warn("could not remove leftover temp file", "path", path, "err", err)
		return
	}
	s.tmpRemoved++
	s.log.Info("removed leftover temp file", "path", path)
}

// readHeader reads a shard file's header and checks it against the file length.
func readHeader(path string) (header, error) {
	f, err := os.Open(path)
	if err != nil {
		return header{}, err
	}
	defer f.Close()
	return checkHeader(f)
}

func checkHeader(f *os.File) (header, error) {
	var b [HeaderSize]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return header{}, fmt.Errorf("%w: file shorter than a header", errBadHeader)
		}
		return header{}, err
	}
	h, err := decodeHeader(b[:])
	if err != nil {
		return h, err
	}
	fi, err := f.Stat()
	if err != nil {
		return h, err
	}
	if fi.Size() != HeaderSize+h.Size {
		return h, fmt.Errorf("%w: file has %d bytes, header says %d", errBadHeader, fi.Size()-HeaderSize, h.Size)
	}
	return h, nil
}

// fanOf is the fan-out directory name of a (valid) shard id.
func fanOf(id string) string {
	if len(id) < 2 {
		return id
	}
	return id[:2]
}

func (s *Store) path(id string) string {
	return filepath.Join(s.shards, fanOf(id), id)
}

// ParseSHA256 decodes a 64-character hex checksum (either case).
func ParseSHA256(sha string) ([32]byte, error) {
	var sum [32]byte
	if len(sha) != 64 {
		return sum, fmt.Errorf("%w checksum: want 64 hex characters, got %d", model.ErrInvalid, len(sha))
	}
	if _, err := hex.Decode(sum[:], []byte(sha)); err != nil {
		return sum, fmt.Errorf("%w checksum: not hex", model.ErrInvalid)
	}
	return sum, nil
}

// Put stores size bytes read from body as shard id, verified against sha (hex
// SHA-256). It returns created=true once the bytes are durable under id,
// created=false if id was already stored with the same checksum (body unread);
// ErrConflict if stored with another checksum; ErrChecksum, ErrSize or ErrRead
// if the body was wrong or unreadable; ErrFull when capacity or the disk ran
// out (ENOSPC, EDQUOT); ErrReadOnly when the filesystem is read-only (EROFS).
// On any error no file is left behind. A refusal for room or as read-only
// changes the store's Condition until Recheck, a delete or a write shows it
// is over. Concurrent puts of one id are safe: exactly one creates it.
func (s *Store) Put(id, sha string, size int64, body io.Reader) (created bool, err error) {
	if err := model.ValidateShardID(id); err != nil {
		return false, err
	}
	want, err := ParseSHA256(sha)
	if err != nil {
		return false, err
	}
	if size < 0 {
		return false, fmt.Errorf("%w size %d", model.ErrInvalid, size)
	}

	s.mu.Lock()
	if e, ok := s.index[id]; ok {
		s.mu.Unlock()
		return false, sameOrConflict(id, e, entry{size: size, sum: want})
	}
	if s.capacity > 0 && s.used+s.reserved+size > s.capacity {
		free := s.capacity - s.used - s.reserved
		s.noteCapacityRefusal(size)
		c, changed := s.condChangedLocked()
		s.mu.Unlock()
		s.reportCond(c, changed)
		return false, fmt.Errorf("%w: shard %s needs %d bytes, %d free of %d", ErrFull, id, size, max(free, 0), s.capacity)
	}
	s.reserved += size
	s.mu.Unlock()
	defer func() {
		if err != nil {
			s.noteWriteFailure(err, size)
		}
	}()
	reserved := true
	defer func() {
		if reserved {
			s.mu.Lock()
			s.reserved -= size
			s.mu.Unlock()
		}
	}()

	fan := filepath.Dir(s.path(id))
	if err := s.ensureFan(fan); err != nil {
		return false, err
	}
	tmp, err := s.files.CreateTemp(fan, tmpPrefix+id+"-*")
	if err != nil {
		return false, writeErr(id, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			if rerr := s.files.Remove(tmp.Name()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				s.log.Error("could not remove temp file", "path", tmp.Name(), "err", rerr)
			}
		}
	}()
	if err := writeBody(tmp, id, want, size, body); err != nil {
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		return false, writeErr(id, err)
	}
	if err := tmp.Close(); err != nil {
		return false, writeErr(id, err)
	}

	s.mu.Lock()
	if e, ok := s.index[id]; ok { // a concurrent put won the race
		s.mu.Unlock()
		return false, sameOrConflict(id, e, entry{size: size, sum: want})
	}
	if err := s.files.Rename(tmp.Name(), s.path(id)); err != nil {
		s.mu.Unlock()
		return false, writeErr(id, err)
	}
	committed = true
	s.add(id, entry{size: size, sum: want})
	s.reserved -= size
	reserved = false
	s.readOnly = false // the filesystem just took a shard
	c, changed := s.condChangedLocked()
	s.mu.Unlock()
	s.reportCond(c, changed)

	if err := syncDir(fan); err != nil {
		return true, fmt.Errorf("shard %s written but its directory could not be synced: %w", id, err)
	}
	return true, nil
}

func sameOrConflict(id string, have, want entry) error {
	if have == want {
		return nil
	}
	return fmt.Errorf("%w: %s holds %d bytes with sha256 %x", ErrConflict, id, have.size, have.sum)
}

// writeBody writes the header and exactly size bytes of body to f, checking
// the length and the checksum.
func writeBody(f File, id string, want [32]byte, size int64, body io.Reader) error {
	hdr := header{Size: size, SHA256: want}.encode()
	if _, err := f.Write(hdr[:]); err != nil {
		return writeErr(id, err)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	h := sha256.New()
	var n int64
	for n < size {
		nr, rerr := body.Read(buf[:min(int64(len(buf)), size-n)])
		if nr > 0 {
			h.Write(buf[:nr])
			if _, werr := f.Write(buf[:nr]); werr != nil {
				return writeErr(id, werr)
			}
			n += int64(nr)
		}
		if n == size && (rerr == nil || errors.Is(rerr, io.EOF)) {
			break
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: shard %s: got %d bytes, declared %d", ErrSize, id, n, size)
		}
		if rerr != nil {
			return fmt.Errorf("%w: shard %s: %w", ErrRead, id, rerr)
		}
	}
	if extra, err := hasMore(body); err != nil {
		return fmt.Errorf("%w: shard %s: %w", ErrRead, id, err)
	} else if extra {
		return fmt.Errorf("%w: shard %s: more than the declared %d bytes", ErrSize, id, size)
	}
	var got [32]byte
	h.Sum(got[:0])
	if got != want {
		return fmt.Errorf("%w: shard %s: declared %x, body has %x", ErrChecksum, id, want, got)
	}
	return nil
}

// hasMore reports whether r yields at least one more byte.
func hasMore(r io.Reader) (bool, error) {
	var one [1]byte
	for range 100 {
		n, err := r.Read(one[:])
		if n > 0 {
			return true, nil
		}
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, io.ErrNoProgress
}

// writeErr wraps a filesystem write error, marking a full disk as ErrFull
// and a read-only one as ErrReadOnly.
func writeErr(id string, err error) error {
	switch {
	case IsFull(err):
		return fmt.Errorf("%w: shard %s: %w", ErrFull, id, err)
	case IsReadOnly(err):
		return fmt.Errorf("%w: shard %s: %w", ErrReadOnly, id, err)
	}
	return fmt.Errorf("write shard %s: %w", id, err)
}

func (s *Store) ensureFan(fan string) error {
	name := filepath.Base(fan)
	s.mu.RLock()
	ok := s.fans[name]
	s.mu.RUnlock()
	if ok {
		return nil
	}
	if err := s.files.Mkdir(fan, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return writeErr(name, err)
	}
	if err := syncDir(s.shards); err != nil {
		return fmt.Errorf("sync %s: %w", s.shards, err)
	}
	s.mu.Lock()
	s.fans[name] = true
	s.mu.Unlock()
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Stat returns what the index holds for id (no disk access), or ErrNotFound.
func (s *Store) Stat(id string) (Info, error) {
	if err := model.ValidateShardID(id); err != nil {
		return Info{}, err
	}
	s.mu.RLock()
	e, ok := s.index[id]
	s.mu.RUnlock()
	if !ok {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return e.info(id), nil
}

// Delete removes shard id, or returns ErrNotFound; ErrReadOnly when the
// filesystem is read-only. A reader that already opened it keeps reading the
// old bytes. The room it frees counts at once: a store full for lack of
// capacity accepts writes again when the refused size fits.
func (s *Store) Delete(id string) error {
	if err := model.ValidateShardID(id); err != nil {
		return err
	}
	p := s.path(id)
	s.mu.Lock()
	if _, ok := s.index[id]; !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err := s.files.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.mu.Unlock()
		err = fmt.Errorf("delete shard %s: %w", id, err)
		if IsReadOnly(err) {
			err = fmt.Errorf("%w: %w", ErrReadOnly, err)
			s.noteWriteFailure(err, 0)
		}
		return err
	}
	s.drop(id)
	s.readOnly = false // the filesystem just took a change
	s.clearCapNeedLocked()
	fsFull := s.fsNeed > 0
	c, changed := s.condChangedLocked()
	s.mu.Unlock()
	s.reportCond(c, changed)
	if err := syncDir(filepath.Dir(p)); err != nil {
		s.log.Warn("could not sync directory after delete", "shard", id, "err", err)
	}
	if fsFull {
		s.Recheck()
	}
	return nil
}

// List returns every stored shard, sorted by id.
func (s *Store) List() []Info {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Info, 0, s.ids.n)
	s.ids.after("", func(id string) bool {
		out = append(out, s.index[id].info(id))
		return true
	})
	return out
}

// Usage returns the number of shards and the sum of their sizes.
func (s *Store) Usage() (shards int, used int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.index), s.used
}

// Capacity is the configured cap (0 = none).
func (s *Store) Capacity() int64 { return s.capacity }

// ChecksumFailures counts shards found damaged (at open or while read) since Open.
func (s *Store) ChecksumFailures() uint64 { return s.checksumFailures.Load() }

// QuarantineDir is where damaged shard files are moved.
func (s *Store) QuarantineDir() string { return s.quar }

// Get opens shard id for reading. The Reader yields exactly Info.Size bytes
// and verifies their checksum as it goes: the last chunk is only returned once
// the whole shard matched; on a mismatch Read fails with ErrCorrupt and the
// shard is quarantined (moved aside and dropped from the index). A damaged
// header is caught here with the same effect. Damage found through Get is
// reported to Options.OnQuarantine as FoundRead. The caller must Close the
// Reader.
func (s *Store) Get(id string) (*Reader, Info, error) {
	return s.open(id, FoundRead)
}

// open is Get, attributing any damage it or its Reader finds to found.
func (s *Store) open(id string, found Found) (*Reader, Info, error) {
	if err := model.ValidateShardID(id); err != nil {
		return nil, Info{}, err
	}
	// Opening under the lock pairs the index entry with the file it names
	// (renames and removals happen under the write lock).
	s.mu.RLock()
	e, ok := s.index[id]
	var f *os.File
	var err error
	if ok {
		f, err = os.Open(s.path(id))
	}
	s.mu.RUnlock()
	if !ok {
		return nil, Info{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, Info{}, fmt.Errorf("open shard %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, fmt.Errorf("open shard %s: %w", id, err)
	}
	h, err := checkHeader(f)
	if err == nil && (h.Size != e.size || h.SHA256 != e.sum) {
		err = fmt.Errorf("%w: header no longer matches the index", errBadHeader)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, errBadHeader) {
			s.quarantine(id, fi, found, err)
			return nil, Info{}, fmt.Errorf("%w: %s: %w", ErrCorrupt, id, err)
		}
		return nil, Info{}, fmt.Errorf("open shard %s: %w", id, err)
	}
	return &Reader{s: s, id: id, f: f, fi: fi, found: found, remain: e.size, want: e.sum, h: sha256.New()}, e.info(id), nil
}

// OpenRaw opens shard id for sending as it is on disk, without verifying
// its bytes: the returned file is positioned at the first shard byte and
// holds exactly Info.Size of them after it (the header was checked against
// the index, as Get does; a damaged header quarantines the shard and yields
// ErrCorrupt). Whoever receives the bytes must verify them against
// Info.SHA256, and on a mismatch have the store Verify the shard (which
// quarantines it if the damage is here). The point is zero copy: an
// *os.File can go to a socket with sendfile. The caller must Close the file.
func (s *Store) OpenRaw(id string) (*os.File, Info, error) {
	rd, info, err := s.open(id, FoundRead)
	if err != nil {
		return nil, Info{}, err
	}
	return rd.f, info, nil
}

// quarantine moves the damaged file opened as fi aside and drops id from the
// index, unless id has since been replaced by another file; then it reports
// the quarantine (outside the lock).
func (s *Store) quarantine(id string, fi os.FileInfo, found Found, cause error) {
	s.checksumFailures.Add(1)
	p := s.path(id)
	s.mu.Lock()
	cur, err := os.Lstat(p)
	if err != nil || !os.SameFile(cur, fi) {
		s.mu.Unlock()
		s.log.Warn("damaged shard already replaced or removed", "shard", id, "err", cause)
		return
	}
	if IsReadOnly(s.moveToQuarantine(id, p)) {
		s.readOnly = true
	}
	s.drop(id)
	c, changed := s.condChangedLocked()
	s.mu.Unlock()
	s.reportCond(c, changed)
	s.log.Warn("shard failed verification, quarantined", "shard", id, "found", found, "err", cause)
	s.notify(Quarantine{ID: id, Found: found, Reason: cause.Error()})
}

// notify hands q to Options.OnQuarantine, if set.
func (s *Store) notify(q Quarantine) {
	if s.onQuar != nil {
		s.onQuar(q)
	}
}

// moveToQuarantine moves a damaged shard file aside, or removes it if it
// cannot be moved; it returns the error that left the file in place (its
// caller has dropped it from the index either way, so it is never served).
func (s *Store) moveToQuarantine(id, path string) error {
	dst := filepath.Join(s.quar, fmt.Sprintf("%s.%d", id, time.Now().UnixNano()))
	err := s.files.Rename(path, dst)
	if err == nil {
		return nil
	}
	s.log.Error("could not quarantine shard, removing it", "shard", id, "err", err)
	if err := s.files.Remove(path); err != nil {
		s.log.Error("could not remove damaged shard; left in place, not served", "shard", id, "err", err)
		return err
	}
	return nil
}

// Reader streams one shard, verifying it. Not safe for concurrent use.
type Reader struct {
	s        *Store
	id       string
	f        *os.File
	fi       os.FileInfo
	found    Found
	remain   int64
	want     [32]byte
	h        hash.Hash
	verified bool
	err      error
}

// Read implements io.Reader. The call that would return the final bytes
// returns them only if the whole shard matched its checksum; otherwise it
// returns 0 and an error wrapping ErrCorrupt.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.f == nil {
		return 0, os.ErrClosed
	}
	if r.remain == 0 {
		if !r.verified {
			if err := r.verify(); err != nil {
				return 0, err
			}
		}
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := int(min(int64(len(p)), r.remain))
	if _, err := io.ReadFull(r.f, p[:n]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, r.fail(fmt.Errorf("file truncated: %w", err))
		}
		r.err = fmt.Errorf("read shard %s: %w", r.id, err)
		return 0, r.err
	}
	r.h.Write(p[:n])
	r.remain -= int64(n)
	if r.remain == 0 {
		if err := r.verify(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (r *Reader) verify() error {
	r.verified = true
	var got [32]byte
	r.h.Sum(got[:0])
	if got != r.want {
		return r.fail(fmt.Errorf("sha256 %x, want %x", got, r.want))
	}
	return nil
}

func (r *Reader) fail(cause error) error {
	r.s.quarantine(r.id, r.fi, r.found, cause)
	r.err = fmt.Errorf("%w: %s: %w", ErrCorrupt, r.id, cause)
	return r.err
}

// Close releases the file. It is idempotent.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// FilesystemSize returns the total size in bytes of the filesystem holding dir.
func FilesystemSize(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Blocks) * int64(st.Bsize), nil
}
