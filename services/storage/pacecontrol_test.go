package storage

import (
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

func TestPaceControllerFollowsClientLatency(t *testing.T) {
	const floor = 16 << 20
	for _, tc := range []struct {
		name    string
		windows []paceWindow
		want    float64 // pace after the last window
	}{
		{"no clients: the pace only rises", []paceWindow{window(true), window(true)}, 4 * floor * 1.25 * 1.25},
		{"repair with no idle latency known yet: rises", []paceWindow{window(true, 9, 9, 9)}, 4 * floor * 1.25},
		{"idle windows teach, repair within the slack rises", []paceWindow{window(false, 1, 1, 1), window(true, 1.4, 1.2, 1.3)}, 4 * floor * 1.25},
		{"repair hurting clients halves the pace", []paceWindow{window(false, 1, 1, 1), window(true, 3, 3, 3)}, 2 * floor},
		{"never below the floor", []paceWindow{window(false, 1), window(true, 5), window(true, 5), window(true, 5), window(true, 5)}, floor},
		{"one slow read in ten does not count", []paceWindow{window(false, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), window(true, 1, 1, 1, 1, 1, 1, 1, 1, 1, 50)}, 4 * floor * 1.25},
		{"recovers once clients are fine again", []paceWindow{window(false, 1), window(true, 3), window(true, 1)}, 2 * floor * 1.25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newPaceController(floor)
			var got float64
			for _, w := range tc.windows {
				got = c.next(w)
			}
			if got != tc.want {
				t.Fatalf("pace %.0f, want %.0f", got, tc.want)
			}
		})
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
