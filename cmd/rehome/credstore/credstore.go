// Package credstore keeps the secrets of one rehome installation in a
// KEY=value file: every bus user's password, the system account's and the
// storage API token. Load reuses what the file holds and creates what is
// missing, so a restarted cluster (and a node restarted by hand) keeps its
// credentials. `rehome dev` and `rehome auth init` (the compose stack) both
// use it.
package credstore

import (
	"fmt"
	"slices"
	"strings"

	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/shared/access"
)

// Identity names one bus user to have: a role, and a node for Storage.
type Identity struct {
	Role access.Role
	Node string
}

// Set is an installation's credentials.
type Set struct {
	// Users by user name (access.UserName).
	Users map[string]access.User
	// System is the system account's user; its Name is empty unless asked for.
	System access.System
	// Token is the storage API's bearer token.
	Token string
	// S3AccessKey and S3SecretKey are the S3 gateway's key pair.
	S3AccessKey, S3SecretKey string
}

// SystemUser is the system account's user name.
const SystemUser = "rehome-sys"

// Keys of the file besides the users' (USER_<NAME>).
const (
	keyToken  = "TOKEN"
	keySystem = "SYSTEM_PASSWORD"
	keyS3ID   = "S3_ACCESS_KEY_ID"
	keyS3     = "S3_SECRET_ACCESS_KEY"
)

// Load returns the credentials of ids (plus the system user when system is
// set, and the token) from path, creating the missing ones and rewriting
// path (mode 0600) with everything it returns and everything it held. It is
// not safe for concurrent use on one path.
func Load(path string, ids []Identity, system bool) (*Set, error) {
	old, err := envfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	s := &Set{Users: map[string]access.User{}}
	for _, id := range ids {
		u, err := access.NewUser(id.Role, id.Node)
		if err != nil {
			return nil, fmt.Errorf("credentials: %w", err)
		}
		if pw := old[userKey(u.Name)]; pw != "" {
			u.Password = pw
		}
		old[userKey(u.Name)] = u.Password
		s.Users[u.Name] = u
	}
	if s.Token, err = keepOrNew(old, keyToken); err != nil {
		return nil, err
	}
	if s.S3SecretKey, err = keepOrNew(old, keyS3); err != nil {
		return nil, err
	}
	if s.S3AccessKey, err = keepOrNew(old, keyS3ID); err != nil {
		return nil, err
	}
	if len(s.S3AccessKey) > 20 { // a fresh secret: shape it like an access key id
		s.S3AccessKey = "RH" + strings.ToUpper(s.S3AccessKey[:18])
		old[keyS3ID] = s.S3AccessKey
	}
	if system {
		pw, err := keepOrNew(old, keySystem)
		if err != nil {
			return nil, err
		}
		s.System = access.System{Name: SystemUser, Password: pw}
	}
	if err := envfile.Write(path, old); err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	return s, nil
}

// keepOrNew returns kv[key], first setting it to a new secret if empty.
func keepOrNew(kv map[string]string, key string) (string, error) {
	if kv[key] == "" {
		v, err := access.NewSecret()
		if err != nil {
			return "", fmt.Errorf("credentials: %w", err)
		}
		kv[key] = v
	}
	return kv[key], nil
}

// userKey turns a user name into a file key: USER_NODE_STORAGE_1.
func userKey(name string) string {
	return "USER_" + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(name))
}

// User returns the user of role (node for Storage); ok is false when Load
// was not asked for it.
func (s *Set) User(role access.Role, node string) (access.User, bool) {
	u, ok := s.Users[access.UserName(role, node)]
	return u, ok
}

// List returns every user, by name, for the server's configuration.
func (s *Set) List() []access.User {
	out := make([]access.User, 0, len(s.Users))
	for _, u := range s.Users {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b access.User) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ServerConf renders the NATS server configuration of s (access.ServerConf).
func (s *Set) ServerConf() (string, error) {
	return access.ServerConf(s.List(), s.System)
}
