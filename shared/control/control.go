// Package control defines the request/reply calls the CLI makes to the acting
// planner over NATS (subjects event.Ctl*): allocation of nodes for new shards,
// committing a written object, deleting one, and status queries. Every reply
// is a Reply envelope so a caller can tell a refusal from a transport error.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// Reply wraps every control answer: Error is set when the call was refused.
// Code is "invalid", "conflict", "not_found" or "unavailable".
type Reply struct {
	OK    bool            `json:"ok"`
	Error string          `json:"error,omitempty"`
	Code  string          `json:"code,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// Error codes of a refused call.
const (
	CodeInvalid     = "invalid"
	CodeConflict    = "conflict"
	CodeNotFound    = "not_found"
	CodeUnavailable = "unavailable"
)

// RemoteError is a refusal returned by the planner.
type RemoteError struct {
	Code string
	Msg  string
}

func (e *RemoteError) Error() string { return e.Msg }

// ErrConflict and ErrNotFound let callers test refusals with errors.Is.
var (
	ErrConflict = errors.New("conflict")
	ErrNotFound = errors.New("not found")
)

// Is maps remote codes onto ErrConflict, ErrNotFound and model.ErrInvalid.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrConflict:
		return e.Code == CodeConflict
	case ErrNotFound:
		return e.Code == CodeNotFound
	case model.ErrInvalid:
		return e.Code == CodeInvalid
	}
	return false
}

// OKReply encodes a successful reply carrying v.
func OKReply(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	return json.Marshal(Reply{OK: true, Data: data})
}

// ErrorReply encodes a refusal; the code is derived from err.
func ErrorReply(err error) []byte {
	code := CodeUnavailable
	switch {
	case errors.Is(err, model.ErrInvalid):
		code = CodeInvalid
	case errors.Is(err, ErrConflict):
		code = CodeConflict
	case errors.Is(err, ErrNotFound):
		code = CodeNotFound
	}
	b, _ := json.Marshal(Reply{Error: err.Error(), Code: code})
	return b
}

// DecodeReply unpacks a reply into out (which may be nil), returning the
// planner's refusal as a *RemoteError.
func DecodeReply(data []byte, out any) error {
	var r Reply
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("malformed reply: %w", err)
	}
	if !r.OK {
		return &RemoteError{Code: r.Code, Msg: r.Error}
	}
	if out == nil || len(r.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("malformed reply data: %w", err)
	}
	return nil
}

// ShardSpec asks for placement of one shard of a new object.
type ShardSpec struct {
	ID     string `json:"id"`
	Stripe int    `json:"stripe"`
	Index  int    `json:"index"`
	Size   int64  `json:"size"`
}

// AllocateRequest asks the planner where to write the shards of one object.
// For a replicated layout each shard gets Layout.RF nodes; for erasure coding
// the pieces of one stripe get one distinct node each.
type AllocateRequest struct {
	Key    string       `json:"key"`
	Layout model.Layout `json:"layout"`
	Shards []ShardSpec  `json:"shards"`
}

// Endpoint names a node and where to reach its shard API.
type Endpoint struct {
	Node string `json:"node"`
	Rack string `json:"rack"`
	Addr string `json:"addr"`
}

// Allocation is where one shard goes.
type Allocation struct {
	Shard string     `json:"shard"`
	Nodes []Endpoint `json:"nodes"`
}

// AllocateReply lists one Allocation per requested shard, in request order.
type AllocateReply struct {
	Allocations []Allocation `json:"allocations"`
}

// CommitRequest records a written object: its manifest and, per shard, the
// nodes that acknowledged a verified write. Overwrite replaces an existing key.
type CommitRequest struct {
	Manifest  model.Manifest      `json:"manifest"`
	Nodes     map[string][]string `json:"nodes"`
	Overwrite bool                `json:"overwrite"`
}

// DeleteRequest removes an object and schedules its shards for deletion.
type DeleteRequest struct {
	Key string `json:"key"`
}

// NodeStatus is one node's line in cluster status.
type NodeStatus struct {
	ID            string      `json:"id"`
	Rack          string      `json:"rack"`
	State         model.State `json:"state"`
	Addr          string      `json:"addr"`
	Shards        int         `json:"shards"`
	Bytes         int64       `json:"bytes"`
	UsedBytes     int64       `json:"used_bytes"`
	CapacityBytes int64       `json:"capacity_bytes"`
	Fill          float64     `json:"fill"`
	// Full and ReadOnly come from the node's last heartbeat: it refuses new
	// shards (disk full, or read-only), so no repair or new write targets it.
	Full     bool `json:"full,omitempty"`
	ReadOnly bool `json:"read_only,omitempty"`
	// Draining: an operator is draining it (State reads "draining" while
	// it is up).
	Draining bool `json:"draining,omitempty"`
	// Flaps and GraceMS come from the detector's liveness record.
	Flaps   int   `json:"flaps"`
	GraceMS int64 `json:"grace_ms"`
}

// ClusterStatus answers CtlStatus (SPEC §3 `cluster status --json`).
type ClusterStatus struct {
	Nodes           []NodeStatus `json:"nodes"`
	Shards          int          `json:"shards"`
	Objects         int          `json:"objects"`
	UnderReplicated int          `json:"under_replicated"`
	Lost            int          `json:"lost"`
	BytesRemaining  int64        `json:"bytes_remaining"`
	InFlight        int          `json:"in_flight"`
	// Stripes counts the erasure-coded stripes; StripesDegraded those
	// missing at least one piece (no live holder), unrecoverable ones
	// included. Their pieces count in Shards, UnderReplicated and Lost.
	Stripes         int `json:"stripes"`
	StripesDegraded int `json:"stripes_degraded"`
	// Risk is set when the request asked for it (cluster status --risk).
	Risk *Risk `json:"risk,omitempty"`
	// HealPaused is set while an operator has paused repairs.
	HealPaused bool `json:"heal_paused"`
	// VerdictsHeld is set while the detectors withhold down verdicts; HeldReason says why.
	VerdictsHeld bool   `json:"verdicts_held"`
	HeldReason   string `json:"held_reason,omitempty"`
}

// InventoryPrefix + node is the subject on which a storage node answers
// InventoryRequest: its shards, in id order, a page at a time.
const InventoryPrefix = "rehome.ctl.inventory."

// MaxInventoryPage bounds one page of an inventory answer.
const MaxInventoryPage = 10000

// InventoryRequest asks a storage node for the shards with ids after After
// (all when empty), at most Limit (<= MaxInventoryPage; 0 = the maximum).
type InventoryRequest struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// InventoryShard is one shard a node holds (verified at write; re-verified by scrub).
// Written is its file's modification time on the node's clock (zero when the
// node does not say: older nodes); the planner's orphan collection never
// deletes a shard whose age it cannot tell.
type InventoryShard struct {
	ID      string    `json:"id"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"`
	Written time.Time `json:"written,omitzero"`
}

// InventoryPage answers InventoryRequest. Next is the After of the next page,
// empty on the last one. BootID says which incarnation of the node answered.
// Now is the node's clock when it answered (zero from older nodes): a shard's
// age is Now - Written, whatever the skew between the node's and the
// reader's clocks.
type InventoryPage struct {
	Node   string           `json:"node"`
	BootID string           `json:"boot_id"`
	Shards []InventoryShard `json:"shards"`
	Next   string           `json:"next,omitempty"`
	Now    time.Time        `json:"now,omitzero"`
}

// Heal control calls (answered by the acting planner).
const (
	// CtlHealNode: HealNodeRequest -> HealNodeReply. Reconcile the node's
	// inventory with the map and rebuild in place what it lacks.
	CtlHealNode = "rehome.ctl.heal.node"
	// CtlHealPlan: HealNodeRequest -> HealPlan. The same, as a dry run.
	CtlHealPlan = "rehome.ctl.heal.plan"
	// CtlDrain: NodeRequest -> DrainReply. Start a node's drain, once the
	// planner has checked it can finish (enough nodes, racks and room).
	CtlDrain = "rehome.ctl.node.drain"
	// CtlDrainCancel: NodeRequest -> DrainReply. Stop it; what moved stays.
	CtlDrainCancel = "rehome.ctl.node.drain.cancel"
	// CtlDrainStatus: NodeRequest (Node optional) -> DrainReply.
	CtlDrainStatus = "rehome.ctl.node.drain.status"
	// CtlNodeRemove: NodeRequest -> nothing. Forget a drained node, or a
	// dead one whose shards are all re-homed; refused otherwise, saying why.
	CtlNodeRemove = "rehome.ctl.node.remove"
)

// HealNodeRequest names the node to heal (or plan for).
type HealNodeRequest struct {
	Node string `json:"node"`
}

// HealNodeReply says what a heal of one node found and started.
type HealNodeReply struct {
	Node string `json:"node"`
	// Checked is how many shards the map places on the node.
	Checked int `json:"checked"`
	// Missing shards the map places on the node and its disk lacks (or holds corrupt).
	Missing      int   `json:"missing"`
	MissingBytes int64 `json:"missing_bytes"`
	// Rebuilding are planned back onto the node itself; Dropped were already
	// at full redundancy elsewhere, so the node simply leaves their entries.
	Rebuilding int `json:"rebuilding"`
	Dropped    int `json:"dropped"`
}

// PlannedMove is one line of a heal plan.
type PlannedMove struct {
	Shard      string `json:"shard"`
	Kind       string `json:"kind"`
	Source     string `json:"source"`
	SourceRack string `json:"source_rack"`
	Target     string `json:"target"`
	TargetRack string `json:"target_rack"`
	Bytes      int64  `json:"bytes"`
}

// HealPlan is a dry run: what would move where and how long it would take
// under the current throttles. Nothing is changed.
type HealPlan struct {
	Node             string        `json:"node"`
	Moves            []PlannedMove `json:"moves"`
	Shards           int           `json:"shards"`
	Bytes            int64         `json:"bytes"`
	EstimatedSeconds float64       `json:"estimated_seconds"`
	Throttle         string        `json:"throttle"`
}

// HealStatusRequest narrows heal status to one node's in-place repairs.
type HealStatusRequest struct {
	Node string `json:"node,omitempty"`
}

// StatusRequest asks for cluster status; Risk adds the what-if analysis.
type StatusRequest struct {
	Risk bool `json:"risk,omitempty"`
}

// RiskLine says what losing one more node (or rack) now would cost.
type RiskLine struct {
	Node       string `json:"node,omitempty"`
	Rack       string `json:"rack,omitempty"`
	Lost       int    `json:"lost"`
	SingleCopy int    `json:"single_copy"`
}

// Risk is the what-if part of cluster status --risk: per live node and per
// rack, the shards that would be lost or left with a single copy (a single
// piece beyond K for erasure-coded stripes) if it failed now.
type Risk struct {
	Nodes     []RiskLine `json:"nodes"`
	Racks     []RiskLine `json:"racks"`
	WorstNode *RiskLine  `json:"worst_node,omitempty"`
	WorstRack *RiskLine  `json:"worst_rack,omitempty"`
}

// HealSwitch is the durable pause switch (bucket bus.BucketControl, key
// HealSwitchKey), written by `rehome heal pause|resume`, watched by planners.
type HealSwitch struct {
	V      int       `json:"v"`
	Paused bool      `json:"paused"`
	By     string    `json:"by,omitempty"`
	Since  time.Time `json:"since"`
}

// HealSwitchKey is the key of HealSwitch in bus.BucketControl.
const HealSwitchKey = "heal"

// ComposeRequest (event.CtlCompose) joins the part objects of a multipart
// upload, in order, into the object Manifest.Key: their shards become the
// object's (stripes renumbered, placement entries re-keyed) and the part
// objects are forgotten without their shards being deleted. Manifest carries
// the new object's id, layout, ETag, content type, metadata and time; its
// shards, size and stripe lengths are the planner's to fill. Overwrite
// replaces an existing object. A retried compose of the same object id
// succeeds again. The reply is the committed manifest.
type ComposeRequest struct {
	Manifest  model.Manifest `json:"manifest"`
	Parts     []string       `json:"parts"`
	Overwrite bool           `json:"overwrite"`
}

// DrainKeyPrefix + node is the key of a node's Drain record in
// bus.BucketControl: present while the node is being drained. The acting
// planner writes it (after checking the drain can finish) and deletes it on
// cancel or remove; every planner watches it.
const DrainKeyPrefix = "drain."

// RemovedKeyPrefix + node is the key of a Removed record in
// bus.BucketControl: the node was forgotten by `rehome node remove`, and a
// registration under its id is ignored.
const RemovedKeyPrefix = "removed."

// Drain is the durable record of one node's drain.
type Drain struct {
	V     int       `json:"v"`
	Node  string    `json:"node"`
	By    string    `json:"by,omitempty"`
	Since time.Time `json:"since"`
}

// Removed is the durable record of a node forgotten by `rehome node remove`.
type Removed struct {
	V     int       `json:"v"`
	Node  string    `json:"node"`
	By    string    `json:"by,omitempty"`
	Since time.Time `json:"since"`
}

// NodeRequest names one node (drain, drain cancel, remove; Node "" for a
// drain status of every drain). By says who asks, for the records.
type NodeRequest struct {
	Node string `json:"node,omitempty"`
	By   string `json:"by,omitempty"`
}

// DrainStatus is one node's drain: what is left on it, what moved since it
// began, and the rate and ETA (-1: unknown yet; 0: drained).
type DrainStatus struct {
	Node            string    `json:"node"`
	State           string    `json:"state"`
	Since           time.Time `json:"since"`
	By              string    `json:"by,omitempty"`
	ShardsRemaining int       `json:"shards_remaining"`
	BytesRemaining  int64     `json:"bytes_remaining"`
	ShardsMoved     int       `json:"shards_moved"`
	BytesMoved      int64     `json:"bytes_moved"`
	RateBytesPerSec float64   `json:"rate_bytes_per_sec"`
	ETASeconds      float64   `json:"eta_seconds"`
	Drained         bool      `json:"drained"`
}

// DrainReply answers the drain calls: the drains under way (one for a
// request naming a node).
type DrainReply struct {
	Drains []DrainStatus `json:"drains"`
}

// RebalanceSwitchKey is the key of the rebalancer's durable pause switch
// (a HealSwitch record) in bus.BucketControl: `rehome rebalance pause|resume`.
const RebalanceSwitchKey = "rebalance"

// CtlRebalanceStatus: no body -> BalanceStatus (answered by the acting planner).
const CtlRebalanceStatus = "rehome.ctl.rebalance.status"

// BalanceStatus is how evenly the nodes are filled: each node's fill (the
// bytes the map places on it over its capacity) against the mean, the band
// the rebalancer keeps them in, and the moves under way.
type BalanceStatus struct {
	Paused        bool          `json:"paused"`
	Band          float64       `json:"band"`
	MeanFill      float64       `json:"mean_fill"`
	MaxDeviation  float64       `json:"max_deviation"`
	Balanced      bool          `json:"balanced"`
	MovesInFlight int           `json:"moves_in_flight"`
	BytesMoving   int64         `json:"bytes_moving"`
	Nodes         []BalanceNode `json:"nodes"`
}

// BalanceNode is one node's fill and its distance from the mean.
type BalanceNode struct {
	ID        string  `json:"id"`
	Rack      string  `json:"rack"`
	Fill      float64 `json:"fill"`
	Deviation float64 `json:"deviation"`
}
