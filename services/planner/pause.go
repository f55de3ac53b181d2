package planner

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// heal switch: `rehome heal pause|resume` writes control.HealSwitch under
// control.HealSwitchKey in bus.BucketControl; every planner watches it (a
// planner starting, or a standby taking over, reads it first). While paused
// no new repair or trim task is issued and no entry is changed (tasks in
// flight finish, their results are recorded); status and progress say so.

// switchState is the heal switch as the planner last read it.
type switchState struct {
	sw  control.HealSwitch
	rev uint64
}

// decodeSwitch reads a switch entry: a deleted or purged key means running.
func decodeSwitch(e jetstream.KeyValueEntry) (control.HealSwitch, error) {
	if e.Operation() != jetstream.KeyValuePut {
		return control.HealSwitch{V: model.Version}, nil
	}
	var sw control.HealSwitch
	if err := json.Unmarshal(e.Value(), &sw); err != nil {
		return sw, fmt.Errorf("%w heal switch: %w", model.ErrInvalid, err)
	}
	if sw.V != model.Version {
		return sw, fmt.Errorf("%w heal switch: version %d", model.ErrInvalid, sw.V)
	}
	return sw, nil
}

// applySwitch folds one entry of the switch watch in; it reports whether
// the switch flipped. A malformed record is counted and ignored (the
// previous state stands).
func (s *Service) applySwitch(e jetstream.KeyValueEntry) bool {
	if e.Key() != control.HealSwitchKey {
		return false
	}
	sw, err := decodeSwitch(e)
	if err != nil {
		s.malformed(bus.BucketControl, err)
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	flipped := sw.Paused != s.sw.sw.Paused
	s.sw = switchState{sw: sw, rev: e.Revision()}
	if sw.Paused {
		s.m.paused.Set(1)
	} else {
		s.m.paused.Set(0)
	}
	return flipped
}

// pausedLocked reports whether repairs are paused (s.mu held).
func (s *Service) pausedLocked() bool { return s.sw.sw.Paused }

// updateSwitch applies a live switch change; the acting planner announces
// a flip on rehome.heal.paused or rehome.heal.resumed (deduplicated by the
// record's revision) and, on resume, plans at once.
func (s *Service) updateSwitch(ctx context.Context, e jetstream.KeyValueEntry, ok bool) error {
	if !ok {
		return fmt.Errorf("watch %s closed", bus.BucketControl)
	}
	if e == nil {
		return nil
	}
	if s.acting.Load() {
		defer s.publishSnapshot()
	}
	if s.applyNodeRecord(e) || s.applyRebalanceSwitch(e) {
		s.plan()
		return nil
	}
	if !s.applySwitch(e) {
		return nil
	}
	s.mu.Lock()
	st := s.sw
	s.mu.Unlock()
	subject, verb := event.HealResumed, "resumed"
	if st.sw.Paused {
		subject, verb = event.HealPaused, "paused"
	}
	s.log.Info("repairs "+verb, "by", st.sw.By, "since", st.sw.Since)
	if !st.sw.Paused {
		s.plan()
	}
	if !s.acting.Load() {
		return nil
	}
	ev := &event.HealSwitched{Paused: st.sw.Paused, By: st.sw.By, Since: st.sw.Since.UTC(), Planner: s.cfg.ID}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := s.pub.Publish(pctx, subject, ev, "heal-switch-"+strconv.FormatUint(st.rev, 10)); err != nil {
		s.log.Warn("publish heal switch", "err", err)
	}
	return nil
}
