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
	// paceMinRise is the least rise over the idle latency that counts as
	// hurting clients: a node answers a cached read in a fraction of a
	// millisecond, and twice that is still far below what a client's GET
	// takes end to end (a lookup on the bus, the network, its checksum).
	paceMinRise = time.Millisecond
)

// paceWindow is what a node saw during one pacing window.
type paceWindow struct {
	// latencies are the first-byte latencies of client GETs that answered
	// in the window (at most maxPaceSamples).
	latencies []time.Duration
	// repair says whether repair streams moved bytes through the node.
	repair bool
	// moved is the repair bytes the window let through, over span.
	moved int64
	span  time.Duration
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

// hurts reports whether latency lat is more than a client can bear next to
// the idle latency idle: above paceSlack times it, and by paceMinRise at least.
func hurts(lat, idle time.Duration) bool {
	return lat > idle+max(time.Duration((paceSlack-1)*float64(idle)), paceMinRise)
}

// paceController sets the pace of a node's repair streams from its clients'
// latency, additive-increase multiplicative-decrease style:
//
//   - a window with client reads and no repair teaches it the clients'
//     idle latency (a moving average of the windows' medians);
//   - a window with both whose median hurts the clients (hurts: paceSlack
//     times the idle latency, and paceMinRise more at least) cuts the pace
//     to paceCut of what repair moved in that window, or of the pace if
//     that is lower (never below floor): starting from a pace repair never
//     reached, one cut then bites;
//   - any other window raises the pace by a quarter (never above
//     paceCeiling), so a node that served clients while nothing was
//     repaired starts its next repair unpaced and is cut only once its
//     clients feel it. (The repair streams' own threads run at a lower CPU
//     priority, so CPU contention alone seldom hurts them: see nice.Run.)
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
	case lat > 0 && c.idle > 0 && hurts(lat, c.idle):
		cur := c.rate
		if w.span > 0 {
			cur = min(cur, float64(w.moved)/w.span.Seconds())
		}
		c.rate = max(c.floor, cur*paceCut)
		return c.rate
	}
	c.rate = min(paceCeiling, c.rate*1.25)
	return c.rate
}
