package mover

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

// Class says whether retrying a failed task attempt can help.
type Class int

// Failure classes.
const (
	// Transient failures (network, 5xx, a source that may come back, an
	// unreachable target) are retried with backoff until MaxDeliver.
	Transient Class = iota
	// Permanent failures (a malformed task, a conflicting copy on the target,
	// a checksum the target refused, every source holding wrong bytes) are
	// given up at once, with a dead letter, so the planner re-plans the shard.
	Permanent
	// TargetFull failures (the target answered 507: its disk is full or
	// read-only) are given up at once too, but without a dead letter: the
	// task was sound, its target could not take it, and the planner re-plans
	// the shard onto another node.
	TargetFull
)

func (c Class) String() string {
	switch c {
	case Permanent:
		return "permanent"
	case TargetFull:
		return "target_full"
	}
	return "transient"
}

// Final reports whether a failure of class c ends the task at once.
func (c Class) Final() bool { return c != Transient }

// Errors an attempt can end with, besides those of shardapi and the network.
var (
	// errCorrupt: a source served (or announced) bytes that do not match the task.
	errCorrupt = errors.New("source bytes do not match the task")
	// errConflict: the target already holds the shard with another checksum.
	errConflict = errors.New("target holds the shard with another checksum")
	// errUnknownNode: no registration for a node id in the nodes bucket.
	errUnknownNode = errors.New("node not registered")
)

// targetError is a failure of a task's target: unreachable, unknown,
// refusing the shard (conflict, checksum, full) or failing its write.
type targetError struct {
	node string
	err  error
}

func (e *targetError) Error() string { return "target " + e.node + ": " + e.err.Error() }

// Unwrap exposes the target's error to errors.Is and errors.As.
func (e *targetError) Unwrap() error { return e.err }

// sourceFailure is why one source could not supply a shard.
type sourceFailure struct {
	node string
	err  error
}

// sourcesError reports that no source could supply the shard. It is permanent
// when there was nothing to try or every source served wrong bytes (retrying
// the same sources yields the same bytes); otherwise a source may come back.
type sourcesError struct {
	failures []sourceFailure
}

func (e *sourcesError) Error() string {
	if len(e.failures) == 0 {
		return "no source other than the target"
	}
	parts := make([]string, len(e.failures))
	for i, f := range e.failures {
		parts[i] = f.node + ": " + f.err.Error()
	}
	return "no source could supply the shard: " + strings.Join(parts, "; ")
}

// Unwrap exposes every source's error to errors.Is and errors.As.
func (e *sourcesError) Unwrap() []error {
	errs := make([]error, len(e.failures))
	for i, f := range e.failures {
		errs[i] = f.err
	}
	return errs
}

func (e *sourcesError) allCorrupt() bool {
	for _, f := range e.failures {
		if !errors.Is(f.err, errCorrupt) {
			return false
		}
	}
	return true
}

// Classify decides whether an attempt's error is worth retrying. It is a pure
// function of the error value: a target answering 507 (disk full or
// read-only) is TargetFull; malformed tasks, conflicts, checksum refusals,
// other 4xx answers and sources that all served wrong bytes are Permanent;
// everything else (network errors, other 5xx, 404 from a source, unknown or
// unreachable nodes) is Transient. A rebuild that failed for several pieces
// is Transient when any of those pieces' failures is, TargetFull when all
// are, else Permanent.
func Classify(err error) Class {
	var rb *rebuildError
	var srcs *sourcesError
	var st *shardapi.StatusError
	switch {
	case err == nil:
		return Transient
	case errors.As(err, &rb):
		class := TargetFull
		for _, f := range rb.failures {
			switch Classify(f.err) {
			case Transient:
				return Transient
			case Permanent:
				class = Permanent
			}
		}
		return class
	case errors.As(err, &srcs):
		if srcs.allCorrupt() {
			return Permanent
		}
		return Transient
	case errors.Is(err, model.ErrInvalid), errors.Is(err, event.ErrMalformed),
		errors.Is(err, errConflict), errors.Is(err, errCorrupt):
		return Permanent
	case errors.As(err, &st):
		switch {
		case st.Code == http.StatusInsufficientStorage:
			return TargetFull
		case st.Permanent():
			return Permanent
		}
		return Transient
	}
	return Transient
}

// Side says whose fault an attempt's error was, for event.Failed.Side: a
// *targetError is the target's, a *sourcesError (no source could supply
// the shard, also under a stripe that could not be read) the sources'; a
// rebuild whose pieces failed is blamed on one side only when every failed
// piece blames it. Anything else (a malformed task, a cancelled attempt,
// pieces that disagree) is unknown: "". It is a pure function of the error.
func Side(err error) string {
	var rb *rebuildError
	var tg *targetError
	var srcs *sourcesError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &rb):
		side := ""
		for i, f := range rb.failures {
			s := Side(f.err)
			if s == "" || i > 0 && s != side {
				return ""
			}
			side = s
		}
		return side
	case errors.As(err, &tg):
		return event.SideTarget
	case errors.As(err, &srcs):
		return event.SideSource
	}
	return ""
}

// Backoff returns the delay before a task delivered attempt times (1-based)
// is retried: min, doubling per earlier attempt, capped at max.
func Backoff(attempt int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		if d > max/2 { // doubling would pass max (or overflow)
			return max
		}
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// maxErrorLen bounds the error text of a Failed event.
const maxErrorLen = 400

// oneLine renders err as a single line of at most maxErrorLen bytes.
func oneLine(err error) string {
	s := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	if len(s) > maxErrorLen {
		s = strings.ToValidUTF8(s[:maxErrorLen-3], "") + "..."
	}
	return s
}

// decodeTask decodes a task message and checks that it was published on its
// target's subject and, for a rebuild, that its pieces can form one stripe
// (checkStripe). Every failure wraps event.ErrMalformed.
func decodeTask(subject string, data []byte, t *event.Task) error {
	if err := event.Decode(data, t); err != nil {
		return err
	}
	if err := event.CheckSubjectNode(subject, t.Target); err != nil {
		return err
	}
	if t.Kind == event.KindRebuild {
		return checkStripe(*t)
	}
	return nil
}
