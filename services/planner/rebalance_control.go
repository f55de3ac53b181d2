package planner

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
)

// The rebalancer on the bus: its durable switch (control.RebalanceSwitchKey
// in bus.BucketControl, written by `rehome rebalance pause|resume`), its
// status call, and the moves it marks each tick. Its decisions are in
// rebalance.go.

// applyRebalanceSwitch folds an entry of the rebalancer's switch in; it
// reports whether the entry was that switch. Pausing forgets the moves not
// yet copying.
func (s *Service) applyRebalanceSwitch(e jetstream.KeyValueEntry) bool {
	if e.Key() != control.RebalanceSwitchKey {
		return false
	}
	sw, err := decodeSwitch(e)
	if err != nil {
		s.malformed(bus.BucketControl, err)
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rbsw = switchState{sw: sw, rev: e.Revision()}
	if sw.Paused {
		s.v.ClearMoves()
	}
	s.log.Info("rebalancing switched", "paused", sw.Paused, "by", sw.By)
	return true
}

// markMovesLocked lets the rebalancer mark new moves (acting planner, each tick,
// s.mu held): not while repairs or the rebalancer are paused, and a quarter
// of the in-flight budget at most, so repair always finds room.
func (s *Service) markMovesLocked() {
	if s.cfg.BalanceBand <= 0 || s.sw.sw.Paused || s.rbsw.sw.Paused {
		return
	}
	budget := max(s.cfg.MaxInFlight/4, 1) - len(s.v.Moves)
	s.v.ChooseMoves(s.cfg.BalanceBand, budget)
}
