// Package liveness is the failure detector's decision core: a pure,
// deterministic state machine that turns heartbeat arrival times (and
// connection-loss notices) into suspect/down/up transitions (SPEC §5). It
// performs no I/O and never reads the wall clock: every time is passed in, so
// the same calls always yield the same transitions.
//
// Beyond the plain timeouts it damps flapping nodes (a node that keeps going
// suspect gets a longer grace, which decays when it stays quiet), holds down
// verdicts when too many nodes fall silent at once (unless an operator
// overrides the guard), and suspects a node at once when its bus connection
// closes.
package liveness

import (
	"fmt"
	"math"
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
	// FlapWindow is how long a suspect episode counts as a flap (default 10 min).
	FlapWindow time.Duration
	// FlapThreshold is the number of flaps inside FlapWindow a node may have
	// with the plain grace (default 2); each flap above it doubles the grace.
	FlapThreshold int
	// MaxGrace caps the lengthened grace; 0 means 10 × Grace, whatever Grace
	// is set to. A MaxGrace at or below Grace turns damping off.
	MaxGrace time.Duration
}

// DefaultConfig returns the SPEC §5 defaults: 3 s, 30 s, 0.5, a hold of
// SuspectAfter+Grace (left 0 so that changing Grace moves it too), a 10 min
// flap window, threshold 2 and a grace cap of 10 × Grace (left 0 likewise).
func DefaultConfig() Config {
	return Config{
		SuspectAfter: 3 * time.Second, Grace: 30 * time.Second, MaxSilentShare: 0.5,
		FlapWindow: 10 * time.Minute, FlapThreshold: 2,
	}
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
	if !(c.MaxSilentShare > 0 && c.MaxSilentShare <= 1) { // NaN too
		c.MaxSilentShare = d.MaxSilentShare
	}
	if c.StartupHold <= 0 {
		c.StartupHold = c.SuspectAfter + c.Grace
	}
	if c.FlapWindow <= 0 {
		c.FlapWindow = d.FlapWindow
	}
	if c.FlapThreshold <= 0 {
		c.FlapThreshold = d.FlapThreshold
	}
	if c.MaxGrace == 0 {
		c.MaxGrace = 10 * c.Grace
	}
	if c.MaxGrace < c.Grace {
		c.MaxGrace = c.Grace
	}
	return c
}

// maxEpisodes bounds the flap history kept per node; the grace is long
// saturated at MaxGrace before it is reached.
const maxEpisodes = 256

// ReasonDisconnected is the reason of a suspect verdict caused by Disconnected.
const ReasonDisconnected = "connection to NATS closed"

// Transition is one verdict to announce: Node moved From one state To another.
// From is "" for a node announced for the first time. Silent is the node's
// silence (now - LastHeard) when the transition was decided. Flaps and Grace
// are the node's flap count and the grace applied to it at that moment.
type Transition struct {
	Node      string
	From      model.State
	To        model.State
	Reason    string
	Silent    time.Duration
	LastHeard time.Time
	BootID    string
	Flaps     int
	Grace     time.Duration
}

// NodeInfo is a snapshot of one tracked node, for metrics and status.
type NodeInfo struct {
	Node string
	// State is the last announced state ("" if none yet), or maintenance.
	State     model.State
	LastHeard time.Time
	BootID    string
	// Flaps and Grace are as of the last Tick: suspect episodes inside the
	// flap window and the grace the node would get now.
	Flaps int
	Grace time.Duration
	// Disconnected is set from a Disconnected notice until a newer heartbeat.
	Disconnected bool
}

// Hold describes the mass-silence guard as of the last Tick.
type Hold struct {
	// Held is set while down verdicts are withheld (Tripped and no override).
	Held bool
	// Tripped is set while more than MaxSilentShare of the judged nodes are silent.
	Tripped bool
	// Reason is one human line describing the guard's state.
	Reason string
	// Since is when the share was first exceeded (the moment the silence of
	// the deciding node passed SuspectAfter: the same for every detector
	// hearing the same heartbeats); zero when not tripped.
	Since time.Time
	// Silent and Judged count the silent nodes and the nodes judged (not down,
	// not in maintenance); Nodes lists the silent ones, sorted.
	Silent int
	Judged int
	Nodes  []string
	// OverrideUntil is the end of the operator override last set (zero if none);
	// Overridden reports whether it was in force at the last Tick.
	OverrideUntil time.Time
	Overridden    bool
}

type node struct {
	state     model.State // announced state: "", up, suspect, down
	lastHeard time.Time
	bootID    string
	// since is the earliest time silence is counted from (maintenance exit);
	// silence for judgement is now - max(lastHeard, since).
	since       time.Time
	maintenance bool
	// episodes are the start times of suspect episodes (ascending), pruned
	// to the flap window.
	episodes []time.Time
	// disconnected is set by Disconnected and cleared by a newer heartbeat.
	disconnected bool
}

// Tracker follows every known node's heartbeats and decides verdicts.
// It is not safe for concurrent use: callers serialise access.
type Tracker struct {
	cfg           Config
	holdUntil     time.Time
	nodes         map[string]*node
	lastTick      time.Time
	overrideUntil time.Time
	hold          Hold
}

// New returns a tracker started at start: it announces no suspect or down
// before start+StartupHold. Zero Config fields take their defaults.
func New(cfg Config, start time.Time) *Tracker {
	cfg = cfg.withDefaults()
	return &Tracker{cfg: cfg, holdUntil: start.Add(cfg.StartupHold), nodes: map[string]*node{}, lastTick: start}
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
// (announced up by the next Tick if it is not silent). A heartbeat newer than
// every one known clears a Disconnected notice (the node reconnected). It
// reports restarted when the boot id differs from a previously heard one: the
// node restarted without being judged; the caller may log it, no verdict follows.
func (t *Tracker) Heard(nodeID, bootID string, at time.Time) (restarted bool) {
	n := t.nodes[nodeID]
	if n == nil {
		n = &node{}
		t.nodes[nodeID] = n
	}
	if at.After(n.lastHeard) {
		n.lastHeard = at
		n.disconnected = false
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

// SeedFlaps restores a node's flap count recorded at `at` (e.g. the Flaps
// and Since of its liveness record) so that a restarted detector keeps
// damping it: the node gets at least flaps episodes, dated `at` (a little
// later than they happened, so they decay a little later too). Idempotent;
// it never lowers the count the tracker already has.
func (t *Tracker) SeedFlaps(nodeID string, flaps int, at time.Time) {
	n := t.nodes[nodeID]
	if n == nil || flaps <= 0 {
		return
	}
	flaps = min(flaps, maxEpisodes)
	for len(n.episodes) < flaps {
		i := sort.Search(len(n.episodes), func(i int) bool { return n.episodes[i].After(at) })
		n.episodes = append(n.episodes, time.Time{})
		copy(n.episodes[i+1:], n.episodes[i:])
		n.episodes[i] = at
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
		n.disconnected = false
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
	n.disconnected = false
	n.state = ""
	n.since = at
}

// InMaintenance reports whether node is in maintenance.
func (t *Tracker) InMaintenance(nodeID string) bool {
	n := t.nodes[nodeID]
	return n != nil && n.maintenance
}

// Disconnected notes that node's bus connection closed at `at` (the server
// said so). A node that is up (not in maintenance) is suspected at once: the
// transition is returned with ok set (during the startup hold nothing is
// returned and the next Tick after the hold announces it). Unknown, suspect,
// down and maintenance nodes are left alone. Until a heartbeat newer than any
// known arrives the node is not announced up again. The notice does not
// shorten the grace: the node is down only once silent for more than
// SuspectAfter + its grace counted from its last heartbeat, as without it.
// `at` must not be earlier than the last Tick.
func (t *Tracker) Disconnected(nodeID string, at time.Time) (tr Transition, ok bool) {
	n := t.nodes[nodeID]
	if n == nil || n.maintenance || n.state != model.StateUp {
		return Transition{}, false
	}
	n.disconnected = true
	if at.Before(t.holdUntil) {
		return Transition{}, false
	}
	return t.move(nodeID, n, model.StateSuspect, at, ReasonDisconnected), true
}

// Override orders the tracker to let down verdicts flow despite the
// mass-silence guard until `until` (exclusive); a zero or past time cancels
// the order. It takes effect at the next Tick. Idempotent.
func (t *Tracker) Override(until time.Time) { t.overrideUntil = until }

// Held reports whether down verdicts were held by the mass-silence guard at
// the last Tick, and why.
func (t *Tracker) Held() (bool, string) {
	if !t.hold.Held {
		return false, ""
	}
	return true, t.hold.Reason
}

// Hold returns the mass-silence guard's state as of the last Tick.
func (t *Tracker) Hold() Hold {
	h := t.hold
	h.Nodes = append([]string(nil), h.Nodes...)
	return h
}

// Nodes returns a snapshot of every tracked node, sorted by id, with flap
// counts and graces as of the last Tick.
func (t *Tracker) Nodes() []NodeInfo {
	out := make([]NodeInfo, 0, len(t.nodes))
	for _, id := range t.ids() {
		n := t.nodes[id]
		s := n.state
		if n.maintenance {
			s = model.StateMaintenance
		}
		f := t.flaps(n, t.lastTick)
		out = append(out, NodeInfo{
			Node: id, State: s, LastHeard: n.lastHeard, BootID: n.bootID,
			Flaps: f, Grace: t.grace(f), Disconnected: n.disconnected,
		})
	}
	return out
}

// Grace returns the grace a node with the given number of flaps gets:
// Grace × 2^(flaps-FlapThreshold) above the threshold, capped at MaxGrace.
func (t *Tracker) Grace(flaps int) time.Duration { return t.grace(flaps) }

func (t *Tracker) grace(flaps int) time.Duration {
	g := t.cfg.Grace
	for i := t.cfg.FlapThreshold; i < flaps && g < t.cfg.MaxGrace; i++ {
		g *= 2
	}
	return min(g, t.cfg.MaxGrace)
}

// flaps counts n's suspect episodes that started inside the window ending at now.
func (t *Tracker) flaps(n *node, now time.Time) int {
	from := now.Add(-t.cfg.FlapWindow)
	i := sort.Search(len(n.episodes), func(i int) bool { return n.episodes[i].After(from) })
	return len(n.episodes) - i
}

// prune drops episodes that left the window ending at now.
func (t *Tracker) prune(n *node, now time.Time) {
	from := now.Add(-t.cfg.FlapWindow)
	i := sort.Search(len(n.episodes), func(i int) bool { return n.episodes[i].After(from) })
	if i > 0 {
		n.episodes = append(n.episodes[:0], n.episodes[i:]...)
	}
}

func (t *Tracker) ids() []string {
	ids := make([]string, 0, len(t.nodes))
	for id := range t.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// ref returns the time silence is counted from.
func (n *node) ref() time.Time {
	if n.since.After(n.lastHeard) {
		return n.since
	}
	return n.lastHeard
}

// judged returns the silence that counts for verdicts.
func (n *node) judged(now time.Time) time.Duration {
	return max(now.Sub(n.ref()), 0)
}

// Tick decides, at now, the transitions to announce, in node-id order (for one
// node: suspect before down). It must be called with non-decreasing times.
//
//   - suspect, down or not yet announced -> up when heard within SuspectAfter
//     (first heartbeat, or heard again) and not disconnected since;
//   - up (or not yet announced) -> suspect when silent > SuspectAfter, or
//     disconnected (see Disconnected);
//   - suspect -> down when silent > SuspectAfter + the node's grace, where the
//     grace is Grace, doubled for every flap (suspect episode started inside
//     FlapWindow, this one included) above FlapThreshold, capped at MaxGrace;
//   - no suspect or down before the startup hold ends;
//   - no down while more than MaxSilentShare of the judged nodes (not down,
//     not in maintenance; at least 2) are silent past SuspectAfter, unless an
//     operator override (Override) is in force.
func (t *Tracker) Tick(now time.Time) []Transition {
	var out []Transition
	ids := t.ids()
	s := t.cfg.SuspectAfter
	t.lastTick = now

	for _, id := range ids {
		n := t.nodes[id]
		t.prune(n, now)
		if n.maintenance || n.disconnected || n.state == model.StateUp || now.Sub(n.lastHeard) > s {
			continue
		}
		reason := "first heartbeat"
		switch n.state {
		case model.StateSuspect, model.StateDown:
			reason = fmt.Sprintf("heartbeat again (was %s)", n.state)
		}
		out = append(out, t.move(id, n, model.StateUp, now, reason))
	}

	t.guard(ids, now)

	if now.Before(t.holdUntil) {
		return out
	}
	for _, id := range ids {
		n := t.nodes[id]
		if n.maintenance {
			continue
		}
		sil := n.judged(now)
		if n.state == "" || n.state == model.StateUp {
			silence := fmt.Sprintf("no heartbeat for %s (suspect after %s)", round(sil), s)
			switch {
			case n.disconnected && sil > s:
				// Closed during the startup hold: say both.
				out = append(out, t.move(id, n, model.StateSuspect, now, ReasonDisconnected+"; "+silence))
			case n.disconnected:
				out = append(out, t.move(id, n, model.StateSuspect, now, ReasonDisconnected))
			case sil > s:
				out = append(out, t.move(id, n, model.StateSuspect, now, silence))
			}
		}
		if n.state != model.StateSuspect || t.hold.Held {
			continue
		}
		f := t.flaps(n, now)
		if g := t.grace(f); sil > s+g {
			reason := fmt.Sprintf("no heartbeat for %s (suspect after %s + grace %s)", round(sil), s, g)
			if g > t.cfg.Grace {
				reason += fmt.Sprintf("; grace lengthened: %d flaps in %s", f, t.cfg.FlapWindow)
			}
			out = append(out, t.move(id, n, model.StateDown, now, reason))
		}
	}
	return out
}

// guard recomputes the mass-silence guard at now.
func (t *Tracker) guard(ids []string, now time.Time) {
	s := t.cfg.SuspectAfter
	var silent []string
	var crossings []time.Time
	judged := 0
	for _, id := range ids {
		n := t.nodes[id]
		if n.maintenance || n.state == model.StateDown {
			continue
		}
		judged++
		if n.judged(now) > s {
			silent = append(silent, id)
			crossings = append(crossings, n.ref().Add(s))
		}
	}
	share := t.cfg.MaxSilentShare
	tripped := judged >= 2 && float64(len(silent)) > share*float64(judged)
	overridden := now.Before(t.overrideUntil)
	h := Hold{
		Tripped: tripped, Held: tripped && !overridden,
		Silent: len(silent), Judged: judged, Nodes: silent,
		OverrideUntil: t.overrideUntil, Overridden: overridden,
	}
	switch {
	case tripped && t.hold.Tripped:
		h.Since = t.hold.Since
	case tripped:
		// The share was first exceeded when the k-th silent node crossed.
		sort.Slice(crossings, func(i, j int) bool { return crossings[i].Before(crossings[j]) })
		k := int(math.Floor(share*float64(judged))) + 1
		h.Since = crossings[min(k, len(crossings))-1]
	}
	pct := share * 100
	switch {
	case h.Held:
		h.Reason = fmt.Sprintf("%d of %d nodes silent at once (more than %.0f%%): holding down verdicts; the watcher may be cut off",
			h.Silent, judged, pct)
	case tripped:
		h.Reason = fmt.Sprintf("%d of %d nodes silent at once (more than %.0f%%), but an operator override until %s lets down verdicts flow",
			h.Silent, judged, pct, t.overrideUntil.UTC().Format(time.RFC3339))
	default:
		h.Reason = fmt.Sprintf("%d of %d nodes silent (at most %.0f%%): down verdicts flow", h.Silent, judged, pct)
	}
	t.hold = h
}

func (t *Tracker) move(id string, n *node, to model.State, now time.Time, reason string) Transition {
	if to == model.StateSuspect {
		n.episodes = append(n.episodes, now)
		if len(n.episodes) > maxEpisodes {
			n.episodes = append(n.episodes[:0], n.episodes[len(n.episodes)-maxEpisodes:]...)
		}
	}
	f := t.flaps(n, now)
	tr := Transition{
		Node: id, From: n.state, To: to, Reason: reason,
		Silent: max(now.Sub(n.lastHeard), 0), LastHeard: n.lastHeard, BootID: n.bootID,
		Flaps: f, Grace: t.grace(f),
	}
	n.state = to
	return tr
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

// NextDeadline returns the earliest time at or after now at which Tick may
// announce a transition or change the mass-silence guard, absent new inputs
// (heartbeats, seeds, maintenance, disconnect notices, overrides); ok is
// false when nothing is pending (every node down, in maintenance, or none
// known). A Tick before it announces nothing, so a driver on a virtual clock
// may jump there instead of stepping; a Tick at it may still announce
// nothing (a flap leaving the window, an override ending): ask again. It
// changes nothing.
func (t *Tracker) NextDeadline(now time.Time) (at time.Time, ok bool) {
	s := t.cfg.SuspectAfter
	held := t.heldAt(now)
	consider := func(d time.Time) {
		if d.Before(now) {
			d = now
		}
		if !ok || d.Before(at) {
			at, ok = d, true
		}
	}
	for _, n := range t.nodes {
		if n.maintenance {
			continue
		}
		if !n.disconnected && n.state != model.StateUp && now.Sub(n.lastHeard) <= s {
			consider(now) // heard: announced up at the next Tick
			continue
		}
		switch n.state {
		case "", model.StateUp:
			if n.disconnected {
				consider(t.holdUntil)
			} else {
				consider(maxTime(t.holdUntil, n.ref().Add(s+1)))
			}
		case model.StateSuspect:
			if held {
				continue // no down until an input clears the guard
			}
			d := n.ref().Add(s + t.grace(t.flaps(n, now)) + 1)
			// The grace shrinks when a flap leaves the window: no later than that.
			from := now.Add(-t.cfg.FlapWindow)
			for _, e := range n.episodes {
				if e.After(from) {
					if x := e.Add(t.cfg.FlapWindow); x.Before(d) {
						d = x
					}
					break
				}
			}
			consider(maxTime(t.holdUntil, d))
		}
	}
	if ok && t.overrideUntil.After(now) && t.overrideUntil.Before(at) {
		at = t.overrideUntil
	}
	return at, ok
}

// heldAt reports whether the mass-silence guard holds down verdicts at now
// (as guard would decide it, without recording it).
func (t *Tracker) heldAt(now time.Time) bool {
	judged, silent := 0, 0
	for _, n := range t.nodes {
		if n.maintenance || n.state == model.StateDown {
			continue
		}
		judged++
		if n.judged(now) > t.cfg.SuspectAfter {
			silent++
		}
	}
	tripped := judged >= 2 && float64(silent) > t.cfg.MaxSilentShare*float64(judged)
	return tripped && !now.Before(t.overrideUntil)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
