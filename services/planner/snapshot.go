package planner

import (
	"context"
	"sync"
	"time"

	"github.com/rehome/rehome/services/planner/core"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
)

// Read-only calls without the lock: the acting planner publishes an
// immutable snapshot of what status, heal status, drain status and
// rebalance status answer (core.Snapshot, plus the switches) after each
// planning round, each verdict or registration, each switch flip and each
// mutating control call, and those calls answer from the latest one. A
// status call therefore never waits behind a verdict or a round; it sees the
// view as of the last publication (at most one round old, and including
// every commit or delete the caller saw answered).

// viewSnapshot is a published snapshot and the switches at that moment.
type viewSnapshot struct {
	*core.Snapshot
	healPaused, balancePaused bool

	// status is the encoded reply of a plain status call, made by the
	// first such call on this snapshot (a status lists every node: at
	// 1,000 nodes encoding it costs more than anything else in the call).
	statusOnce sync.Once
	status     encodedReply
	statusErr  error
}

// encodedReply is a control reply already encoded (reply sends it as is).
type encodedReply []byte

// statusReply returns the encoded reply of a plain status call.
func (sn *viewSnapshot) statusReply() (encodedReply, error) {
	sn.statusOnce.Do(func() {
		st := sn.Status
		st.HealPaused = sn.healPaused
		sn.status, sn.statusErr = control.OKReply(st)
	})
	return sn.status, sn.statusErr
}

// publishSnapshotLocked makes and publishes a snapshot (s.mu held).
func (s *Service) publishSnapshotLocked() {
	now := s.now()
	s.snap.Store(&viewSnapshot{
		Snapshot:   s.v.Snapshot(now, s.cfg.StallAfter, s.cfg.BalanceBand),
		healPaused: s.sw.sw.Paused, balancePaused: s.rbsw.sw.Paused,
	})
}

// publishSnapshot takes the lock, then publishes a snapshot.
func (s *Service) publishSnapshot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publishSnapshotLocked()
}

// snapshot returns the latest snapshot, making one first if none was
// published yet.
func (s *Service) snapshot() *viewSnapshot {
	if sn := s.snap.Load(); sn != nil {
		return sn
	}
	s.publishSnapshot()
	return s.snap.Load()
}

// ctlStatus answers CtlStatus (body: an optional StatusRequest): the
// cluster's nodes and totals and whether repairs are paused, from the latest
// snapshot; with Risk, what one more node or rack failure would cost (a
// pass over the whole map, under the lock).
func (s *Service) ctlStatus(_ context.Context, data []byte) (any, error) {
	var req control.StatusRequest
	if err := decodeOptional(data, &req); err != nil {
		return nil, err
	}
	start := time.Now()
	defer func() { s.m.handling.WithLabelValues("status").Observe(time.Since(start).Seconds()) }()
	sn := s.snapshot()
	if !req.Risk {
		return sn.statusReply()
	}
	st := sn.Status
	st.HealPaused = sn.healPaused
	s.mu.Lock()
	r := s.v.Risk()
	s.mu.Unlock()
	st.Risk = &r
	return st, nil
}

// ctlHealStatus answers CtlHealStatus (body: an optional
// HealStatusRequest) from the latest snapshot: the heal's progress,
// narrowed to one node's in-place heal when Node is set.
func (s *Service) ctlHealStatus(_ context.Context, data []byte) (any, error) {
	var req control.HealStatusRequest
	if err := decodeOptional(data, &req); err != nil {
		return nil, err
	}
	if req.Node != "" {
		if err := model.ValidateNodeID(req.Node); err != nil {
			return nil, err
		}
	}
	sn := s.snapshot()
	p := sn.Progress
	if req.Node != "" {
		var ok bool
		if p, ok = sn.NodeProgress(req.Node); !ok {
			return nil, refuse(control.ErrNotFound, "node %s is not known", req.Node)
		}
	}
	p.Paused = sn.healPaused
	p.V, p.TS = model.Version, sn.At.UTC()
	return p, nil
}

// ctlDrainStatus answers control.CtlDrainStatus from the latest snapshot.
func (s *Service) ctlDrainStatus(_ context.Context, data []byte) (any, error) {
	req, err := nodeRequest(data, true)
	if err != nil {
		return nil, err
	}
	ds, err := s.snapshot().DrainStatus(req.Node)
	if err != nil {
		return nil, asRefusal(err)
	}
	return control.DrainReply{Drains: ds}, nil
}

// ctlRebalanceStatus answers control.CtlRebalanceStatus from the latest
// snapshot.
func (s *Service) ctlRebalanceStatus(context.Context, []byte) (any, error) {
	sn := s.snapshot()
	st := sn.Balance
	st.Paused = sn.balancePaused
	return st, nil
}
