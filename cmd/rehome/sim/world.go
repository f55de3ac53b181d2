package sim

import (
	"container/heap"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// copyState is what one node's disk holds of one shard.
type copyState uint8

const (
	// intact: written by a verified copy (or the client) and unharmed.
	intact copyState = iota + 1
	// rotten: bit rot changed it; nobody knows until it is read or scrubbed.
	rotten
	// gone: a fault took it (wiped disk, quarantined after rot).
	gone
	// unverified: a mover landed it without checking its checksum (a bug).
	unverified
)

// copyOn is one node's copy of a shard.
type copyOn struct {
	node  int32
	state copyState
}

// simShard is one replicated shard: what the disks truly hold of it.
type simShard struct {
	id     string
	sha    string
	copies []copyOn
	// faults counts the copies faults destroyed since the shard last had
	// its full redundancy listed intact: a loss is excused only when it
	// reaches the redundancy.
	faults int
	lost   bool
}

// simNode is one storage node: its process, disk and links.
type simNode struct {
	id, rack string
	rackIdx  int
	// up: the process runs (serves data and heartbeats); destroyed: it
	// never comes back (crash-stop), its disk with it.
	up, destroyed bool
	// cut: its heartbeats do not reach the detector (a partition); the
	// data path still works.
	cut  int
	full bool
	slow int
	boot int
	// outFree and inFree are when its disk's read and write streams are
	// free again.
	outFree, inFree time.Duration
	// shards lists the shards ever placed on it (a copy may be gone since);
	// bytes counts those its disk holds.
	shards []int32
	bytes  int64
}

func (n *simNode) bootID() string { return fmt.Sprintf("%s-b%d", n.id, n.boot) }

// world is the simulated cluster: nodes, racks and disks, on the clock.
type world struct {
	nodes  []*simNode
	shards []*simShard
	index  map[string]int32
	size   int64
	bw     int64 // bytes per second of one node's disk stream
	clock  clock
}

// newWorld builds n nodes dealt round-robin on racks and s shard records.
func newWorld(n, racks, s int, size, bw int64) *world {
	w := &world{size: size, bw: bw, index: make(map[string]int32, s)}
	for i := 0; i < n; i++ {
		r := i % racks
		w.nodes = append(w.nodes, &simNode{id: fmt.Sprintf("storage-%d", i+1), rack: fmt.Sprintf("rack-%d", r+1), rackIdx: r, up: true})
	}
	for i := 0; i < s; i++ {
		id := fmt.Sprintf("sh-%07d", i)
		sum := sha256.Sum256([]byte(id))
		w.shards = append(w.shards, &simShard{id: id, sha: hex.EncodeToString(sum[:])})
		w.index[id] = int32(i)
	}
	return w
}

// copyOf returns shard s's copy on node n, if any.
func (s *simShard) copyOf(n int32) (*copyOn, bool) {
	for i := range s.copies {
		if s.copies[i].node == n {
			return &s.copies[i], true
		}
	}
	return nil, false
}

// put writes shard s on node n in state st.
func (w *world) put(s, n int32, st copyState) {
	sh := w.shards[s]
	if c, ok := sh.copyOf(n); ok {
		w.setState(c, n, st)
		return
	}
	sh.copies = append(sh.copies, copyOn{node: n, state: st})
	w.nodes[n].shards = append(w.nodes[n].shards, s)
	if st != gone {
		w.nodes[n].bytes += w.size
	}
}

// setState changes copy c on node n to st, keeping the node's byte count.
func (w *world) setState(c *copyOn, n int32, st copyState) {
	if (c.state == gone) != (st == gone) {
		if st == gone {
			w.nodes[n].bytes -= w.size
		} else {
			w.nodes[n].bytes += w.size
		}
	}
	c.state = st
}

// remove deletes shard s from node n's disk.
func (w *world) remove(s, n int32) {
	sh := w.shards[s]
	for i := range sh.copies {
		if sh.copies[i].node == n {
			if sh.copies[i].state != gone {
				w.nodes[n].bytes -= w.size
			}
			sh.copies = append(sh.copies[:i], sh.copies[i+1:]...)
			return
		}
	}
}

// nodeIndex returns the index of node id.
func (w *world) nodeIndex(id string) int32 {
	var i int
	if _, err := fmt.Sscanf(id, "storage-%d", &i); err != nil || i < 1 || i > len(w.nodes) {
		return -1
	}
	return int32(i - 1)
}

// due is something due at a virtual time; seq orders events due at the
// same time by when they were scheduled.
type due struct {
	at  time.Duration
	seq uint64
	do  func()
}

// clock is the virtual clock: a queue of events by due time.
type clock struct {
	now time.Duration
	seq uint64
	q   eventQueue
}

// at schedules do at time t (not before now).
func (c *clock) at(t time.Duration, do func()) {
	c.seq++
	heap.Push(&c.q, due{at: max(t, c.now), seq: c.seq, do: do})
}

// runDue runs every event due at or before t, in order, and moves now to t.
func (c *clock) runDue(t time.Duration) {
	for len(c.q) > 0 && c.q[0].at <= t {
		e := heap.Pop(&c.q).(due)
		c.now = e.at
		e.do()
	}
	c.now = t
}

type eventQueue []due

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || q[i].at == q[j].at && q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(due)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
