package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// maxReconciles bounds the inventory checks running in the background at once.
const maxReconciles = 2

// healCallTimeout bounds the inventory check of a heal or plan call (the
// CLI waits 30 s for the answer).
const healCallTimeout = 20 * time.Second

// backgroundCheckTimeout bounds one background inventory check.
const backgroundCheckTimeout = 2 * time.Minute

// errRestarted says a node's boot id changed between inventory pages.
var errRestarted = errors.New("node restarted during the inventory check")

// checks serialises the inventory checks of one node.
type checks struct {
	mu    sync.Mutex
	nodes map[string]*sync.Mutex
}

func (c *checks) lock(node string) func() {
	c.mu.Lock()
	if c.nodes == nil {
		c.nodes = map[string]*sync.Mutex{}
	}
	m := c.nodes[node]
	if m == nil {
		m = &sync.Mutex{}
		c.nodes[node] = m
	}
	c.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// inventoryPage asks node for the page of its inventory after after.
func (s *Service) inventoryPage(ctx context.Context, node, after string) (control.InventoryPage, error) {
	var page control.InventoryPage
	body, err := json.Marshal(control.InventoryRequest{After: after, Limit: control.MaxInventoryPage})
	if err != nil {
		return page, fmt.Errorf("encode inventory request: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	msg, err := s.nc.RequestWithContext(rctx, control.InventoryPrefix+node, body)
	if err != nil {
		return page, fmt.Errorf("inventory of %s: %w", node, err)
	}
	if err := control.DecodeReply(msg.Data, &page); err != nil {
		return page, fmt.Errorf("inventory of %s: %w", node, err)
	}
	if page.Node != node {
		return page, fmt.Errorf("%w inventory of %s answered for node %q", model.ErrInvalid, node, page.Node)
	}
	return page, nil
}

// reconcile checks node's inventory against the map: it snapshots the
// shards the map places on the node, reads the node's inventory page by page
// over the bus, and compares (see view.endCheck). With apply it records what
// it found (marks what the disk lacks, clears what it has again) and asks
// for planning; without, it changes nothing. It blocks for one bus round
// trip per page; checks of one node are serialised, so it is safe to call
// from several goroutines. It fails with nats.ErrNoResponders (wrapped) when
// the node does not answer inventory requests.
func (s *Service) reconcile(ctx context.Context, node string, apply bool) (core.CheckResult, error) {
	defer s.checks.lock(node)()
	s.mu.Lock()
	r, ok := s.v.NodeIndex[node]
	if !ok || !s.v.Nodes[r].Registered {
		s.mu.Unlock()
		return core.CheckResult{}, refuse(control.ErrNotFound, "node %s is not registered", node)
	}
	gen := s.v.Nodes[r].ReconcileGen
	c := s.v.StartCheck(r)
	s.mu.Unlock()
	start := time.Now()
	after, pages := "", 0
	for {
		page, err := s.inventoryPage(ctx, node, after)
		if err != nil {
			s.m.checks.WithLabelValues("failed").Inc()
			return core.CheckResult{}, err
		}
		pages++
		if c.Boot == "" {
			c.Boot = page.BootID
		} else if page.BootID != c.Boot {
			s.m.checks.WithLabelValues("failed").Inc()
			return core.CheckResult{}, fmt.Errorf("inventory of %s: %w", node, errRestarted)
		}
		s.mu.Lock()
		s.v.CheckPage(c, page.Shards)
		s.mu.Unlock()
		if page.Next == "" {
			break
		}
		if page.Next <= after {
			s.m.checks.WithLabelValues("failed").Inc()
			return core.CheckResult{}, fmt.Errorf("%w inventory of %s: page after %q does not advance", model.ErrInvalid, node, after)
		}
		after = page.Next
	}
	s.mu.Lock()
	res := s.v.EndCheck(c)
	marked := 0
	if apply {
		marked = s.v.ApplyCheck(r, res)
		if c.Boot != "" {
			s.v.Nodes[r].BootID = c.Boot // the disk this check saw
		}
		s.v.Reconciled(r, gen)
	}
	s.mu.Unlock()
	s.m.checks.WithLabelValues("ok").Inc()
	if apply {
		s.log.Info("inventory checked against the map", "node", node, "listed", res.Checked, "lacking", len(res.Missing),
			"newly_lacking", marked, "back", len(res.Present), "pages", pages, "boot_id", c.Boot, "took", time.Since(start))
		s.refreshGauges()
		s.plan()
	}
	return res, nil
}

// startReconciles starts the background inventory checks that are due
// (new boots, returns from down, a takeover), at most maxReconciles at once,
// on act's background context. A node that does not answer inventory
// requests at all is trusted as it is (logged); other failures are retried
// with backoff, maxReconcileTries times.
func (s *Service) startReconciles(act *acting) {
	now := s.now()
	s.mu.Lock()
	due := s.v.ReconcilesDue(now, maxReconciles)
	type job struct {
		r   core.NodeRef
		id  string
		gen int
	}
	jobs := make([]job, len(due))
	for i, r := range due {
		jobs[i] = job{r, s.v.Nodes[r].ID, s.v.Nodes[r].ReconcileGen}
	}
	s.mu.Unlock()
	for _, j := range jobs {
		act.bg.Go(func() {
			ctx, cancel := context.WithTimeout(act.bgCtx, backgroundCheckTimeout)
			_, err := s.reconcile(ctx, j.id, true)
			cancel()
			ok := err == nil
			if errors.Is(err, nats.ErrNoResponders) {
				ok = true
				s.log.Warn("node does not answer inventory requests: its copies are trusted as listed", "node", j.id)
			}
			s.mu.Lock()
			gaveUp := s.v.ReconcileDone(j.r, j.gen, ok, s.now())
			s.mu.Unlock()
			switch {
			case gaveUp:
				s.log.Warn("inventory check given up: the node's copies are trusted as listed", "node", j.id, "err", err)
			case !ok && act.bgCtx.Err() == nil:
				s.log.Info("inventory check failed, will retry", "node", j.id, "err", err)
			}
			if !ok || gaveUp {
				s.plan()
			}
		})
	}
}

// drops removes, in parallel, holders lacking a shard that is whole without
// them from the shard's entry (compare-and-set). The entry as read decides:
// the holder is still listed and marked lacking it, and the others still
// have the live copies the layout needs. Anything unexpected leaves it to
// the next round.
func (s *Service) drops(ctx context.Context, ds []core.DropDecision) {
	_ = parallel(ds, func(d core.DropDecision) error {
		p, rev, err := s.getPlacement(ctx, d.ID)
		if err != nil {
			return nil
		}
		s.mu.Lock()
		entry, ok := s.v.DropEntry(d, p)
		node := s.v.Nodes[d.Node].ID
		s.mu.Unlock()
		if !ok {
			return nil
		}
		body, err := json.Marshal(entry)
		if err != nil {
			return nil
		}
		uctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err = s.places.Update(uctx, d.ID, body, rev)
		cancel()
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
				s.log.Warn("drop a holder lacking its copy: update placement", "shard", d.ID, "err", err)
			}
			return nil
		}
		s.m.dropped.Inc()
		s.log.Debug("holder lacking its copy dropped: the shard is whole without it", "shard", d.ID, "node", node)
		return nil
	})
}

// onCorrupt records a node's report that its copy of a shard failed its
// checksum (the node quarantined it): the copy no longer counts and is
// rebuilt, back onto that node.
func (s *Service) onCorrupt(c event.Corrupt) {
	s.m.corrupt.Inc()
	s.mu.Lock()
	marked := false
	h, ok := s.v.IDs.Lookup(c.Shard)
	r, known := s.v.NodeIndex[c.Node]
	if ok && known {
		marked = s.v.MarkMissing(h, r)
	}
	s.mu.Unlock()
	if !marked {
		s.log.Debug("corrupt report about a copy the map does not count", "node", c.Node, "shard", c.Shard, "found", c.Found)
		return
	}
	s.log.Warn("corrupt copy reported: rebuilding it onto the same node", "node", c.Node, "shard", c.Shard,
		"found", c.Found, "reason", c.Reason)
	s.refreshGauges()
	s.plan()
}

// healTarget validates a heal or plan request and returns its node, which
// must be registered and live (its inventory is read).
func (s *Service) healTarget(data []byte) (string, error) {
	var req control.HealNodeRequest
	if err := decodeRequest(data, &req); err != nil {
		return "", err
	}
	if err := model.ValidateNodeID(req.Node); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.v.NodeIndex[req.Node]
	if !ok || !s.v.Nodes[r].Registered {
		return "", refuse(control.ErrNotFound, "node %s is not registered", req.Node)
	}
	if st := s.v.Nodes[r].EffState(); !st.Live() {
		return "", refuse(control.ErrConflict, "node %s is %s: start it under the same identity first", req.Node, st)
	}
	return req.Node, nil
}

// checkError words a failed inventory check for the caller.
func checkError(node string, err error) error {
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("node %s does not answer inventory requests (is it running?)", node)
	}
	return err
}

// ctlHealNode answers CtlHealNode: it checks the node's inventory against
// the map now and answers what it found; what the node lacks is rebuilt
// onto it (or, already whole elsewhere, dropped from its entries) by the
// planning rounds that follow.
func (s *Service) ctlHealNode(ctx context.Context, data []byte) (any, error) {
	node, err := s.healTarget(data)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, healCallTimeout)
	defer cancel()
	res, err := s.reconcile(cctx, node, true)
	if err != nil {
		return nil, checkError(node, err)
	}
	s.mu.Lock()
	rep := s.v.HealSummary(s.v.NodeIndex[node], res.Checked)
	s.mu.Unlock()
	s.log.Info("heal of a node in place", "node", node, "checked", rep.Checked, "missing", rep.Missing,
		"missing_bytes", rep.MissingBytes, "rebuilding", rep.Rebuilding, "dropped", rep.Dropped)
	return rep, nil
}

// ctlHealPlan answers CtlHealPlan: the same check as a dry run, with the
// moves a heal would make and how long they would take.
func (s *Service) ctlHealPlan(ctx context.Context, data []byte) (any, error) {
	node, err := s.healTarget(data)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, healCallTimeout)
	defer cancel()
	res, err := s.reconcile(cctx, node, false)
	if err != nil {
		return nil, checkError(node, err)
	}
	now := s.now()
	s.mu.Lock()
	r := s.v.NodeIndex[node]
	lacking := slices.Clone(res.Missing)
	for _, h := range s.v.MarksOn(r) {
		if _, back := slices.BinarySearch(res.Present, h); !back && !slices.Contains(lacking, h) {
			lacking = append(lacking, h)
		}
	}
	plan := s.v.HealPlan(r, lacking, s.limits())
	rate := s.v.Rate.PerSecond(now, s.v.WorkSince)
	s.mu.Unlock()
	plan.EstimatedSeconds, plan.Throttle = core.Estimate(plan.Bytes, rate, s.cfg.PerNodeIn, s.cfg.MaxBytesPerSec, node)
	return plan, nil
}
