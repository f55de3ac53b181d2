package planner

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/model"
)

// The placement watch, in batches: the entries already waiting behind the
// one received (up to placementBatch) are decoded and checked in parallel
// without the lock, then applied under one hold of it. A cold start reads
// one KV message per shard (10 M of them at 10 M shards): a lock, a timer
// and a JSON decode of each, one at a time, were most of the planner's share
// of that. Entries are applied in the order the watch delivered them.

// placementBatch is the most placement entries applied under one lock.
const placementBatch = 4096

// decodeParallelMin is the smallest batch decoded on several goroutines.
const decodeParallelMin = 256

// placementEntry is one watch entry of the placement bucket, decoded.
type placementEntry struct {
	e   jetstream.KeyValueEntry
	del bool
	p   model.Placement
	err error // malformed: counted and dropped
}

// gather returns first and the entries already waiting on ch behind it, at
// most placementBatch in all. It stops after a nil entry (the end of the
// watch's initial values: end is true) and at a closed channel (closed).
func gather(first jetstream.KeyValueEntry, ch <-chan jetstream.KeyValueEntry) (batch []jetstream.KeyValueEntry, end, closed bool) {
	if first == nil {
		return nil, true, false
	}
	batch = append(batch, first)
	for len(batch) < placementBatch {
		select {
		case e, ok := <-ch:
			if !ok {
				return batch, false, true
			}
			if e == nil {
				return batch, true, false
			}
			batch = append(batch, e)
		default:
			return batch, false, false
		}
	}
	return batch, false, false
}

// decodePlacement decodes and checks one entry (no lock needed).
func decodePlacement(e jetstream.KeyValueEntry) placementEntry {
	pe := placementEntry{e: e}
	if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		pe.del = true
		return pe
	}
	if err := gojson.Unmarshal(e.Value(), &pe.p); err != nil {
		pe.err = fmt.Errorf("%w record: %w", model.ErrInvalid, err)
		return pe
	}
	// go-json's strings share one copy of the record: the view keeps the
	// object id of a stripe, so it must not pin the whole record.
	pe.p.ObjectID = strings.Clone(pe.p.ObjectID)
	if err := pe.p.Validate(); err != nil || pe.p.Shard != e.Key() {
		pe.err = fmt.Errorf("placement %q: %v", e.Key(), err)
	}
	return pe
}

// decodePlacements decodes a batch, on up to GOMAXPROCS goroutines when it
// is large.
func decodePlacements(batch []jetstream.KeyValueEntry) []placementEntry {
	out := make([]placementEntry, len(batch))
	workers := runtime.GOMAXPROCS(0)
	if len(batch) < decodeParallelMin || workers < 2 {
		for i, e := range batch {
			out[i] = decodePlacement(e)
		}
		return out
	}
	per := (len(batch) + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < len(batch); lo += per {
		hi := min(lo+per, len(batch))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				out[i] = decodePlacement(batch[i])
			}
		})
	}
	wg.Wait()
	return out
}

// applyPlacements folds a batch of placement entries into the view under
// one hold of the lock; it reports whether to plan at once (a copy landed
// and freed its slots).
func (s *Service) applyPlacements(batch []jetstream.KeyValueEntry) bool {
	if len(batch) == 0 {
		return false
	}
	entries := decodePlacements(batch)
	plan := false
	var rev uint64
	s.mu.Lock()
	start := time.Now()
	for i := range entries {
		pe := &entries[i]
		rev = max(rev, pe.e.Revision())
		switch {
		case pe.del:
			plan = s.v.RemovePlacement(pe.e.Key()) || plan // frees the slots of its tasks, if any
		case pe.err != nil:
			s.malformed(bus.BucketPlacement, pe.err)
		default:
			landed, err := s.v.UpsertPlacement(pe.p)
			if err != nil {
				s.malformed(bus.BucketPlacement, err)
			}
			plan = landed || plan
		}
	}
	s.v.MergePending(s.v.TakePending())
	s.m.lockHeld.WithLabelValues("placement").Observe(time.Since(start).Seconds())
	s.mu.Unlock()
	s.placeSeen.Store(max(s.placeSeen.Load(), rev))
	return plan
}

// initialPlacements applies a batch of the placement watch's initial values
// beginning with e (see initial).
func (s *Service) initialPlacements(e jetstream.KeyValueEntry, ok bool, ch <-chan jetstream.KeyValueEntry, loaded []bool) error {
	if !ok {
		return fmt.Errorf("watch %s closed during the initial load", bus.BucketPlacement)
	}
	batch, end, closed := gather(e, ch)
	s.applyPlacements(batch)
	if closed {
		return fmt.Errorf("watch %s closed during the initial load", bus.BucketPlacement)
	}
	if end {
		loaded[placementWatch] = true
	}
	return nil
}

// updatePlacements applies a batch of live placement entries beginning
// with e, and plans at once when a copy landed.
func (s *Service) updatePlacements(e jetstream.KeyValueEntry, ok bool, ch <-chan jetstream.KeyValueEntry) error {
	if !ok {
		return fmt.Errorf("watch %s closed", bus.BucketPlacement)
	}
	batch, _, closed := gather(e, ch)
	if s.applyPlacements(batch) {
		s.plan()
	}
	if closed {
		return fmt.Errorf("watch %s closed", bus.BucketPlacement)
	}
	return nil
}

// loadGCPercent is the garbage collector's target while the view loads:
// the heap only grows then (the map's entries, kept), so collecting at the
// default 100% rescans a growing live heap over and over for little.
const loadGCPercent = 400

// relaxGCForLoad sets the collector's target to loadGCPercent for the
// initial load and returns the function that restores it. It leaves an
// operator's GOGC alone; GOMEMLIMIT, when set, still bounds the heap.
func relaxGCForLoad() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(loadGCPercent)
	return func() { debug.SetGCPercent(prev) }
}
