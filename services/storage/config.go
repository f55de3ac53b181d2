package storage

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// Config configures one storage node. Zero values take the defaults noted on
// each field (DefaultConfig returns them filled in).
type Config struct {
	// ID is the node's stable identity, e.g. "storage-3" (required; 1-64 of
	// A-Z a-z 0-9 _ -). A node restarted with the same ID and Dir rejoins as itself.
	ID string
	// Rack is the node's failure domain, e.g. "rack-1" (required).
	Rack string
	// Dir is the data directory (required; created if missing). One process per Dir.
	Dir string
	// Listen is the HTTP listen address. Default "127.0.0.1:0" (a free port).
	Listen string
	// Advertise is the host:port other processes use to reach this node.
	// Default: the bound listen address, with the host name substituted when
	// listening on an unspecified address (0.0.0.0 or ::).
	Advertise string
	// CapacityBytes is how many shard bytes this node accepts. 0 (default) =
	// the size of the filesystem holding Dir.
	CapacityBytes int64
	// Token, when set, is the bearer token every /v1 request must carry.
	Token string
	// HeartbeatInterval is how often a heartbeat is published. Default 1s.
	HeartbeatInterval time.Duration
	// MaxShardBytes is the largest shard a PUT may carry. Default 64 MiB.
	MaxShardBytes int64
	// RegisterEvery re-puts the node record every this many heartbeats, so a
	// lost registration heals (it is also re-put after a NATS reconnect). Default 10.
	RegisterEvery int
	// ShutdownTimeout bounds the graceful HTTP shutdown when Run's context ends. Default 5s.
	ShutdownTimeout time.Duration
}

// Defaults.
const (
	DefaultListen            = "127.0.0.1:0"
	DefaultHeartbeatInterval = time.Second
	DefaultMaxShardBytes     = 64 << 20
	DefaultRegisterEvery     = 10
	DefaultShutdownTimeout   = 5 * time.Second
)

// DefaultConfig returns a Config with every default filled in; ID, Rack and
// Dir are left for the caller.
func DefaultConfig() Config {
	return Config{
		Listen:            DefaultListen,
		HeartbeatInterval: DefaultHeartbeatInterval,
		MaxShardBytes:     DefaultMaxShardBytes,
		RegisterEvery:     DefaultRegisterEvery,
		ShutdownTimeout:   DefaultShutdownTimeout,
	}
}

// withDefaults fills zero fields with their defaults and checks the rest.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.MaxShardBytes <= 0 {
		c.MaxShardBytes = d.MaxShardBytes
	}
	if c.RegisterEvery <= 0 {
		c.RegisterEvery = d.RegisterEvery
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = d.ShutdownTimeout
	}
	var errs []error
	if err := model.ValidateNodeID(c.ID); err != nil {
		errs = append(errs, fmt.Errorf("storage id: %w", err))
	}
	if c.Rack == "" {
		errs = append(errs, errors.New("storage rack: required"))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("storage dir: required"))
	}
	if c.CapacityBytes < 0 {
		errs = append(errs, fmt.Errorf("storage capacity: %d is negative", c.CapacityBytes))
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("storage advertise address %q: %w", c.Advertise, err))
		}
	}
	return c, errors.Join(errs...)
}

// advertiseAddr decides the address published for this node: the configured
// one if set, else the bound address with hostname replacing an unspecified IP.
func advertiseAddr(configured, bound, hostname string) string {
	if configured != "" {
		return configured
	}
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if hostname == "" {
			hostname = "127.0.0.1"
		}
		return net.JoinHostPort(hostname, port)
	}
	return bound
}
