package storage

import (
	"math"
	"testing"
	"time"
)

func ms(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

func window(repair bool, lat ...float64) paceWindow {
	w := paceWindow{repair: repair}
	for _, l := range lat {
		w.latencies = append(w.latencies, ms(l))
	}
	return w
}

// moving is a repair window that moved mb megabytes (10^6) in 100 ms.
func moving(mb float64, lat ...float64) paceWindow {
	w := window(true, lat...)
	w.moved, w.span = int64(mb*1e6), 100*time.Millisecond
	return w
}

func TestPaceControllerFollowsClientLatency(t *testing.T) {
	const floor = 16 << 20
	start := 4.0 * floor
	for _, tc := range []struct {
		name    string
		windows []paceWindow
		want    float64 // pace after the last window
	}{
		{"no clients: the pace only rises", []paceWindow{window(true), window(true)}, start * 1.25 * 1.25},
		{"repair with no idle latency known yet: rises", []paceWindow{window(true, 9, 9, 9)}, start * 1.25},
		{"idle windows teach and raise, repair within the slack rises", []paceWindow{window(false, 1, 1, 1), window(true, 1.9, 1.2, 1.3)}, start * 1.25 * 1.25},
		{"repair hurting clients cuts the pace", []paceWindow{window(false, 1, 1, 1), window(true, 3, 3, 3)}, start * 1.25 * paceCut},
		{"a cut starts from what repair moved when that is below the pace", []paceWindow{window(false, 1, 1, 1), moving(5, 3, 3, 3)}, 50e6 * paceCut},
		{"a cut never starts above the pace", []paceWindow{window(false, 1, 1, 1), moving(500, 3, 3, 3)}, start * 1.25 * paceCut},
		{"twice a tiny idle latency is no harm: a rise under paceMinRise", []paceWindow{window(false, 0.2, 0.2, 0.2), window(true, 0.9, 0.9, 0.9)}, start * 1.25 * 1.25},
		{"but past paceMinRise it is", []paceWindow{window(false, 0.2, 0.2, 0.2), window(true, 1.3, 1.3, 1.3)}, start * 1.25 * paceCut},
		{"never below the floor", []paceWindow{window(false, 1), window(true, 5), window(true, 5), window(true, 5), window(true, 5), window(true, 5), window(true, 5)}, floor},
		{"a few slow reads do not count", []paceWindow{window(false, 1, 1, 1, 1, 1), window(true, 1, 1, 1, 50, 50)}, start * 1.25 * 1.25},
		{"the idle latency is a moving average", []paceWindow{window(false, 1), window(false, 6), window(true, 3)}, start * 1.25 * 1.25 * 1.25},
		{"recovers once clients are fine again", []paceWindow{window(false, 1), window(true, 3), window(true, 1)}, start * 1.25 * paceCut * 1.25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newPaceController(floor)
			var got float64
			for _, w := range tc.windows {
				got = c.next(w)
			}
			if math.Abs(got-tc.want) > 1 {
				t.Fatalf("pace %.0f, want %.0f", got, tc.want)
			}
		})
	}
}

func TestPaceWindowNeedsEnoughReads(t *testing.T) {
	for _, tc := range []struct {
		reads int
		ready bool
	}{{0, true}, {1, false}, {minPaceSamples - 1, false}, {minPaceSamples, true}} {
		w := paceWindow{latencies: make([]time.Duration, tc.reads)}
		if w.ready() != tc.ready {
			t.Errorf("window with %d reads: ready %v, want %v", tc.reads, w.ready(), tc.ready)
		}
	}
}

func TestPaceControllerStaysWithinBounds(t *testing.T) {
	c := newPaceController(1 << 20)
	for i := range 1000 {
		lat := float64(1 + i%7)
		rate := c.next(window(i%3 != 0, lat, lat*2))
		if rate < 1<<20 || rate > paceCeiling {
			t.Fatalf("window %d: pace %.0f outside [floor, ceiling]", i, rate)
		}
	}
	for range 200 {
		c.next(window(true))
	}
	if c.rate != paceCeiling {
		t.Fatalf("pace %.0f after a long quiet spell, want the ceiling", c.rate)
	}
}
