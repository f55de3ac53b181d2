package core

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// NonFinalRecheck is how soon a task reported failed but not final (its
// mover retries it) is checked again.
const NonFinalRecheck = 10 * time.Second

// Landing is what a mover's Done for a copy or a rebuilt piece asks of the
// map: nothing (InPlace: a copy back onto a holder that lacked the shard
// counts at once; Stale: a late report of a copy deleted since), or the
// target added to the shard's entry. Entry and Rev are the entry as read
// when the task was issued (nil: read it first; a shard the view does not
// know may have been deleted while its copy ran).
type Landing struct {
	InPlace bool
	Stale   bool
	Entry   *model.Placement
	Rev     uint64
}

// Land records a copy's Done (d.Kind is not a delete) at now and says what
// the map needs. A copy back in place is verified here; any other copy is
// verified by the caller once its map write succeeded (see Verified). The
// flight itself ends when the map shows the new holder (UpsertPlacement),
// so the shard is never planned twice in between.
//
// A report of no task in flight is a result a planner that took over did
// not see issued (it reads the entry and adds the target), or a late or
// repeated report of an earlier task. Such a report naming a holder the
// entry lately lost (a trim, a drop) is Stale: the copy it reports was
// deleted or found missing since, and listing it again would list a copy
// no disk holds. Stale changes nothing: the shard is level-triggered, and a
// copy nothing lists is collected as an orphan.
func (v *View) Land(d event.Done, now time.Time) Landing {
	h, ok := v.IDs.Lookup(d.Shard)
	if !ok {
		return Landing{}
	}
	if r, known := v.NodeIndex[d.Target]; known && v.LandedInPlace(h, r, d.Task) {
		v.VerifiedCopy(d.Bytes, now)
		return Landing{InPlace: true}
	}
	f := v.Flights[h]
	if f == nil || f.Task != d.Task {
		if r, known := v.NodeIndex[d.Target]; known && v.unlisted.has(h, r) {
			return Landing{Stale: true}
		}
		return Landing{} // the service reads the entry
	}
	if f.Entry == nil { // seeded at a takeover
		return Landing{}
	}
	e := *f.Entry
	e.Nodes = slices.Clone(e.Nodes)
	return Landing{Entry: &e, Rev: f.Rev}
}

// AddHolder returns entry p with target added to its holders, and whether
// that changed it (false: a redelivered result already recorded). The down
// holders stay listed. It does not modify p.
func AddHolder(p model.Placement, target string) (model.Placement, bool) {
	if slices.Contains(p.Nodes, target) {
		return p, false
	}
	p.Nodes = append(slices.Clone(p.Nodes), target)
	return p, true
}

// Verified counts a copy whose map write succeeded (for rate and progress).
func (v *View) Verified(bytes int64, now time.Time) { v.VerifiedCopy(bytes, now) }

// EndTrimTask ends the trim of shard whose delete task is task, if it is
// the one in flight; it reports whether it did (a slot is free: plan again).
func (v *View) EndTrimTask(shard, task string) bool {
	h, ok := v.IDs.Lookup(shard)
	if !ok {
		return false
	}
	if t := v.Trims[h]; t != nil && t.Task == task {
		v.EndTrim(h)
		return true
	}
	return false
}

// FailOutcome is what a copy or rebuild failure report changed.
type FailOutcome struct {
	// Ended: the task in flight ended as a failed attempt (plan again).
	Ended bool
	// GaveUp is the planner's final failure report to publish when the
	// shard was parked after its last attempt (nil: none).
	GaveUp *event.Failed
	// NextAttempt is the attempt number the shard is re-planned with.
	NextAttempt int
}

// Fail records a failure report f of a copy or rebuild task at now. A final
// one ends the task in flight it names and re-plans the shard with backoff
// (or parks it), avoiding that target unless the report blames the source
// (f.Side: then another source is read first); a non-final one (the mover retries)
// keeps it in flight and has it checked again within NonFinalRecheck. Reports
// of older attempts change nothing.
func (v *View) Fail(f event.Failed, now time.Time) FailOutcome {
	h, ok := v.IDs.Lookup(f.Shard)
	if !ok {
		return FailOutcome{}
	}
	fl := v.Flights[h]
	if (fl == nil || fl.Task != f.Task) && f.Kind == event.KindRebuild {
		// The piece named may have landed already: find the task by its stripe.
		if g := v.Group(h); g != nil && g.RB != nil && g.RB.Task == f.Task {
			if open := v.OpenPieces(g.RB); len(open) > 0 {
				fl = v.Flights[open[0]]
				h = open[0]
			}
		}
	}
	if fl == nil || fl.Task != f.Task {
		return FailOutcome{}
	}
	if !f.Final {
		if d := now.Add(NonFinalRecheck); d.Before(fl.Deadline) {
			fl.Deadline = d
		}
		return FailOutcome{}
	}
	out := FailOutcome{Ended: true, GaveUp: v.FailFlight(h, fl, f.Error, now, blameOf(f.Side))}
	if r := v.Retries[h]; r != nil {
		out.NextAttempt = r.Attempt
	}
	return out
}

// Expired is a task in flight past its deadline: whether it still waits in
// the work queue (Seq, when known) decides between extending and failing it.
type Expired struct {
	Shard uint32
	Task  string
	Seq   uint64 // its message in the work-queue stream (0: unknown)
	Trim  bool
}

// ExpiredTasks lists the copies (one piece per rebuild) and trims past
// their deadline at now.
func (v *View) ExpiredTasks(now time.Time) []Expired {
	copies, trims := v.Expired(now)
	out := make([]Expired, 0, len(copies)+len(trims))
	for _, h := range copies {
		f := v.Flights[h]
		out = append(out, Expired{h, f.Task, f.Seq, false})
	}
	for _, h := range trims {
		t := v.Trims[h]
		out = append(out, Expired{h, t.Task, t.Seq, true})
	}
	return out
}

// ExpiryOutcome is what resolving an expired task changed.
type ExpiryOutcome struct {
	Extended bool          // still queued: its deadline moved on
	TimedOut bool          // forgotten (a trim) or failed (a copy): plan again
	GaveUp   *event.Failed // a copy's last attempt: the report to publish
}

// ResolveExpired decides an expired task e at now, given whether its
// message still waits in the work queue: a queued task gets timeout more
// (no mover took it yet, or one is retrying it); otherwise an expired copy
// counts as a failed attempt and an expired trim is forgotten. A task no
// longer the one in flight (it ended meanwhile) changes nothing.
func (v *View) ResolveExpired(e Expired, queued bool, now time.Time, timeout time.Duration) ExpiryOutcome {
	if e.Trim {
		t := v.Trims[e.Shard]
		if t == nil || t.Task != e.Task {
			return ExpiryOutcome{}
		}
		if queued {
			t.Deadline = now.Add(timeout)
			return ExpiryOutcome{Extended: true}
		}
		v.EndTrim(e.Shard)
		return ExpiryOutcome{TimedOut: true}
	}
	f := v.Flights[e.Shard]
	if f == nil || f.Task != e.Task {
		return ExpiryOutcome{}
	}
	if queued {
		f.Deadline = now.Add(timeout)
		if f.RB != nil {
			for _, p := range v.OpenPieces(f.RB) {
				v.Flights[p].Deadline = f.Deadline
			}
		}
		return ExpiryOutcome{Extended: true}
	}
	return ExpiryOutcome{TimedOut: true, GaveUp: v.FailFlight(e.Shard, f, "no result within the task timeout", now, blameNone)}
}

// Subject labels of the results consumer's messages in
// rehome_planner_malformed_events_total.
var (
	SubjectDone    = strings.TrimSuffix(event.DonePrefix, ".")
	SubjectFailed  = strings.TrimSuffix(event.FailedPrefix, ".")
	SubjectCorrupt = strings.TrimSuffix(event.CorruptPrefix, ".")
)

// result is one message of the results consumer, decoded: exactly one field is set.
type result struct {
	Done    *event.Done
	Failed  *event.Failed
	Corrupt *event.Corrupt
}

// DecodeResult decodes a message of the results consumer by its subject: a
// Done, a Failed, or a Corrupt naming the subject's node. It returns the
// subject label to count a refusal under and an error wrapping
// event.ErrMalformed for anything else. It is a pure function.
func DecodeResult(subject string, data []byte) (label string, r result, err error) {
	switch {
	case strings.HasPrefix(subject, event.DonePrefix):
		var d event.Done
		if err := event.Decode(data, &d); err != nil {
			return SubjectDone, r, err
		}
		r.Done = &d
		return SubjectDone, r, nil
	case strings.HasPrefix(subject, event.FailedPrefix):
		var f event.Failed
		if err := event.Decode(data, &f); err != nil {
			return SubjectFailed, r, err
		}
		r.Failed = &f
		return SubjectFailed, r, nil
	case strings.HasPrefix(subject, event.CorruptPrefix):
		var c event.Corrupt
		if err := event.Decode(data, &c); err != nil {
			return SubjectCorrupt, r, fmt.Errorf("corrupt report on %s: %w", subject, err)
		}
		if err := event.CheckSubjectNode(subject, c.Node); err != nil {
			return SubjectCorrupt, r, err
		}
		r.Corrupt = &c
		return SubjectCorrupt, r, nil
	}
	return "other", r, fmt.Errorf("%w: unexpected result subject %.80q", event.ErrMalformed, subject)
}

// maxUnmapped bounds view.unmapped.
const maxUnmapped = 4096

// noteUnmapped remembers that task was copying (or rebuilding) shard id
// when id left the map or was found queued without an entry: its result is
// expected (see checkResult).
func (v *View) noteUnmapped(id, task string) {
	if v.unmapped == nil {
		v.unmapped = make(map[string]string)
	}
	if _, ok := v.unmapped[id]; !ok && len(v.unmapped) >= maxUnmapped {
		for k := range v.unmapped { // forget one: its copy just stays unmapped
			delete(v.unmapped, k)
			break
		}
	}
	v.unmapped[id] = task
}

// noteQueuedUnmapped remembers the shards of a queued copy or rebuild whose
// shard the map does not know (seedFlight).
func (v *View) noteQueuedUnmapped(t event.Task) {
	switch t.Kind {
	case event.KindCopy:
		v.noteUnmapped(t.Shard, t.Task)
	case event.KindRebuild:
		for _, p := range t.Rebuild {
			v.noteUnmapped(p.Shard, t.Task)
		}
	}
}

// CheckResult refuses a well-formed result the planner must not act on: one
// naming a node the view has never heard of (not registered, in no map
// entry, no verdict: event.ErrUnknownNode), or the result of a copy or
// rebuild of a shard the map does not know (event.ErrUnknownShard), unless
// that copy was in flight when its shard left the map (its object was
// deleted): then the copy is deleted (onDone) or its failure ignored. The
// planner's own reports of parked shards pass unchecked.
func (v *View) CheckResult(r result) error {
	switch {
	case r.Done != nil:
		d := r.Done
		return v.checkNamed("done", d.Task, d.Kind, d.Shard, d.Target, true)
	case r.Failed != nil:
		f := r.Failed
		if !f.RetryAt.IsZero() {
			return nil
		}
		return v.checkNamed("failed", f.Task, f.Kind, f.Shard, f.Target, f.Final)
	case r.Corrupt != nil:
		c := r.Corrupt
		if _, ok := v.NodeIndex[c.Node]; !ok {
			return fmt.Errorf("corrupt report of %s: %w %s", c.Shard, event.ErrUnknownNode, c.Node)
		}
		if _, ok := v.IDs.Lookup(c.Shard); !ok {
			return fmt.Errorf("corrupt report from %s: %w: %s", c.Node, event.ErrUnknownShard, c.Shard)
		}
	}
	return nil
}

// checkNamed checks the node and shard a done or failed report names (see
// checkResult); last forgets an unmapped copy once its last report is in.
func (v *View) checkNamed(what, task, kind, shard, target string, last bool) error {
	if _, ok := v.NodeIndex[target]; !ok {
		return fmt.Errorf("%s of task %s: %w %s", what, task, event.ErrUnknownNode, target)
	}
	if kind == event.KindDelete { // deletes are of unmapped copies
		return nil
	}
	if _, ok := v.IDs.Lookup(shard); ok {
		return nil
	}
	if t, ok := v.unmapped[shard]; ok && t == task {
		if last {
			delete(v.unmapped, shard)
		}
		return nil
	}
	return fmt.Errorf("%s of task %s: %w: %s", what, task, event.ErrUnknownShard, shard)
}

// KnowsNode reports whether the view has heard of node id (a registration,
// a map entry or a verdict naming it).
func (v *View) KnowsNode(id string) bool {
	_, ok := v.NodeIndex[id]
	return ok
}
