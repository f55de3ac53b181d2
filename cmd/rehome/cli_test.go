package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/shared/access"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/embedded"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

// parsed is what a command line reached: the command, its positional
// arguments, the flags it set, and for put what it would store.
type parsed struct {
	path  string
	args  []string
	flags map[string]string
	put   *putPlan
}

// parseOnly runs args through the real command tree with every runnable
// command's action replaced by a recorder: flags and arguments are parsed
// and validated as a user's would be, and nothing connects anywhere.
func parseOnly(t *testing.T, args []string) (parsed, error) {
	t.Helper()
	root := newRoot(&globals{})
	var got parsed
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if !c.Runnable() || c == root {
			return
		}
		c.RunE = func(cmd *cobra.Command, args []string) error {
			got = parsed{path: cmd.CommandPath(), args: args, flags: map[string]string{}}
			cmd.Flags().Visit(func(f *pflag.Flag) { got.flags[f.Name] = f.Value.String() })
			if cmd.Name() == "put" {
				p, err := planPut(cmd.Flags(), args)
				if err != nil {
					return err
				}
				got.put = &p
			}
			return nil
		}
	}
	walk(root)
	root.SetArgs(args)
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	err := root.Execute()
	return got, err
}

// TestSpecFormsParse: every form SPEC §3 shows reaches its command with the
// same arguments and flag values whatever the order of flags and arguments,
// with `--flag value` or `--flag=value`, and global flags before the command.
func TestSpecFormsParse(t *testing.T) {
	ec42 := model.Layout{K: 4, M: 2}
	rf3 := model.Layout{RF: 3}
	cases := []struct {
		name   string
		orders [][]string
		path   string
		args   []string
		flags  map[string]string
		layout model.Layout
		keys   []string
	}{
		{name: "put --key --ec", path: "rehome put", args: []string{"f.bin"}, flags: map[string]string{"key": "K", "ec": "4+2"}, layout: ec42, keys: []string{"K"},
			orders: [][]string{
				{"put", "f.bin", "--key", "K", "--ec", "4+2"},
				{"put", "--key", "K", "--ec", "4+2", "f.bin"},
				{"put", "--ec", "4+2", "f.bin", "--key", "K"},
				{"put", "--ec=4+2", "--key=K", "f.bin"},
				{"put", "f.bin", "--ec=4+2", "--key=K"},
			}},
		{name: "put --ec", path: "rehome put", args: []string{"f.bin"}, flags: map[string]string{"ec": "4+2"}, layout: ec42, keys: []string{"f.bin"},
			orders: [][]string{
				{"put", "f.bin", "--ec", "4+2"},
				{"put", "--ec", "4+2", "f.bin"},
				{"put", "--ec=4+2", "f.bin"},
			}},
		{name: "put --rf", path: "rehome put", args: []string{"dir/f.bin"}, flags: map[string]string{"rf": "3"}, layout: rf3, keys: []string{"f.bin"},
			orders: [][]string{
				{"put", "dir/f.bin", "--rf", "3"},
				{"put", "--rf", "3", "dir/f.bin"},
				{"put", "--rf=3", "dir/f.bin"},
			}},
		{name: "put --key --rf", path: "rehome put", args: []string{"f.bin"}, flags: map[string]string{"key": "K", "rf": "2"}, layout: model.Layout{RF: 2}, keys: []string{"K"},
			orders: [][]string{
				{"put", "f.bin", "--key", "K", "--rf", "2"},
				{"put", "--rf", "2", "f.bin", "--key", "K"},
			}},
		{name: "put files", path: "rehome put", args: []string{"a", "b"}, flags: map[string]string{"ec": "4+2"}, layout: ec42, keys: []string{"a", "b"},
			orders: [][]string{
				{"put", "a", "b", "--ec", "4+2"},
				{"put", "a", "--ec", "4+2", "b"},
				{"put", "--ec", "4+2", "a", "b"},
			}},
		{name: "put default", path: "rehome put", args: []string{"f.bin"}, flags: map[string]string{}, layout: rf3, keys: []string{"f.bin"},
			orders: [][]string{{"put", "f.bin"}}},
		{name: "put with globals", path: "rehome put", args: []string{"f.bin"}, flags: map[string]string{"nats": "nats://h:1", "ec": "4+2", "key": "K"}, layout: ec42, keys: []string{"K"},
			orders: [][]string{
				{"--nats", "nats://h:1", "put", "f.bin", "--key", "K", "--ec", "4+2"},
				{"put", "--nats=nats://h:1", "--ec", "4+2", "f.bin", "--key", "K"},
				{"put", "f.bin", "--key", "K", "--ec", "4+2", "--nats", "nats://h:1"},
			}},
		{name: "get -o", path: "rehome get", args: []string{"K"}, flags: map[string]string{"output": "F"},
			orders: [][]string{
				{"get", "K", "-o", "F"},
				{"get", "-o", "F", "K"},
				{"get", "-oF", "K"},
				{"get", "K", "--output=F"},
				{"get", "--output", "F", "K"},
			}},
		{name: "get", path: "rehome get", args: []string{"K"}, flags: map[string]string{}, orders: [][]string{{"get", "K"}}},
		{name: "ls", path: "rehome ls", args: []string{}, flags: map[string]string{"json": "true"},
			orders: [][]string{{"ls", "--json"}}},
		{name: "ls with globals", path: "rehome ls", args: []string{}, flags: map[string]string{"json": "true", "timeout": "5s"},
			orders: [][]string{{"--timeout", "5s", "ls", "--json"}, {"ls", "--timeout=5s", "--json"}}},
		{name: "rm", path: "rehome rm", args: []string{"K"}, flags: map[string]string{}, orders: [][]string{{"rm", "K"}}},
		{name: "inspect", path: "rehome inspect", args: []string{"K"}, flags: map[string]string{"json": "true"},
			orders: [][]string{{"inspect", "K", "--json"}, {"inspect", "--json", "K"}}},
		{name: "cluster status", path: "rehome cluster status", args: []string{}, flags: map[string]string{"risk": "true", "json": "true"},
			orders: [][]string{{"cluster", "status", "--risk", "--json"}, {"cluster", "status", "--json", "--risk"}}},
		{name: "heal --node", path: "rehome heal", args: []string{}, flags: map[string]string{"node": "storage-5"},
			orders: [][]string{{"heal", "--node", "storage-5"}, {"heal", "--node=storage-5"}}},
		{name: "heal status", path: "rehome heal status", args: []string{}, flags: map[string]string{"node": "storage-5", "follow": "true"},
			orders: [][]string{
				{"heal", "status", "--node", "storage-5", "--follow"},
				{"heal", "status", "--follow", "--node=storage-5"},
			}},
		{name: "heal plan", path: "rehome heal plan", args: []string{}, flags: map[string]string{"node": "storage-5"},
			orders: [][]string{{"heal", "plan", "--node", "storage-5"}, {"heal", "plan", "--node=storage-5"}}},
		{name: "heal pause", path: "rehome heal pause", args: []string{}, flags: map[string]string{}, orders: [][]string{{"heal", "pause"}}},
		{name: "heal resume", path: "rehome heal resume", args: []string{}, flags: map[string]string{}, orders: [][]string{{"heal", "resume"}}},
		{name: "node maintenance", path: "rehome node maintenance", args: []string{"storage-2", "on"}, flags: map[string]string{},
			orders: [][]string{{"node", "maintenance", "storage-2", "on"}}},
		{name: "events", path: "rehome events", args: []string{"rehome.node.>"}, flags: map[string]string{"json": "true"},
			orders: [][]string{{"events", "rehome.node.>", "--json"}, {"events", "--json", "rehome.node.>"}}},
		{name: "events all", path: "rehome events", args: []string{}, flags: map[string]string{}, orders: [][]string{{"events"}}},
		{name: "s3", path: "rehome s3", args: []string{}, flags: map[string]string{"listen": ":9000"},
			orders: [][]string{{"s3", "--listen", ":9000"}, {"s3", "--listen=:9000"}}},
		{name: "dev", path: "rehome dev", args: []string{},
			flags: map[string]string{"nodes": "6", "racks": "3", "dir": "D", "grace": "10s", "nats-port": "4222"},
			orders: [][]string{
				{"dev", "--nodes", "6", "--racks", "3", "--dir", "D", "--grace", "10s", "--nats-port", "4222"},
				{"dev", "--nats-port=4222", "--grace=10s", "--dir=D", "--racks=3", "--nodes=6"},
			}},
		{name: "healthcheck", path: "rehome healthcheck", args: []string{"http://127.0.0.1:1/healthz"}, flags: map[string]string{},
			orders: [][]string{{"healthcheck", "http://127.0.0.1:1/healthz"}}},
	}
	for _, svc := range []string{"storage", "detector", "planner", "mover"} {
		cases = append(cases, struct {
			name   string
			orders [][]string
			path   string
			args   []string
			flags  map[string]string
			layout model.Layout
			keys   []string
		}{name: svc, path: "rehome " + svc, args: []string{}, flags: map[string]string{"nats": "nats://h:1"},
			orders: [][]string{{svc, "--nats", "nats://h:1"}, {"--nats=nats://h:1", svc}}})
	}
	for _, tc := range cases {
		for _, args := range tc.orders {
			t.Run(tc.name+"/"+strings.Join(args, " "), func(t *testing.T) {
				got, err := parseOnly(t, args)
				if err != nil {
					t.Fatalf("rehome %s: %v", strings.Join(args, " "), err)
				}
				if got.path != tc.path || !reflect.DeepEqual(append([]string{}, got.args...), tc.args) || !reflect.DeepEqual(got.flags, tc.flags) {
					t.Fatalf("reached %q args %q flags %v; want %q args %q flags %v", got.path, got.args, got.flags, tc.path, tc.args, tc.flags)
				}
				if tc.path == "rehome put" {
					if got.put.layout != tc.layout || !reflect.DeepEqual(got.put.keys, tc.keys) || !reflect.DeepEqual(got.put.files, tc.args) {
						t.Fatalf("put would store %v as %v with %s; want %v with %s", got.put.files, got.put.keys, got.put.layout, tc.keys, tc.layout)
					}
				}
			})
		}
	}
}

// TestPutRefusesContradictions: what put cannot do is said in one line.
func TestPutRefusesContradictions(t *testing.T) {
	for _, args := range [][]string{
		{"put", "f", "--rf", "3", "--ec", "4+2"},
		{"put", "a", "b", "--key", "K"},
		{"put", "f", "--ec", "4"},
		{"put", "f", "--ec"},
		{"put", "--ec", "4+2"},
		{"get", "K", "-o"},
	} {
		if _, err := parseOnly(t, args); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("rehome %s: error %v, want one line", strings.Join(args, " "), err)
		}
	}
}

// TestGroupsRefuseUnknownSubcommands: under every command group, an unknown
// subcommand (and a missing one) exits 1 with a one-line error naming it,
// never help with exit 0. The tree is walked, so new groups are covered.
func TestGroupsRefuseUnknownSubcommands(t *testing.T) {
	var groups [][]string
	var walk func(*cobra.Command, []string)
	walk = func(c *cobra.Command, path []string) {
		for _, sub := range c.Commands() {
			if !sub.HasSubCommands() {
				continue
			}
			p := append(append([]string{}, path...), sub.Name())
			// A group that is itself a command of positional arguments
			// ("node drain ID") takes an unknown word as its argument.
			if !(sub.Runnable() && sub.Args != nil && strings.Contains(sub.Use, " ID")) {
				groups = append(groups, p)
			}
			walk(sub, p)
		}
	}
	walk(newRoot(&globals{}), nil)
	if len(groups) < 4 { // cluster, heal, node, auth at least
		t.Fatalf("found only these groups: %v", groups)
	}
	for _, g := range groups {
		for _, args := range [][]string{append(append([]string{}, g...), "bogus"), append(append([]string{}, g...), "bogus", "x")} {
			code, err := run(args)
			if code != 1 || err == nil || !strings.Contains(err.Error(), "bogus") || strings.Contains(err.Error(), "\n") {
				t.Errorf("rehome %s: exit %d, %v; want exit 1 and one line naming bogus", strings.Join(args, " "), code, err)
			}
		}
		if g[0] == "heal" {
			continue // heal alone is a command: it asks for --node
		}
		if code, err := run(g); code != 1 || err == nil {
			t.Errorf("rehome %s: exit %d, %v; want exit 1 asking for a subcommand", strings.Join(g, " "), code, err)
		}
	}
	if code, err := run([]string{"bogus"}); code != 1 || err == nil {
		t.Errorf("rehome bogus: exit %d, %v", code, err)
	}
}

// TestHealFollowEndsOnLostShards: --follow waits while repairs are under way
// and, once only lost shards remain, exits 1 with one line saying how many.
func TestHealFollowEndsOnLostShards(t *testing.T) {
	env := bustest.Start(t)
	var polls atomic.Int32
	sub, err := env.NC.Subscribe(event.CtlHealStatus, func(m *nats.Msg) {
		p := event.Progress{UnderReplicated: 2, Lost: 1, InFlight: 1, BytesRemaining: 1 << 20}
		if polls.Add(1) > 2 {
			p = event.Progress{Lost: 3}
		}
		b, _ := control.OKReply(p)
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	code, err := run([]string{"--nats", env.URL, "heal", "status", "--follow", "--json", "--interval", "10ms"})
	if code != 1 || err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "3 shards lost") {
		t.Fatalf("exit %d, %v; want exit 1 with one line naming 3 lost shards", code, err)
	}
	if n := polls.Load(); n < 3 {
		t.Fatalf("gave up after %d polls, before only lost shards remained", n)
	}
}

// TestFindsSecretsInWorkingDir: with nothing in the environment the CLI
// uses ./rehome-data/secrets.env (SPEC §5); when the bus refuses what it
// found, or what the environment says, the one-line error names where the
// URL came from and the line that equips the shell.
func TestFindsSecretsInWorkingDir(t *testing.T) {
	admin, err := access.NewUser(access.Admin, "")
	if err != nil {
		t.Fatal(err)
	}
	operator, err := access.NewUser(access.Operator, "")
	if err != nil {
		t.Fatal(err)
	}
	env := bustest.StartWith(t, embedded.Config{Users: []access.User{admin, operator}, SystemUser: "sys", SystemPassword: "sys-secret"}, admin.URL)

	dir := t.TempDir()
	t.Chdir(dir)
	secrets := filepath.Join(dir, "rehome-data", "secrets.env")
	if err := os.MkdirAll(filepath.Dir(secrets), 0o700); err != nil {
		t.Fatal(err)
	}
	writeSecrets := func(url string) {
		t.Helper()
		if err := envfile.Write(secrets, map[string]string{bus.EnvURL: url, shardapi.EnvToken: "token"}); err != nil {
			t.Fatal(err)
		}
	}
	clearEnv := func() {
		t.Setenv(bus.EnvURL, "")
		t.Setenv(shardapi.EnvToken, "")
	}
	ls := []string{"ls", "--json", "--timeout", "3s"}

	clearEnv()
	writeSecrets(operator.URL(env.URL))
	if code, err := run(ls); code != 0 {
		t.Fatalf("ls with ./rehome-data/secrets.env and nothing set: exit %d, %v", code, err)
	}

	clearEnv()
	wrong := operator
	wrong.Password = "not-the-password"
	writeSecrets(wrong.URL(env.URL))
	code, err := run(ls)
	if code != 1 || err == nil {
		t.Fatalf("ls with refused credentials: exit %d, %v", code, err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, secrets) || !strings.Contains(msg, sourceCmd) ||
		!strings.Contains(msg, "refused") ||
		strings.Contains(msg, "not-the-password") {
		t.Fatalf("refused: %q; want one line naming %s and %q, without the password", msg, secrets, sourceCmd)
	}

	// The shell's variable wins over the file, and the error says so.
	clearEnv()
	t.Setenv(bus.EnvURL, env.URL)
	code, err = run(ls)
	if code != 1 || err == nil || !strings.Contains(err.Error(), "$"+bus.EnvURL) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("ls with a URL lacking credentials in $%s: exit %d, %v", bus.EnvURL, code, err)
	}
}

// TestConnectHintWithNothingFound: with no file and nothing set, the error
// names the default URL, the directory searched and what to source.
func TestConnectHintWithNothingFound(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv(bus.EnvURL, "")
	t.Setenv(shardapi.EnvToken, "")
	g := &globals{}
	if err := g.findSecrets(); err != nil {
		t.Fatal(err)
	}
	hint := g.connectHint(nats.ErrNoServers)
	if !strings.Contains(hint, "the default") || !strings.Contains(hint, defaultSecrets) || !strings.Contains(hint, sourceCmd) {
		t.Fatalf("hint %q", hint)
	}
}
