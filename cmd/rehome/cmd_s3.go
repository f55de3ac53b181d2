package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/rehome/rehome/services/s3"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

func s3Cmd(g *globals) *cobra.Command {
	var f serviceFlags
	cfg := s3.DefaultConfig()
	var id, layout string
	cmd := &cobra.Command{
		Use:   "s3 [--listen :9000]",
		Short: "run an S3 gateway (stateless: run any number)",
		Long: "Serves the S3 protocol on --listen. Requests must be signed (SigV4) with the key pair in $" +
			s3.EnvAccessKey + " and $" + s3.EnvSecretKey + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.AccessKey, cfg.SecretKey = os.Getenv(s3.EnvAccessKey), os.Getenv(s3.EnvSecretKey) // read after --env-file
			l, err := model.ParseLayout(layout)
			if err != nil {
				return fmt.Errorf("--layout: %w", err)
			}
			cfg.Layout = l
			return g.runService(cmd.Context(), id, &f, func(env *serviceEnv) (service, error) {
				return s3.New(cmd.Context(), cfg, env.nc, env.js, shardapi.New(os.Getenv(shardapi.EnvToken)), env.log)
			})
		},
	}
	f.register(cmd, true)
	fl := cmd.Flags()
	fl.StringVar(&id, "id", "s3", "gateway name in logs")
	fl.StringVar(&cfg.Listen, "listen", cfg.Listen, "S3 listen address (port 0 picks one)")
	fl.StringVar(&layout, "layout", cfg.Layout.String(), "layout of objects in buckets created without one: rf=N or ec=K+M")
	fl.StringVar(&cfg.Region, "region", cfg.Region, "the region clients sign for")
	fl.DurationVar(&cfg.UploadGrace, "upload-grace", cfg.UploadGrace, "collect the parts of a multipart upload this long after its last activity")
	return cmd
}
