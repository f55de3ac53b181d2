package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/rehome/rehome/cmd/rehome/credstore"
	"github.com/rehome/rehome/cmd/rehome/envfile"
	"github.com/rehome/rehome/services/s3"
	"github.com/rehome/rehome/shared/access"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

// authInit is what `rehome auth init` writes credentials for.
type authInit struct {
	dir, natsURL, hostURL, secrets string
	s3Endpoint                     string
	storage, detectors, planners   []string
	movers, gateways               []string
}

func authCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "auth", Short: "bus users and secrets of a deployment"}
	var a authInit
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "write a NATS server's users and permissions (auth.conf) and one env file per service",
		Long: `init writes, into --dir, the credentials of a deployment such as the compose stack:
  credentials.env   every password and the storage token (kept: run init again to add services)
  auth.conf         the NATS server's accounts, users and permissions; include it from nats.conf
  <service>.env     per service: REHOME_NATS_URL with its own user (over --nats), REHOME_TOKEN,
                    for detectors REHOME_SYSTEM_NATS_URL (the system account), and for S3
                    gateways their own bus user and the S3 key pair
  cli.env           the operator, over --nats (a CLI next to the services)
  admin.env         the admin (creates and repairs streams), over --host-nats
and the operator's secrets for a shell (--secrets, default <dir>/secrets.env), over --host-nats,
with the AWS_* lines for a gateway at --s3-endpoint when --s3 names gateways.
Storage users may speak only for their own node; see docs/security.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.run(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote credentials for %d services to %s\n",
				len(a.storage)+len(a.detectors)+len(a.planners)+len(a.movers)+len(a.gateways), a.dir)
			return nil
		},
	}
	fl := initCmd.Flags()
	fl.StringVar(&a.dir, "dir", "", "directory to write into (created, mode 0700)")
	fl.StringVar(&a.natsURL, "nats", "", "NATS URL(s), comma-separated, as the services reach the bus")
	fl.StringVar(&a.hostURL, "host-nats", "", "NATS URL(s) as a shell on the host reaches the bus (default --nats)")
	fl.StringVar(&a.secrets, "secrets", "", "the operator's secrets file (default <dir>/secrets.env)")
	fl.StringSliceVar(&a.storage, "storage", nil, "storage node ids (each gets a user that speaks only for it)")
	fl.StringSliceVar(&a.detectors, "detectors", nil, "detector service names")
	fl.StringSliceVar(&a.planners, "planners", nil, "planner service names")
	fl.StringSliceVar(&a.movers, "movers", nil, "mover service names")
	fl.StringSliceVar(&a.gateways, "s3", nil, "S3 gateway service names (each gets its own bus user)")
	fl.StringVar(&a.s3Endpoint, "s3-endpoint", "", "the S3 endpoint as a shell on the host reaches the first gateway (AWS_ENDPOINT_URL in --secrets; needs --s3)")
	cmd.AddCommand(initCmd)
	return cmd
}

// run validates the flags and writes the files.
func (a *authInit) run() error {
	if a.dir == "" || a.natsURL == "" {
		return errors.New("auth init: --dir and --nats are required")
	}
	if a.hostURL == "" {
		a.hostURL = a.natsURL
	}
	if a.s3Endpoint != "" && len(a.gateways) == 0 {
		return errors.New("auth init: --s3-endpoint needs --s3 (the gateways it reaches)")
	}
	if a.secrets == "" {
		a.secrets = filepath.Join(a.dir, "secrets.env")
	}
	names := map[string]bool{"cli": true, "admin": true, "secrets": true, "credentials": true}
	for _, list := range [][]string{a.storage, a.detectors, a.planners, a.movers, a.gateways} {
		for _, n := range list {
			if err := model.ValidateNodeID(n); err != nil {
				return fmt.Errorf("auth init: service name: %w", err)
			}
			if names[n] {
				return fmt.Errorf("auth init: service name %q used twice or reserved", n)
			}
			names[n] = true
		}
	}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return fmt.Errorf("auth init: %w", err)
	}
	ids := []credstore.Identity{{Role: access.Admin}, {Role: access.Operator}, {Role: access.Detector},
		{Role: access.Planner}, {Role: access.Mover}}
	for _, n := range a.storage {
		ids = append(ids, credstore.Identity{Role: access.Storage, Node: n})
	}
	for _, n := range a.gateways {
		ids = append(ids, credstore.Identity{Role: access.S3, Node: n})
	}
	set, err := credstore.Load(filepath.Join(a.dir, "credentials.env"), ids, true)
	if err != nil {
		return fmt.Errorf("auth init: %w", err)
	}
	conf, err := set.ServerConf()
	if err != nil {
		return fmt.Errorf("auth init: %w", err)
	}
	if err := writePrivate(filepath.Join(a.dir, "auth.conf"), conf); err != nil {
		return err
	}
	sysURL := access.User{Name: set.System.Name, Password: set.System.Password}.URL(a.natsURL)
	write := func(name string, role access.Role, node, url string, extra map[string]string) error {
		u, _ := set.User(role, node)
		kv := map[string]string{bus.EnvURL: u.URL(url), shardapi.EnvToken: set.Token}
		for k, v := range extra {
			kv[k] = v
		}
		if err := envfile.Write(name, kv); err != nil {
			return fmt.Errorf("auth init: %w", err)
		}
		return nil
	}
	files := []struct {
		list  []string
		role  access.Role
		extra map[string]string
	}{
		{a.storage, access.Storage, nil},
		{a.detectors, access.Detector, map[string]string{envSystemURL: sysURL}},
		{a.planners, access.Planner, nil},
		{a.movers, access.Mover, nil},
		{a.gateways, access.S3, map[string]string{s3.EnvAccessKey: set.S3AccessKey, s3.EnvSecretKey: set.S3SecretKey}},
	}
	for _, f := range files {
		for _, n := range f.list {
			node := ""
			if f.role == access.Storage || f.role == access.S3 {
				node = n
			}
			if err := write(filepath.Join(a.dir, n+".env"), f.role, node, a.natsURL, f.extra); err != nil {
				return err
			}
		}
	}
	if err := write(filepath.Join(a.dir, "cli.env"), access.Operator, "", a.natsURL, nil); err != nil {
		return err
	}
	if err := write(filepath.Join(a.dir, "admin.env"), access.Admin, "", a.hostURL, nil); err != nil {
		return err
	}
	var aws map[string]string
	if a.s3Endpoint != "" {
		aws = map[string]string{"AWS_ACCESS_KEY_ID": set.S3AccessKey, "AWS_SECRET_ACCESS_KEY": set.S3SecretKey,
			"AWS_ENDPOINT_URL": a.s3Endpoint, "AWS_REGION": s3.DefaultConfig().Region}
	}
	return write(a.secrets, access.Operator, "", a.hostURL, aws)
}

// writePrivate writes a file readable by its owner and group only: the
// NATS container reads auth.conf as whatever user it runs as.
func writePrivate(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o640); err != nil {
		return fmt.Errorf("auth init: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("auth init: %w", err)
	}
	return nil
}
