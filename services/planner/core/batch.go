package core

import (
	"slices"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Batching: several copies from one source to one target go out as one
// task (one message, one acknowledgement, one plan entry) whose shards the
// target pulls one after another. Each shard keeps its own flight, task id,
// attempt and result: it counts only once the target verified it, its Done
// goes out as soon as it did, and a shard that fails is re-planned alone.
// Small shards save bus messages; shards of a few MiB save the planner
// round trip (result, map write, next task) between copies on one slot.
//
// Throttles: a batch is one transfer (its shards move one at a time). It
// takes one in slot of its target, one out slot of its source and one unit
// of the global limit, however many shards it carries; the byte cap and the
// target's pending bytes count every shard's bytes. BatchBytesMax bounds how
// long the shards at a batch's end wait behind the first.

// BatchShardMax is the largest shard that joins a batch (a default chunk is 4 MiB).
const BatchShardMax = 16 << 20

// BatchBytesMax bounds the bytes of one batch: four default chunks. A batch
// is one transfer at a time, so the last batches of a repair decide its
// tail: at 64 MiB (eight chunks) the last ones ran alone for up to a
// second while the other slots sat idle.
const BatchBytesMax = 16 << 20

// batchFlight is one batched copy task: formed by a planning round, then
// shared by the flights of its shards while any of them is open.
type batchFlight struct {
	src, tg  NodeRef
	incident string
	shards   int   // shards planned into it
	bytes    int64 // their bytes
	open     int   // flights open (reserved or in flight)
}

// room reports whether a shard of size bytes may join b under at most max shards.
func (b *batchFlight) room(size int64, max int) bool {
	return b.shards < max && b.bytes+size <= BatchBytesMax
}

// batching reports whether the round forms batches and shard size may join one.
func (pc *planCtx) batching(size int64) bool {
	return pc.lim.Batch > 1 && size <= BatchShardMax
}

// batchRoom reports whether a batch formed this round can take another shard.
func (pc *planCtx) batchRoom() bool {
	for _, b := range pc.forming {
		if b.room(0, pc.lim.Batch) {
			return true
		}
	}
	return false
}

// decideCopy is decide for a replicated shard, forming batches of small
// shards: a target and source that already have a batch with room this
// round are offered as if that batch took no slot, and a decision that can
// read from such a batch's source into its target joins it (joined true:
// no slot, no budget charged). Otherwise the shard is decided again
// without that offer and starts a batch of its own, when slots and budget
// allow (a round past its budget forms no new batch: fresh reports whether
// one may).
func (v *View) decideCopy(h uint32, pc *planCtx, fresh bool) (d Decision, joined, ok bool) {
	size := v.Record(h).size
	if !pc.batching(size) {
		if !fresh {
			return Decision{}, false, false
		}
		d, ok = v.decide(h, pc)
		return d, false, ok
	}
	room := pc.forming[:0:0]
	for _, b := range pc.forming {
		if b.room(size, pc.lim.Batch) {
			room = append(room, b)
			pc.cands[b.tg].PendingTasks--
			pc.cands[b.src].Reads--
		}
	}
	d, ok = v.decide(h, pc)
	for _, b := range room {
		pc.cands[b.tg].PendingTasks++
		pc.cands[b.src].Reads++
	}
	if !ok {
		return Decision{}, false, false
	}
	if !d.inPlace {
		r := v.Retries[h]
		for _, b := range room {
			if b.tg != d.Target || b.incident != d.Incident {
				continue
			}
			i := slices.Index(d.Sources, b.src)
			if i < 0 || (r != nil && slices.Contains(r.badSrcs, b.src)) || pc.cands[b.src].State != model.StateUp {
				continue
			}
			d.Sources = append([]NodeRef{b.src}, slices.Delete(slices.Clone(d.Sources), i, i+1)...)
			b.shards++
			b.bytes += d.Bytes
			d.batch = b
			return d, true, true
		}
	}
	// A batch of its own: the slots must really be free (the offer above
	// may have hidden a full target or source); if not, choose again
	// without the offer.
	if !fresh {
		return Decision{}, false, false
	}
	if src, tg := d.Sources[0], d.Target; len(room) > 0 && (pc.cands[tg].PendingTasks >= pc.maxIn || pc.cands[src].Reads >= pc.maxOut) {
		// What this finds busy holds only without the offer: keep it out
		// of the round's memo, which later shards consult with the offer.
		memo := pc.busy
		pc.busy = map[uint64]int64{}
		d, ok = v.decide(h, pc)
		pc.busy = memo
		if !ok {
			return Decision{}, false, false
		}
	}
	if !d.inPlace {
		d.batch = &batchFlight{src: d.Sources[0], tg: d.Target, incident: d.Incident, shards: 1, bytes: d.Bytes}
		pc.forming = append(pc.forming, d.batch)
	}
	return d, false, true
}

// Batches groups a round's copies the way they are issued: each batch of
// two or more shards as one group (in planning order), every other copy or
// rebuild alone.
func (p Plan) Batches() [][]Decision {
	var out [][]Decision
	at := map[*batchFlight]int{}
	for _, d := range p.Copies {
		if d.batch != nil && d.batch.shards > 1 {
			if i, ok := at[d.batch]; ok {
				out[i] = append(out[i], d)
				continue
			}
			at[d.batch] = len(out)
		}
		out = append(out, []Decision{d})
	}
	return out
}

// BatchTask renders reserved batched copies ds (one group of Plan.Batches,
// those still to issue, the map entry of each in ps) as one task on the
// first one's target: each shard a member with its own task id, attempt,
// sources and checksum; the task's own fields repeat the first member.
func (v *View) BatchTask(ds []Decision, ps []model.Placement) event.Task {
	t := v.CopyTask(ds[0], ps[0])
	if len(ds) < 2 {
		return t
	}
	t.Batch = make([]event.BatchShard, len(ds))
	for i, d := range ds {
		m := v.CopyTask(d, ps[i])
		t.Batch[i] = event.BatchShard{Task: m.Task, Incident: m.Incident, Shard: m.Shard, Sources: m.Sources,
			Bytes: m.Bytes, SHA256: m.SHA256, Attempt: m.Attempt, RackRelaxed: m.RackRelaxed}
	}
	return t
}

// seedBatch records the shards of a queued batched copy task t that have
// not landed yet as in flight, sharing one batch (see SeedFlight); it
// reports whether any was.
func (v *View) seedBatch(t event.Task, seq uint64, deadline time.Time) bool {
	src, err1 := v.Ref(t.Sources[0])
	tg, err2 := v.Ref(t.Target)
	if err1 != nil || err2 != nil {
		return false
	}
	b := &batchFlight{src: src, tg: tg, incident: t.Incident}
	seeded := false
	for _, m := range t.Members() {
		if len(m.Sources) == 0 || m.Sources[0] != t.Sources[0] {
			continue
		}
		// A batch never carries a copy back in place, so a map listing
		// the target means the shard landed: its Done was handled (the
		// batch stays queued until its last shard is done).
		if h, ok := v.IDs.Lookup(m.Shard); ok && v.holds(h, tg) {
			continue
		}
		if v.seedCopy(m, seq, deadline, b) {
			b.shards++
			b.bytes += m.Bytes
			seeded = true
		}
	}
	return seeded
}
