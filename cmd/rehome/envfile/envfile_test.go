package envfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rehome/rehome/cmd/rehome/envfile"
)

func TestWriteReadLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.env")
	want := map[string]string{"REHOME_NATS_URL": "nats://operator:pw@127.0.0.1:4222", "REHOME_TOKEN": "abc=def"}
	if err := envfile.Write(path, want); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secrets file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	got, err := envfile.Read(path)
	if err != nil || len(got) != 2 || got["REHOME_TOKEN"] != "abc=def" {
		t.Fatalf("read back %v, %v", got, err)
	}
	t.Setenv("REHOME_TOKEN", "from-the-shell")
	if err := envfile.Load(path); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("REHOME_TOKEN") != "abc=def" {
		t.Fatal("the file's value must override the shell's")
	}
}

func TestBadInput(t *testing.T) {
	for _, bad := range []string{"no equals sign", "1KEY=v", "=v", "KEY WITH SPACE=v"} {
		if _, err := envfile.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if kv, err := envfile.Parse("# comment\n\nA=1\n"); err != nil || kv["A"] != "1" {
		t.Fatalf("comments and blank lines: %v %v", kv, err)
	}
	if err := envfile.Load(filepath.Join(t.TempDir(), "missing.env")); err == nil {
		t.Fatal("a missing --env-file must be an error")
	}
	if err := envfile.Write(filepath.Join(t.TempDir(), "x.env"), map[string]string{"A": "x\ny"}); err == nil {
		t.Fatal("a value with a newline was written")
	}
}

// FuzzParse: any bytes give assignments or an error, never a panic, and
// what Parse accepts survives Write and Read unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"A=1\n", "# c\nREHOME_TOKEN=x=y\n", "=\n", "A", "A=\r\nB=2", "\x00=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kv, err := envfile.Parse(s)
		if err != nil {
			return
		}
		path := filepath.Join(t.TempDir(), "f.env")
		if err := envfile.Write(path, kv); err != nil {
			return // values with a carriage return are refused on write
		}
		back, err := envfile.Read(path)
		if err != nil || len(back) != len(kv) {
			t.Fatalf("round trip of %q: %v %v", s, back, err)
		}
		for k, v := range kv {
			if back[k] != v {
				t.Fatalf("round trip of %q: %s=%q became %q", s, k, v, back[k])
			}
		}
	})
}
