package planner

import (
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
)

// HoldLock takes the view's lock, as a long verdict or round would, and
// returns what the view says at that moment (cluster status and heal
// progress, read under the lock) and the function that releases it.
func (s *Service) HoldLock() (control.ClusterStatus, event.Progress, func()) {
	s.mu.Lock()
	st := s.v.ClusterStatus()
	st.HealPaused = s.pausedLocked()
	p := s.v.Progress(s.now(), s.cfg.StallAfter)
	return st, p, s.mu.Unlock
}
