// Package liveness is the failure detector's decision core: a pure,
// deterministic state machine that turns heartbeat arrival times into
// suspect/down/up transitions (SPEC §5). It performs no I/O and never reads the
// wall clock: every time is passed in, so the same calls always yield the same
// transitions.
package liveness

import (
	"fmt"
	"sort"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// Config holds the detector's timing and guard parameters.
type Config struct {
	// SuspectAfter is the silence after which an up node is suspect (default 3 s).
	SuspectAfter time.Duration
	// Grace is the further silence after which a suspect node is down (default 30 s).
	Grace time.Duration
	// MaxSilentShare is the share of judged nodes that may be silent past
	// SuspectAfter at once before down verdicts are held (default 0.5).
	MaxSilentShare float64
	// StartupHold is how long after New or Restart no suspect/down is announced;
	// 0 means SuspectAfter+Grace ("a full timeout"), whatever those are set to.
	StartupHold time.Duration
}

// DefaultConfig returns the SPEC §5 defaults: 3 s, 30 s, 0.5 and a hold of
// SuspectAfter+Grace (left 0 so that changing Grace moves it too).
func DefaultConfig() Config {
	return Config{SuspectAfter: 3 * time.Second, Grace: 30 * time.Second, MaxSilentShare: 0.5}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.SuspectAfter <= 0 {
		c.SuspectAfter = d.SuspectAfter
	}
	if c.Grace <= 0 {
		c.Grace = d.Grace
	}
	if c.MaxSilentShare <= 0 || c.MaxSilentShare > 1 {
		c.MaxSilentShare = d.MaxSilentShare
	}
	if c.StartupHold <= 0 {
		c.StartupHold = c.SuspectAfter + c.Grace
	}
	return c
}

// Transition is one verdict to announce: Node moved From one state To another.
// From is "" for a node announced for the first time. Silent is the node's
// silence (now - LastHeard) when the transition was decided.
type Transition struct {
	Node      string
	From      model.State
	To        model.State
	Reason    string
	Silent    time.Duration
	LastHeard time.Time
	BootID    string
}

// NodeInfo is a snapshot of one tracked node, for metrics and status.
type NodeInfo struct {
	Node string
	// State is the last announced state ("" if none yet), or maintenance.
	State     model.State
	LastHeard time.Time
	BootID    string
}

type node struct {
	state     model.State // announced state: "", up, suspect, down
	lastHeard time.Time
	bootID    string
	// since is the earliest time silence is counted from (maintenance exit);
	// silence for judgement is now - max(lastHeard, since).
	since       time.Time
	maintenance bool
}

// Tracker follows every known node's heartbeats and decides verdicts.
// It is not safe for concurrent use: callers serialise access.
type Tracker struct {
	cfg        Config
	holdUntil  time.Time
	nodes      map[string]*node
	held       bool
	heldReason string
}

// New returns a tracker started at start: it announces no suspect or down
// before start+StartupHold. Zero Config fields take their defaults.
func New(cfg Config, start time.Time) *Tracker {
	cfg = cfg.withDefaults()
	return &Tracker{cfg: cfg, holdUntil: start.Add(cfg.StartupHold), nodes: map[string]*node{}}
}

// Config returns the effective configuration (defaults applied).
func (t *Tracker) Config() Config { return t.cfg }

// Restart begins a new startup hold at `at`, as after a loss of the bus: the
// tracker could not hear anyone, so silence is not yet evidence.
func (t *Tracker) Restart(at time.Time) { t.holdUntil = at.Add(t.cfg.StartupHold) }

// HoldUntil returns the end of the current startup hold.
func (t *Tracker) HoldUntil() time.Time { return t.holdUntil }

// Heard records a heartbeat from node at `at`. Older times than one already
// recorded never move the last-heard time back. An unknown node becomes known
// (announced up by the next Tick if it is not silent). It reports restarted
// when the boot id differs from a previously heard one: the node restarted
// without being judged; the caller may log it, no verdict follows.
func (t *Tracker) Heard(nodeID, bootID string, at time.Time) (restarted bool) {
	n := t.nodes[nodeID]
	if n == nil {
		n = &node{}
		t.nodes[nodeID] = n
	}
	if at.After(n.lastHeard) {
		n.lastHeard = at
		if bootID != "" {
			restarted = n.bootID != "" && n.bootID != bootID && n.state == model.StateUp && !n.maintenance
			n.bootID = bootID
		}
	}
	return restarted
}

// Seed restores a node known from before a restart, last heard at lastHeard
// and last announced in state (up, suspect, down or maintenance). It announces
// nothing by itself; a silent seeded node is judged once the hold ends. Seeding
// never moves lastHeard back.
func (t *Tracker) Seed(nodeID string, lastHeard time.Time, state model.State) {
	n := t.nodes[nodeID]
	if n == nil {
		n = &node{}
		t.nodes[nodeID] = n
	}
	if lastHeard.After(n.lastHeard) {
		n.lastHeard = lastHeard
	}
	switch state {
	case model.StateMaintenance:
		n.maintenance = true
		if n.state == "" {
			n.state = model.StateUp
		}
	case model.StateUp, model.StateSuspect, model.StateDown:
		n.state = state
	}
}

// SetMaintenance puts a node into maintenance (never judged, not counted by
// the mass-silence guard) or takes it out at `at`. On leaving maintenance the
// node is announced afresh: up at the next Tick if it beats, otherwise suspect
// and down after a full SuspectAfter and Grace counted from `at`. A node never
// heard is forgotten when it leaves maintenance. Idempotent.
func (t *Tracker) SetMaintenance(nodeID string, on bool, at time.Time) {
	n := t.nodes[nodeID]
	if on {
		if n == nil {
			n = &node{}
			t.nodes[nodeID] = n
		}
		n.maintenance = true
		return
	}
	if n == nil || !n.maintenance {
		return
	}
	if n.lastHeard.IsZero() {
		delete(t.nodes, nodeID)
		return
	}
	n.maintenance = false
	n.state = ""
	n.since = at
}

// InMaintenance reports whether node is in maintenance.
func (t *Tracker) InMaintenance(nodeID string) bool {
	n := t.nodes[nodeID]
	return n != nil && n.maintenance
}

// Held reports whether down verdicts were held by the mass-silence guard at
// the last Tick, and why.
func (t *Tracker) Held() (bool, string) { return t.held, t.heldReason }

// Nodes returns a snapshot of every tracked node, sorted by id.
func (t *Tracker) Nodes() []NodeInfo {
	out := make([]NodeInfo, 0, len(t.nodes))
	for _, id := range t.ids() {
		n := t.nodes[id]
		s := n.state
		if n.maintenance {
			s = model.StateMaintenance
		}
		out = append(out, NodeInfo{Node: id, State: s, LastHeard: n.lastHeard, BootID: n.bootID})
	}
	return out
}

func (t *Tracker) ids() []string {
	ids := make([]string, 0, len(t.nodes))
	for id := range t.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// judged returns the silence that counts for verdicts.
func (n *node) judged(now time.Time) time.Duration {
	ref := n.lastHeard
	if n.since.After(ref) {
		ref = n.since
	}
	return max(now.Sub(ref), 0)
}

// Tick decides, at now, the transitions to announce, in node-id order (for one
// node: suspect before down). It must be called with non-decreasing times.
//
//   - suspect, down or not yet announced -> up when heard within SuspectAfter
//     (first heartbeat, or heard again);
//   - up (or not yet announced) -> suspect when silent > SuspectAfter;
//   - suspect -> down when silent > SuspectAfter+Grace;
//   - no suspect or down before the startup hold ends;
//   - no down while more than MaxSilentShare of the judged nodes (not down,
//     not in maintenance; at least 2) are silent past SuspectAfter.
func (t *Tracker) Tick(now time.Time) []Transition {
	var out []Transition
	ids := t.ids()
	s, g := t.cfg.SuspectAfter, t.cfg.Grace

	for _, id := range ids {
		n := t.nodes[id]
		if n.maintenance || n.state == model.StateUp || now.Sub(n.lastHeard) > s {
			continue
		}
		reason := "first heartbeat"
		switch n.state {
		case model.StateSuspect, model.StateDown:
			reason = fmt.Sprintf("heartbeat again (was %s)", n.state)
		}
		out = append(out, t.move(id, n, model.StateUp, now, reason))
	}

	judged, silent := 0, 0
	for _, id := range ids {
		n := t.nodes[id]
		if n.maintenance || n.state == model.StateDown {
			continue
		}
		judged++
		if n.judged(now) > s {
			silent++
		}
	}
	t.held = judged >= 2 && float64(silent) > t.cfg.MaxSilentShare*float64(judged)
	t.heldReason = ""
	if t.held {
		t.heldReason = fmt.Sprintf("%d of %d nodes silent for more than %s (over %.0f%%): holding down verdicts, the watcher may be cut off",
			silent, judged, s, t.cfg.MaxSilentShare*100)
	}

	if now.Before(t.holdUntil) {
		return out
	}
	for _, id := range ids {
		n := t.nodes[id]
		if n.maintenance {
			continue
		}
		sil := n.judged(now)
		if (n.state == "" || n.state == model.StateUp) && sil > s {
			out = append(out, t.move(id, n, model.StateSuspect, now,
				fmt.Sprintf("no heartbeat for %s (suspect after %s)", round(sil), s)))
		}
		if n.state == model.StateSuspect && sil > s+g && !t.held {
			out = append(out, t.move(id, n, model.StateDown, now,
				fmt.Sprintf("no heartbeat for %s (suspect after %s + grace %s)", round(sil), s, g)))
		}
	}
	return out
}

func (t *Tracker) move(id string, n *node, to model.State, now time.Time, reason string) Transition {
	tr := Transition{
		Node: id, From: n.state, To: to, Reason: reason,
		Silent: max(now.Sub(n.lastHeard), 0), LastHeard: n.lastHeard, BootID: n.bootID,
	}
	n.state = to
	return tr
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
