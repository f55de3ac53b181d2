package core

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Flight is a copy task issued and not yet resolved, or one piece of a
// rebuild task (rb set: the task's reads are charged there, not in source).
type Flight struct {
	Task     string
	target   NodeRef
	source   NodeRef
	bytes    int64 // written to the target
	attempt  int   // attempt within the current round (1..MaxAttempts)
	serial   int   // the task id's number: counts every task of the shard
	Deadline time.Time
	Seq      uint64           // task message's sequence in the work-queue stream (0: unknown)
	Rev      uint64           // placement entry revision when issued (0: unknown)
	Entry    *model.Placement // the entry as read then (nil: unknown)
	incident string
	RB       *rebuildFlight // the rebuild task this piece belongs to (nil: a copy)
	// inPlace marks a copy back onto a holder whose disk lacks the shard: it
	// lands when the mover reports it done (the map already lists the target).
	inPlace bool
	// batch is the batched task it travels in (nil: a task of its own): its
	// slots are charged once for all the batch's flights.
	batch *batchFlight
}

// trimFlight is a surplus copy being removed: the map no longer lists node
// (or is about to, while the compare-and-set runs) and a delete task is
// queued for it. It holds one of the node's out slots.
type trimFlight struct {
	Task     string // "" until the map update succeeded and the task id is known
	Node     NodeRef
	Deadline time.Time
	Seq      uint64 // delete task's sequence in the work-queue stream (0: unknown)
}

// retry remembers failed attempts at one shard.
type retry struct {
	Attempt   int       // attempt number of the next task within this round
	serial    int       // highest task serial used for the shard (task ids stay unique)
	round     int       // 1, then one more each time MaxAttempts failed attempts parked it
	notBefore time.Time // backoff, or the end of the parking (RetryLater)
	avoid     []NodeRef // targets that failed
	srcFails  int       // attempts of this round that failed for want of a source
	badSrcs   []NodeRef // first sources of those attempts, the latest last: read others first
	expires   time.Time // forget all this after it (unless a task is in flight)
}

// relaxable reports whether enough attempts of this round failed, not for
// want of a source, for the shard to give up the rack rule rather than go
// back to targets that failed (relaxAfterAttempt). Attempts that no source
// could serve say nothing about targets and do not count.
func (r *retry) relaxable() bool { return r.blamed() >= relaxAfterAttempt }

// blamed is the attempt number of the next task not counting the attempts
// that failed for want of a source.
func (r *retry) blamed() int { return r.Attempt - r.srcFails }

// blame is whom a failed attempt is held against.
type blame int

const (
	// blameNone: no one (the task timed out): the target is not avoided.
	blameNone blame = iota
	// blameTarget: the target failed, or the report does not say which side
	// did (an older mover): the next attempt avoids the target.
	blameTarget
	// blameSource: no source could supply the shard: the next attempt reads
	// from another source first; the target is not avoided and the attempt
	// does not count toward relaxing the rack rule.
	blameSource
)

// blameOf maps a mover's failure report's side onto blame.
func blameOf(side string) blame {
	if side == event.SideSource {
		return blameSource
	}
	return blameTarget
}

// retryMemory is how long a shard's failures are remembered without news.
const retryMemory = 10 * time.Minute

// startTrim records a surplus removal and charges the node's trim slot.
func (v *View) startTrim(h uint32, tf *trimFlight) {
	if v.Trims[h] != nil {
		v.EndTrim(h)
	}
	v.Trims[h] = tf
	v.Nodes[tf.Node].trimTasks++
}

// EndTrim forgets a surplus removal and releases its slot.
func (v *View) EndTrim(h uint32) {
	tf := v.Trims[h]
	if tf == nil {
		return
	}
	delete(v.Trims, h)
	v.Nodes[tf.Node].trimTasks--
}

// ClearFlights forgets every task in flight (a planner taking over re-reads
// them from the work queue).
func (v *View) ClearFlights() {
	for h := range v.Flights {
		v.EndFlight(h)
	}
	for h := range v.Trims {
		v.EndTrim(h)
	}
}

// startFlight records an issued copy, or one piece of a rebuild, and
// charges the throttles: the target's in slot; the source's out slot for a
// copy; for a rebuild's first piece, its reads' out slots and one task
// in flight.
func (v *View) startFlight(h uint32, f *Flight) {
	if old := v.Flights[h]; old != nil {
		v.EndFlight(h)
	}
	v.Flights[h] = f
	if b := f.batch; b != nil {
		v.Nodes[f.target].inBytes += f.bytes
		if b.open == 0 {
			v.copyFlights++
			v.Nodes[b.tg].inTasks++
			v.Nodes[b.src].outTasks++
		}
		b.open++
		return
	}
	v.Nodes[f.target].inTasks++
	v.Nodes[f.target].inBytes += f.bytes
	if rb := f.RB; rb != nil {
		if rb.open == 0 {
			v.copyFlights++
			for _, r := range rb.reads {
				v.Nodes[r].outTasks++
			}
			rb.group.RB = rb
		}
		rb.open++
		return
	}
	v.copyFlights++
	v.Nodes[f.source].outTasks++
}

// EndFlight forgets a copy (or a rebuilt piece) in flight and releases its
// throttles; a rebuild's reads and task are released with its last piece.
func (v *View) EndFlight(h uint32) {
	f := v.Flights[h]
	if f == nil {
		return
	}
	delete(v.Flights, h)
	if b := f.batch; b != nil {
		v.Nodes[f.target].inBytes -= f.bytes
		b.open--
		if b.open == 0 {
			v.copyFlights--
			v.Nodes[b.tg].inTasks--
			v.Nodes[b.src].outTasks--
		}
		return
	}
	v.Nodes[f.target].inTasks--
	v.Nodes[f.target].inBytes -= f.bytes
	if rb := f.RB; rb != nil {
		rb.open--
		if rb.open == 0 {
			v.copyFlights--
			for _, r := range rb.reads {
				v.Nodes[r].outTasks--
			}
			if rb.group.RB == rb {
				rb.group.RB = nil
			}
		}
		return
	}
	v.copyFlights--
	v.Nodes[f.source].outTasks--
}

// OpenPieces returns the pieces of rb still in flight.
func (v *View) OpenPieces(rb *rebuildFlight) []uint32 {
	var out []uint32
	for _, p := range rb.pieces {
		if f := v.Flights[p]; f != nil && f.RB == rb {
			out = append(out, p)
		}
	}
	return out
}

// TrimPrefix starts the id of every surplus-removal task.
const TrimPrefix = "trim-"

// taskSerial reads the serial number that ends a task id ("...-7"), or def.
func taskSerial(id string, def int) int {
	if i := strings.LastIndexByte(id, '-'); i >= 0 {
		if n, err := strconv.Atoi(id[i+1:]); err == nil && n > 0 {
			return n
		}
	}
	return def
}

// SeedFlight records a queued copy or trim task as in flight (each shard of
// a batched copy, sharing one batch); it reports whether it did.
func (v *View) SeedFlight(t event.Task, seq uint64, deadline time.Time) bool {
	if t.Kind == event.KindCopy && len(t.Batch) > 0 && len(t.Sources) > 0 {
		return v.seedBatch(t, seq, deadline)
	}
	h, ok := v.IDs.Lookup(t.Shard)
	if !ok {
		v.noteQueuedUnmapped(t) // its result is still to come
		return false
	}
	tg, err := v.Ref(t.Target)
	if err != nil {
		return false
	}
	if t.Kind == event.KindDelete {
		if !strings.HasPrefix(t.Task, TrimPrefix) || v.Trims[h] != nil {
			return false
		}
		v.startTrim(h, &trimFlight{Task: t.Task, Node: tg, Deadline: deadline, Seq: seq})
		return true
	}
	if t.Kind == event.KindRebuild {
		return v.seedRebuild(t, seq, deadline)
	}
	if len(t.Sources) == 0 {
		return false
	}
	return v.seedCopy(t, seq, deadline, nil)
}

// seedCopy records queued copy task t (a batch member when b is set) as in
// flight, as SeedFlight does.
func (v *View) seedCopy(t event.Task, seq uint64, deadline time.Time, b *batchFlight) bool {
	h, ok := v.IDs.Lookup(t.Shard)
	if !ok {
		v.noteQueuedUnmapped(t)
		return false
	}
	tg, err := v.Ref(t.Target)
	if err != nil {
		return false
	}
	src, err := v.Ref(t.Sources[0])
	if err != nil {
		return false
	}
	serial := taskSerial(t.Task, max(t.Attempt, 1))
	r := v.Retries[h]
	if r == nil {
		r = &retry{Attempt: 1, round: 1, expires: deadline}
		v.Retries[h] = r
	}
	r.serial = max(r.serial, serial) // the next task gets a fresh id
	if old := v.Flights[h]; old != nil && old.serial > serial {
		return false
	}
	r.Attempt = max(t.Attempt, 1)
	// A copy onto a node the entry lists already is a copy back in place:
	// it lands when its result comes, not when the map names the target.
	v.startFlight(h, &Flight{Task: t.Task, target: tg, source: src, bytes: t.Bytes,
		attempt: max(t.Attempt, 1), serial: serial, Deadline: deadline, Seq: seq, incident: t.Incident,
		inPlace: v.holds(h, tg), batch: b})
	return true
}

// retryOf returns shard h's retry record, creating it.
func (v *View) retryOf(h uint32) *retry {
	r := v.Retries[h]
	if r == nil {
		r = &retry{Attempt: 1, round: 1}
		v.Retries[h] = r
	}
	return r
}

// failed records a failed attempt (attempt, with task serial) at copying
// shard h from source to target, held against b. The next attempt waits a
// backoff and, for blameTarget, avoids that target; for blameSource it
// reads from another source than source first and does not count toward
// relaxing the rack rule. When attempt was the pol.maxAttempts-th of its
// round the shard is parked instead: nothing is tried for pol.retryLater,
// then a new round starts at attempt 1 with nothing avoided. gaveUp
// reports the parking (the caller says so on rehome.repair.failed).
func (v *View) failed(h uint32, source, target NodeRef, attempt, serial int, now time.Time, b blame) (gaveUp bool) {
	r := v.retryOf(h)
	r.serial = max(r.serial, serial)
	next := max(r.Attempt, attempt+1)
	if next > v.pol.MaxAttempts {
		r.round++
		r.Attempt = 1
		r.avoid, r.srcFails, r.badSrcs = nil, 0, nil
		r.notBefore = now.Add(v.pol.RetryLater)
		r.expires = r.notBefore.Add(retryMemory)
		return true
	}
	r.Attempt = next
	r.notBefore = now.Add(backoff(next))
	r.expires = now.Add(retryMemory)
	switch b {
	case blameTarget:
		if !slices.Contains(r.avoid, target) {
			r.avoid = append(r.avoid, target)
		}
	case blameSource:
		r.srcFails++
		r.badSrcs = append(slices.DeleteFunc(r.badSrcs, func(x NodeRef) bool { return x == source }), source)
	}
	return false
}

// backoff is the wait before attempt n (n >= 2): 1 s doubling, at most 30 s.
func backoff(n int) time.Duration {
	d := time.Second << min(max(n-2, 0), 5)
	return min(d, 30*time.Second)
}

// nextTask is the attempt number and task serial of the next task for shard h.
func (v *View) nextTask(h uint32) (attempt, serial int) {
	if r := v.Retries[h]; r != nil {
		return r.Attempt, r.serial + 1
	}
	return 1, 1
}

// UsedSerial records that task serial of shard h is taken (its id was
// already in the stream's dedup window): the next task uses a higher one.
func (v *View) UsedSerial(h uint32, serial int, now time.Time) {
	r := v.retryOf(h)
	r.serial = max(r.serial, serial)
	r.expires = now.Add(retryMemory)
}

// TaskID names the task of a decision: shard-target-serial (the serial is
// the attempt number until a shard is parked or an id is found used).
func (v *View) TaskID(d Decision) string {
	return d.ID + "-" + v.Nodes[d.Target].ID + "-" + strconv.Itoa(d.Serial)
}

// Reserve records a round's copies and trims as in flight (before their
// tasks are published, so nothing plans them twice); a failed publish calls
// endFlight or endTrim.
func (v *View) Reserve(p Plan, now time.Time, timeout time.Duration) {
	for _, d := range p.Copies {
		if d.RB != nil {
			v.reserveRebuild(d, now, timeout)
			continue
		}
		v.startFlight(d.Shard, &Flight{
			Task: v.TaskID(d), target: d.Target, source: d.Sources[0], bytes: d.Bytes,
			attempt: d.Attempt, serial: d.Serial, Deadline: now.Add(timeout), incident: d.Incident,
			inPlace: d.inPlace, batch: d.batch,
		})
	}
	for _, t := range p.Trims {
		v.startTrim(t.Shard, &trimFlight{Node: t.Node, Deadline: now.Add(timeout)})
	}
}

// FailFlight ends flight f of shard h as a failed attempt; for
// a piece of a rebuild, every piece of its task still open. When it was the
// last attempt of its round it returns the report to publish.
func (v *View) FailFlight(h uint32, f *Flight, cause string, now time.Time, b blame) *event.Failed {
	// A copy back in place that failed leaves its target lacking the shard
	// (a planner that took over knows it only from the task).
	type back struct {
		h uint32
		r NodeRef
	}
	var backs []back
	if f.RB != nil {
		for _, p := range v.OpenPieces(f.RB) {
			if pf := v.Flights[p]; pf.inPlace {
				backs = append(backs, back{p, pf.target})
			}
		}
	} else if f.inPlace {
		backs = append(backs, back{h, f.target})
	}
	defer func() {
		for _, b := range backs {
			v.MarkMissing(b.h, b.r)
		}
	}()
	kind := event.KindCopy
	if f.RB != nil {
		kind = event.KindRebuild
		if pieces := v.OpenPieces(f.RB); len(pieces) > 0 {
			h = pieces[0]
		}
		if !v.failedRebuild(f.RB, now, b) {
			return nil
		}
	} else {
		v.EndFlight(h)
		if !v.failed(h, f.source, f.target, f.attempt, f.serial, now, b) {
			return nil
		}
	}
	r := v.Retries[h]
	return &event.Failed{
		Task: f.Task, Incident: f.incident, Shard: v.IDs.String(h), Kind: kind,
		Target: v.Nodes[f.target].ID, Attempt: f.attempt, Final: true, RetryAt: r.notBefore.UTC(),
		Error: fmt.Sprintf("repair failed %d times in a row (last: %s); retrying from attempt 1 at %s",
			f.attempt, cause, r.notBefore.UTC().Format(time.RFC3339)),
	}
}

// abandonFlightsTo ends the copies in flight to node r, which went down: a
// mover may go on retrying them for minutes, while the shards can be copied
// to a live target now. No failed attempt is counted (the target's death is
// no fault of the copy); the task serial is kept, so the next task of the
// shard has a new id. A late Done of an abandoned copy that did verify
// still lands (see Land). Rebuilds and copies back in place are left to
// their results and expiry.
func (v *View) abandonFlightsTo(r NodeRef) {
	var hs []uint32
	for h, f := range v.Flights {
		if f.target == r && f.RB == nil && !f.inPlace {
			hs = append(hs, h)
		}
	}
	now := v.clock()
	for _, h := range hs {
		serial := v.Flights[h].serial
		v.EndFlight(h)
		v.UsedSerial(h, serial, now)
		v.refresh(h)
	}
}

// Expired returns the shards whose copy passed its deadline (one piece per
// rebuild task), and those whose trim did.
func (v *View) Expired(now time.Time) (copies, trims []uint32) {
	var rbs map[*rebuildFlight]bool
	for h, f := range v.Flights {
		if !now.After(f.Deadline) {
			continue
		}
		if f.RB != nil {
			if rbs[f.RB] {
				continue
			}
			if rbs == nil {
				rbs = map[*rebuildFlight]bool{}
			}
			rbs[f.RB] = true
		}
		copies = append(copies, h)
	}
	for h, t := range v.Trims {
		if now.After(t.Deadline) {
			trims = append(trims, h)
		}
	}
	slices.Sort(copies)
	slices.Sort(trims)
	return copies, trims
}

// CopyTask renders reserved copy decision d as its task, with the size and
// checksum of the shard's entry p as read from the map.
func (v *View) CopyTask(d Decision, p model.Placement) event.Task {
	sources := make([]string, len(d.Sources))
	for i, r := range d.Sources {
		sources[i] = v.Nodes[r].ID
	}
	t := event.Task{
		Task: v.TaskID(d), Incident: d.Incident, Shard: d.ID, Kind: event.KindCopy,
		Sources: sources, Target: v.Nodes[d.Target].ID, Bytes: p.Size, SHA256: p.SHA256,
		Attempt: d.Attempt, RackRelaxed: d.Relaxed,
	}
	if d.Background {
		t.Class = event.ClassBackground
	}
	return t
}

// ReleaseCopy forgets the reservation of copy decision d whose task taskID
// was not queued; used records that the task id is taken (the next task of
// the shard takes a higher serial). A reservation replaced meanwhile stays.
func (v *View) ReleaseCopy(d Decision, taskID string, used bool, now time.Time) {
	if f := v.Flights[d.Shard]; f != nil && f.Task == taskID {
		v.EndFlight(d.Shard)
		if used {
			v.UsedSerial(d.Shard, d.Serial, now)
		}
	}
}

// CopyQueued records that copy task taskID of decision d sits in the work
// queue at seq, issued against entry p at revision rev (its Done adds the
// target to that entry).
func (v *View) CopyQueued(d Decision, taskID string, seq, rev uint64, p model.Placement) {
	if f := v.Flights[d.Shard]; f != nil && f.Task == taskID {
		f.Seq, f.Rev, f.Entry = seq, rev, &p
	}
}

// RebuildTaskOf renders reserved rebuild decision d as its task; ok is false
// when the reservation is gone or partial (a piece left the map meanwhile).
func (v *View) RebuildTaskOf(d Decision) (t *event.Task, ok bool) {
	taskID := v.TaskID(d)
	rb := d.RB.Group.RB
	if rb == nil || rb.Task != taskID || len(v.OpenPieces(rb)) != len(d.RB.Pieces) {
		return nil, false
	}
	return v.RebuildTask(d, taskID), true
}

// ReleaseRebuild forgets reserved rebuild taskID of decision d; used
// records that its task id is taken.
func (v *View) ReleaseRebuild(d Decision, taskID string, used bool, now time.Time) {
	g := d.RB.Group
	if g.RB == nil || g.RB.Task != taskID {
		return
	}
	for _, p := range v.OpenPieces(g.RB) {
		v.EndFlight(p)
		if used {
			v.UsedSerial(p, d.Serial, now)
		}
	}
}

// RebuildQueued records the work-queue sequence of rebuild task taskID.
func (v *View) RebuildQueued(d Decision, taskID string, seq uint64) {
	g := d.RB.Group
	if g.RB != nil && g.RB.Task == taskID {
		for _, p := range v.OpenPieces(g.RB) {
			v.Flights[p].Seq = seq
		}
	}
}

// TrimEntry decides whether reserved trim td may still go ahead against the
// shard's entry p as just read from the map: the entry must still list the
// node, and keep at least the layout's copies up and not lacking the shard
// without it. It returns the entry without the node.
func (v *View) TrimEntry(td TrimDecision, p model.Placement) (model.Placement, bool) {
	node := v.Nodes[td.Node].ID
	up := 0
	for _, n := range p.Nodes {
		if r, ok := v.NodeIndex[n]; ok && v.Nodes[r].EffState() == model.StateUp && !v.IsMissing(td.Shard, r) {
			up++
		}
	}
	if !slices.Contains(p.Nodes, node) || up <= p.Layout.Copies() {
		return p, false
	}
	p.Nodes = slices.DeleteFunc(slices.Clone(p.Nodes), func(n string) bool { return n == node })
	return p, true
}

// ReleaseTrim forgets reserved trim td before its map write (nothing done).
func (v *View) ReleaseTrim(td TrimDecision) {
	if t := v.Trims[td.Shard]; t != nil && t.Node == td.Node && t.Task == "" {
		v.EndTrim(td.Shard)
	}
}

// TrimWritten records that the map no longer lists td's node (the write
// made revision rev) and returns the delete task to queue; p is the entry
// before the write.
func (v *View) TrimWritten(td TrimDecision, p model.Placement, rev uint64) event.Task {
	node := v.Nodes[td.Node].ID
	taskID := TrimPrefix + td.ID + "-" + node + "-" + strconv.FormatUint(rev, 10)
	if t := v.Trims[td.Shard]; t != nil && t.Node == td.Node {
		t.Task = taskID
	}
	return event.Task{Task: taskID, Incident: "trim", Shard: td.ID, Kind: event.KindDelete,
		Target: node, Bytes: p.Size, SHA256: p.SHA256}
}

// TrimQueued records the work-queue sequence of trim task taskID, or, with
// ok false (not queued), forgets the trim: the copy stays on the node's
// disk, unmapped.
func (v *View) TrimQueued(td TrimDecision, taskID string, seq uint64, ok bool) {
	t := v.Trims[td.Shard]
	if t == nil || t.Task != taskID {
		return
	}
	if ok {
		t.Seq = seq
		return
	}
	v.EndTrim(td.Shard)
}
