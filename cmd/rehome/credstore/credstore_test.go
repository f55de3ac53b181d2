package credstore_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rehome/rehome/cmd/rehome/credstore"
	"github.com/rehome/rehome/shared/access"
)

func TestLoadKeepsWhatExistsAndAddsWhatIsMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.env")
	ids := []credstore.Identity{{Role: access.Operator}, {Role: access.Storage, Node: "storage-1"}}
	first, err := credstore.Load(path, ids, true)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v, want mode 0600", st, err)
	}
	op, ok := first.User(access.Operator, "")
	if !ok || op.Password == "" || first.Token == "" || first.System.Password == "" {
		t.Fatalf("missing credentials: %+v", first)
	}
	// A second run with one more node keeps every earlier secret.
	second, err := credstore.Load(path, append(ids, credstore.Identity{Role: access.Storage, Node: "storage-2"}), true)
	if err != nil {
		t.Fatal(err)
	}
	op2, _ := second.User(access.Operator, "")
	n1, _ := first.User(access.Storage, "storage-1")
	n1b, _ := second.User(access.Storage, "storage-1")
	if op2.Password != op.Password || n1b.Password != n1.Password || second.Token != first.Token || second.System != first.System {
		t.Fatal("a reload changed existing credentials")
	}
	if _, ok := second.User(access.Storage, "storage-2"); !ok {
		t.Fatal("the new node got no user")
	}
	if conf, err := second.ServerConf(); err != nil || len(conf) == 0 {
		t.Fatalf("server conf: %v", err)
	}
}

func TestLoadRefusesABadIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.env")
	if _, err := credstore.Load(path, []credstore.Identity{{Role: access.Storage, Node: "../x"}}, false); err == nil {
		t.Fatal("a storage user with a path as node id was created")
	}
}
