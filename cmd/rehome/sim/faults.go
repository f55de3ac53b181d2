package sim

import (
	"slices"
	"time"

	"github.com/rehome/rehome/services/detector/liveness"
	"github.com/rehome/rehome/shared/model"
)

// secondAfter is how long after the first node of a SecondFailure the
// second stops: past the detector's suspect + grace, while repair runs.
const secondAfter = 45 * time.Second

// scrubAfter is how long a storage node's scrubber takes to find a rotten
// copy, quarantine it and report it.
const scrubAfter = 2 * time.Minute

// schedule puts every fault of s on the clock.
func (r *run) schedule(s Schedule) {
	for _, f := range s {
		r.w.clock.at(f.At, func() { r.apply(f) })
	}
}

// apply starts fault f now (and schedules its end).
func (r *run) apply(f Fault) {
	w := r.w
	now := w.clock.now
	r.tracef("fault %s", f)
	switch f.Kind {
	case CrashStop, RackLoss, OnePercent:
		for _, n := range f.Nodes {
			r.destroy(int32(n))
		}
	case SecondFailure:
		r.destroy(int32(f.Nodes[0]))
		if len(f.Nodes) > 1 {
			second := int32(f.Nodes[1])
			w.clock.at(now+secondAfter, func() { r.tracef("second failure storage-%d", second+1); r.destroy(second) })
		}
	case CrashRestart, Maintenance:
		n := w.nodes[f.Nodes[0]]
		if n.destroyed {
			return
		}
		if f.Kind == Maintenance {
			r.det.SetMaintenance(n.id, true, r.t())
			r.verdict(n.id, model.StateMaintenance)
		}
		n.up = false
		w.clock.at(now+f.For, func() {
			if f.Kind == Maintenance {
				// The operator's "off" removes the node's liveness record.
				r.det.SetMaintenance(n.id, false, r.t())
				delete(r.verdicts, n.id)
			}
			r.restart(n)
		})
	case WipeDisk:
		i := int32(f.Nodes[0])
		n := w.nodes[i]
		if n.destroyed {
			return
		}
		n.up = false
		for _, s := range r.sortedShards(i) {
			if c, ok := w.shards[s].copyOf(i); ok && c.state != gone {
				w.setState(c, i, gone)
				r.faulted(s)
			}
		}
		w.clock.at(now+f.For, func() { r.restart(n) })
	case FullDisk:
		n := w.nodes[f.Nodes[0]]
		n.full = true
		w.clock.at(now+f.For, func() { n.full = false })
	case SlowDisk:
		n := w.nodes[f.Nodes[0]]
		n.slow++
		w.clock.at(now+f.For, func() { n.slow-- })
	case BitRot:
		i := int32(f.Nodes[0])
		for _, s := range r.sortedShards(i) {
			c, ok := w.shards[s].copyOf(i)
			if !ok || c.state != intact {
				continue
			}
			w.setState(c, i, rotten)
			r.faulted(s)
			w.clock.at(now+scrubAfter, func() { r.scrub(s, i) })
			break
		}
	case Partition:
		n := w.nodes[f.Nodes[0]]
		n.cut++
		w.clock.at(now+f.For, func() { n.cut-- })
	case Flap:
		n := w.nodes[f.Nodes[0]]
		for t := time.Duration(0); t < f.For; t += 20 * time.Second {
			w.clock.at(now+t, func() { n.cut++ })
			w.clock.at(now+t+4*time.Second, func() { n.cut-- })
		}
	case MoverCrash:
		if id, ok := r.firstActive(); ok {
			r.tracef("mover dies copying %s", id)
			r.transfers[id].dead = true
		}
	case PlannerFailover:
		if err := r.pl.failover(r.shardIDs(), r.verdicts); err != nil {
			r.violate("planner failover: %v", err)
		}
	case Drain:
		if n := w.nodes[f.Nodes[0]]; !n.destroyed {
			if err := r.pl.drain(n.id); err != nil {
				r.violate("drain %s: %v", n.id, err)
			}
		}
	case BusLoss:
		r.busLoss++
		w.clock.at(now+f.For, func() { r.busLoss-- })
	case BusDup:
		r.busDup++
		w.clock.at(now+f.For, func() { r.busDup-- })
	case BusDelay:
		r.busDelay++
		w.clock.at(now+f.For, func() { r.busDelay-- })
	case DetectorRestart:
		r.detStopped++
		w.clock.at(now+f.For, func() {
			r.detStopped--
			if r.detStopped == 0 {
				r.restartDetector()
			}
		})
	case Pause:
		r.pauses++
		r.pl.pause(true)
		w.clock.at(now+f.For, func() {
			r.pauses--
			r.pl.pause(r.pauses > 0)
		})
	}
}

// restartDetector replaces the detector by a fresh tracker, seeded as the
// service's start seeds it: every node's liveness record (its last verdict,
// or maintenance; none after the operator took it out of maintenance), and
// the last heartbeat each node got onto the bus, with its boot id. It
// judges nobody before its startup hold ends.
func (r *run) restartDetector() {
	now := r.t()
	r.det = liveness.New(r.cfg.Detector, now)
	for _, n := range r.w.nodes {
		last, heard := r.lastBeat[n.id]
		if !heard {
			last = r.epoch
		}
		if st, ok := r.verdicts[n.id]; ok {
			r.det.Seed(n.id, last, st)
		}
		r.det.Heard(n.id, r.lastBoot[n.id], last)
	}
	r.tracef("detector restarted")
}

// destroy stops node i for good, its disk with it.
func (r *run) destroy(i int32) {
	n := r.w.nodes[i]
	if n.destroyed {
		return
	}
	n.up, n.destroyed = false, true
	for _, s := range r.sortedShards(i) {
		if c, ok := r.w.shards[s].copyOf(i); ok && c.state != gone {
			r.faulted(s)
		}
	}
}

// restart starts node n's process again with a new boot id.
func (r *run) restart(n *simNode) {
	if n.destroyed {
		return
	}
	n.up = true
	n.boot++
	r.tracef("restart %s", n.id)
}

// scrub is node i's scrubber reading shard s: a rotten copy is quarantined
// and reported.
func (r *run) scrub(s, i int32) {
	n := r.w.nodes[i]
	c, ok := r.w.shards[s].copyOf(i)
	if !ok || c.state != rotten || !n.up {
		if ok && c.state == rotten {
			r.w.clock.at(r.w.clock.now+scrubAfter, func() { r.scrub(s, i) })
		}
		return
	}
	r.w.setState(c, i, gone)
	r.pl.corrupt(r.w.shards[s].id, n.id)
	r.tracef("scrub %s: %s corrupt", n.id, r.w.shards[s].id)
}

// sortedShards returns the shards placed on node i, sorted, once each.
func (r *run) sortedShards(i int32) []int32 {
	out := slices.Clone(r.w.nodes[i].shards)
	slices.Sort(out)
	return slices.Compact(out)
}
