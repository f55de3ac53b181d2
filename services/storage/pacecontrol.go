package storage

import (
	"slices"
	"time"
)

// Adaptive repair pacing: decision code, no I/O. The gate (priority.go)
// feeds it one window at a time and applies the rate it returns.
const (
	// paceTick is the length of one pacing window.
	paceTick = 100 * time.Millisecond
	// paceSlack is how far above its idle level the clients' latency may
	// rise while repair runs before the pace is cut.
	paceSlack = 2
	// paceCeiling is the fastest pace the controller sets (in effect unpaced).
	paceCeiling = 2 << 30
	// paceIdleWeight is the weight of a new window in the idle latency's
	// moving average.
	paceIdleWeight = 0.2
	// maxPaceSamples bounds the client latencies one window keeps.
	maxPaceSamples = 256
	// minPaceSamples is how many client reads a window needs to judge the
	// pace by; a window with fewer (but some) goes on until it has them.
	minPaceSamples = 10
	// paceCut is what a window of hurt clients multiplies the pace by.
	paceCut = 0.7
)

// paceWindow is what a node saw during one pacing window.
type paceWindow struct {
	// latencies are the first-byte latencies of client GETs that answered
	// in the window (at most maxPaceSamples).
	latencies []time.Duration
	// repair says whether repair streams moved bytes through the node.
	repair bool
}

// median is the median of the window's latencies (0 with none).
func (w paceWindow) median() time.Duration {
	if len(w.latencies) == 0 {
		return 0
	}
	s := slices.Clone(w.latencies)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// ready reports whether the window may end: it has enough client reads to
// judge by, or none at all.
func (w paceWindow) ready() bool {
	return len(w.latencies) == 0 || len(w.latencies) >= minPaceSamples
}

// paceController sets the pace of a node's repair streams from its clients'
// latency, additive-increase multiplicative-decrease style:
//
//   - a window with client reads and no repair teaches it the clients'
//     idle latency (a moving average of the windows' medians);
//   - a window with both, whose median exceeds paceSlack times the idle
//     latency, cuts the pace by paceCut (never below floor);
//   - a window with both within that bound, or without clients, raises the
//     pace by a quarter (never above paceCeiling).
//
// Until an idle latency is known the pace only rises. It is a pure function
// of the windows fed to it; not safe for concurrent use.
type paceController struct {
	floor float64       // bytes per second
	rate  float64       // current pace, bytes per second
	idle  time.Duration // learned idle client latency (0: not yet)
}

// newPaceController starts at four times floor.
func newPaceController(floor float64) *paceController {
	return &paceController{floor: floor, rate: min(4*floor, paceCeiling)}
}

// next folds one window in and returns the pace for the next one.
func (c *paceController) next(w paceWindow) float64 {
	lat := w.median()
	switch {
	case lat > 0 && !w.repair:
		if c.idle == 0 {
			c.idle = lat
		} else {
			c.idle = time.Duration(float64(c.idle)*(1-paceIdleWeight) + float64(lat)*paceIdleWeight)
		}
	case lat > 0 && c.idle > 0 && float64(lat) > paceSlack*float64(c.idle):
		c.rate = max(c.floor, c.rate*paceCut)
	default:
		c.rate = min(paceCeiling, c.rate*1.25)
	}
	return c.rate
}
