// Package model holds rehome's durable records: node registrations, liveness,
// object manifests and placement-map entries, as they are stored in JetStream KV.
// Every record is JSON with a "v" version field; Validate methods reject what a
// reader must not act on.
package model

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Version is the schema version written into every record and event.
const Version = 1

// DefaultRF is the replication factor of a replicated object unless told otherwise.
const DefaultRF = 3

// DefaultChunkSize is the size of one replicated chunk (the last one may be shorter).
const DefaultChunkSize = 4 << 20

// MaxShardIDLen bounds a shard id; longer ids are refused everywhere.
const MaxShardIDLen = 128

// MaxKeyLen bounds an object key in bytes: room for an S3 bucket name (63),
// a slash and an S3 key (1024).
const MaxKeyLen = 1088

// UploadPrefix starts the keys of the part objects of multipart uploads in
// progress (an S3 bucket name cannot start with a dot, so no bucket sees them).
const UploadPrefix = ".uploads/"

// idChars reports whether every byte of id is one of A-Z a-z 0-9 _ - (a
// byte loop: the planner checks every entry of a 10 M-entry map at start).
func idChars(id string) bool {
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ErrInvalid marks input that can never become valid by retrying.
var ErrInvalid = errors.New("invalid")

// ValidateShardID reports whether id may name a shard: 1..128 characters of
// [A-Za-z0-9_-]. Such ids are safe as file names, KV keys and subject tokens.
func ValidateShardID(id string) error {
	if id == "" || len(id) > MaxShardIDLen || !idChars(id) {
		return fmt.Errorf("%w shard id %.40q: want 1-%d characters of A-Z a-z 0-9 _ -", ErrInvalid, id, MaxShardIDLen)
	}
	return nil
}

// ValidateNodeID reports whether id may name a node (same alphabet as shard ids,
// at most 64 characters): it appears in subjects and KV keys.
func ValidateNodeID(id string) error {
	if id == "" || len(id) > 64 || !idChars(id) {
		return fmt.Errorf("%w node id %.40q: want 1-64 characters of A-Z a-z 0-9 _ -", ErrInvalid, id)
	}
	return nil
}

// ValidateKey reports whether k may name an object: 1..1024 bytes, no NUL.
func ValidateKey(k string) error {
	if k == "" || len(k) > MaxKeyLen {
		return fmt.Errorf("%w key: want 1-%d bytes", ErrInvalid, MaxKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] == 0 {
			return fmt.Errorf("%w key: contains NUL", ErrInvalid)
		}
	}
	return nil
}

// ObjectKVKey encodes a user key into a JetStream KV key (base64url, unpadded),
// so any key a user types is a legal KV key.
func ObjectKVKey(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(key))
}

// ObjectKeyFromKV reverses ObjectKVKey.
func ObjectKeyFromKV(k string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(k)
	if err != nil {
		return "", fmt.Errorf("%w object kv key %q: %w", ErrInvalid, k, err)
	}
	return string(b), nil
}

// Layout says how an object is made redundant: either RF replicas of each
// chunk, or K data + M parity pieces per stripe (erasure coded).
type Layout struct {
	RF int `json:"rf,omitempty"`
	K  int `json:"k,omitempty"`
	M  int `json:"m,omitempty"`
}

// Erasure reports whether the layout is erasure coded.
func (l Layout) Erasure() bool { return l.K > 0 }

// Validate checks that exactly one of the two layouts is set, within bounds.
func (l Layout) Validate() error {
	switch {
	case l.RF > 0 && (l.K > 0 || l.M > 0):
		return fmt.Errorf("%w layout: rf and k+m are exclusive", ErrInvalid)
	case l.RF > 0:
		if l.RF > 16 {
			return fmt.Errorf("%w layout: rf %d above 16", ErrInvalid, l.RF)
		}
		return nil
	case l.K >= 1 && l.M >= 1 && l.K+l.M <= 255:
		return nil
	default:
		return fmt.Errorf("%w layout: want rf >= 1 or k >= 1, m >= 1, k+m <= 255", ErrInvalid)
	}
}

// Copies is how many distinct nodes hold one shard at full redundancy:
// RF for a replicated chunk, 1 for an erasure-coded piece.
func (l Layout) Copies() int {
	if l.Erasure() {
		return 1
	}
	return l.RF
}

// String renders "rf=3" or "ec=4+2".
func (l Layout) String() string {
	if l.Erasure() {
		return fmt.Sprintf("ec=%d+%d", l.K, l.M)
	}
	return fmt.Sprintf("rf=%d", l.RF)
}

// Node is a storage node's registration (KV bucket nodes, key = node id),
// written by the node itself when it starts.
type Node struct {
	V             int       `json:"v"`
	ID            string    `json:"id"`
	Rack          string    `json:"rack"`
	Addr          string    `json:"addr"` // host:port of the shard HTTP API
	BootID        string    `json:"boot_id"`
	CapacityBytes int64     `json:"capacity_bytes"`
	Started       time.Time `json:"started"`
}

// Validate rejects a registration nobody could use.
func (n Node) Validate() error {
	if n.V != Version {
		return fmt.Errorf("%w node record: version %d", ErrInvalid, n.V)
	}
	if err := ValidateNodeID(n.ID); err != nil {
		return err
	}
	if n.Addr == "" || n.Rack == "" || n.CapacityBytes < 0 {
		return fmt.Errorf("%w node record %s: addr, rack and capacity required", ErrInvalid, n.ID)
	}
	return nil
}

// State is a node's liveness as judged by the detector.
type State string

// Node states. Suspect and maintenance nodes still count as holding their
// shards; only down nodes are re-homed away from.
const (
	StateUp          State = "up"
	StateSuspect     State = "suspect"
	StateDown        State = "down"
	StateMaintenance State = "maintenance"
	// StateDraining is shown by status for an up node being drained; it is
	// never a liveness record's state.
	StateDraining State = "draining"
)

// Live reports whether shards on a node in state s count as present.
func (s State) Live() bool { return s != StateDown }

// Liveness is the detector's current verdict on a node (KV bucket liveness,
// key = node id). Only detectors write it.
type Liveness struct {
	V         int       `json:"v"`
	Node      string    `json:"node"`
	State     State     `json:"state"`
	Since     time.Time `json:"since"`
	Reason    string    `json:"reason,omitempty"`
	LastHeard time.Time `json:"last_heard"`
	BootID    string    `json:"boot_id,omitempty"`
	// Flaps counts the suspect/down episodes inside the detector's flap window;
	// GraceMS is the grace currently applied to the node (longer when it flaps).
	Flaps   int   `json:"flaps"`
	GraceMS int64 `json:"grace_ms"`
	// TraceParent is the W3C traceparent of the span that issued a down
	// verdict: the root of the incident's trace. A KV record carries no
	// headers, so whoever acts on the verdict (the planner) continues the
	// trace from here (telemetry.ContextFromTraceParent). Empty for other
	// states and when tracing is off.
	TraceParent string `json:"traceparent,omitempty"`
}

// Validate rejects a liveness record nobody may act on: another version, a
// bad node id, a state outside the four known, or negative flaps or grace.
// Readers also check that the record's key names the same node.
func (l Liveness) Validate() error {
	if l.V != Version {
		return fmt.Errorf("%w liveness record: version %d", ErrInvalid, l.V)
	}
	if err := ValidateNodeID(l.Node); err != nil {
		return err
	}
	switch l.State {
	case StateUp, StateSuspect, StateDown, StateMaintenance:
	default:
		return fmt.Errorf("%w liveness record %s: state %.20q", ErrInvalid, l.Node, l.State)
	}
	if l.Flaps < 0 || l.GraceMS < 0 {
		return fmt.Errorf("%w liveness record %s: negative flaps or grace", ErrInvalid, l.Node)
	}
	return nil
}

// Hold is the detector's mass-silence guard state (bucket detector, key
// HoldKey): while Held, down verdicts are withheld because too many nodes went
// silent at once (more likely the watcher is cut off than they all died).
type Hold struct {
	V      int       `json:"v"`
	Held   bool      `json:"held"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	Silent int       `json:"silent"`
	Judged int       `json:"judged"`
}

// HoldOverride is an operator's order (bucket detector, key OverrideKey) to
// issue down verdicts despite the guard until Until.
type HoldOverride struct {
	V     int       `json:"v"`
	Until time.Time `json:"until"`
	By    string    `json:"by,omitempty"`
}

// Keys of the detector bucket.
const (
	HoldKey     = "hold"
	OverrideKey = "override"
)

// ShardRef is one shard of an object as its manifest lists it.
type ShardRef struct {
	ID     string `json:"id"`
	Stripe int    `json:"stripe"`
	Index  int    `json:"index"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest describes one object (KV bucket objects, key = ObjectKVKey(key)).
// Replicated objects have one shard per chunk (Stripe = chunk number, Index 0);
// erasure-coded ones have K+M pieces per stripe.
type Manifest struct {
	V         int        `json:"v"`
	Key       string     `json:"key"`
	ID        string     `json:"id"`
	Size      int64      `json:"size"`
	SHA256    string     `json:"sha256"`
	Layout    Layout     `json:"layout"`
	ChunkSize int64      `json:"chunk_size"`
	Shards    []ShardRef `json:"shards"`
	Created   time.Time  `json:"created"`
	// ETag is the object's S3 entity tag without quotes: the hex MD5 of its
	// bytes, or for a multipart object the hex MD5 of its parts' MD5s, "-",
	// and the number of parts.
	ETag        string `json:"etag,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	// Meta holds the S3 user metadata (x-amz-meta-*) and the other headers a
	// client set and expects back (Cache-Control, Content-Disposition, ...).
	Meta map[string]string `json:"meta,omitempty"`
	// StripeBytes, when set, is the data length of each stripe (erasure
	// coding) or chunk (replicated), in order; a multipart object's stripes
	// do not all have ChunkSize bytes. Empty means the regular layout.
	StripeBytes []int64 `json:"stripe_bytes,omitempty"`
}

// Validate checks the manifest's internal consistency: shard ids, sizes and
// the layout.
func (m Manifest) Validate() error {
	if m.V != Version {
		return fmt.Errorf("%w manifest: version %d", ErrInvalid, m.V)
	}
	if err := ValidateKey(m.Key); err != nil {
		return err
	}
	if err := m.Layout.Validate(); err != nil {
		return err
	}
	if m.Size < 0 || m.ChunkSize <= 0 {
		return fmt.Errorf("%w manifest %q: bad size or chunk size", ErrInvalid, m.Key)
	}
	var total int64
	for _, s := range m.Shards {
		if err := ValidateShardID(s.ID); err != nil {
			return err
		}
		if s.Size < 0 || len(s.SHA256) != 64 {
			return fmt.Errorf("%w manifest %q: shard %s has bad size or checksum", ErrInvalid, m.Key, s.ID)
		}
		if s.Size > math.MaxInt64-total {
			return fmt.Errorf("%w manifest %q: shard sizes overflow", ErrInvalid, m.Key)
		}
		total += s.Size
	}
	if !m.Layout.Erasure() && total != m.Size {
		return fmt.Errorf("%w manifest %q: shards add to %d bytes, object is %d", ErrInvalid, m.Key, total, m.Size)
	}
	return nil
}

// Placement is one entry of the placement map (KV bucket placement, key =
// shard id): which nodes hold the shard. Nodes may include down nodes: their
// copies are counted again if they return. Only the acting planner writes it.
type Placement struct {
	V        int      `json:"v"`
	Shard    string   `json:"shard"`
	Key      string   `json:"key"`
	ObjectID string   `json:"object_id"`
	Stripe   int      `json:"stripe"`
	Index    int      `json:"index"`
	Size     int64    `json:"size"`
	SHA256   string   `json:"sha256"`
	Layout   Layout   `json:"layout"`
	Nodes    []string `json:"nodes"`
}

// Validate rejects a placement entry the planner must not act on.
func (p Placement) Validate() error {
	if p.V != Version {
		return fmt.Errorf("%w placement: version %d", ErrInvalid, p.V)
	}
	if err := ValidateShardID(p.Shard); err != nil {
		return err
	}
	if err := p.Layout.Validate(); err != nil {
		return err
	}
	if p.Size < 0 || len(p.SHA256) != 64 {
		return fmt.Errorf("%w placement %s: bad size or checksum", ErrInvalid, p.Shard)
	}
	for _, n := range p.Nodes {
		if err := ValidateNodeID(n); err != nil {
			return err
		}
	}
	return nil
}

// ParseLayout reads a layout in String's form: "rf=3" or "ec=4+2".
func ParseLayout(s string) (Layout, error) {
	var l Layout
	kind, val, ok := strings.Cut(s, "=")
	switch {
	case ok && kind == "rf":
		if _, err := fmt.Sscanf(val, "%d", &l.RF); err != nil || fmt.Sprint(l.RF) != val {
			return Layout{}, fmt.Errorf("%w layout %.20q: want rf=N or ec=K+M", ErrInvalid, s)
		}
	case ok && kind == "ec":
		ks, ms, ok := strings.Cut(val, "+")
		if _, err := fmt.Sscanf(ks+" "+ms, "%d %d", &l.K, &l.M); !ok || err != nil || fmt.Sprintf("%d+%d", l.K, l.M) != val {
			return Layout{}, fmt.Errorf("%w layout %.20q: want rf=N or ec=K+M", ErrInvalid, s)
		}
	default:
		return Layout{}, fmt.Errorf("%w layout %.20q: want rf=N or ec=K+M", ErrInvalid, s)
	}
	return l, l.Validate()
}
