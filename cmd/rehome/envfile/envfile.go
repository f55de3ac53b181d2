// Package envfile reads and writes the KEY=value files rehome keeps secrets
// in (<dir>/secrets.env, one file per child of `rehome dev`): one assignment
// per line, no quoting, blank lines and lines starting with # ignored.
package envfile

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
)

// maxLine bounds one line; a longer one is an error, not a silent cut.
const maxLine = 64 << 10

// Parse returns the assignments of a file's contents. It fails, naming the
// line, on a line that is not KEY=value or whose key is not a shell-style
// name.
func Parse(data string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !validKey(k) {
			return nil, fmt.Errorf("line %d: want KEY=value", n)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// validKey accepts [A-Za-z_][A-Za-z0-9_]*.
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Read returns the assignments in path; a missing file is an empty map.
func Read(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	kv, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kv, nil
}

// Load sets every assignment in path in this process's environment,
// overriding what was there: a file named on the command line wins over a
// shell that sourced another cluster's secrets. A missing file is an error.
func Load(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("env file: %w", err)
	}
	kv, err := Read(path)
	if err != nil {
		return fmt.Errorf("env file: %w", err)
	}
	for k, v := range kv {
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("env file %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// LoadUnset sets the assignments in path that the environment lacks (unset
// or empty), leaving every variable already set alone: a file found by
// convention never overrides what the shell says. It reports whether the
// file exists; a missing file is not an error.
func LoadUnset(path string) (bool, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	kv, err := Read(path)
	if err != nil {
		return true, fmt.Errorf("env file: %w", err)
	}
	for k, v := range kv {
		if os.Getenv(k) != "" {
			continue
		}
		if err := os.Setenv(k, v); err != nil {
			return true, fmt.Errorf("env file %s: %s: %w", path, k, err)
		}
	}
	return true, nil
}

// Write replaces path atomically with kv's assignments (sorted), readable by
// the owner only.
func Write(path string, kv map[string]string) error {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		if !validKey(k) || strings.ContainsAny(kv[k], "\r\n") {
			return fmt.Errorf("env file %s: cannot write %q", path, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, kv[k])
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
