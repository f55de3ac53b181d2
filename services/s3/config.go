// Package s3 is rehome's S3 gateway: an HTTP server that speaks the S3
// protocol (through github.com/rclone/gofakes3) and stores every object the
// way `rehome put` does, through the planner and the storage nodes. It keeps
// no state of its own: buckets, multipart uploads and the listing index live
// in JetStream, so any number of gateways may serve the same cluster.
package s3

import (
	"errors"
	"fmt"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// EnvAccessKey and EnvSecretKey name the environment variables holding the
// one key pair the gateway accepts.
const (
	EnvAccessKey = "REHOME_S3_ACCESS_KEY_ID"
	EnvSecretKey = "REHOME_S3_SECRET_ACCESS_KEY"
)

// Config sets up a gateway.
type Config struct {
	// Listen is the S3 listen address (":9000"; port 0 picks one).
	Listen string
	// Region is the region clients sign for (any region is accepted).
	Region string
	// AccessKey and SecretKey are the key pair requests must be signed with.
	AccessKey, SecretKey string
	// Layout is the layout of objects in buckets created without one.
	Layout model.Layout
	// UploadGrace is how long a multipart upload may go without a new part
	// before its parts are collected.
	UploadGrace time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Listen: ":9000", Region: "us-east-1", Layout: model.Layout{RF: model.DefaultRF}, UploadGrace: 24 * time.Hour}
}

// Validate rejects a config the gateway cannot serve with.
func (c Config) Validate() error {
	if c.AccessKey == "" || c.SecretKey == "" {
		return errors.New("s3 gateway: no key pair (set " + EnvAccessKey + " and " + EnvSecretKey + ")")
	}
	if err := c.Layout.Validate(); err != nil {
		return fmt.Errorf("s3 gateway: --layout: %w", err)
	}
	if c.UploadGrace <= 0 {
		return errors.New("s3 gateway: --upload-grace must be positive")
	}
	return nil
}
