// Package core holds the planner's state and decisions, with no bus, no
// metrics, no tracing, no goroutine and no wall clock: a driver (the
// planner service's bus adapter, a test, the simulator) feeds it inputs
// (placement entries, node registrations, liveness verdicts, heartbeats,
// task results), each with an explicit time, asks it for a planning round
// and carries out what it decided (tasks to issue, map writes, trims, lost
// shards to announce). A View is not safe for concurrent use: the driver
// serialises calls (the service holds a mutex).
//
// Files by role: nodes.go (registrations, verdicts, heartbeats), shards.go
// (the compact placement map), queue.go (the risk-ordered repair queue),
// inflight.go (tasks issued and not resolved, retries), round.go (one
// planning round and its throttles), choose.go (target and source of a
// copy), rebuild.go and stripes.go (erasure-coded stripes), results.go
// (movers' results, expiry), heal.go (in-place heal and inventory checks),
// drain.go, rebalance.go, orphans.go, report.go and risk.go (status and
// progress), harness.go (a driver for tests and simulators).
package core

import (
	"errors"
	"time"

	"github.com/rehome/rehome/services/planner/intern"
	"github.com/rehome/rehome/shared/model"
)

// Policy is the failure policy of the view.
type Policy struct {
	MaxAttempts int           // failed attempts before a shard is parked
	RetryLater  time.Duration // how long it stays parked
	// AutoHeal checks a node's inventory when it boots anew while live, or
	// comes back from down (see wantReconcile).
	AutoHeal bool
	// Copysets keeps repairs inside copysets (`--placement copyset`): a
	// repair's target is ranked by a hash of its live holders' ids alone
	// (placement.SurvivorSalt with TargetOptions.Sticky), so every shard
	// that lost the same node of the same copyset goes to the same new
	// node. False: the least loaded target (random placement).
	Copysets bool
}

// allocation is bytes promised to nodes by an allocate call, counted as
// pending until the object is committed or the allocation expires.
type allocation struct {
	expires time.Time
	bytes   map[NodeRef]int64
	Shards  map[string]bool // the shard ids being written (never orphans)
}

// View is the planner's in-memory picture of the cluster: nodes, the whole
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
	// unlisted remembers holders entries lately lost (see Land).
	unlisted unlisted
	// unmapped remembers, by shard id, the task of a copy or rebuild that
	// was in flight when its shard left the map (see noteUnmapped).
	unmapped map[string]string

	// draining counts the nodes being drained; removed holds the ids
	// forgotten by `rehome node remove` (see drain.go).
	draining int
	removed  map[string]bool
	// Moves are the copies being rebalanced, by shard (see rebalance.go).
	Moves map[uint32]move

	Rate         rateMeter
	verified     int64     // bytes verified by copies since start
	lastVerified time.Time // last verified copy
	WorkSince    time.Time // when repair work last appeared (zero: none)
	StallSent    bool

	holderBuf []int
	rescans   int   // rescans done (see Rescans)
	visits    int64 // shard records examined (see Visits)
	// qt are the running sums over the repair queue (see queueTally).
	qt queueTally
	// byNode is the node → shards index (see index.go).
	byNode [][]uint32

	// DeferMerges leaves the shards a node's refresh finds newly short
	// out of their queues for the caller to sort without its lock (see
	// merge.go): pending lists them, pendingCount counts them by bucket,
	// outstanding says a batch is out (TakePending) and not merged back.
	DeferMerges  bool
	pending      []pendingAdd
	pendingCount [numBuckets]int
	outstanding  bool
}

// NewView returns an empty view reading time from clock, with the failure
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

// AddAllocation counts bytes promised by an allocate call as pending on the
// nodes until commit or expiry. A new allocation for the same key replaces
// the previous one.
func (v *View) AddAllocation(key string, bytes map[NodeRef]int64, expires time.Time) {
	v.ReleaseAllocation(key)
	for r, b := range bytes {
		v.Nodes[r].allocBytes += b
	}
	v.Allocs[key] = &allocation{expires: expires, bytes: bytes}
}

// ReleaseAllocation forgets the bytes promised by allocation key (commit or
// abort); an unknown key is ignored.
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

// Expire drops allocations and retry memories past their time.
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

// VerifiedCopy adds a verified copy's bytes to the rate and counters.
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

// PerSecond is the bytes of the window over the time it covers, counted from
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
