package disk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Files is the filesystem a Store changes shards through: its lock file, temp
// files, renames, removals, fan-out directories and the free-space check. Options.Files nil
// means the real one (package os and statfs); tests inject ENOSPC, EROFS and
// the like here, which a process running as root cannot provoke with chmod.
type Files interface {
	// OpenFile opens a file, as os.OpenFile; Open opens the store's LOCK
	// file through it (read-write, and read-only on a read-only filesystem).
	OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error)
	// CreateTemp creates and opens a new file in dir, as os.CreateTemp.
	CreateTemp(dir, pattern string) (File, error)
	// Rename moves oldpath to newpath, as os.Rename.
	Rename(oldpath, newpath string) error
	// Mkdir creates a directory, as os.Mkdir.
	Mkdir(name string, perm fs.FileMode) error
	// Remove removes a file, as os.Remove.
	Remove(name string) error
	// Free returns the bytes an unprivileged writer may still use on the
	// filesystem holding dir.
	Free(dir string) (int64, error)
}

// File is a temp file being written: a new shard until it is renamed.
type File interface {
	io.Writer
	Sync() error
	Close() error
	Name() string
}

// osFiles is Files on the real filesystem.
type osFiles struct{}

func (osFiles) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}
func (osFiles) CreateTemp(dir, pattern string) (File, error) { return os.CreateTemp(dir, pattern) }
func (osFiles) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFiles) Mkdir(name string, perm fs.FileMode) error    { return os.Mkdir(name, perm) }
func (osFiles) Remove(name string) error                     { return os.Remove(name) }

func (osFiles) Free(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// IsFull reports whether err is the filesystem saying it has no room
// (ENOSPC, or EDQUOT for a quota).
func IsFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// IsReadOnly reports whether err is the filesystem refusing a write because
// it is mounted read-only (EROFS).
func IsReadOnly(err error) bool { return errors.Is(err, syscall.EROFS) }
