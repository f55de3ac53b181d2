package planner

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/services/planner/core"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// issueBatch publishes reserved batched copies g (one group of
// core.Plan.Batches) as one task: it reads each shard's entry (checksum,
// revision), releases the shards it cannot read, and publishes the task of
// the rest on their target with the first shard's task id as dedup id. On a
// failed publish (or a lease lost) every reservation left is released.
func (s *Service) issueBatch(ctx context.Context, g []core.Decision) (*event.Task, bool) {
	now := s.now()
	s.mu.Lock()
	ids := make([]string, len(g))
	for i, d := range g {
		ids[i] = s.v.TaskID(d)
	}
	s.mu.Unlock()
	releaseOne := func(i int, used bool) {
		s.mu.Lock()
		s.v.ReleaseCopy(g[i], ids[i], used, s.now())
		s.mu.Unlock()
	}
	if !s.lease.held(now) {
		for i := range g {
			releaseOne(i, false)
		}
		return nil, false
	}
	var (
		keep    []int
		ds      []core.Decision
		entries []model.Placement
		revs    []uint64
	)
	for i, d := range g {
		p, rev, err := s.getPlacement(ctx, d.ID)
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyNotFound) {
				s.log.Warn("read placement for batched task", "shard", d.ID, "err", err)
			}
			releaseOne(i, false)
			continue
		}
		keep, ds, entries, revs = append(keep, i), append(ds, d), append(entries, p), append(revs, rev)
	}
	if len(ds) == 0 {
		return nil, false
	}
	s.mu.Lock()
	t := s.v.BatchTask(ds, entries)
	s.mu.Unlock()
	ack, ok := s.publishReserved(ctx, &t, func(used bool) {
		for _, i := range keep {
			releaseOne(i, used)
		}
	})
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	for k, i := range keep {
		s.v.CopyQueued(g[i], ids[i], ack.Sequence, revs[k], entries[k])
	}
	s.mu.Unlock()
	s.log.Debug("batched task issued", "task", t.Task, "shards", max(len(t.Batch), 1), "source", t.Sources[0], "target", t.Target)
	return &t, true
}
