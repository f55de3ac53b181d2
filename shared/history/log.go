// Package history folds the event stream into what an operator asks about
// afterwards: each node's history (verdicts, flaps, incidents, repairs to and
// from it, corrupt shards, full or read-only episodes) and each incident's
// timeline (suspect, down, plan, progress, healthy).
//
// Log is the pure fold: events in, answers out, no I/O and no clock. The
// stream side (Follow, Read) lives in stream.go.
package history

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/units"
)

// Event is one message of the events stream, as the fold needs it.
type Event struct {
	Subject string
	// Time is when the stream stored it; the payload's own timestamp wins
	// where it has one.
	Time time.Time
	// TraceID is the W3C trace id the message headers carried ("" if none).
	TraceID string
	Data    []byte
}

// Step phases of an incident's timeline.
const (
	PhaseSuspect  = "suspect"
	PhaseDown     = "down"
	PhasePlan     = "plan"
	PhaseProgress = "progress"
	PhaseHealthy  = "healthy"
	PhaseUp       = "up"
	PhaseFailed   = "failed"
	PhaseLost     = "lost"
)

// Step is one point of an incident's timeline.
type Step struct {
	Time   time.Time `json:"time"`
	Phase  string    `json:"phase"`
	Detail string    `json:"detail"`
}

// Incident is one node's loss and its repair, from the down verdict (or the
// first plan of an in-place heal) until the cluster was healthy again.
type Incident struct {
	ID            string    `json:"id"`
	Node          string    `json:"node"`
	TraceID       string    `json:"trace_id,omitempty"`
	Opened        time.Time `json:"opened"`
	Healed        time.Time `json:"healed,omitzero"`
	PlannedShards int       `json:"planned_shards"`
	PlannedBytes  int64     `json:"planned_bytes"`
	Repaired      int       `json:"repaired"`
	RepairedBytes int64     `json:"repaired_bytes"`
	Failed        int       `json:"failed"`
	Lost          int       `json:"lost"`
	Steps         []Step    `json:"steps"`

	lastProgress time.Time // the last progress step
}

// Entry kinds of a node's history.
const (
	KindSuspect      = "suspect"       // silent past the suspect timeout
	KindDown         = "down"          // declared down: an incident opens
	KindUp           = "up"            // back after a down verdict
	KindFlap         = "flap"          // back within the grace: no incident
	KindPlan         = "plan"          // a plan re-homes this node's shards
	KindRepairTo     = "repair_to"     // verified copies landed on this node
	KindRepairFrom   = "repair_from"   // this node was the source of copies
	KindRepairFailed = "repair_failed" // copies to this node failed
	KindLost         = "lost"          // shards this node held were lost
	KindCorrupt      = "corrupt"       // a shard failed its checksum here
	KindFull         = "full"          // the disk refused writes for room
	KindReadOnly     = "read_only"     // the filesystem refused writes
	KindWritable     = "writable"      // writes accepted again
	KindDraining     = "draining"      // an operator started draining it
	KindDrained      = "drained"       // it holds nothing any more
)

// Entry is one thing that happened to a node. Repairs and lost shards are
// counted into one entry per incident and direction (First..Time spans them).
type Entry struct {
	Time     time.Time `json:"time"`
	First    time.Time `json:"first,omitzero"`
	Kind     string    `json:"kind"`
	Incident string    `json:"incident,omitempty"`
	Shards   int       `json:"shards,omitempty"`
	Bytes    int64     `json:"bytes,omitempty"`
	Detail   string    `json:"detail"`
}

// progressEvery is the least time between two progress steps of an incident.
const progressEvery = 15 * time.Second

// maxFailedSteps caps the failed steps of one incident's timeline; later
// failures only count.
const maxFailedSteps = 3

// Log folds events into node histories and incidents. Events should arrive
// in stream order. Not safe for concurrent use.
type Log struct {
	nodes     map[string]*nodeLog
	incidents map[string]*Incident
	open      []string // ids of unhealed incidents, oldest first
}

type nodeLog struct {
	entries []Entry
	// counted is where the running count of (kind, incident) lives in entries.
	counted map[string]int
	suspect time.Time // the last suspect verdict not yet followed by down or up
	silent  time.Duration
	down    bool
}

// NewLog returns an empty log.
func NewLog() *Log {
	return &Log{nodes: map[string]*nodeLog{}, incidents: map[string]*Incident{}}
}

// Add folds one event in. Events of subjects the log does not know, and
// payloads it cannot decode, are ignored.
func (l *Log) Add(e Event) {
	switch {
	case strings.HasPrefix(e.Subject, event.SuspectPrefix),
		strings.HasPrefix(e.Subject, event.DownPrefix),
		strings.HasPrefix(e.Subject, event.UpPrefix):
		var v event.Verdict
		if decode(e, &v, &v.Header) {
			l.verdict(e, v)
		}
	case strings.HasPrefix(e.Subject, event.PlanPrefix):
		var p event.Plan
		if decode(e, &p, &p.Header) {
			l.plan(e, p)
		}
	case strings.HasPrefix(e.Subject, event.DonePrefix):
		var d event.Done
		if decode(e, &d, &d.Header) {
			l.done(e, d)
		}
	case strings.HasPrefix(e.Subject, event.FailedPrefix):
		var f event.Failed
		if decode(e, &f, &f.Header) {
			l.failed(e, f)
		}
	case strings.HasPrefix(e.Subject, event.LostPrefix):
		var s event.Lost
		if decode(e, &s, &s.Header) {
			l.lost(e, s)
		}
	case strings.HasPrefix(e.Subject, event.CorruptPrefix):
		var c event.Corrupt
		if decode(e, &c, &c.Header) {
			l.node(c.Node).add(Entry{Time: c.TS, Kind: KindCorrupt, Shards: 1,
				Detail: fmt.Sprintf("shard %s failed its checksum (found on %s): %s", c.Shard, c.Found, c.Reason)})
		}
	case strings.HasPrefix(e.Subject, event.DrainingPrefix), strings.HasPrefix(e.Subject, event.DrainedPrefix):
		var d event.Drain
		if decode(e, &d, &d.Header) {
			kind, detail := KindDraining, fmt.Sprintf("drain started by %s: %d shards (%s) to move", d.By, d.Shards, units.Bytes(d.Bytes))
			if strings.HasPrefix(e.Subject, event.DrainedPrefix) {
				kind, detail = KindDrained, fmt.Sprintf("drained: %d shards (%s) moved off; rehome node remove forgets it", d.Shards, units.Bytes(d.Bytes))
			}
			l.node(d.Node).add(Entry{Time: d.TS, Kind: kind, Shards: d.Shards, Bytes: d.Bytes, Detail: detail})
		}
	case strings.HasPrefix(e.Subject, event.ConditionPrefix):
		var c event.Condition
		if decode(e, &c, &c.Header) {
			l.condition(e, c)
		}
	case e.Subject == event.HealProgress:
		var p event.Progress
		if decode(e, &p, &p.Header) {
			l.progress(e, p)
		}
	}
}

// decode unmarshals e's payload into p, whose header h gets e.Time when the
// payload carries no timestamp. It reports whether the payload was usable.
func decode(e Event, p any, h *event.Header) bool {
	if json.Unmarshal(e.Data, p) != nil {
		return false
	}
	if h.TS.IsZero() {
		h.TS = e.Time.UTC()
	}
	return true
}

func (l *Log) node(id string) *nodeLog {
	n := l.nodes[id]
	if n == nil {
		n = &nodeLog{counted: map[string]int{}}
		l.nodes[id] = n
	}
	return n
}

func (n *nodeLog) add(e Entry) { n.entries = append(n.entries, e) }

// count adds shards and bytes to the running entry of kind and incident,
// starting one at t if there is none; detail describes the running totals.
func (n *nodeLog) count(t time.Time, kind, incident string, shards int, bytes int64, detail func(Entry) string) {
	key := kind + "\x00" + incident
	i, ok := n.counted[key]
	if !ok {
		i = len(n.entries)
		n.counted[key] = i
		n.entries = append(n.entries, Entry{First: t, Kind: kind, Incident: incident})
	}
	e := &n.entries[i]
	e.Time = t
	e.Shards += shards
	e.Bytes += bytes
	e.Detail = detail(*e)
}

func (l *Log) verdict(e Event, v event.Verdict) {
	t := v.TS
	n := l.node(v.Node)
	switch v.State {
	case "suspect":
		n.suspect, n.silent = t, time.Duration(v.SilentMS)*time.Millisecond
		n.add(Entry{Time: t, Kind: KindSuspect, Detail: fmt.Sprintf("silent %s (%s)", ms(v.SilentMS), v.Reason)})
	case "down":
		n.add(Entry{Time: t, Kind: KindDown, Incident: v.Incident, Detail: fmt.Sprintf("declared down after %s silent (%s)", ms(v.SilentMS), v.Reason)})
		if v.Incident != "" {
			inc := l.openIncident(v.Incident, v.Node, t)
			if inc.TraceID == "" {
				inc.TraceID = e.TraceID
			}
			if !n.suspect.IsZero() {
				inc.Steps = append(inc.Steps, Step{Time: n.suspect, Phase: PhaseSuspect, Detail: v.Node + " stopped answering"})
			}
			inc.Steps = append(inc.Steps, Step{Time: t, Phase: PhaseDown, Detail: fmt.Sprintf("%s declared down after %s silent", v.Node, ms(v.SilentMS))})
		}
		n.suspect, n.down = time.Time{}, true
	case "up":
		switch {
		case n.down:
			n.add(Entry{Time: t, Kind: KindUp, Detail: "back after a down verdict: " + v.Reason})
			for _, id := range l.open {
				if inc := l.incidents[id]; inc.Node == v.Node {
					inc.Steps = append(inc.Steps, Step{Time: t, Phase: PhaseUp, Detail: v.Node + " is back; its surplus copies will be trimmed"})
				}
			}
		case !n.suspect.IsZero():
			silent := (n.silent + t.Sub(n.suspect)).Round(time.Millisecond)
			n.add(Entry{Time: t, Kind: KindFlap, Detail: fmt.Sprintf("back after %s silent, within the grace: no incident", silent)})
		default:
			n.add(Entry{Time: t, Kind: KindUp, Detail: "heard: " + v.Reason})
		}
		n.suspect, n.down = time.Time{}, false
	}
}

// openIncident returns incident id, creating it (open) if it is new.
func (l *Log) openIncident(id, node string, t time.Time) *Incident {
	if inc := l.incidents[id]; inc != nil {
		return inc
	}
	inc := &Incident{ID: id, Node: node, Opened: t}
	l.incidents[id] = inc
	l.open = append(l.open, id)
	return inc
}

// incidentNode returns the node an incident id names: detector incidents are
// "<node>-<unix ms>", in-place heals "heal-<node>". Housekeeping tasks
// (trims, orphan deletes) and planned moves (drains, rebalancing) belong to
// no incident: "".
func incidentNode(id string) string {
	if node, ok := strings.CutPrefix(id, "heal-"); ok {
		return node
	}
	if strings.HasPrefix(id, "drain-") || id == "rebalance" {
		return "" // planned moves, not a loss
	}
	if i := strings.LastIndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return ""
}

// plannedMove reports whether tasks of incident id are planned moves (a
// drain's, the rebalancer's): copies worth a node's history, no incident.
func plannedMove(id string) bool { return strings.HasPrefix(id, "drain-") || id == "rebalance" }

func (l *Log) plan(e Event, p event.Plan) {
	t := p.TS
	node := incidentNode(p.Incident)
	if node == "" {
		return
	}
	inc := l.openIncident(p.Incident, node, t)
	if inc.TraceID == "" {
		inc.TraceID = e.TraceID
	}
	inc.PlannedShards += p.Shards
	inc.PlannedBytes += p.Bytes
	inc.Healed = time.Time{}
	l.reopen(inc.ID)
	targets := make([]string, 0, len(p.Targets))
	for _, tg := range p.Targets {
		targets = append(targets, tg.Node)
	}
	detail := fmt.Sprintf("%d shards, %s to %d targets (%s)", p.Shards, units.Bytes(p.Bytes), len(targets), strings.Join(targets, ", "))
	if p.RackRelaxed > 0 {
		detail += fmt.Sprintf("; %d placed in a rack already holding a copy", p.RackRelaxed)
	}
	inc.Steps = append(inc.Steps, Step{Time: t, Phase: PhasePlan, Detail: detail})
	l.node(node).count(t, KindPlan, inc.ID, p.Shards, p.Bytes, func(en Entry) string {
		return fmt.Sprintf("%d shards (%s) planned to new homes", en.Shards, units.Bytes(en.Bytes))
	})
}

// reopen puts a healed incident back on the open list (a later plan for it).
func (l *Log) reopen(id string) {
	if !slices.Contains(l.open, id) {
		l.open = append(l.open, id)
	}
}

func (l *Log) done(e Event, d event.Done) {
	t := d.TS
	if inc := l.incidents[d.Incident]; inc != nil {
		inc.Repaired++
		inc.RepairedBytes += d.Bytes
	}
	if incidentNode(d.Incident) == "" && !plannedMove(d.Incident) {
		return // trims and orphan deletes are housekeeping, not repairs
	}
	l.node(d.Target).count(t, KindRepairTo, d.Incident, 1, d.Bytes, func(en Entry) string {
		return fmt.Sprintf("%d %ss verified here (%s)", en.Shards, d.Kind, units.Bytes(en.Bytes))
	})
	if d.Source != "" {
		l.node(d.Source).count(t, KindRepairFrom, d.Incident, 1, d.Bytes, func(en Entry) string {
			return fmt.Sprintf("source of %d copies to other nodes (%s)", en.Shards, units.Bytes(en.Bytes))
		})
	}
}

func (l *Log) failed(e Event, f event.Failed) {
	t := f.TS
	if incidentNode(f.Incident) == "" {
		return
	}
	if inc := l.incidents[f.Incident]; inc != nil {
		inc.Failed++
		if inc.Failed <= maxFailedSteps {
			inc.Steps = append(inc.Steps, Step{Time: t, Phase: PhaseFailed, Detail: fmt.Sprintf("%s of %s to %s failed (attempt %d): %s", f.Kind, f.Shard, f.Target, f.Attempt, f.Error)})
		}
	}
	l.node(f.Target).count(t, KindRepairFailed, f.Incident, 1, 0, func(en Entry) string {
		return fmt.Sprintf("%d copies to this node failed; last: %s", en.Shards, f.Error)
	})
}

func (l *Log) lost(e Event, s event.Lost) {
	t := s.TS
	for _, id := range l.open {
		inc := l.incidents[id]
		if !slices.Contains(s.Nodes, inc.Node) {
			continue
		}
		inc.Lost++
		if inc.Lost == 1 {
			inc.Steps = append(inc.Steps, Step{Time: t, Phase: PhaseLost, Detail: fmt.Sprintf("shard %s (object %q) has no live copy left", s.Shard, s.Key)})
		}
	}
	for _, node := range s.Nodes {
		l.node(node).count(t, KindLost, "", 1, 0, func(en Entry) string {
			return fmt.Sprintf("%d shards it held were lost (last: %s of %q)", en.Shards, s.Shard, s.Key)
		})
	}
}

func (l *Log) condition(e Event, c event.Condition) {
	kind, detail := KindWritable, "writes accepted again"
	switch {
	case c.ReadOnly:
		kind, detail = KindReadOnly, "the filesystem refuses writes (read-only)"
	case c.Full:
		kind, detail = KindFull, "the disk refuses new shards for lack of room"
	}
	if c.Reason != "" {
		detail += ": " + c.Reason
	}
	l.node(c.Node).add(Entry{Time: c.TS, Kind: kind, Detail: detail})
}

// progress adds progress steps to open incidents and closes them when the
// cluster is whole again.
func (l *Log) progress(e Event, p event.Progress) {
	t := p.TS
	still := l.open[:0]
	for _, id := range l.open {
		inc := l.incidents[id]
		if p.Node != "" && p.Node != inc.Node {
			still = append(still, id) // narrowed to another node's heal
			continue
		}
		if p.UnderReplicated == 0 && inc.PlannedShards > 0 && !t.Before(inc.Opened) {
			inc.Healed = t
			detail := "every shard back at full redundancy"
			if p.Lost > 0 {
				detail = fmt.Sprintf("every shard that can be restored is; %d lost", p.Lost)
			}
			inc.Steps = append(inc.Steps, Step{Time: t, Phase: PhaseHealthy, Detail: detail})
			continue
		}
		still = append(still, id)
		if inc.PlannedShards > 0 && t.Sub(inc.lastProgress) >= progressEvery {
			inc.lastProgress = t
			detail := fmt.Sprintf("%d under-replicated, %s to go", p.UnderReplicated, units.Bytes(p.BytesRemaining))
			if p.RateBytesPerSec > 0 {
				detail += fmt.Sprintf(" at %s/s", units.Bytes(int64(p.RateBytesPerSec)))
			}
			if p.Paused {
				detail += " (heal paused)"
			}
			if p.Stalled {
				detail += " (stalled)"
			}
			inc.Steps = append(inc.Steps, Step{Time: t, Phase: PhaseProgress, Detail: detail})
		}
	}
	l.open = still
}

// Incidents returns the incidents opened at or after since, newest first.
// The result shares nothing with the log.
func (l *Log) Incidents(since time.Time) []Incident {
	var out []Incident
	for _, inc := range l.incidents {
		if inc.Opened.Before(since) {
			continue
		}
		c := *inc
		c.Steps = slices.Clone(inc.Steps)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Incident) int {
		return cmp.Or(b.Opened.Compare(a.Opened), strings.Compare(a.ID, b.ID))
	})
	return out
}

// Node returns node id's history in time order (a running count sorts by
// its latest event).
func (l *Log) Node(id string) []Entry {
	n := l.nodes[id]
	if n == nil {
		return nil
	}
	out := slices.Clone(n.entries)
	slices.SortStableFunc(out, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	return out
}

func ms(v int64) string {
	return (time.Duration(v) * time.Millisecond).Round(time.Millisecond).String()
}
