package core

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rehome/rehome/services/planner/intern"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// nodeRef is a node's small-integer identity inside the view.
type NodeRef = uint16

const (
	maxNodes      = 0xFFFF // nodeRef 0xFFFF is never issued
	inlineHolders = 5      // holders kept in the shard record; more spill to a map
	MaxHolders    = 64
	noBucket      = 0xFF
	pageBits      = 16
	pageSize      = 1 << pageBits
	maxLayouts    = 255
	// numBuckets holds every margin: live copies < Copies() <= 16 for a
	// replicated shard, M - missing + 1 <= M < moveBucket for a missing
	// piece, and moveBucket.
	numBuckets = noBucket
	// moveBucket, the last queue, holds whole shards with a copy that must
	// move (see drain.go): planned after every repair.
	moveBucket = numBuckets - 1
)

// Flags of a shard record.
const (
	FlagLostSent uint8 = 1 << iota // event.Lost published for this loss
	flagSurplus                    // listed in view.surplus
	flagMissing                    // a listed holder lacks it (see view.lacks)
)

// node is everything the planner knows about one node id: its registration,
// the detector's verdict, its last heartbeat, and counters derived from the map
// and from work in flight.
type node struct {
	ID          string
	Registered  bool
	Rack, Addr  string
	capacity    int64
	state       model.State // "" = no liveness record (up when registered)
	Since       time.Time
	flaps       int    // from the liveness record, for status
	graceMS     int64  // from the liveness record, for status
	TraceParent string // the down verdict's span: the incident's trace

	hbUsed, hbCapacity int64
	HeartbeatAt        time.Time
	// hbFull and hbReadOnly: its last heartbeat says it refuses new shards
	// (disk full, or read-only); it is no target until a heartbeat says otherwise.
	hbFull, hbReadOnly bool

	Shards int   // map entries naming the node
	Bytes  int64 // their bytes

	inTasks, outTasks int   // copies writing to / reading from the node (outTasks counts trims too)
	inBytes           int64 // bytes of the copies writing to it
	allocBytes        int64 // bytes allocated to it and not yet committed

	returning bool // it was down and came back (cleared when it goes down again)
	// draining: an operator asked for every copy on it to move elsewhere
	// (see drain.go); drain holds when and from what.
	Draining bool
	Drain    DrainState
	SweepDue bool // its disk is to be swept for orphaned copies (see orphans.go)

	BootID  string // the boot id of its registration or last heartbeat ("" unknown)
	Missing int    // shards whose entry lists the node while its disk lacks them

	// needReconcile asks for its inventory to be checked against the map
	// (a new boot, a return from down, a takeover); reconciling is set while
	// a check runs. Trims of shards it holds wait for both to clear.
	NeedReconcile  bool
	Reconciling    bool
	ReconcileGen   int       // bumped by every request, so a check cannot clear a newer one
	reconcileAt    time.Time // not before (backoff after a failed check)
	reconcileTries int
}

// effState is the state the planner acts on: an unregistered node is down,
// a registered one without a verdict is up.
func (n *node) EffState() model.State {
	switch {
	case !n.Registered:
		return model.StateDown
	case n.state == "":
		return model.StateUp
	}
	return n.state
}

// shard is one placement-map entry, 32 bytes. The id lives in the intern
// table; the checksum is re-read from the map when a task is issued.
type shard struct {
	size   int64
	stripe uint32
	// tag is, for an erasure-coded piece, a hash of its object id (it groups
	// the pieces of a stripe); for a replicated shard, the first four bytes
	// of its SHA-256 (an inventory check compares it).
	tag     uint32
	holders [inlineHolders]NodeRef
	nh      uint8 // number of holders (> inlineHolders: see view.spill)
	index   uint8
	layout  uint8 // index into view.layouts
	Flags   uint8
	bucket  uint8 // repair queue it sits in (see view.buckets), or noBucket
}

// flight is a copy task issued and not yet resolved, or one piece of a
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
	expires   time.Time // forget all this after it (unless a task is in flight)
}

// retryMemory is how long a shard's failures are remembered without news.
const retryMemory = 10 * time.Minute

// policy is the failure policy of the view.
type Policy struct {
	MaxAttempts int           // failed attempts before a shard is parked
	RetryLater  time.Duration // how long it stays parked
	// autoHeal checks a node's inventory when it boots anew while live, or
	// comes back from down (see wantReconcile).
	AutoHeal bool
}

// allocation is bytes promised to nodes by an allocate call, counted as
// pending until the object is committed or the allocation expires.
type allocation struct {
	expires time.Time
	bytes   map[NodeRef]int64
	Shards  map[string]bool // the shard ids being written (never orphans)
}

// view is the planner's in-memory picture of the cluster: nodes, the whole
// placement map in compact form, the repair queue derived from them, and work
// in flight. Its methods are pure state transitions (no I/O; time passed in
// or read from the injected clock); the service guards it with a mutex.
type View struct {
	clock func() time.Time
	pol   Policy

	Nodes     []node
	NodeIndex map[string]NodeRef

	IDs     *intern.Table
	pages   [][]shard
	spill   map[uint32][]NodeRef // holders of shards with more than inlineHolders
	layouts []model.Layout
	objects int // entries that are chunk/stripe 0, piece 0: one per object

	// stripes groups the pieces of erasure-coded stripes (see stripes.go).
	stripes     map[stripeKey][]*StripeGroup
	stripeCount int

	// buckets is the repair queue, ordered by risk. A shard's margin is how
	// many more copies it can lose and still be restored: live copies - 1 for
	// a replicated shard, pieces of the stripe with a live holder - K for a
	// missing erasure-coded piece. buckets[b] holds the shards of margin b-1
	// that lack copies, oldest first (the time they were first seen short,
	// shortSince), then by id. Bucket 0 holds the lost shards: replicated
	// ones without a live copy, and every piece of a stripe missing more than
	// M pieces.
	buckets    [][]uint32
	shortSince map[uint32]int64 // queued shard -> when first seen short (unix ns)
	// surplus lists, by handle, the shards with more up holders than they
	// need (flagSurplus); trimCursor is where the next trim scan starts.
	surplus     []uint32
	trimCursor  int
	NeedRescan  bool // liveness changed: buckets must be rebuilt
	Loading     bool // initial load: skip incremental queue upkeep
	Flights     map[uint32]*Flight
	copyFlights int // copy and rebuild tasks in flight
	Trims       map[uint32]*trimFlight
	Retries     map[uint32]*retry
	Allocs      map[string]*allocation
	// lacks lists, per shard (flagMissing set), the holders its entry
	// names whose disk lacks it (an inventory check or a corrupt report
	// found it): their copies do not count until a copy back lands.
	lacks map[uint32][]NodeRef
	// unmapped remembers, by shard id, the task of a copy or rebuild that
	// was in flight when its shard left the map (see noteUnmapped).
	unmapped map[string]string

	// draining counts the nodes being drained; removed holds the ids
	// forgotten by `rehome node remove` (see drain.go).
	draining int
	removed  map[string]bool
	// moves are the copies being rebalanced, by shard (see rebalance.go).
	Moves map[uint32]move

	Rate         rateMeter
	verified     int64     // bytes verified by copies since start
	lastVerified time.Time // last verified copy
	WorkSince    time.Time // when repair work last appeared (zero: none)
	StallSent    bool

	holderBuf []int
	RescanDur time.Duration // how long the last rescan took (a measurement only)
}

// newView returns an empty view reading time from clock, with the failure
// policy pol.
func NewView(clock func() time.Time, pol Policy) *View {
	return &View{
		clock:      clock,
		pol:        pol,
		NodeIndex:  make(map[string]NodeRef),
		IDs:        intern.New(),
		spill:      make(map[uint32][]NodeRef),
		buckets:    make([][]uint32, numBuckets),
		stripes:    make(map[stripeKey][]*StripeGroup),
		shortSince: make(map[uint32]int64),
		Flights:    make(map[uint32]*Flight),
		Trims:      make(map[uint32]*trimFlight),
		Retries:    make(map[uint32]*retry),
		Allocs:     make(map[string]*allocation),
		lacks:      make(map[uint32][]NodeRef),
		Moves:      make(map[uint32]move),
		Rate:       rateMeter{window: 20 * time.Second},
	}
}

// errTooMany refuses input that would overflow the compact representation.
var errTooMany = errors.New("too many")

// ref returns the nodeRef of id, creating an unregistered node if needed.
func (v *View) Ref(id string) (NodeRef, error) {
	if r, ok := v.NodeIndex[id]; ok {
		return r, nil
	}
	if len(v.Nodes) >= maxNodes {
		return 0, fmt.Errorf("%w nodes (%d)", errTooMany, maxNodes)
	}
	r := NodeRef(len(v.Nodes))
	v.Nodes = append(v.Nodes, node{ID: id})
	v.NodeIndex[id] = r
	return r, nil
}

// setNode records a node registration.
func (v *View) SetNode(n model.Node) error {
	if v.removed[n.ID] {
		return nil // forgotten: its registration counts for nothing
	}
	r, err := v.Ref(n.ID)
	if err != nil {
		return err
	}
	nd := &v.Nodes[r]
	if !nd.Registered {
		v.NeedRescan = true
		if !v.Loading && nd.Shards > 0 {
			v.WantReconcile(r) // registered again while the map lists it
		}
	}
	nd.Registered, nd.Rack, nd.Addr, nd.capacity = true, n.Rack, n.Addr, n.CapacityBytes
	v.noteBoot(r, n.BootID)
	return nil
}

// noteBoot records the boot id a node reports; a new one while the node is
// live (back inside the grace, or in maintenance) asks for its inventory to
// be checked: its disk may be empty or partial. It reports whether it asked.
func (v *View) noteBoot(r NodeRef, boot string) bool {
	nd := &v.Nodes[r]
	if boot == "" || boot == nd.BootID {
		return false
	}
	asked := false
	if nd.BootID != "" && nd.EffState().Live() && v.pol.AutoHeal {
		v.WantReconcile(r)
		asked = true
	}
	nd.BootID = boot
	return asked
}

// noteTransition records a change of a node's effective state from before:
// coming back from down (returning; its inventory is checked before its
// copies can be trimmed against) or going down.
func (v *View) noteTransition(r NodeRef, before model.State) {
	n := &v.Nodes[r]
	after := n.EffState()
	switch {
	case !after.Live():
		n.returning = false
	case !before.Live():
		n.returning = true
		n.SweepDue = true
		v.WantReconcile(r)
	}
}

// wantReconcile asks for node r's inventory to be checked (with autoHeal).
func (v *View) WantReconcile(r NodeRef) {
	if !v.pol.AutoHeal {
		return
	}
	n := &v.Nodes[r]
	n.NeedReconcile = true
	n.ReconcileGen++
	n.reconcileTries = 0
	n.reconcileAt = time.Time{}
}

// removeNode forgets a registration (the node's copies stop counting).
func (v *View) RemoveNode(id string) {
	if r, ok := v.NodeIndex[id]; ok && v.Nodes[r].Registered {
		v.Nodes[r].Registered = false
		v.Nodes[r].returning = false
		v.NeedRescan = true
	}
}

// setLiveness records a detector verdict; it reports whether the node's
// effective state changed.
func (v *View) SetLiveness(l model.Liveness) (bool, error) {
	r, err := v.Ref(l.Node)
	if err != nil {
		return false, err
	}
	nd := &v.Nodes[r]
	before := nd.EffState()
	nd.state, nd.Since = l.State, l.Since
	nd.flaps, nd.graceMS, nd.TraceParent = l.Flaps, l.GraceMS, l.TraceParent
	changed := before != nd.EffState()
	if changed {
		v.NeedRescan = true
		v.noteTransition(r, before)
	}
	return changed, nil
}

// clearLiveness drops a verdict (the node counts as up again if registered).
func (v *View) ClearLiveness(id string) bool {
	r, ok := v.NodeIndex[id]
	if !ok {
		return false
	}
	nd := &v.Nodes[r]
	before := nd.EffState()
	nd.state, nd.Since = "", time.Time{}
	nd.flaps, nd.graceMS, nd.TraceParent = 0, 0, ""
	changed := before != nd.EffState()
	if changed {
		v.NeedRescan = true
		v.noteTransition(r, before)
	}
	return changed
}

// heartbeat records a node's reported usage. Heartbeats of ids the view has
// never seen are ignored (the registration comes first).
func (v *View) Heartbeat(id string, used, capacity int64, now time.Time) {
	if r, ok := v.NodeIndex[id]; ok {
		nd := &v.Nodes[r]
		nd.hbUsed, nd.hbCapacity, nd.HeartbeatAt = used, capacity, now
	}
}

// diskCondition records whether a node's heartbeat says it refuses new
// shards (disk full or read-only), for ids the view knows. It reports
// whether the node accepts them again after refusing (room came back: plan).
func (v *View) DiskCondition(id string, full, readOnly bool) (accepts bool) {
	r, ok := v.NodeIndex[id]
	if !ok {
		return false
	}
	nd := &v.Nodes[r]
	was := nd.hbFull || nd.hbReadOnly
	nd.hbFull, nd.hbReadOnly = full, readOnly
	return was && !full && !readOnly
}

// bootSeen records the boot id a node's heartbeat carries (see noteBoot).
func (v *View) BootSeen(id, boot string) bool {
	if r, ok := v.NodeIndex[id]; ok {
		return v.noteBoot(r, boot)
	}
	return false
}

func (v *View) Record(h uint32) *shard { return &v.pages[h>>pageBits][h&(pageSize-1)] }

func (v *View) holders(h uint32) []NodeRef {
	s := v.Record(h)
	if s.nh > inlineHolders {
		return v.spill[h]
	}
	return s.holders[:s.nh]
}

func (v *View) holds(h uint32, r NodeRef) bool { return slices.Contains(v.holders(h), r) }

func (v *View) Live(r NodeRef) bool { return v.Nodes[r].EffState().Live() }

func (v *View) liveCount(h uint32) int {
	live, _ := v.counts(h)
	return live
}

// counts returns how many holders of h are live and how many are up; a
// holder whose disk lacks the shard (missing) counts as neither.
func (v *View) counts(h uint32) (live, up int) {
	var miss []NodeRef
	if v.Record(h).Flags&flagMissing != 0 {
		miss = v.lacks[h]
	}
	for _, r := range v.holders(h) {
		if miss != nil && slices.Contains(miss, r) {
			continue
		}
		switch st := v.Nodes[r].EffState(); {
		case st == model.StateUp:
			live++
			up++
		case st.Live():
			live++
		}
	}
	return live, up
}

func (v *View) layoutIndex(l model.Layout) (uint8, error) {
	if i := slices.Index(v.layouts, l); i >= 0 {
		return uint8(i), nil
	}
	if len(v.layouts) >= maxLayouts {
		return 0, fmt.Errorf("%w distinct layouts", errTooMany)
	}
	v.layouts = append(v.layouts, l)
	return uint8(len(v.layouts) - 1), nil
}

func objHash(id string) uint32 {
	f := fnv.New32a()
	f.Write([]byte(id))
	return f.Sum32()
}

// upsertPlacement adds or replaces a map entry (already validated). A copy
// in flight whose target now holds the shard is resolved; landed reports it
// (its capacity is free: plan again).
func (v *View) UpsertPlacement(p model.Placement) (landed bool, err error) {
	if len(p.Nodes) > MaxHolders {
		return false, fmt.Errorf("%w holders (%d) for shard %s", errTooMany, len(p.Nodes), p.Shard)
	}
	sum, err := v.checkEntry(p)
	if err != nil {
		return false, err
	}
	li, err := v.layoutIndex(p.Layout)
	if err != nil {
		return false, err
	}
	refs := make([]NodeRef, 0, len(p.Nodes))
	for _, id := range p.Nodes {
		r, err := v.Ref(id)
		if err != nil {
			return false, err
		}
		if !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	h, added := v.IDs.Intern(p.Shard)
	for int(h>>pageBits) >= len(v.pages) {
		v.pages = append(v.pages, make([]shard, pageSize))
	}
	s := v.Record(h)
	var was *StripeGroup // the stripe the piece was in
	if added {
		*s = shard{bucket: noBucket}
	} else {
		was = v.unstripe(h)
		v.account(h, -1)
		delete(v.spill, h)
		v.pruneMarks(h, refs)
	}
	tag := shaTag(p.SHA256)
	if p.Layout.Erasure() {
		tag = objHash(p.ObjectID)
	}
	s.size, s.stripe, s.tag = p.Size, uint32(p.Stripe), tag
	s.index, s.layout, s.nh = uint8(p.Index), li, uint8(len(refs))
	if len(refs) > inlineHolders {
		v.spill[h] = refs
	} else {
		copy(s.holders[:], refs)
	}
	v.account(h, +1)
	var g *StripeGroup
	if p.Layout.Erasure() {
		g = v.enstripe(h, p, sum)
	}
	if f := v.Flights[h]; f != nil && !f.inPlace && v.holds(h, f.target) {
		v.EndFlight(h)
		landed = true
	}
	v.refresh(h)
	if was != g {
		v.refreshStripe(was)
	}
	v.refreshStripe(g)
	return landed, nil
}

// account adds (sign +1) or removes (-1) an entry's share of the node and
// object counters.
func (v *View) account(h uint32, sign int) {
	s := v.Record(h)
	for _, r := range v.holders(h) {
		v.Nodes[r].Shards += sign
		v.Nodes[r].Bytes += int64(sign) * s.size
	}
	if s.stripe == 0 && s.index == 0 {
		v.objects += sign
	}
}

// removePlacement drops a map entry; it reports whether it existed.
func (v *View) RemovePlacement(id string) bool {
	h, ok := v.IDs.Lookup(id)
	if !ok {
		return false
	}
	s := v.Record(h)
	v.unqueue(h)
	v.unsurplus(h)
	delete(v.shortSince, h)
	v.pruneMarks(h, nil)
	v.account(h, -1)
	if f := v.Flights[h]; f != nil {
		v.noteUnmapped(id, f.Task) // its result is still to come
		v.EndFlight(h)
	}
	if v.Trims[h] != nil {
		v.EndTrim(h)
	}
	g := v.unstripe(h)
	delete(v.spill, h)
	delete(v.Retries, h)
	*s = shard{bucket: noBucket}
	v.IDs.Remove(h)
	v.refreshStripe(g)
	return true
}

// wantBucket is the repair queue a shard belongs in (noBucket: healthy) and
// whether it has surplus up holders.
func (v *View) wantBucket(h uint32) (bucket uint8, surplus bool) {
	s := v.Record(h)
	live, up := v.counts(h)
	if v.layouts[s.layout].Erasure() {
		if g := v.Group(h); g != nil {
			return v.pieceBucket(g, h, live, up)
		}
	}
	copies := v.layouts[s.layout].Copies()
	if live >= copies {
		if (v.draining > 0 || len(v.Moves) > 0) && live-v.leavingCount(h) < copies {
			return moveBucket, up > copies
		}
		return noBucket, up > copies
	}
	return uint8(live), false
}

// refresh moves one shard to the queue its holders call for.
func (v *View) refresh(h uint32) {
	if v.Loading || v.NeedRescan {
		v.NeedRescan = true
		return
	}
	s := v.Record(h)
	want, surplus := v.wantBucket(h)
	if surplus {
		v.ensurplus(h)
	} else {
		v.unsurplus(h)
	}
	if want != 0 {
		s.Flags &^= FlagLostSent
	}
	if want == noBucket {
		delete(v.Retries, h)
	}
	if want == s.bucket {
		return
	}
	v.unqueue(h)
	if want == noBucket {
		delete(v.shortSince, h)
		return
	}
	if _, ok := v.shortSince[h]; !ok {
		v.shortSince[h] = v.clock().UnixNano()
	}
	b := v.buckets[want]
	i := v.search(b, h)
	v.buckets[want] = slices.Insert(b, i, h)
	s.bucket = want
}

// unqueue takes a shard out of its repair queue (its shortSince stays).
func (v *View) unqueue(h uint32) {
	s := v.Record(h)
	if s.bucket == noBucket {
		return
	}
	b := v.buckets[s.bucket]
	if i := v.search(b, h); i < len(b) && b[i] == h {
		v.buckets[s.bucket] = slices.Delete(b, i, i+1)
	}
	s.bucket = noBucket
}

// queueOrder orders two queued shards: first seen short earlier first, then by id.
func (v *View) queueOrder(a, b uint32) int {
	if c := cmp.Compare(v.shortSince[a], v.shortSince[b]); c != 0 {
		return c
	}
	return strings.Compare(v.IDs.String(a), v.IDs.String(b))
}

// search returns where h sits (or would sit) in a bucket in queue order.
func (v *View) search(b []uint32, h uint32) int {
	i, _ := slices.BinarySearchFunc(b, h, v.queueOrder)
	return i
}

// ensurplus lists h among the shards with surplus copies.
func (v *View) ensurplus(h uint32) {
	s := v.Record(h)
	if s.Flags&flagSurplus != 0 {
		return
	}
	s.Flags |= flagSurplus
	i, _ := slices.BinarySearch(v.surplus, h)
	v.surplus = slices.Insert(v.surplus, i, h)
}

// unsurplus takes h off the surplus list.
func (v *View) unsurplus(h uint32) {
	s := v.Record(h)
	if s.Flags&flagSurplus == 0 {
		return
	}
	s.Flags &^= flagSurplus
	if i, ok := slices.BinarySearch(v.surplus, h); ok {
		v.surplus = slices.Delete(v.surplus, i, i+1)
	}
}

// queued is a shard of a repair queue with its sort key, while sorting.
type queued struct {
	since int64
	h     uint32
}

// rescan rebuilds every repair queue and the surplus list from the map and
// node states: the level-triggered heart of the planner. O(shards) plus
// sorting the queues. A shard short before keeps the time it was first seen
// short; one newly short gets the clock's now.
func (v *View) Rescan() {
	start := time.Now()
	defer func() { v.RescanDur = time.Since(start) }()
	now := v.clock().UnixNano()
	v.NeedRescan = false
	for i := range v.buckets {
		v.buckets[i] = v.buckets[i][:0]
	}
	v.surplus = v.surplus[:0]
	sorting := make([][]queued, len(v.buckets))
	limit := v.IDs.Limit()
	for h := uint32(0); h < limit; h++ {
		if !v.IDs.Valid(h) {
			continue
		}
		s := v.Record(h)
		want, surplus := v.wantBucket(h)
		s.bucket = want
		if want != 0 {
			s.Flags &^= FlagLostSent
		}
		if surplus {
			s.Flags |= flagSurplus
			v.surplus = append(v.surplus, h)
		} else {
			s.Flags &^= flagSurplus
		}
		if want == noBucket {
			if len(v.Retries) > 0 {
				delete(v.Retries, h)
			}
			continue
		}
		since, ok := v.shortSince[h]
		if !ok {
			since = now
			v.shortSince[h] = now
		}
		sorting[want] = append(sorting[want], queued{since, h})
	}
	for h := range v.shortSince {
		if !v.IDs.Valid(h) || v.Record(h).bucket == noBucket {
			delete(v.shortSince, h)
		}
	}
	for i, q := range sorting {
		slices.SortFunc(q, func(a, b queued) int {
			if c := cmp.Compare(a.since, b.since); c != 0 {
				return c
			}
			return strings.Compare(v.IDs.String(a.h), v.IDs.String(b.h))
		})
		b := v.buckets[i]
		for _, e := range q {
			b = append(b, e.h)
		}
		v.buckets[i] = b
	}
	if v.trimCursor > len(v.surplus) {
		v.trimCursor = 0
	}
}

// fresh brings the queues up to date after liveness changes.
func (v *View) fresh() {
	if v.NeedRescan && !v.Loading {
		v.Rescan()
	}
}

// startTrim records a surplus removal and charges the node's out slot.
func (v *View) startTrim(h uint32, tf *trimFlight) {
	if v.Trims[h] != nil {
		v.EndTrim(h)
	}
	v.Trims[h] = tf
	v.Nodes[tf.Node].outTasks++
}

// endTrim forgets a surplus removal and releases its slot.
func (v *View) EndTrim(h uint32) {
	tf := v.Trims[h]
	if tf == nil {
		return
	}
	delete(v.Trims, h)
	v.Nodes[tf.Node].outTasks--
}

// clearFlights forgets every task in flight (a planner taking over re-reads
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

// endFlight forgets a copy (or a rebuilt piece) in flight and releases its
// throttles; a rebuild's reads and task are released with its last piece.
func (v *View) EndFlight(h uint32) {
	f := v.Flights[h]
	if f == nil {
		return
	}
	delete(v.Flights, h)
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

// openPieces returns the pieces of rb still in flight.
func (v *View) OpenPieces(rb *rebuildFlight) []uint32 {
	var out []uint32
	for _, p := range rb.pieces {
		if f := v.Flights[p]; f != nil && f.RB == rb {
			out = append(out, p)
		}
	}
	return out
}

// trimPrefix starts the id of every surplus-removal task.
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

// seedFlight records a queued copy or trim task as in flight; it reports
// whether it did.
func (v *View) SeedFlight(t event.Task, seq uint64, deadline time.Time) bool {
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
		inPlace: v.holds(h, tg)})
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
// shard h to target. The next attempt waits a backoff and, when avoid is
// set, avoids that target. When attempt was the pol.maxAttempts-th of its
// round the shard is parked instead: nothing is tried for pol.retryLater,
// then a new round starts at attempt 1 with no target avoided. gaveUp
// reports the parking (the caller says so on rehome.repair.failed).
func (v *View) failed(h uint32, target NodeRef, attempt, serial int, now time.Time, avoid bool) (gaveUp bool) {
	r := v.retryOf(h)
	r.serial = max(r.serial, serial)
	next := max(r.Attempt, attempt+1)
	if next > v.pol.MaxAttempts {
		r.round++
		r.Attempt = 1
		r.avoid = nil
		r.notBefore = now.Add(v.pol.RetryLater)
		r.expires = r.notBefore.Add(retryMemory)
		return true
	}
	r.Attempt = next
	r.notBefore = now.Add(backoff(next))
	r.expires = now.Add(retryMemory)
	if avoid && !slices.Contains(r.avoid, target) {
		r.avoid = append(r.avoid, target)
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

// usedSerial records that task serial of shard h is taken (its id was
// already in the stream's dedup window): the next task uses a higher one.
func (v *View) UsedSerial(h uint32, serial int, now time.Time) {
	r := v.retryOf(h)
	r.serial = max(r.serial, serial)
	r.expires = now.Add(retryMemory)
}

// addAllocation counts bytes promised by an allocate call as pending on the
// nodes until commit or expiry. A new allocation for the same key replaces
// the previous one.
func (v *View) AddAllocation(key string, bytes map[NodeRef]int64, expires time.Time) {
	v.ReleaseAllocation(key)
	for r, b := range bytes {
		v.Nodes[r].allocBytes += b
	}
	v.Allocs[key] = &allocation{expires: expires, bytes: bytes}
}

func (v *View) ReleaseAllocation(key string) {
	a := v.Allocs[key]
	if a == nil {
		return
	}
	for r, b := range a.bytes {
		v.Nodes[r].allocBytes -= b
	}
	delete(v.Allocs, key)
}

// expire drops allocations and retry memories past their time.
func (v *View) Expire(now time.Time) {
	for k, a := range v.Allocs {
		if now.After(a.expires) {
			v.ReleaseAllocation(k)
		}
	}
	for h, r := range v.Retries {
		if now.After(r.expires) && v.Flights[h] == nil && now.After(r.notBefore) {
			delete(v.Retries, h)
		}
	}
}

// verifiedCopy adds a verified copy's bytes to the rate and counters.
func (v *View) VerifiedCopy(bytes int64, now time.Time) {
	v.verified += bytes
	v.lastVerified = now
	v.Rate.add(now, bytes)
}

// rateMeter is a moving sum of bytes over a window.
type rateMeter struct {
	window  time.Duration
	samples []rateSample
}

type rateSample struct {
	at    time.Time
	bytes int64
}

func (m *rateMeter) add(now time.Time, bytes int64) {
	m.trim(now)
	m.samples = append(m.samples, rateSample{now, bytes})
}

func (m *rateMeter) trim(now time.Time) {
	cut := now.Add(-m.window)
	i := 0
	for i < len(m.samples) && m.samples[i].at.Before(cut) {
		i++
	}
	m.samples = m.samples[i:]
}

// perSecond is the bytes of the window over the time it covers, counted from
// since when work began later than the window's start (at least one second).
func (m *rateMeter) PerSecond(now, since time.Time) float64 {
	m.trim(now)
	var sum int64
	for _, s := range m.samples {
		sum += s.bytes
	}
	if sum == 0 {
		return 0
	}
	start := now.Add(-m.window)
	if since.After(start) {
		start = since
	}
	span := max(now.Sub(start), time.Second)
	return float64(sum) / span.Seconds()
}
