package planner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Orphan collection: a copy on a node's disk whose shard the placement map
// does not know (its object was removed while the node was away, a crash
// came between writing the copies and committing the object, a put was
// aborted) is deleted once its file is older than Config.OrphanGrace. The
// acting planner sweeps every up node's inventory each Config.OrphanScan and
// a node when it comes back up. Deleting live data is the worst bug a storage
// system can have, so a copy is kept unless all of these hold: the view does
// not know the id (no map entry, no copy of it in flight, no allocation
// still being written), its age is known and above the grace, the share of
// the node's inventory the map does not know is at most
// Config.OrphanMaxShare (else a planner with a wrong view would wipe the
// node: it deletes nothing there), and the placement bucket itself has no
// entry for it when its delete task is queued.

// orphanPrefix starts the id of every orphan delete task.
const orphanPrefix = "orphan-"

// orphanVerdict is what findOrphans decided about one node's inventory.
type orphanVerdict struct {
	// Delete are the copies to delete: unknown to the map and older than
	// the grace. Empty when Held.
	Delete []control.InventoryShard
	// Young are unknown copies still within the grace (kept, for now).
	Young int
	// Undated are unknown copies whose age the node did not report (kept).
	Undated int
	// Unknown counts every copy the map does not know; Total the inventory.
	Unknown, Total int
	// Held is set when Unknown exceeds maxShare of Total: nothing is deleted.
	Held bool
}

// findOrphans decides which of a node's copies are orphans to delete. shards
// are inventory entries (a filtered subset is fine: known ones are skipped),
// total is the size of the whole inventory, known reports the ids the view
// knows (map, copies in flight, allocations), now is the node's clock. A copy
// is deleted only when known says no and its Written is set and more than
// grace before now; nothing is deleted when the unknown copies are more than
// maxShare of total (a wrong view must not wipe a node) or grace is not
// positive. It is a pure function.
func findOrphans(shards []control.InventoryShard, total int, known func(id string) bool, now time.Time,
	grace time.Duration, maxShare float64) orphanVerdict {
	var v orphanVerdict
	for _, sh := range shards {
		if known(sh.ID) {
			continue
		}
		v.Unknown++
		switch {
		case sh.Written.IsZero():
			v.Undated++
		case grace <= 0 || now.Sub(sh.Written) <= grace:
			v.Young++
		default:
			v.Delete = append(v.Delete, sh)
		}
	}
	v.Total = max(total, len(shards))
	if !(float64(v.Unknown) <= maxShare*float64(v.Total)) { // NaN holds too
		v.Held = true
		v.Delete = nil
	}
	return v
}

// orphanKnown reports whether the view knows shard id: a map entry, a copy
// or rebuild in flight when it left the map (view.unmapped), or a shard of an
// allocation not yet committed or expired.
func (v *view) orphanKnown(id string) bool {
	if _, ok := v.ids.Lookup(id); ok {
		return true
	}
	if _, ok := v.unmapped[id]; ok {
		return true
	}
	for _, a := range v.allocs {
		if a.shards[id] {
			return true
		}
	}
	return false
}

// orphanState is the orphan collection's bookkeeping (guarded by Service.mu).
type orphanState struct {
	running  bool
	nextAll  time.Time      // when every up node is swept next (zero: not scheduled yet)
	awaiting map[string]int // young orphans per node, as its last sweep found
}

// startOrphanSweep starts the next due sweep (one at a time) on act's
// background context: every up node each OrphanScan, and a node back from
// down. It waits for a node's inventory check (reconcile) to finish first,
// and sweeps nothing while repairs are paused or OrphanScan is 0.
func (s *Service) startOrphanSweep(act *acting, now time.Time) {
	if s.cfg.OrphanScan <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	og := &s.orphans
	if og.nextAll.IsZero() {
		og.nextAll = now.Add(s.cfg.OrphanScan)
	}
	if !now.Before(og.nextAll) {
		og.nextAll = now.Add(s.cfg.OrphanScan)
		for i := range s.v.nodes {
			if n := &s.v.nodes[i]; n.registered && n.effState() == model.StateUp {
				n.sweepDue = true
			}
		}
	}
	if og.running || s.pausedLocked() {
		return
	}
	for i := range s.v.nodes {
		n := &s.v.nodes[i]
		if !n.sweepDue || !n.registered || n.effState() != model.StateUp || n.needReconcile || n.reconciling {
			continue
		}
		n.sweepDue = false
		og.running = true
		id := n.id
		act.bg.Go(func() {
			ctx, cancel := context.WithTimeout(act.bgCtx, backgroundCheckTimeout)
			err := s.sweepOrphans(ctx, id)
			cancel()
			s.mu.Lock()
			s.orphans.running = false
			s.mu.Unlock()
			if err != nil && act.bgCtx.Err() == nil {
				s.log.Info("orphan sweep failed; the next scan tries again", "node", id, "err", err)
			}
			s.plan()
		})
		return
	}
}

// sweepOrphans reads node's inventory page by page, keeps the copies the
// view does not know, decides with findOrphans (on the node's clock) and
// queues a delete task for each orphan (see deleteOrphanCopy).
func (s *Service) sweepOrphans(ctx context.Context, node string) error {
	defer s.checks.lock(node)()
	var (
		unknown []control.InventoryShard
		total   int
		boot    string
		nodeNow time.Time
		after   string
	)
	for {
		page, err := s.inventoryPage(ctx, node, after)
		if err != nil {
			return err
		}
		if boot == "" {
			boot = page.BootID
		} else if page.BootID != boot {
			return fmt.Errorf("inventory of %s: %w", node, errRestarted)
		}
		total += len(page.Shards)
		nodeNow = page.Now
		s.mu.Lock()
		for _, sh := range page.Shards {
			if model.ValidateShardID(sh.ID) == nil && !s.v.orphanKnown(sh.ID) {
				unknown = append(unknown, sh)
			}
		}
		s.mu.Unlock()
		if page.Next == "" {
			break
		}
		if page.Next <= after {
			return fmt.Errorf("%w inventory of %s: page after %q does not advance", model.ErrInvalid, node, after)
		}
		after = page.Next
	}
	if nodeNow.IsZero() {
		nodeNow = s.now()
	}
	s.mu.Lock()
	v := findOrphans(unknown, total, s.v.orphanKnown, nodeNow, s.cfg.OrphanGrace, s.cfg.OrphanMaxShare)
	if s.orphans.awaiting == nil {
		s.orphans.awaiting = map[string]int{}
	}
	s.orphans.awaiting[node] = v.Young
	awaiting := 0
	for _, n := range s.orphans.awaiting {
		awaiting += n
	}
	s.mu.Unlock()
	s.m.orphansAwaiting.Set(float64(awaiting))
	if v.Held {
		s.m.orphanSweepsHeld.Inc()
		s.log.Warn("orphan sweep held: too much of the node's inventory is unknown to the map, deleting nothing there",
			"node", node, "unknown", v.Unknown, "inventory", v.Total, "max_share", s.cfg.OrphanMaxShare)
		return nil
	}
	deleted := 0
	for _, sh := range v.Delete {
		ok, err := s.deleteOrphanCopy(ctx, node, sh)
		if err != nil {
			return err
		}
		if ok {
			deleted++
		}
	}
	s.log.Info("orphan sweep", "node", node, "inventory", v.Total, "unknown", v.Unknown, "deleted", deleted,
		"awaiting_grace", v.Young, "undated", v.Undated)
	return nil
}

// deleteOrphanCopy queues the delete task of orphan sh on node, unless this
// planner no longer acts, the view learnt the id meanwhile, or the placement
// bucket has an entry for it (or cannot say): it reports whether it queued.
func (s *Service) deleteOrphanCopy(ctx context.Context, node string, sh control.InventoryShard) (bool, error) {
	if !s.acting.Load() || !s.lease.held(s.now()) {
		return false, errors.New("no longer acting")
	}
	if _, _, err := s.getPlacement(ctx, sh.ID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		if err != nil {
			return false, fmt.Errorf("read placement %s: %w", sh.ID, err)
		}
		s.log.Info("orphan candidate is in the map after all: kept", "shard", sh.ID, "node", node)
		return false, nil
	}
	s.mu.Lock()
	known := s.v.orphanKnown(sh.ID)
	s.mu.Unlock()
	if known {
		return false, nil
	}
	t := &event.Task{Task: orphanPrefix + sh.ID + "-" + node, Incident: "orphan", Shard: sh.ID,
		Kind: event.KindDelete, Target: node, Bytes: max(sh.Size, 0)}
	ack, err := s.publishTask(ctx, t)
	if err != nil {
		return false, err
	}
	if ack.Duplicate {
		return false, nil // queued recently: its delete is under way
	}
	s.m.orphansDeleted.Inc()
	s.log.Info("orphaned copy: deletion queued", "shard", sh.ID, "node", node, "bytes", sh.Size,
		"written", sh.Written, "task", t.Task)
	return true, nil
}
