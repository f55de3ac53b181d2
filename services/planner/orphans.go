package planner

import (
	"github.com/rehome/rehome/services/planner/core"

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
		for i := range s.v.Nodes {
			if n := &s.v.Nodes[i]; n.Registered && n.EffState() == model.StateUp {
				n.SweepDue = true
			}
		}
	}
	if og.running || s.pausedLocked() {
		return
	}
	for i := range s.v.Nodes {
		n := &s.v.Nodes[i]
		if !n.SweepDue || !n.Registered || n.EffState() != model.StateUp || n.NeedReconcile || n.Reconciling {
			continue
		}
		n.SweepDue = false
		og.running = true
		id := n.ID
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
			if model.ValidateShardID(sh.ID) == nil && !s.v.OrphanKnown(sh.ID) {
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
	v := core.FindOrphans(unknown, total, s.v.OrphanKnown, nodeNow, s.cfg.OrphanGrace, s.cfg.OrphanMaxShare)
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
	known := s.v.OrphanKnown(sh.ID)
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
