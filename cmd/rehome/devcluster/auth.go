package devcluster

import (
	"fmt"
	"github.com/rehome/rehome/services/s3"
	"path/filepath"

	"github.com/rehome/rehome/cmd/rehome/credstore"
	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/shared/access"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/shardapi"
)

// Files of the local cluster's credentials, under Config.Dir.
const (
	// credsFile keeps every bus user's password, the system account's and
	// the storage token (credstore), so a restarted cluster, and a node
	// restarted by hand, keep theirs.
	credsFile = "nats/credentials.env"
	// envDir holds one env file per child (<id>.env: its bus URL with its
	// own credentials, the storage token) and admin.env; a child reads its
	// file with --env-file, so the command lines in processes.json hold no
	// secret and still start the child again.
	envDir = "env"
)

// loadCredentials returns the bus users cfg needs: admin (this supervisor),
// operator (secrets.env), detector, planner and mover (shared by every
// instance of a role), one user per storage node, and the system user.
func loadCredentials(cfg Config) (*credstore.Set, error) {
	ids := []credstore.Identity{{Role: access.Admin}, {Role: access.Operator}, {Role: access.Detector},
		{Role: access.Planner}, {Role: access.Mover}, {Role: access.S3, Node: s3ID}}
	for i := 1; i <= cfg.Nodes; i++ {
		ids = append(ids, credstore.Identity{Role: access.Storage, Node: storageID(i)})
	}
	set, err := credstore.Load(filepath.Join(cfg.Dir, credsFile), ids, true)
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	return set, nil
}

// userOf returns the user a child of role (storage: node id) connects as.
func (c *Cluster) userOf(role, id string) (access.User, error) {
	if role == consoleID {
		role = string(access.Operator) // the console reads the bus as the operator it asks the browser for
	}
	node := ""
	if role == string(access.Storage) || role == string(access.S3) {
		node = id // one user per storage node and per gateway
	}
	u, ok := c.creds.User(access.Role(role), node)
	if !ok {
		return access.User{}, fmt.Errorf("dev: no bus user for %s %s", role, id)
	}
	return u, nil
}

// writeChildEnv writes <dir>/env/<id>.env for a child and returns its path.
func (c *Cluster) writeChildEnv(role, id string) (string, error) {
	u, err := c.userOf(role, id)
	if err != nil {
		return "", err
	}
	kv := map[string]string{bus.EnvURL: u.URL(c.url), shardapi.EnvToken: c.token}
	if role == "detector" {
		kv[envSystemURL] = c.sysURL
	}
	if role == string(access.S3) {
		kv[s3.EnvAccessKey], kv[s3.EnvSecretKey] = c.creds.S3AccessKey, c.creds.S3SecretKey
	}
	for k, v := range c.childEnv {
		kv[k] = v
	}
	path := filepath.Join(c.cfg.Dir, envDir, id+".env")
	if err := envfile.Write(path, kv); err != nil {
		return "", fmt.Errorf("dev: %w", err)
	}
	return path, nil
}

// storageID names the i-th storage node (1-based).
func storageID(i int) string { return fmt.Sprintf("storage-%d", i) }
