// Package event defines rehome's public events: their subjects and JSON
// payloads (schema version 1, see SPEC §4). Encode stamps the version and a UTC
// timestamp; Decode refuses anything that is not a well-formed version-1 payload,
// so a consumer can count and drop it instead of acting on it.
package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// Subject prefixes and fixed subjects. Node, shard and incident ids are single
// subject tokens (model ids contain no dots).
const (
	Root            = "rehome"
	HeartbeatPrefix = "rehome.heartbeat."
	SuspectPrefix   = "rehome.node.suspect."
	DownPrefix      = "rehome.node.down."
	UpPrefix        = "rehome.node.up."
	PlanPrefix      = "rehome.repair.plan."
	TaskPrefix      = "rehome.repair.task."
	DonePrefix      = "rehome.repair.done."
	FailedPrefix    = "rehome.repair.failed."
	LostPrefix      = "rehome.shard.lost."
	// CorruptPrefix + node: a node found a shard whose bytes fail their checksum
	// (on a read or a scrub), quarantined it and no longer serves it.
	CorruptPrefix = "rehome.shard.corrupt."
	// DrainingPrefix + node: the acting planner started draining a node;
	// DrainedPrefix + node: the node holds no shard any more.
	DrainingPrefix = "rehome.node.draining."
	DrainedPrefix  = "rehome.node.drained."
	// ConditionPrefix + node: a storage node's disk started or stopped
	// refusing writes (full or read-only).
	ConditionPrefix = "rehome.node.condition."
	HealProgress    = "rehome.heal.progress"
	HealStalled     = "rehome.heal.stalled"
	// HealPaused and HealResumed announce a change of the durable heal
	// switch (control.HealSwitch), published by the acting planner.
	HealPaused  = "rehome.heal.paused"
	HealResumed = "rehome.heal.resumed"
	// DetectorHeld and DetectorReleased announce the mass-silence guard.
	DetectorHeld     = "rehome.detector.held"
	DetectorReleased = "rehome.detector.released"
	// ControlPrefix carries request/reply calls to the acting planner; it is not
	// an event subject and is left out of event tails.
	ControlPrefix = "rehome.ctl."
)

// Control request subjects (JSON request, JSON reply; see Reply).
const (
	CtlAllocate   = "rehome.ctl.allocate"
	CtlCommit     = "rehome.ctl.commit"
	CtlDelete     = "rehome.ctl.delete"
	CtlStatus     = "rehome.ctl.status"
	CtlHealStatus = "rehome.ctl.heal.status"
	// CtlCompose joins the committed part objects of a multipart upload into
	// one object (control.ComposeRequest -> model.Manifest).
	CtlCompose = "rehome.ctl.compose"
)

// Header is the envelope every payload embeds: schema version and UTC time.
type Header struct {
	V  int       `json:"v"`
	TS time.Time `json:"ts"`
}

func (h *Header) header() *Header { return h }

// Payload is implemented by every event type (through its embedded Header).
type Payload interface{ header() *Header }

// ErrMalformed marks a payload that is not JSON, has the wrong version, or
// misses required fields. Consumers count it and drop the message.
var ErrMalformed = errors.New("malformed event")

// Errors a consumer wraps when it rejects a message; Reason maps them (and
// ErrMalformed) onto the reason label of its rejection counter.
var (
	// ErrInvalid marks a well-formed payload whose fields break its
	// contract: ids that are not valid ids, negative sizes or counts, kinds
	// and states outside their enums (the payload's Validate method). Decode
	// wraps it together with ErrMalformed.
	ErrInvalid = errors.New("invalid")
	// ErrSubjectMismatch marks a payload naming another node than the
	// subject it was published on.
	ErrSubjectMismatch = errors.New("subject names another node")
	// ErrUnknownNode marks a payload naming a node its consumer does not know.
	ErrUnknownNode = errors.New("unknown node")
	// ErrUnknownShard marks a payload naming a shard the placement map does
	// not know.
	ErrUnknownShard = errors.New("shard not in the placement map")
)

// Reasons a consumer rejects a message: the "reason" label of the
// rehome_<service>_malformed_events_total counters.
const (
	ReasonMalformed       = "malformed"        // not JSON, wrong version or types, too large
	ReasonInvalid         = "invalid"          // fails its payload's Validate (ErrInvalid, model.ErrInvalid)
	ReasonSubjectMismatch = "subject_mismatch" // ErrSubjectMismatch
	ReasonUnknownNode     = "unknown_node"     // ErrUnknownNode
	ReasonUnknownShard    = "unknown_shard"    // ErrUnknownShard
)

// Reasons lists every reason Reason returns (to pre-create counter series).
var Reasons = []string{ReasonMalformed, ReasonInvalid, ReasonSubjectMismatch, ReasonUnknownNode, ReasonUnknownShard}

// Reason classifies why a message was rejected: the most specific of
// ErrUnknownShard, ErrUnknownNode and ErrSubjectMismatch that err wraps;
// else ReasonMalformed for JSON that does not decode; else ReasonInvalid for
// ErrInvalid or model.ErrInvalid; else ReasonMalformed.
func Reason(err error) string {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, ErrUnknownShard):
		return ReasonUnknownShard
	case errors.Is(err, ErrUnknownNode):
		return ReasonUnknownNode
	case errors.Is(err, ErrSubjectMismatch):
		return ReasonSubjectMismatch
	case errors.As(err, &syntax), errors.As(err, &typ):
		return ReasonMalformed
	case errors.Is(err, ErrInvalid), errors.Is(err, model.ErrInvalid):
		return ReasonInvalid
	}
	return ReasonMalformed
}

// CheckSubjectNode returns an error wrapping ErrMalformed and
// ErrSubjectMismatch unless subject's last token is node (a payload
// published on rehome.<...>.<node> must name that node).
func CheckSubjectNode(subject, node string) error {
	if tok := LastToken(subject); tok != node {
		return fmt.Errorf("%w: %w: subject %s, payload names %q", ErrMalformed, ErrSubjectMismatch, subject, node)
	}
	return nil
}

// Encode stamps p with version 1 and the current UTC time (unless already
// set) and marshals it.
func Encode(p Payload) ([]byte, error) {
	h := p.header()
	h.V = model.Version
	if h.TS.IsZero() {
		h.TS = time.Now().UTC()
	}
	return json.Marshal(p)
}

// Decode unmarshals data into p and checks the version and, where p has a
// Validate method, its fields. Every failure wraps ErrMalformed; a failed
// Validate wraps ErrInvalid too.
func Decode(data []byte, p Payload) error {
	if err := json.Unmarshal(data, p); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if v := p.header().V; v != model.Version {
		return fmt.Errorf("%w: version %d, want %d", ErrMalformed, v, model.Version)
	}
	if val, ok := p.(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			return fmt.Errorf("%w: %w: %w", ErrMalformed, ErrInvalid, err)
		}
	}
	return nil
}

// LastToken returns the last dot-separated token of a subject (the node,
// shard or incident id of the subjects above).
func LastToken(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		return subject[i+1:]
	}
	return subject
}

// Heartbeat is published every interval by each storage node on
// rehome.heartbeat.<node>.
type Heartbeat struct {
	Header
	Node          string `json:"node"`
	Rack          string `json:"rack"`
	Addr          string `json:"addr"`
	BootID        string `json:"boot_id"`
	Shards        int    `json:"shards"`
	UsedBytes     int64  `json:"used_bytes"`
	CapacityBytes int64  `json:"capacity_bytes"`
	// Full says the node refuses new shards for lack of room: a write was
	// refused (its capacity, or the filesystem said ENOSPC/EDQUOT) and room
	// has not come back since, or its shards fill its capacity. Omitted: false.
	Full bool `json:"full,omitempty"`
	// ReadOnly says the node's filesystem refused a write as read-only
	// (EROFS) and has not accepted one since. Omitted: false.
	ReadOnly bool `json:"read_only,omitempty"`
}

// Validate rejects a heartbeat with a bad node id or negative sizes.
func (h Heartbeat) Validate() error {
	if err := model.ValidateNodeID(h.Node); err != nil {
		return err
	}
	if h.Shards < 0 || h.UsedBytes < 0 || h.CapacityBytes < 0 || h.BootID == "" {
		return errors.New("heartbeat: negative counts or no boot id")
	}
	return nil
}

// Verdict is the detector's judgement on rehome.node.{suspect,down,up}.<node>.
type Verdict struct {
	Header
	Node     string      `json:"node"`
	State    model.State `json:"state"`
	Reason   string      `json:"reason"`
	SilentMS int64       `json:"silent_ms"`
	Incident string      `json:"incident,omitempty"`
}

// Validate rejects a verdict with a bad node id, an unknown state or a
// negative silence.
func (v Verdict) Validate() error {
	if err := model.ValidateNodeID(v.Node); err != nil {
		return err
	}
	if v.SilentMS < 0 {
		return fmt.Errorf("verdict: negative silence %d ms", v.SilentMS)
	}
	switch v.State {
	case model.StateUp, model.StateSuspect, model.StateDown:
		return nil
	}
	return fmt.Errorf("verdict: unknown state %q", v.State)
}

// Task kinds.
const (
	KindCopy    = "copy"
	KindRebuild = "rebuild"
	KindDelete  = "delete"
)

// ClassBackground is Task.Class for rebalancing moves.
const ClassBackground = "background"

// validKind rejects a task kind outside the three above.
func validKind(what, kind string) error {
	switch kind {
	case KindCopy, KindRebuild, KindDelete:
		return nil
	}
	return fmt.Errorf("%s: unknown kind %q", what, kind)
}

// validSHA256 reports whether s is a hex SHA-256 (64 hex digits).
func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// validNodes rejects a list with an id that is no valid node id.
func validNodes(ids []string) error {
	for _, id := range ids {
		if err := model.ValidateNodeID(id); err != nil {
			return err
		}
	}
	return nil
}

// Task is one unit of mover work on rehome.repair.task.<target>: copy a shard
// from one of Sources to Target (verified against SHA256), or delete a surplus
// copy from Target.
type Task struct {
	Header
	Task     string   `json:"task"`
	Incident string   `json:"incident,omitempty"`
	Shard    string   `json:"shard"`
	Kind     string   `json:"kind"`
	Sources  []string `json:"sources"`
	Target   string   `json:"target"`
	Bytes    int64    `json:"bytes"`
	SHA256   string   `json:"sha256"`
	Attempt  int      `json:"attempt"`
	// RackRelaxed is set when no target outside the surviving copies' racks existed.
	RackRelaxed bool `json:"rack_relaxed,omitempty"`
	// Class is ClassBackground for work nothing is at risk without
	// (rebalancing moves), which storage nodes pace hardest while they serve
	// clients; empty for repair and drains.
	Class string `json:"class,omitempty"`

	// Rebuild tasks (erasure-coded stripes) only. K and M are the layout;
	// Stripe lists all K+M pieces of the stripe in index order, Node being a
	// live holder ("" for a piece that is missing); Rebuild lists the pieces to
	// reconstruct, Node being each one's target. Shard, Target, Bytes and
	// SHA256 repeat Rebuild[0]; Sources lists the holders the mover may read.
	K       int     `json:"k,omitempty"`
	M       int     `json:"m,omitempty"`
	Stripe  []Piece `json:"stripe,omitempty"`
	Rebuild []Piece `json:"rebuild,omitempty"`

	// Batch (copy tasks only) lists several shards copied from the
	// same first source to Target by one task, each with its own task id,
	// attempt and checksum: each is verified by the target and reported
	// (Done or Failed) on its own, under its own task id. Task, Shard,
	// Sources, Bytes, SHA256, Attempt and Incident repeat Batch[0], so a
	// mover that ignores Batch still copies that first shard correctly.
	Batch []BatchShard `json:"batch,omitempty"`
}

// MaxBatch bounds the shards of one batched copy task.
const MaxBatch = 256

// BatchShard is one shard of a batched copy task.
type BatchShard struct {
	Task        string   `json:"task"`
	Incident    string   `json:"incident,omitempty"`
	Shard       string   `json:"shard"`
	Sources     []string `json:"sources"`
	Bytes       int64    `json:"bytes"`
	SHA256      string   `json:"sha256"`
	Attempt     int      `json:"attempt"`
	RackRelaxed bool     `json:"rack_relaxed,omitempty"`
}

// Member returns the copy task of batch member b of t: t with b's fields.
func (t Task) Member(b BatchShard) Task {
	m := t
	m.Batch = nil
	m.Task, m.Incident, m.Shard, m.Sources = b.Task, b.Incident, b.Shard, b.Sources
	m.Bytes, m.SHA256, m.Attempt, m.RackRelaxed = b.Bytes, b.SHA256, b.Attempt, b.RackRelaxed
	return m
}

// Members returns the copy tasks a task stands for: one per batch member,
// or the task itself when it is not batched.
func (t Task) Members() []Task {
	if len(t.Batch) == 0 {
		return []Task{t}
	}
	out := make([]Task, len(t.Batch))
	for i, b := range t.Batch {
		out[i] = t.Member(b)
	}
	return out
}

// validateBatch checks a batched copy: a copy, at most MaxBatch members,
// each a valid copy of a distinct shard with its own task id, the first
// repeated by the task's own fields.
func (t Task) validateBatch() error {
	if t.Kind != KindCopy || len(t.Batch) > MaxBatch {
		return fmt.Errorf("task %s: a batch must be a copy of at most %d shards", t.Task, MaxBatch)
	}
	b0 := t.Batch[0]
	if b0.Task != t.Task || b0.Shard != t.Shard || b0.Bytes != t.Bytes || !strings.EqualFold(b0.SHA256, t.SHA256) {
		return fmt.Errorf("task %s: task, shard, bytes and sha256 must repeat the batch's first shard", t.Task)
	}
	seen := make(map[string]bool, len(t.Batch))
	for _, b := range t.Batch {
		if b.Task == "" || seen[b.Shard] {
			return fmt.Errorf("task %s: batch member without a task id, or a shard twice", t.Task)
		}
		seen[b.Shard] = true
		if err := model.ValidateShardID(b.Shard); err != nil {
			return err
		}
		if b.Bytes < 0 || b.Attempt < 0 || len(b.Sources) == 0 || !validSHA256(b.SHA256) {
			return fmt.Errorf("task %s: batch member %s needs sources, sha256 and non-negative bytes", t.Task, b.Shard)
		}
		if err := validNodes(b.Sources); err != nil {
			return err
		}
	}
	return nil
}

// Piece is one piece of an erasure-coded stripe in a rebuild task.
type Piece struct {
	Shard  string `json:"shard"`
	Index  int    `json:"index"`
	Node   string `json:"node,omitempty"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

func (p Piece) validate(k, m int) error {
	if err := model.ValidateShardID(p.Shard); err != nil {
		return err
	}
	if p.Node != "" {
		if err := model.ValidateNodeID(p.Node); err != nil {
			return err
		}
	}
	if p.Index < 0 || p.Index >= k+m || p.Size < 0 || !validSHA256(p.SHA256) {
		return fmt.Errorf("piece %s: bad index, size or checksum", p.Shard)
	}
	return nil
}

// validateRebuild checks a rebuild task's stripe: K+M pieces in index order,
// at least K of them held, and every piece to rebuild naming a target.
func (t Task) validateRebuild() error {
	if t.K < 1 || t.M < 1 || t.K+t.M > 255 || len(t.Stripe) != t.K+t.M || len(t.Rebuild) == 0 || len(t.Rebuild) > t.M {
		return errors.New("task: rebuild needs k, m, all k+m stripe pieces and 1..m pieces to rebuild")
	}
	held := 0
	for i, p := range t.Stripe {
		if err := p.validate(t.K, t.M); err != nil {
			return err
		}
		if p.Index != i {
			return errors.New("task: stripe pieces out of order")
		}
		if p.Node != "" {
			held++
		}
	}
	if held < t.K {
		return fmt.Errorf("task: %d pieces held, need %d", held, t.K)
	}
	for _, p := range t.Rebuild {
		if err := p.validate(t.K, t.M); err != nil {
			return err
		}
		if p.Node == "" {
			return fmt.Errorf("task: piece %s to rebuild has no target", p.Shard)
		}
	}
	return nil
}

// Validate rejects a task a mover must not run: no id, a bad shard or node
// id, an unknown kind, negative bytes, attempt or layout, a checksum that is
// not hex SHA-256, a copy without sources or checksum, or a rebuild whose
// stripe does not hold together, or a batch that does not (validateBatch).
func (t Task) Validate() error {
	if t.Task == "" {
		return errors.New("task: no id")
	}
	if err := model.ValidateShardID(t.Shard); err != nil {
		return err
	}
	if err := model.ValidateNodeID(t.Target); err != nil {
		return err
	}
	if err := validKind("task", t.Kind); err != nil {
		return err
	}
	if t.Bytes < 0 || t.Attempt < 0 || t.K < 0 || t.M < 0 {
		return fmt.Errorf("task %s: negative bytes, attempt, k or m", t.Task)
	}
	if t.SHA256 != "" && !validSHA256(t.SHA256) {
		return fmt.Errorf("task %s: sha256 is not 64 hex digits", t.Task)
	}
	if t.Class != "" && t.Class != ClassBackground {
		return fmt.Errorf("task %s: unknown class %q", t.Task, t.Class)
	}
	switch t.Kind {
	case KindCopy:
		if len(t.Sources) == 0 || t.SHA256 == "" {
			return errors.New("task: copy needs sources, sha256 and bytes")
		}
	case KindRebuild:
		if err := t.validateRebuild(); err != nil {
			return err
		}
	}
	if len(t.Batch) > 0 {
		if err := t.validateBatch(); err != nil {
			return err
		}
	}
	return validNodes(t.Sources)
}

// Done reports a verified copy (or a completed delete) on rehome.repair.done.<target>.
type Done struct {
	Header
	Task       string `json:"task"`
	Incident   string `json:"incident,omitempty"`
	Shard      string `json:"shard"`
	Kind       string `json:"kind"`
	Source     string `json:"source,omitempty"`
	Target     string `json:"target"`
	Bytes      int64  `json:"bytes"`
	DurationMS int64  `json:"duration_ms"`
}

// Validate rejects a done report without a task id, naming no valid shard
// or target, of an unknown kind, or with negative bytes or duration.
func (d Done) Validate() error {
	if d.Task == "" {
		return errors.New("done: no task id")
	}
	if err := model.ValidateShardID(d.Shard); err != nil {
		return err
	}
	if err := validKind("done", d.Kind); err != nil {
		return err
	}
	if d.Bytes < 0 || d.DurationMS < 0 {
		return errors.New("done: negative bytes or duration")
	}
	return model.ValidateNodeID(d.Target)
}

// Failed reports a task attempt that did not succeed, on rehome.repair.failed.<target>.
type Failed struct {
	Header
	Task     string `json:"task"`
	Incident string `json:"incident,omitempty"`
	Shard    string `json:"shard"`
	Kind     string `json:"kind"`
	Target   string `json:"target"`
	Error    string `json:"error"`
	Attempt  int    `json:"attempt"`
	// Final is set when the mover gives the task up; the planner re-plans it.
	Final bool `json:"final"`
	// RetryAt is set only on the planner's own report that a shard's repair
	// failed MaxAttempts times in a row (Final, Attempt = that count): the
	// shard is parked and tried again from attempt 1 at RetryAt.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Side says whose fault the attempt's failure was: SideSource (no source
	// could supply the bytes: down, missing the shard, serving wrong bytes)
	// or SideTarget (the target unreachable, refusing, full or failing its
	// write). Empty: unknown (an older mover, or neither side to blame); the
	// planner then treats it as the target's.
	Side string `json:"side,omitempty"`
}

// Sides of a failure (Failed.Side).
const (
	SideSource = "source"
	SideTarget = "target"
)

// Validate rejects a failure report without a task id, naming no valid shard
// or target, of an unknown kind or side, or with a negative attempt.
func (f Failed) Validate() error {
	if f.Task == "" {
		return errors.New("failed: no task id")
	}
	switch f.Side {
	case "", SideSource, SideTarget:
	default:
		return fmt.Errorf("failed: unknown side %q", f.Side)
	}
	if err := model.ValidateShardID(f.Shard); err != nil {
		return err
	}
	if err := validKind("failed", f.Kind); err != nil {
		return err
	}
	if f.Attempt < 0 {
		return fmt.Errorf("failed: negative attempt %d", f.Attempt)
	}
	return model.ValidateNodeID(f.Target)
}

// DeadPrefix carries the tasks movers gave up on (malformed, permanently
// failed, or out of deliveries), one Dead per task, on
// rehome.repair.dead.<target> (DeadUnknownTarget when no target can be read).
const DeadPrefix = "rehome.repair.dead."

// DeadUnknownTarget is the subject token of a dead letter whose target node
// cannot be read from the task or its subject.
const DeadUnknownTarget = "unknown"

// MaxDeadPayload bounds the original bytes a Dead event carries; longer
// payloads are cut to this length (Size keeps the original length).
const MaxDeadPayload = 64 << 10

// Dead is a dead letter on rehome.repair.dead.<target>: a task message a
// mover terminated, with why. Task holds the original payload verbatim when it
// is JSON (at most MaxDeadPayload bytes); otherwise Payload holds its first
// MaxDeadPayload bytes (base64 in JSON). Subject is where the task was queued,
// StreamSeq its sequence in the task stream, Deliveries how often it was
// delivered.
type Dead struct {
	Header
	Task       json.RawMessage `json:"task,omitempty"`
	Payload    []byte          `json:"payload,omitempty"`
	Size       int             `json:"size"`
	Subject    string          `json:"subject"`
	Target     string          `json:"target"`
	Reason     string          `json:"reason"`
	Deliveries int             `json:"deliveries"`
	StreamSeq  uint64          `json:"stream_seq,omitempty"`
}

// Validate rejects a dead letter without a reason or a usable target
// token, or with a negative size or delivery count.
func (d Dead) Validate() error {
	if d.Reason == "" {
		return errors.New("dead: no reason")
	}
	if d.Size < 0 || d.Deliveries < 0 {
		return errors.New("dead: negative size or deliveries")
	}
	if d.Target != DeadUnknownTarget {
		return model.ValidateNodeID(d.Target)
	}
	return nil
}

// PlanTarget summarises what one plan sends to one node.
type PlanTarget struct {
	Node   string `json:"node"`
	Shards int    `json:"shards"`
	Bytes  int64  `json:"bytes"`
}

// Plan is published on rehome.repair.plan.<incident> whenever the planner
// issues a batch of tasks.
type Plan struct {
	Header
	Incident    string       `json:"incident"`
	Shards      int          `json:"shards"`
	Bytes       int64        `json:"bytes"`
	Targets     []PlanTarget `json:"targets"`
	RackRelaxed int          `json:"rack_relaxed"`
}

// Validate rejects a plan with negative counts or a target that is no valid
// node id.
func (p Plan) Validate() error {
	if p.Shards < 0 || p.Bytes < 0 || p.RackRelaxed < 0 {
		return errors.New("plan: negative shards, bytes or rack_relaxed")
	}
	for _, t := range p.Targets {
		if err := model.ValidateNodeID(t.Node); err != nil {
			return err
		}
		if t.Shards < 0 || t.Bytes < 0 {
			return fmt.Errorf("plan: target %s with negative shards or bytes", t.Node)
		}
	}
	return nil
}

// Lost is published on rehome.shard.lost.<shard> when no live copy remains.
type Lost struct {
	Header
	Shard string   `json:"shard"`
	Key   string   `json:"key"`
	Nodes []string `json:"nodes"`
}

// Validate rejects a loss report naming no valid shard, or a node that is no
// valid node id.
func (l Lost) Validate() error {
	if err := model.ValidateShardID(l.Shard); err != nil {
		return err
	}
	return validNodes(l.Nodes)
}

// Corrupt is published on rehome.shard.corrupt.<node> when a storage node
// quarantines a shard whose bytes no longer match their checksum.
type Corrupt struct {
	Header
	Node   string `json:"node"`
	Shard  string `json:"shard"`
	Reason string `json:"reason"`
	Found  string `json:"found"` // "read", "scrub" or "open"
}

// Validate rejects a report naming no valid node or shard.
func (c Corrupt) Validate() error {
	if err := model.ValidateNodeID(c.Node); err != nil {
		return err
	}
	return model.ValidateShardID(c.Shard)
}

// Drain is published on rehome.node.draining.<node> when the acting planner
// starts a node's drain, and on rehome.node.drained.<node> when the node
// holds nothing any more: Shards and Bytes are what it held at the start
// (draining) or what moved off it (drained).
type Drain struct {
	Header
	Node   string `json:"node"`
	By     string `json:"by,omitempty"`
	Shards int    `json:"shards"`
	Bytes  int64  `json:"bytes"`
}

// Validate rejects a drain event naming no valid node or negative counts.
func (d Drain) Validate() error {
	if d.Shards < 0 || d.Bytes < 0 {
		return errors.New("drain: negative shards or bytes")
	}
	return model.ValidateNodeID(d.Node)
}

// Condition is published on rehome.node.condition.<node> when a storage
// node's disk starts or stops refusing writes: Full (no room) or ReadOnly
// (the filesystem refuses writes); both false: writable again. It repeats
// the heartbeat's flags at the moment they change.
type Condition struct {
	Header
	Node     string `json:"node"`
	Full     bool   `json:"full"`
	ReadOnly bool   `json:"read_only"`
	Reason   string `json:"reason,omitempty"`
}

// Validate rejects a condition naming no valid node.
func (c Condition) Validate() error {
	return model.ValidateNodeID(c.Node)
}

// Progress is the heal state, published on rehome.heal.progress and returned
// by the heal-status control call.
type Progress struct {
	Header
	UnderReplicated int     `json:"under_replicated"`
	Lost            int     `json:"lost"`
	BytesRemaining  int64   `json:"bytes_remaining"`
	RateBytesPerSec float64 `json:"rate_bytes_per_sec"`
	ETASeconds      float64 `json:"eta_seconds"`
	Stalled         bool    `json:"stalled"`
	InFlight        int     `json:"in_flight"`
	VerifiedBytes   int64   `json:"verified_bytes"`
	Shards          int     `json:"shards"`
	// Paused is set while an operator has paused repairs (heal pause).
	Paused bool `json:"paused"`
	// SingleCopy counts shards left with one live copy (erasure-coded: stripes
	// with exactly K live pieces); SingleCopyETASeconds estimates when none
	// will be left at the current rate (-1 unknown, 0 none).
	SingleCopy           int     `json:"single_copy"`
	SingleCopyETASeconds float64 `json:"single_copy_eta_seconds"`
	// Node is set when the progress is narrowed to one node's in-place heal.
	Node string `json:"node,omitempty"`
	// SuspectNodes counts nodes holding shards whose verdict is pending: their
	// copies still count, but they may yet be declared down.
	SuspectNodes int `json:"suspect_nodes"`
}

// Validate rejects progress with negative counts, bytes or rate.
func (p Progress) Validate() error {
	if p.UnderReplicated < 0 || p.Lost < 0 || p.BytesRemaining < 0 || p.RateBytesPerSec < 0 || p.InFlight < 0 ||
		p.VerifiedBytes < 0 || p.Shards < 0 || p.SingleCopy < 0 || p.SuspectNodes < 0 {
		return errors.New("progress: negative count, bytes or rate")
	}
	return nil
}

// HealSwitched is published on rehome.heal.paused or rehome.heal.resumed when
// the acting planner sees the heal switch change: while paused no new repair
// or trim task is issued (tasks in flight finish).
type HealSwitched struct {
	Header
	Paused bool `json:"paused"`
	// By and Since repeat the switch record (who flipped it, and when).
	By    string    `json:"by,omitempty"`
	Since time.Time `json:"since"`
	// Planner names the planner that saw the change.
	Planner string `json:"planner,omitempty"`
}

// Hold is published on rehome.detector.held when a detector starts withholding
// down verdicts (too many nodes silent at once) and on rehome.detector.released
// when it stops (the share dropped, or an operator overrode it).
type Hold struct {
	Header
	Held     bool     `json:"held"`
	Reason   string   `json:"reason"`
	Silent   int      `json:"silent"`
	Judged   int      `json:"judged"`
	Nodes    []string `json:"nodes,omitempty"`
	Detector string   `json:"detector,omitempty"`
}

// Validate rejects a guard notice with negative counts or a node that is no
// valid node id.
func (h Hold) Validate() error {
	if h.Silent < 0 || h.Judged < 0 {
		return errors.New("hold: negative silent or judged")
	}
	return validNodes(h.Nodes)
}

// Stalled is published on rehome.heal.stalled when work remains and nothing
// was verified for the stall timeout.
type Stalled struct {
	Header
	UnderReplicated int     `json:"under_replicated"`
	BytesRemaining  int64   `json:"bytes_remaining"`
	IdleSeconds     float64 `json:"idle_seconds"`
}

// Validate rejects a stall report with negative counts, bytes or idle time.
func (s Stalled) Validate() error {
	if s.UnderReplicated < 0 || s.BytesRemaining < 0 || s.IdleSeconds < 0 {
		return errors.New("stalled: negative count, bytes or idle time")
	}
	return nil
}
