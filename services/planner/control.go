package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/services/planner/placement"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// queueGroup is the control subjects' queue group: one planner answers each call.
const queueGroup = "planner"

// writeParallel bounds concurrent KV writes of one commit or delete.
const writeParallel = 16

// serveControl subscribes the control subjects. Mutating calls run on their
// own goroutines (at most cap(ctlSem) at once); status calls answer inline.
func (s *Service) serveControl(ctx context.Context) ([]*nats.Subscription, error) {
	handlers := []struct {
		subject string
		inline  bool
		fn      func(ctx context.Context, data []byte) (any, error)
	}{
		{event.CtlAllocate, false, s.ctlAllocate},
		{event.CtlCommit, false, s.ctlCommit},
		{event.CtlDelete, false, s.ctlDelete},
		{event.CtlCompose, false, s.ctlCompose},
		{event.CtlStatus, true, s.ctlStatus},
		{event.CtlHealStatus, true, s.ctlHealStatus},
		{control.CtlHealNode, false, s.ctlHealNode},
		{control.CtlHealPlan, false, s.ctlHealPlan},
		{control.CtlDrain, false, s.ctlDrain},
		{control.CtlDrainCancel, false, s.ctlDrainCancel},
		{control.CtlDrainStatus, true, s.ctlDrainStatus},
		{control.CtlNodeRemove, false, s.ctlNodeRemove},
		{control.CtlRebalanceStatus, true, s.ctlRebalanceStatus},
	}
	var subs []*nats.Subscription
	for _, h := range handlers {
		serve := func(msg *nats.Msg) {
			out, err := h.fn(ctx, msg.Data)
			if !h.inline {
				s.publishSnapshot() // what the call changed, before the caller's next status
			}
			s.reply(msg, h.subject, out, err)
		}
		sub, err := s.nc.QueueSubscribe(h.subject, queueGroup, func(msg *nats.Msg) {
			if h.inline {
				serve(msg)
				return
			}
			select {
			case s.ctlSem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			s.ctlWG.Add(1)
			go func() {
				defer func() { <-s.ctlSem; s.ctlWG.Done() }()
				serve(msg)
			}()
		})
		if err != nil {
			return subs, fmt.Errorf("subscribe %s: %w", h.subject, err)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// reply answers a control call (if it asked for an answer).
func (s *Service) reply(msg *nats.Msg, subject string, out any, err error) {
	var body []byte
	if enc, ok := out.(encodedReply); ok && err == nil {
		body = enc
	} else if err != nil {
		var r *refusal
		if errors.Is(err, model.ErrInvalid) && !errors.As(err, &r) {
			s.malformed(subject, err)
		} else {
			s.log.Info("control call refused", "subject", subject, "err", err)
		}
		body = control.ErrorReply(err)
	} else if body, err = control.OKReply(out); err != nil {
		body = control.ErrorReply(err)
	}
	if msg.Reply == "" {
		return
	}
	if err := msg.Respond(body); err != nil {
		s.log.Warn("control reply", "subject", subject, "err", err)
	}
}

// refusal is an error whose message is exactly msg and which matches kind
// (control.ErrConflict, control.ErrNotFound) with errors.Is.
type refusal struct {
	kind error
	msg  string
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.kind }

func refuse(kind error, format string, args ...any) error {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// decodeRequest unmarshals a control request; bad JSON is invalid input.
func decodeRequest(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w request: %w", model.ErrInvalid, err)
	}
	return nil
}

// decodeOptional unmarshals an optional request body: empty means the defaults.
func decodeOptional(data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	return decodeRequest(data, v)
}

// validateAllocate checks an allocate request.
func (s *Service) validateAllocate(req control.AllocateRequest) error {
	if err := model.ValidateKey(req.Key); err != nil {
		return err
	}
	if err := req.Layout.Validate(); err != nil {
		return err
	}
	if n := len(req.Shards); n == 0 || n > s.cfg.MaxAllocateShards {
		return fmt.Errorf("%w allocate: %d shards, want 1-%d", model.ErrInvalid, n, s.cfg.MaxAllocateShards)
	}
	seen := make(map[string]bool, len(req.Shards))
	pieces := map[[2]int]bool{} // erasure coding: stripe and index taken
	for _, sh := range req.Shards {
		if err := model.ValidateShardID(sh.ID); err != nil {
			return err
		}
		if seen[sh.ID] {
			return fmt.Errorf("%w allocate: shard %s twice", model.ErrInvalid, sh.ID)
		}
		seen[sh.ID] = true
		if sh.Size < 0 || sh.Stripe < 0 || sh.Index < 0 {
			return fmt.Errorf("%w allocate: shard %s has a negative size, stripe or index", model.ErrInvalid, sh.ID)
		}
		if l := req.Layout; l.Erasure() {
			if sh.Index >= l.K+l.M {
				return fmt.Errorf("%w allocate: shard %s index %d outside %s", model.ErrInvalid, sh.ID, sh.Index, l)
			}
			at := [2]int{sh.Stripe, sh.Index}
			if pieces[at] {
				return fmt.Errorf("%w allocate: stripe %d index %d asked for twice", model.ErrInvalid, sh.Stripe, sh.Index)
			}
			pieces[at] = true
		}
	}
	return nil
}

// ctlAllocate picks nodes for the shards of a new object and counts their
// bytes as pending on those nodes until commit (or AllocationTTL). A
// replicated shard gets Layout.RF nodes (allocateReplicas: the least
// filled, or a copyset under copyset placement); an
// erasure-coded piece gets one node, the pieces of one stripe distinct nodes
// with at most M per rack where racks allow (placement.AllocateStripes). An
// erasure-coded layout needing more nodes than are up is refused as invalid.
func (s *Service) ctlAllocate(_ context.Context, data []byte) (any, error) {
	var req control.AllocateRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if err := s.validateAllocate(req); err != nil {
		return nil, err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	cands := s.v.Candidates()
	picks := make([][]int, len(req.Shards))
	if !req.Layout.Erasure() {
		shards := make([]placement.Shard, len(req.Shards))
		for i, sh := range req.Shards {
			shards[i] = placement.Shard{ID: sh.ID, Size: sh.Size}
		}
		p, err := s.allocateReplicas(cands, req.Layout.RF, shards)
		if err != nil {
			return nil, fmt.Errorf("allocate %q: %w", req.Key, err)
		}
		picks = p
	} else {
		l := req.Layout
		up := 0
		for _, c := range cands {
			if c.State == model.StateUp {
				up++
			}
		}
		if up < l.K+l.M {
			return nil, refuse(model.ErrInvalid, "ec %d+%d needs %d live nodes, %d are up", l.K, l.M, l.K+l.M, up)
		}
		// The pieces of one stripe, in request order.
		at := map[int]int{}
		var members [][]int
		var specs [][]placement.Shard
		for i, sh := range req.Shards {
			g, ok := at[sh.Stripe]
			if !ok {
				g = len(members)
				at[sh.Stripe] = g
				members = append(members, nil)
				specs = append(specs, nil)
			}
			members[g] = append(members[g], i)
			specs[g] = append(specs[g], placement.Shard{ID: sh.ID, Size: sh.Size})
		}
		p, err := placement.AllocateStripes(cands, l.K, l.M, specs)
		if err != nil {
			return nil, fmt.Errorf("allocate %q: %w", req.Key, err)
		}
		for g, idx := range members {
			for k, i := range idx {
				picks[i] = []int{p[g][k]}
			}
		}
	}
	pending := map[core.NodeRef]int64{}
	ids := make(map[string]bool, len(req.Shards))
	reply := control.AllocateReply{Allocations: make([]control.Allocation, len(req.Shards))}
	for i, sh := range req.Shards {
		ids[sh.ID] = true
		a := control.Allocation{Shard: sh.ID, Nodes: make([]control.Endpoint, len(picks[i]))}
		for k, ni := range picks[i] {
			n := &s.v.Nodes[ni]
			a.Nodes[k] = control.Endpoint{Node: n.ID, Rack: n.Rack, Addr: n.Addr}
			pending[core.NodeRef(ni)] += sh.Size
		}
		reply.Allocations[i] = a
	}
	s.v.AddAllocation(req.Key, pending, now.Add(s.cfg.AllocationTTL))
	s.v.Allocs[req.Key].Shards = ids
	return reply, nil
}

// validateCommit checks a commit request against the manifest's own rules
// and the known nodes. Every replicated shard needs a node; an erasure-coded
// piece may have none (its write failed: the planner rebuilds it) as long as
// every stripe has at least K pieces written.
func (s *Service) validateCommit(req control.CommitRequest) error {
	m := req.Manifest
	if err := m.Validate(); err != nil {
		return err
	}
	if m.ID == "" || len(m.ID) > model.MaxShardIDLen {
		return fmt.Errorf("%w manifest %q: object id must be 1-%d bytes", model.ErrInvalid, m.Key, model.MaxShardIDLen)
	}
	l := m.Layout
	seen := make(map[string]bool, len(m.Shards))
	pieces := map[[2]int]bool{}
	written := map[int]int{} // erasure coding: pieces with a node, per stripe
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sh := range m.Shards {
		if seen[sh.ID] {
			return fmt.Errorf("%w manifest %q: shard %s twice", model.ErrInvalid, m.Key, sh.ID)
		}
		seen[sh.ID] = true
		if sh.Stripe < 0 || sh.Index < 0 {
			return fmt.Errorf("%w manifest %q: shard %s has a negative stripe or index", model.ErrInvalid, m.Key, sh.ID)
		}
		nodes := req.Nodes[sh.ID]
		if (len(nodes) == 0 && !l.Erasure()) || len(nodes) > core.MaxHolders {
			return fmt.Errorf("%w commit %q: shard %s has %d nodes", model.ErrInvalid, m.Key, sh.ID, len(nodes))
		}
		if l.Erasure() {
			at := [2]int{sh.Stripe, sh.Index}
			if sh.Index >= l.K+l.M || pieces[at] {
				return fmt.Errorf("%w manifest %q: piece %s (stripe %d index %d) outside %s or twice", model.ErrInvalid, m.Key, sh.ID, sh.Stripe, sh.Index, l)
			}
			pieces[at] = true
			written[sh.Stripe] += min(len(nodes), 1)
		}
		for i, n := range nodes {
			if err := model.ValidateNodeID(n); err != nil {
				return err
			}
			if slices.Contains(nodes[:i], n) {
				return fmt.Errorf("%w commit %q: shard %s names node %s twice", model.ErrInvalid, m.Key, sh.ID, n)
			}
			if r, ok := s.v.NodeIndex[n]; !ok || !s.v.Nodes[r].Registered {
				return fmt.Errorf("%w commit %q: shard %s on unknown node %s", model.ErrInvalid, m.Key, sh.ID, n)
			}
		}
	}
	for stripe, n := range written {
		if n < l.K {
			return fmt.Errorf("%w commit %q: stripe %d has %d pieces written, %s needs at least %d", model.ErrInvalid, m.Key, stripe, n, l, l.K)
		}
	}
	return nil
}

// ctlCommit records a written object: placement entries first (Create), then
// the manifest (Create, or Update at the read revision when overwriting); an
// overwritten object's shards are then unmapped and scheduled for deletion.
// A retried identical commit (same object id) succeeds again.
func (s *Service) ctlCommit(ctx context.Context, data []byte) (any, error) {
	var req control.CommitRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if err := s.validateCommit(req); err != nil {
		return nil, err
	}
	m := req.Manifest
	kvKey := model.ObjectKVKey(m.Key)
	old, oldRev, err := s.getManifest(ctx, kvKey)
	exists := err == nil
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("read manifest %q: %w", m.Key, err)
	}
	retried := exists && old.ID == m.ID
	if exists && !retried && !req.Overwrite {
		return nil, refuse(control.ErrConflict, "object %s exists", m.Key)
	}
	created, err := s.createPlacements(ctx, m, req.Nodes)
	if err != nil {
		s.deletePlacements(ctx, created)
		return nil, err
	}
	if retried {
		s.releaseAllocation(m.Key)
		s.awaitWrites(ctx)
		return struct{}{}, nil
	}
	if err := s.putManifest(ctx, m, oldRev, exists); err != nil {
		if now, _, gerr := s.getManifest(ctx, kvKey); gerr == nil && now.ID == m.ID {
			s.releaseAllocation(m.Key)
			s.awaitWrites(ctx)
			return struct{}{}, nil // a concurrent retry of the same commit won
		}
		s.deletePlacements(ctx, created)
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, refuse(control.ErrConflict, "object %s exists (written concurrently)", m.Key)
		}
		return nil, fmt.Errorf("write manifest %q: %w", m.Key, err)
	}
	s.releaseAllocation(m.Key)
	s.log.Info("object committed", "key", m.Key, "id", m.ID, "shards", len(m.Shards), "bytes", m.Size, "overwrite", exists)
	if exists {
		s.dropReplaced(ctx, old, m)
	}
	s.awaitWrites(ctx)
	return struct{}{}, nil
}

// dropReplaced unmaps (and schedules the deletion of) the shards of old, an
// overwritten object, that its successor m does not reuse.
func (s *Service) dropReplaced(ctx context.Context, old, m model.Manifest) {
	keep := make(map[string]bool, len(m.Shards))
	for _, sh := range m.Shards {
		keep[sh.ID] = true
	}
	var gone []string
	for _, sh := range old.Shards {
		if !keep[sh.ID] {
			gone = append(gone, sh.ID)
		}
	}
	if err := s.unmapShards(ctx, gone); err != nil {
		s.log.Warn("overwritten object: some old shards remain mapped", "key", m.Key, "err", err)
	}
}

// putManifest writes m: Update at oldRev when the key exists, else Create
// (a concurrent writer makes it fail with a revision or exists error).
func (s *Service) putManifest(ctx context.Context, m model.Manifest, oldRev uint64, exists bool) error {
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if exists {
		_, err = s.kvObjects.Update(ctx, model.ObjectKVKey(m.Key), body, oldRev)
	} else {
		_, err = s.kvObjects.Create(ctx, model.ObjectKVKey(m.Key), body)
	}
	return err
}

func (s *Service) releaseAllocation(key string) {
	s.mu.Lock()
	s.v.ReleaseAllocation(key)
	s.mu.Unlock()
}

// getManifest reads an object's manifest and revision.
func (s *Service) getManifest(ctx context.Context, kvKey string) (model.Manifest, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	e, err := s.kvObjects.Get(ctx, kvKey)
	if err != nil {
		return model.Manifest{}, 0, err
	}
	var m model.Manifest
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		s.malformed(s.kvObjects.Bucket(), err)
		return model.Manifest{Key: kvKey}, e.Revision(), nil // present but unreadable
	}
	return m, e.Revision(), nil
}

// parallel runs f over items with at most writeParallel at once and returns
// the first error.
func parallel[T any](items []T, f func(T) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		sem      = make(chan struct{}, writeParallel)
	)
	for _, it := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(it); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// createPlacements writes one placement entry per shard with Create. An
// entry already there for the same object counts as written (a retry); one of
// another object is a conflict. It returns the entries it created.
func (s *Service) createPlacements(ctx context.Context, m model.Manifest, nodes map[string][]string) ([]string, error) {
	var (
		mu      sync.Mutex
		created []string
	)
	err := parallel(m.Shards, func(sh model.ShardRef) error {
		p := model.Placement{
			V: model.Version, Shard: sh.ID, Key: m.Key, ObjectID: m.ID, Stripe: sh.Stripe, Index: sh.Index,
			Size: sh.Size, SHA256: sh.SHA256, Layout: m.Layout, Nodes: nodes[sh.ID],
		}
		if p.Nodes == nil {
			p.Nodes = []string{} // an erasure-coded piece whose write failed: rebuilt by the planner
		}
		body, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("encode placement: %w", err)
		}
		wctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err = s.places.Create(wctx, sh.ID, body)
		cancel()
		if err == nil {
			mu.Lock()
			created = append(created, sh.ID)
			mu.Unlock()
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("write placement %s: %w", sh.ID, err)
		}
		had, _, gerr := s.getPlacement(ctx, sh.ID)
		if gerr != nil {
			return fmt.Errorf("read placement %s: %w", sh.ID, gerr)
		}
		if had.ObjectID != m.ID {
			return refuse(control.ErrConflict, "shard %s is mapped for another object", sh.ID)
		}
		return nil
	})
	return created, err
}

// deletePlacements removes entries (best effort: a rollback).
func (s *Service) deletePlacements(ctx context.Context, shards []string) {
	_ = parallel(shards, func(id string) error {
		dctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		if err := s.places.Delete(dctx, id); err != nil {
			s.log.Warn("roll back placement", "shard", id, "err", err)
		}
		return nil
	})
}

// ctlDelete removes an object: its manifest, then each shard's placement
// entry, with a delete task for each copy on a live holder.
func (s *Service) ctlDelete(ctx context.Context, data []byte) (any, error) {
	var req control.DeleteRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	if err := model.ValidateKey(req.Key); err != nil {
		return nil, err
	}
	kvKey := model.ObjectKVKey(req.Key)
	m, rev, err := s.getManifest(ctx, kvKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, refuse(control.ErrNotFound, "object %s not found", req.Key)
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest %q: %w", req.Key, err)
	}
	dctx, cancel := context.WithTimeout(ctx, opTimeout)
	err = s.kvObjects.Delete(dctx, kvKey, jetstream.LastRevision(rev))
	cancel()
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return nil, refuse(control.ErrConflict, "object %s changed while deleting it, try again", req.Key)
		}
		return nil, fmt.Errorf("delete manifest %q: %w", req.Key, err)
	}
	ids := make([]string, len(m.Shards))
	for i, sh := range m.Shards {
		ids[i] = sh.ID
	}
	if err := s.unmapShards(ctx, ids); err != nil {
		s.log.Warn("deleted object: some shards remain mapped", "key", req.Key, "err", err)
	}
	s.log.Info("object deleted", "key", req.Key, "shards", len(ids))
	s.awaitWrites(ctx)
	return struct{}{}, nil
}

// unmapShards deletes the placement entries of shards and publishes a
// delete task for each copy on a live holder.
func (s *Service) unmapShards(ctx context.Context, ids []string) error {
	return parallel(ids, func(id string) error {
		for try := 0; ; try++ {
			p, rev, err := s.getPlacement(ctx, id)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read placement %s: %w", id, err)
			}
			dctx, cancel := context.WithTimeout(ctx, opTimeout)
			err = s.places.Delete(dctx, id, jetstream.LastRevision(rev))
			cancel()
			if err != nil {
				if (errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)) && try < 10 {
					continue
				}
				return fmt.Errorf("delete placement %s: %w", id, err)
			}
			s.mu.Lock()
			var live []string
			for _, n := range p.Nodes {
				if r, ok := s.v.NodeIndex[n]; ok && s.v.Live(r) {
					live = append(live, n)
				}
			}
			s.mu.Unlock()
			for _, n := range live {
				t := &event.Task{Task: "delete-" + id + "-" + n, Shard: id, Kind: event.KindDelete,
					Target: n, Bytes: p.Size, SHA256: p.SHA256}
				if _, err := s.publishTask(ctx, t); err != nil {
					return err
				}
			}
			return nil
		}
	})
}
