package planner

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/rehome/rehome/services/planner/intern"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// nodeRef is a node's small-integer identity inside the view.
type nodeRef = uint16

const (
	maxNodes      = 0xFFFF // nodeRef 0xFFFF is never issued
	inlineHolders = 5      // holders kept in the shard record; more spill to a map
	maxHolders    = 64
	noBucket      = 0xFF
	pageBits      = 16
	pageSize      = 1 << pageBits
	maxLayouts    = 255
)

// Flags of a shard record.
const (
	flagLostSent uint8 = 1 << iota // event.Lost published for this loss
)

// node is everything the planner knows about one node id: its registration,
// the detector's verdict, its last heartbeat, and counters derived from the map
// and from work in flight.
type node struct {
	id         string
	registered bool
	rack, addr string
	capacity   int64
	state      model.State // "" = no liveness record (up when registered)
	since      time.Time
	flaps      int   // from the liveness record, for status
	graceMS    int64 // from the liveness record, for status

	hbUsed, hbCapacity int64
	hbAt               time.Time

	shards int   // map entries naming the node
	bytes  int64 // their bytes

	inTasks, outTasks int   // copies writing to / reading from the node
	inBytes           int64 // bytes of the copies writing to it
	allocBytes        int64 // bytes allocated to it and not yet committed
}

// effState is the state the planner acts on: an unregistered node is down,
// a registered one without a verdict is up.
func (n *node) effState() model.State {
	switch {
	case !n.registered:
		return model.StateDown
	case n.state == "":
		return model.StateUp
	}
	return n.state
}

// shard is one placement-map entry, 32 bytes. The id lives in the intern
// table; the checksum is re-read from the map when a task is issued.
type shard struct {
	size    int64
	stripe  uint32
	objHash uint32 // groups the pieces of an erasure-coded stripe
	holders [inlineHolders]nodeRef
	nh      uint8 // number of holders (> inlineHolders: see view.spill)
	index   uint8
	layout  uint8 // index into view.layouts
	flags   uint8
	bucket  uint8 // live-holder count of the repair queue it sits in, or noBucket
}

// flight is a copy task issued and not yet resolved.
type flight struct {
	task     string
	target   nodeRef
	source   nodeRef
	bytes    int64
	attempt  int
	deadline time.Time
	seq      uint64           // task message's sequence in the work-queue stream (0: unknown)
	rev      uint64           // placement entry revision when issued (0: unknown)
	entry    *model.Placement // the entry as read then (nil: unknown)
	incident string
}

// retry remembers failed attempts at one shard.
type retry struct {
	attempt   int       // attempt number of the next task
	notBefore time.Time // backoff
	avoid     []nodeRef // targets that failed
	expires   time.Time // forget the avoid list after this
}

// allocation is bytes promised to nodes by an allocate call, counted as
// pending until the object is committed or the allocation expires.
type allocation struct {
	expires time.Time
	bytes   map[nodeRef]int64
}

// view is the planner's in-memory picture of the cluster: nodes, the whole
// placement map in compact form, the repair queue derived from them, and work
// in flight. Its methods are pure state transitions (no I/O, time passed in);
// the service guards it with a mutex.
type view struct {
	nodes   []node
	nodeIdx map[string]nodeRef

	ids     *intern.Table
	pages   [][]shard
	spill   map[uint32][]nodeRef // holders of shards with more than inlineHolders
	layouts []model.Layout
	objects int // entries that are chunk/stripe 0, piece 0: one per object

	// buckets[n] lists, sorted by shard id, the shards with n live holders
	// and fewer than they need. Bucket 0 holds the lost (or missing EC pieces).
	buckets     [][]uint32
	needRescan  bool // liveness changed: buckets must be rebuilt
	loading     bool // initial load: skip incremental queue upkeep
	flights     map[uint32]*flight
	copyFlights int
	retries     map[uint32]*retry
	allocs      map[string]*allocation

	rate         rateMeter
	verified     int64     // bytes verified by copies since start
	lastVerified time.Time // last verified copy
	workSince    time.Time // when repair work last appeared (zero: none)
	stallSent    bool

	holderBuf []int
	rescanDur time.Duration // how long the last rescan took (a measurement only)
}

func newView() *view {
	return &view{
		nodeIdx: make(map[string]nodeRef),
		ids:     intern.New(),
		spill:   make(map[uint32][]nodeRef),
		buckets: make([][]uint32, 17),
		flights: make(map[uint32]*flight),
		retries: make(map[uint32]*retry),
		allocs:  make(map[string]*allocation),
		rate:    rateMeter{window: 20 * time.Second},
	}
}

// errTooMany refuses input that would overflow the compact representation.
var errTooMany = errors.New("too many")

// ref returns the nodeRef of id, creating an unregistered node if needed.
func (v *view) ref(id string) (nodeRef, error) {
	if r, ok := v.nodeIdx[id]; ok {
		return r, nil
	}
	if len(v.nodes) >= maxNodes {
		return 0, fmt.Errorf("%w nodes (%d)", errTooMany, maxNodes)
	}
	r := nodeRef(len(v.nodes))
	v.nodes = append(v.nodes, node{id: id})
	v.nodeIdx[id] = r
	return r, nil
}

// setNode records a node registration.
func (v *view) setNode(n model.Node) error {
	r, err := v.ref(n.ID)
	if err != nil {
		return err
	}
	nd := &v.nodes[r]
	if !nd.registered {
		v.needRescan = true
	}
	nd.registered, nd.rack, nd.addr, nd.capacity = true, n.Rack, n.Addr, n.CapacityBytes
	return nil
}

// removeNode forgets a registration (the node's copies stop counting).
func (v *view) removeNode(id string) {
	if r, ok := v.nodeIdx[id]; ok && v.nodes[r].registered {
		v.nodes[r].registered = false
		v.needRescan = true
	}
}

// setLiveness records a detector verdict; it reports whether the node's
// effective state changed.
func (v *view) setLiveness(l model.Liveness) (bool, error) {
	r, err := v.ref(l.Node)
	if err != nil {
		return false, err
	}
	nd := &v.nodes[r]
	before := nd.effState()
	nd.state, nd.since = l.State, l.Since
	nd.flaps, nd.graceMS = l.Flaps, l.GraceMS
	changed := before != nd.effState()
	if changed {
		v.needRescan = true
	}
	return changed, nil
}

// clearLiveness drops a verdict (the node counts as up again if registered).
func (v *view) clearLiveness(id string) bool {
	r, ok := v.nodeIdx[id]
	if !ok {
		return false
	}
	nd := &v.nodes[r]
	before := nd.effState()
	nd.state, nd.since = "", time.Time{}
	nd.flaps, nd.graceMS = 0, 0
	changed := before != nd.effState()
	if changed {
		v.needRescan = true
	}
	return changed
}

// heartbeat records a node's reported usage. Heartbeats of ids the view has
// never seen are ignored (the registration comes first).
func (v *view) heartbeat(id string, used, capacity int64, now time.Time) {
	if r, ok := v.nodeIdx[id]; ok {
		nd := &v.nodes[r]
		nd.hbUsed, nd.hbCapacity, nd.hbAt = used, capacity, now
	}
}

func (v *view) rec(h uint32) *shard { return &v.pages[h>>pageBits][h&(pageSize-1)] }

func (v *view) holders(h uint32) []nodeRef {
	s := v.rec(h)
	if s.nh > inlineHolders {
		return v.spill[h]
	}
	return s.holders[:s.nh]
}

func (v *view) holds(h uint32, r nodeRef) bool { return slices.Contains(v.holders(h), r) }

func (v *view) live(r nodeRef) bool { return v.nodes[r].effState().Live() }

func (v *view) liveCount(h uint32) int {
	n := 0
	for _, r := range v.holders(h) {
		if v.live(r) {
			n++
		}
	}
	return n
}

func (v *view) layoutIndex(l model.Layout) (uint8, error) {
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
// in flight whose target now holds the shard is resolved.
func (v *view) upsertPlacement(p model.Placement) error {
	if len(p.Nodes) > maxHolders {
		return fmt.Errorf("%w holders (%d) for shard %s", errTooMany, len(p.Nodes), p.Shard)
	}
	li, err := v.layoutIndex(p.Layout)
	if err != nil {
		return err
	}
	refs := make([]nodeRef, 0, len(p.Nodes))
	for _, id := range p.Nodes {
		r, err := v.ref(id)
		if err != nil {
			return err
		}
		if !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	h, added := v.ids.Intern(p.Shard)
	for int(h>>pageBits) >= len(v.pages) {
		v.pages = append(v.pages, make([]shard, pageSize))
	}
	s := v.rec(h)
	if added {
		*s = shard{bucket: noBucket}
	} else {
		v.account(h, -1)
		delete(v.spill, h)
	}
	s.size, s.stripe, s.objHash = p.Size, uint32(p.Stripe), objHash(p.ObjectID)
	s.index, s.layout, s.nh = uint8(p.Index), li, uint8(len(refs))
	if len(refs) > inlineHolders {
		v.spill[h] = refs
	} else {
		copy(s.holders[:], refs)
	}
	v.account(h, +1)
	if f := v.flights[h]; f != nil && v.holds(h, f.target) {
		v.endFlight(h)
	}
	v.refresh(h)
	return nil
}

// account adds (sign +1) or removes (-1) an entry's share of the node and
// object counters.
func (v *view) account(h uint32, sign int) {
	s := v.rec(h)
	for _, r := range v.holders(h) {
		v.nodes[r].shards += sign
		v.nodes[r].bytes += int64(sign) * s.size
	}
	if s.stripe == 0 && s.index == 0 {
		v.objects += sign
	}
}

// removePlacement drops a map entry; it reports whether it existed.
func (v *view) removePlacement(id string) bool {
	h, ok := v.ids.Lookup(id)
	if !ok {
		return false
	}
	s := v.rec(h)
	v.unqueue(h)
	v.account(h, -1)
	if v.flights[h] != nil {
		v.endFlight(h)
	}
	delete(v.spill, h)
	delete(v.retries, h)
	*s = shard{bucket: noBucket}
	v.ids.Remove(h)
	return true
}

// wantBucket is the repair queue a shard belongs in (noBucket: healthy).
func (v *view) wantBucket(h uint32) uint8 {
	s := v.rec(h)
	live := v.liveCount(h)
	if live >= v.layouts[s.layout].Copies() {
		return noBucket
	}
	return uint8(live)
}

// refresh moves one shard to the queue its holders call for.
func (v *view) refresh(h uint32) {
	if v.loading || v.needRescan {
		v.needRescan = true
		return
	}
	s := v.rec(h)
	want := v.wantBucket(h)
	if want != 0 {
		s.flags &^= flagLostSent
	}
	if want == noBucket {
		delete(v.retries, h)
	}
	if want == s.bucket {
		return
	}
	v.unqueue(h)
	if want != noBucket {
		b := v.buckets[want]
		i := v.search(b, v.ids.String(h))
		v.buckets[want] = slices.Insert(b, i, h)
		s.bucket = want
	}
}

// unqueue takes a shard out of its repair queue.
func (v *view) unqueue(h uint32) {
	s := v.rec(h)
	if s.bucket == noBucket {
		return
	}
	b := v.buckets[s.bucket]
	if i := v.search(b, v.ids.String(h)); i < len(b) && b[i] == h {
		v.buckets[s.bucket] = slices.Delete(b, i, i+1)
	}
	s.bucket = noBucket
}

// search returns where id sits (or would sit) in a bucket sorted by id.
func (v *view) search(b []uint32, id string) int {
	i, _ := slices.BinarySearchFunc(b, id, func(h uint32, id string) int {
		return strings.Compare(v.ids.String(h), id)
	})
	return i
}

// rescan rebuilds every repair queue from the map and node states: the
// level-triggered heart of the planner. O(shards) plus sorting the queues.
func (v *view) rescan() {
	start := time.Now()
	defer func() { v.rescanDur = time.Since(start) }()
	v.needRescan = false
	for i := range v.buckets {
		v.buckets[i] = v.buckets[i][:0]
	}
	limit := v.ids.Limit()
	for h := uint32(0); h < limit; h++ {
		if !v.ids.Valid(h) {
			continue
		}
		s := v.rec(h)
		want := v.wantBucket(h)
		s.bucket = want
		if want != 0 {
			s.flags &^= flagLostSent
		}
		if want != noBucket {
			v.buckets[want] = append(v.buckets[want], h)
		} else {
			delete(v.retries, h)
		}
	}
	for i := range v.buckets {
		slices.SortFunc(v.buckets[i], func(a, b uint32) int {
			return strings.Compare(v.ids.String(a), v.ids.String(b))
		})
	}
}

// fresh brings the queues up to date after liveness changes.
func (v *view) fresh() {
	if v.needRescan && !v.loading {
		v.rescan()
	}
}

// startFlight records an issued copy and charges the throttles.
func (v *view) startFlight(h uint32, f *flight) {
	if old := v.flights[h]; old != nil {
		v.endFlight(h)
	}
	v.flights[h] = f
	v.copyFlights++
	v.nodes[f.target].inTasks++
	v.nodes[f.target].inBytes += f.bytes
	v.nodes[f.source].outTasks++
}

// endFlight forgets a copy in flight and releases its throttles.
func (v *view) endFlight(h uint32) {
	f := v.flights[h]
	if f == nil {
		return
	}
	delete(v.flights, h)
	v.copyFlights--
	v.nodes[f.target].inTasks--
	v.nodes[f.target].inBytes -= f.bytes
	v.nodes[f.source].outTasks--
}

// seedFlight records a queued copy task as in flight; it reports whether it did.
func (v *view) seedFlight(t event.Task, seq uint64, deadline time.Time) bool {
	h, ok := v.ids.Lookup(t.Shard)
	if !ok || len(t.Sources) == 0 {
		return false
	}
	tg, err := v.ref(t.Target)
	if err != nil {
		return false
	}
	src, err := v.ref(t.Sources[0])
	if err != nil {
		return false
	}
	r := v.retries[h]
	if r == nil {
		r = &retry{attempt: 1, expires: deadline}
		v.retries[h] = r
	}
	r.attempt = max(r.attempt, t.Attempt+1) // the next task gets a fresh id
	if old := v.flights[h]; old != nil && old.attempt > t.Attempt {
		return false
	}
	v.startFlight(h, &flight{task: t.Task, target: tg, source: src, bytes: t.Bytes,
		attempt: t.Attempt, deadline: deadline, seq: seq, incident: t.Incident})
	return true
}

// failed records a final failure of the copy to target: the next attempt
// avoids it and waits a backoff.
func (v *view) failed(h uint32, target nodeRef, attempt int, now time.Time) {
	r := v.retries[h]
	if r == nil {
		r = &retry{attempt: 1}
		v.retries[h] = r
	}
	r.attempt = max(r.attempt, attempt) + 1
	r.notBefore = now.Add(backoff(r.attempt))
	r.expires = now.Add(10 * time.Minute)
	if !slices.Contains(r.avoid, target) {
		r.avoid = append(r.avoid, target)
	}
}

// backoff is the wait before attempt n (n >= 2): 1 s doubling, at most 30 s.
func backoff(n int) time.Duration {
	d := time.Second << min(max(n-2, 0), 5)
	return min(d, 30*time.Second)
}

// nextAttempt is the attempt number of the next task for shard h.
func (v *view) nextAttempt(h uint32) int {
	if r := v.retries[h]; r != nil {
		return r.attempt
	}
	return 1
}

// bumpAttempt moves shard h to a new attempt number (a timed-out task or a
// task id already used).
func (v *view) bumpAttempt(h uint32, now time.Time) {
	r := v.retries[h]
	if r == nil {
		r = &retry{attempt: 1}
		v.retries[h] = r
	}
	r.attempt++
	r.expires = now.Add(10 * time.Minute)
}

// addAllocation counts bytes promised by an allocate call as pending on the
// nodes until commit or expiry. A new allocation for the same key replaces
// the previous one.
func (v *view) addAllocation(key string, bytes map[nodeRef]int64, expires time.Time) {
	v.releaseAllocation(key)
	for r, b := range bytes {
		v.nodes[r].allocBytes += b
	}
	v.allocs[key] = &allocation{expires: expires, bytes: bytes}
}

func (v *view) releaseAllocation(key string) {
	a := v.allocs[key]
	if a == nil {
		return
	}
	for r, b := range a.bytes {
		v.nodes[r].allocBytes -= b
	}
	delete(v.allocs, key)
}

// expire drops allocations and retry memories past their time.
func (v *view) expire(now time.Time) {
	for k, a := range v.allocs {
		if now.After(a.expires) {
			v.releaseAllocation(k)
		}
	}
	for h, r := range v.retries {
		if now.After(r.expires) && v.flights[h] == nil {
			delete(v.retries, h)
		}
	}
}

// verifiedCopy adds a verified copy's bytes to the rate and counters.
func (v *view) verifiedCopy(bytes int64, now time.Time) {
	v.verified += bytes
	v.lastVerified = now
	v.rate.add(now, bytes)
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
func (m *rateMeter) perSecond(now, since time.Time) float64 {
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
