package storage

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/nice"
	"github.com/rehome/rehome/shared/shardapi"
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
	// TLS, when set, makes the node serve HTTPS with it (every path,
	// /healthz and /metrics included). tlsconf.Server builds one from PEM
	// files; with a client CA it also requires client certificates (mTLS),
	// in addition to Token. Nil (the default) serves plain HTTP.
	TLS *tls.Config
	// Peers is the client this node reads shards from other nodes with when
	// asked to pull one (POST /v1/shards/{id}/pull). Nil (the default):
	// shardapi.New(Token), which speaks HTTPS when $REHOME_TLS_CA is set.
	Peers *shardapi.Client
	// HeartbeatInterval is how often a heartbeat is published. Default 1s.
	HeartbeatInterval time.Duration
	// MaxShardBytes is the largest shard a PUT may carry. Default 64 MiB.
	MaxShardBytes int64
	// RegisterEvery re-puts the node record every this many heartbeats, so a
	// lost registration heals (it is also re-put after a NATS reconnect). Default 10.
	RegisterEvery int
	// ShutdownTimeout bounds the graceful HTTP shutdown when Run's context ends. Default 5s.
	ShutdownTimeout time.Duration

	// ScrubBytesPerSec bounds how fast the background scrub re-reads stored
	// shards to verify their checksums (bytes per second, enforced by a token
	// bucket). 0 turns the scrub off (reads still verify every byte they
	// serve). DefaultConfig sets DefaultScrubBytesPerSec (16 MiB/s); unlike the
	// other fields, a zero here is kept: it means off. Negative is refused.
	ScrubBytesPerSec int64
	// ScrubEvery is the scrub period: a pass begins this long after the
	// previous one began (at once if that pass took longer). Default 24h.
	ScrubEvery time.Duration
	// ScrubDelay is how long after Run starts the first pass begins. Default 1m.
	ScrubDelay time.Duration
	// CorruptQueue bounds the corrupt-shard reports waiting to be published
	// while the bus is unreachable; beyond it new reports are dropped and
	// counted (the planner's inventory check still sees the shard missing).
	// Default 1024.
	CorruptQueue int

	// RepairPaceBytesPerSec is the floor of the adaptive pace of the repair
	// streams through this node (requests marked shardapi.ClassRepair:
	// movers' and pulling nodes' reads and writes, one budget) while the node
	// serves clients (a client shard transfer in flight or ended within
	// RepairBusyWindow): every 100 ms (or 10 client reads, whichever is
	// later) the pace is cut to 70% of what repair moved while repair lifts
	// the clients' median GET latency past twice its idle level (and by
	// 1 ms at least) and raised by a quarter otherwise, never below this.
	// With no client traffic repair runs unpaced. DefaultConfig sets
	// DefaultRepairPaceBytesPerSec (16 MiB/s); like ScrubBytesPerSec a zero
	// here is kept: it means no pacing. Positive values below 1 MiB/s and
	// negative ones are refused.
	RepairPaceBytesPerSec int64
	// RepairBusyWindow is how long after its last client transfer the node
	// still paces repair. Default DefaultRepairBusyWindow (500 ms).
	RepairBusyWindow time.Duration
	// RepairNice is the CPU priority (nice value, 1-19) of the threads that
	// move repair streams and scrub: the kernel gives the node's clients,
	// and every other process, the cores first, and repair whatever is
	// idle. DefaultConfig sets DefaultRepairNice (10); a zero here is kept:
	// it means the process's own priority. Outside 0-19 is refused.
	RepairNice int

	// TracerProvider receives the spans of shard requests that arrive with a
	// trace context (a mover's copy); nil (the default) uses otel's global
	// provider, which telemetry.Setup installs (a no-op when tracing is off).
	TracerProvider trace.TracerProvider

	// files, when set, is the filesystem the store writes through (tests
	// inject a full or read-only disk); nil is the real one.
	files disk.Files
}

// Defaults.
const (
	DefaultListen            = "127.0.0.1:0"
	DefaultHeartbeatInterval = time.Second
	DefaultMaxShardBytes     = 64 << 20
	DefaultRegisterEvery     = 10
	DefaultShutdownTimeout   = 5 * time.Second
	DefaultScrubBytesPerSec  = 16 << 20
	DefaultScrubEvery        = 24 * time.Hour
	DefaultScrubDelay        = time.Minute
	DefaultCorruptQueue      = 1024
	// DefaultRepairPaceBytesPerSec is the floor of the adaptive repair pace
	// while a node serves clients.
	DefaultRepairPaceBytesPerSec = 16 << 20
	// DefaultRepairNice is the nice value of repair and scrub threads.
	DefaultRepairNice = 10
)

// DefaultConfig returns a Config with every default filled in; ID, Rack and
// Dir are left for the caller.
func DefaultConfig() Config {
	return Config{
		Listen:                DefaultListen,
		HeartbeatInterval:     DefaultHeartbeatInterval,
		MaxShardBytes:         DefaultMaxShardBytes,
		RegisterEvery:         DefaultRegisterEvery,
		ShutdownTimeout:       DefaultShutdownTimeout,
		ScrubBytesPerSec:      DefaultScrubBytesPerSec,
		ScrubEvery:            DefaultScrubEvery,
		ScrubDelay:            DefaultScrubDelay,
		CorruptQueue:          DefaultCorruptQueue,
		RepairPaceBytesPerSec: DefaultRepairPaceBytesPerSec,
		RepairBusyWindow:      DefaultRepairBusyWindow,
		RepairNice:            DefaultRepairNice,
	}
}

// Validate reports every invalid field of c (zero fields take their
// defaults), so a command can refuse bad flags before it connects.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults fills zero fields with their defaults and checks the rest.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	c.HeartbeatInterval = positiveOr(c.HeartbeatInterval, d.HeartbeatInterval)
	c.MaxShardBytes = positiveOr(c.MaxShardBytes, d.MaxShardBytes)
	c.RegisterEvery = positiveOr(c.RegisterEvery, d.RegisterEvery)
	c.ShutdownTimeout = positiveOr(c.ShutdownTimeout, d.ShutdownTimeout)
	c.ScrubEvery = positiveOr(c.ScrubEvery, d.ScrubEvery)
	c.ScrubDelay = positiveOr(c.ScrubDelay, d.ScrubDelay)
	c.CorruptQueue = positiveOr(c.CorruptQueue, d.CorruptQueue)
	c.RepairBusyWindow = positiveOr(c.RepairBusyWindow, d.RepairBusyWindow)
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
	if c.ScrubBytesPerSec < 0 {
		errs = append(errs, fmt.Errorf("storage scrub rate: %d bytes/s is negative (0 turns the scrub off)", c.ScrubBytesPerSec))
	}
	if c.RepairPaceBytesPerSec < 0 || (c.RepairPaceBytesPerSec > 0 && c.RepairPaceBytesPerSec < 1<<20) {
		errs = append(errs, fmt.Errorf("storage repair pace: %d bytes/s is below 1 MiB/s (0 turns pacing off)", c.RepairPaceBytesPerSec))
	}
	if err := nice.Validate(c.RepairNice); err != nil {
		errs = append(errs, fmt.Errorf("storage repair nice: %w", err))
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

// positiveOr returns v, or def when v is zero or negative.
func positiveOr[T ~int | ~int64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
