package core

import (
	"fmt"
	"strings"

	"github.com/rehome/rehome/shared/event"
)

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

// decodeResult decodes a message of the results consumer by its subject: a
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

// checkResult refuses a well-formed result the planner must not act on: one
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

// knowsNode reports whether the view has heard of node id (a registration,
// a map entry or a verdict naming it).
func (v *View) KnowsNode(id string) bool {
	_, ok := v.NodeIndex[id]
	return ok
}
