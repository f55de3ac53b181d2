package liveness

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// blips: node "a" beats in short windows separated by silences longer than
// SuspectAfter (3 s) and shorter than its grace at the time; the fourth
// silence (50 s) is longer than the plain 33 s timeout. b and c beat all along.
func blips(until time.Duration) []window {
	return []window{
		{node: "a", from: 0, to: sec(10)},         // silent 9 -> 20: 11 s
		{node: "a", from: sec(20), to: sec(30)},   // silent 29 -> 40
		{node: "a", from: sec(40), to: sec(50)},   // silent 49 -> 60
		{node: "a", from: sec(60), to: sec(70)},   // silent 69 -> 120: 51 s
		{node: "a", from: sec(120), to: sec(130)}, // silent 129 -> 150
		{node: "a", from: sec(150), to: until},
		{node: "b", from: 0, to: sec(1000)}, {node: "c", from: 0, to: sec(1000)},
	}
}

func blipTransitions() []want {
	return []want{
		{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0},
		{"a", model.StateSuspect, sec(12.1)}, {"a", model.StateUp, sec(20)},
		{"a", model.StateSuspect, sec(32.1)}, {"a", model.StateUp, sec(40)},
		{"a", model.StateSuspect, sec(52.1)}, {"a", model.StateUp, sec(60)},
		{"a", model.StateSuspect, sec(72.1)}, {"a", model.StateUp, sec(120)},
		{"a", model.StateSuspect, sec(132.1)}, {"a", model.StateUp, sec(150)},
	}
}

// check is a NodeInfo expectation for node a at a tick offset.
type check struct {
	at    time.Duration
	flaps int
	grace time.Duration
}

func TestFlapDamping(t *testing.T) {
	cases := []struct {
		name    string
		windows []window
		end     time.Duration
		want    []want
		checks  []check
		// downFlaps and downGrace are what the down transition must carry.
		downFlaps int
		downGrace time.Duration
	}{{
		name:    "five blips never go down; staying silent then takes the longer grace",
		windows: blips(sec(160)), // last beat 159 s
		end:     sec(500),
		want: append(blipTransitions(),
			want{"a", model.StateSuspect, sec(162.1)},
			// 6 flaps: 30 s × 2^4 = 480 s, capped at 10 × 30 s; 159 + 3 + 300.
			want{"a", model.StateDown, sec(462.1)}),
		checks: []check{
			{sec(10), 0, sec(30)}, {sec(60), 3, sec(60)}, {sec(121), 4, sec(120)},
			{sec(150), 5, sec(240)}, {sec(200), 6, sec(300)},
		},
		downFlaps: 6, downGrace: sec(300),
	}, {
		name:    "after a quiet window the grace is back to normal",
		windows: blips(sec(850)), // last beat 849 s
		end:     sec(900),
		want: append(blipTransitions(),
			want{"a", model.StateSuspect, sec(852.1)},
			want{"a", model.StateDown, sec(882.1)}), // 849 + 3 + 30
		checks: []check{
			{sec(150), 5, sec(240)},
			{sec(700), 1, sec(30)}, // only the episode of 132.1 s is inside 10 min
			{sec(740), 0, sec(30)},
		},
		downFlaps: 1, downGrace: sec(30),
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := New(noHold(), t0)
			hook := func(now time.Duration) {
				for _, ck := range c.checks {
					if ck.at != now {
						continue
					}
					// Nodes reports as of the last Tick (one tick earlier).
					for _, n := range tr.Nodes() {
						if n.Node == "a" && (n.Flaps != ck.flaps || n.Grace != ck.grace) {
							t.Errorf("at %s: a has %d flaps, grace %s; want %d, %s", now, n.Flaps, n.Grace, ck.flaps, ck.grace)
						}
					}
				}
			}
			got := simulate(t, tr, c.windows, 0, c.end, hook)
			var gotW []want
			for _, s := range got {
				gotW = append(gotW, want{s.Node, s.To, s.at})
				if s.To == model.StateDown {
					if s.Flaps != c.downFlaps || s.Grace != c.downGrace {
						t.Errorf("down carries %d flaps, grace %s; want %d, %s", s.Flaps, s.Grace, c.downFlaps, c.downGrace)
					}
					if lengthened := strings.Contains(s.Reason, "lengthened"); lengthened != (c.downGrace > sec(30)) {
						t.Errorf("down reason %q", s.Reason)
					}
				}
			}
			if !slices.Equal(gotW, c.want) {
				t.Fatalf("transitions:\n got %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestEveryTransitionCarriesFlapsAndGrace(t *testing.T) {
	tr := New(noHold(), t0)
	got := simulate(t, tr, blips(sec(160)), 0, sec(160), nil)
	wantFlaps := map[time.Duration]int{sec(12.1): 1, sec(20): 1, sec(32.1): 2, sec(52.1): 3, sec(72.1): 4, sec(120): 4, sec(132.1): 5}
	for _, s := range got {
		if s.Node != "a" {
			continue
		}
		if s.Grace != tr.Grace(s.Flaps) {
			t.Errorf("%v: grace %s for %d flaps, want %s", s, s.Grace, s.Flaps, tr.Grace(s.Flaps))
		}
		if w, ok := wantFlaps[s.at]; ok && s.Flaps != w {
			t.Errorf("%v: %d flaps, want %d", s, s.Flaps, w)
		}
	}
}

func TestGraceByFlaps(t *testing.T) {
	cases := []struct {
		name  string
		cfg   func(c *Config)
		flaps []int
		want  []time.Duration
	}{{
		name:  "defaults: doubling above 2, capped at 10 × grace",
		cfg:   func(*Config) {},
		flaps: []int{0, 1, 2, 3, 4, 5, 6, 7, 1000},
		want:  []time.Duration{sec(30), sec(30), sec(30), sec(60), sec(120), sec(240), sec(300), sec(300), sec(300)},
	}, {
		name:  "the cap follows the configured grace",
		cfg:   func(c *Config) { c.Grace = 10 * time.Second },
		flaps: []int{2, 3, 5, 6, 8},
		want:  []time.Duration{sec(10), sec(20), sec(80), sec(100), sec(100)},
	}, {
		name:  "explicit cap and threshold",
		cfg:   func(c *Config) { c.MaxGrace = 45 * time.Second; c.FlapThreshold = 4 },
		flaps: []int{4, 5, 6},
		want:  []time.Duration{sec(30), sec(45), sec(45)},
	}, {
		name:  "a cap at or below the grace turns damping off",
		cfg:   func(c *Config) { c.MaxGrace = time.Second },
		flaps: []int{0, 3, 50},
		want:  []time.Duration{sec(30), sec(30), sec(30)},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.cfg(&cfg)
			tr := New(cfg, t0)
			for i, f := range c.flaps {
				if got := tr.Grace(f); got != c.want[i] {
					t.Errorf("Grace(%d) = %s, want %s", f, got, c.want[i])
				}
			}
		})
	}
}

func TestRestartKeepsDampingFromTheRecord(t *testing.T) {
	cases := []struct {
		name     string
		flaps    int
		recorded time.Duration // when the record was written (offset)
		wantDown time.Duration
	}{
		// 4 recorded + the new episode = 5: grace 240 s; last heard 95 s.
		{"recent flaps keep the longer grace", 4, sec(90), sec(95 + 3 + 240 + 0.1)},
		{"flaps older than the window are forgotten", 4, -sec(600), sec(95 + 3 + 30 + 0.1)},
		{"no flaps", 0, sec(90), sec(95 + 3 + 30 + 0.1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.StartupHold = 10 * time.Second
			tr := New(cfg, at(sec(100)))
			for _, n := range []string{"a", "b", "c"} {
				tr.Seed(n, at(sec(95)), model.StateUp)
			}
			tr.SeedFlaps("a", c.flaps, at(c.recorded))
			tr.SeedFlaps("a", c.flaps, at(c.recorded)) // idempotent
			tr.SeedFlaps("zz", 3, at(c.recorded))      // unknown nodes are ignored
			got := simulate(t, tr, []window{
				{node: "b", from: sec(100), to: sec(500)}, {node: "c", from: sec(100), to: sec(500)},
			}, sec(100), sec(500), nil)
			var down []seen
			for _, s := range got {
				if s.To == model.StateDown {
					down = append(down, s)
				}
			}
			if len(down) != 1 || down[0].Node != "a" || down[0].at != c.wantDown {
				t.Fatalf("downs %v, want a at %s", down, c.wantDown)
			}
			if len(tr.Nodes()) != 3 {
				t.Fatalf("SeedFlaps created a node: %+v", tr.Nodes())
			}
		})
	}
}

func TestOverrideOfTheMassSilenceGuard(t *testing.T) {
	// a, b, c last heard at 0, 1 and 2 s (silence passes 3 s at 3, 4, 5 s);
	// d beats. 3 of 4 silent > 50%: the share was first exceeded at 5 s.
	cases := []struct {
		name        string
		override    time.Duration // offset; 0 = none
		tickAt      time.Duration
		wantHeld    bool
		wantTripped bool
		wantDowns   int
		reason      string
	}{
		{"no override: held", 0, sec(40), true, true, 0, "3 of 4 nodes silent at once (more than 50%): holding down verdicts"},
		{"override in force: downs flow", sec(60), sec(40), false, true, 3, "operator override until"},
		{"override expired: held again", sec(30), sec(40), true, true, 0, "holding down verdicts"},
		{"override ends exactly now: held", sec(40), sec(40), true, true, 0, "holding"},
		{"override while not tripped changes nothing", sec(60), sec(4), false, false, 0, "1 of 4 nodes silent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := New(noHold(), t0)
			for i, n := range []string{"a", "b", "c"} {
				tr.Heard(n, "x", at(sec(float64(i))))
			}
			tr.Heard("d", "x", at(c.tickAt))
			tr.Tick(t0)
			if c.override > 0 {
				tr.Override(at(c.override))
			}
			got := tr.Tick(at(c.tickAt))
			downs := 0
			for _, x := range got {
				if x.To == model.StateDown {
					downs++
				}
			}
			h := tr.Hold()
			if h.Held != c.wantHeld || h.Tripped != c.wantTripped || downs != c.wantDowns || !strings.Contains(h.Reason, c.reason) {
				t.Fatalf("hold %+v, %d downs; want held %v tripped %v, %d downs, reason with %q",
					h, downs, c.wantHeld, c.wantTripped, downs, c.reason)
			}
			if held, _ := tr.Held(); held != c.wantHeld {
				t.Fatalf("Held() = %v, want %v", held, c.wantHeld)
			}
			if c.wantTripped {
				if !h.Since.Equal(at(sec(5))) || h.Silent != 3 || h.Judged != 4 || !slices.Equal(h.Nodes, []string{"a", "b", "c"}) {
					t.Fatalf("hold %+v: want since 5 s, 3 of 4 silent (a b c)", h)
				}
			}
		})
	}
}

func TestOverrideCancelledAndHoldSinceStable(t *testing.T) {
	tr := New(noHold(), t0)
	for _, n := range []string{"a", "b", "c", "d"} {
		tr.Heard(n, "x", t0)
	}
	tr.Tick(t0)
	tr.Heard("d", "x", at(sec(10)))
	tr.Tick(at(sec(10)))
	first := tr.Hold()
	if !first.Held || !first.Since.Equal(at(sec(3))) {
		t.Fatalf("hold %+v, want held since 3 s", first)
	}
	tr.Override(at(sec(100)))
	tr.Override(time.Time{}) // cancelled before any Tick
	tr.Heard("d", "x", at(sec(20)))
	if got := tr.Tick(at(sec(20))); len(got) != 0 {
		t.Fatalf("transitions %v with the override cancelled", got)
	}
	if h := tr.Hold(); !h.Held || !h.Since.Equal(first.Since) || !h.OverrideUntil.IsZero() {
		t.Fatalf("hold %+v, want still held since 3 s", h)
	}
	// The share drops: released, Since cleared.
	for _, n := range []string{"a", "b"} {
		tr.Heard(n, "x", at(sec(21)))
	}
	tr.Heard("d", "x", at(sec(21)))
	tr.Tick(at(sec(21)))
	if h := tr.Hold(); h.Held || h.Tripped || !h.Since.IsZero() || !strings.Contains(h.Reason, "1 of 4") {
		t.Fatalf("hold %+v after the share dropped", h)
	}
}

func TestDisconnected(t *testing.T) {
	// a, b, c beat every second from 0; the hook drives a per case.
	cases := []struct {
		name string
		cfg  func(*Config)
		// script runs at each tick offset before Tick and returns transitions
		// Disconnected produced.
		script func(tr *Tracker, now time.Duration) []Transition
		aBeats []window
		end    time.Duration
		want   []want
		reason map[time.Duration]string
	}{{
		name: "suspect at once, up again on reconnect",
		script: func(tr *Tracker, now time.Duration) []Transition {
			if now == sec(10.5) {
				tr.Heard("a", "boot-1", at(sec(10))) // a late copy of the last beat
				if x, ok := tr.Disconnected("a", at(now)); ok {
					return []Transition{x}
				}
			}
			if now == sec(10.6) {
				tr.Heard("a", "boot-1", at(sec(10))) // delivered after the notice: not newer
			}
			return nil
		},
		aBeats: []window{{node: "a", from: 0, to: sec(11)}, {node: "a", from: sec(12), to: sec(30)}},
		end:    sec(30),
		want: []want{
			{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0},
			{"a", model.StateSuspect, sec(10.5)}, {"a", model.StateUp, sec(12)},
		},
		reason: map[time.Duration]string{sec(10.5): ReasonDisconnected},
	}, {
		name: "stays away: down counted from the last heartbeat, not the disconnect",
		script: func(tr *Tracker, now time.Duration) []Transition {
			if now == sec(10.5) {
				if x, ok := tr.Disconnected("a", at(now)); ok {
					return []Transition{x}
				}
			}
			return nil
		},
		aBeats: []window{{node: "a", from: 0, to: sec(11)}},
		end:    sec(60),
		want: []want{
			{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0},
			{"a", model.StateSuspect, sec(10.5)}, {"a", model.StateDown, sec(43.1)}, // 10 + 3 + 30
		},
	}, {
		name: "during the startup hold: suspected when the hold ends",
		cfg:  func(c *Config) { c.StartupHold = 11 * time.Second },
		script: func(tr *Tracker, now time.Duration) []Transition {
			if now == sec(10.5) {
				if _, ok := tr.Disconnected("a", at(now)); ok {
					panic("transition during the startup hold")
				}
			}
			return nil
		},
		aBeats: []window{{node: "a", from: 0, to: sec(11)}},
		end:    sec(12),
		want: []want{
			{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0},
			{"a", model.StateSuspect, sec(11)},
		},
		reason: map[time.Duration]string{sec(11): ReasonDisconnected},
	}, {
		name: "unknown, suspect, down and maintenance nodes are left alone",
		script: func(tr *Tracker, now time.Duration) []Transition {
			if now == 0 {
				tr.SetMaintenance("m", true, at(now))
			}
			var names []string
			switch now {
			case sec(5):
				names = []string{"nobody", "m"}
			case sec(20), sec(50): // a is suspect, then down
				names = []string{"a"}
			}
			for _, n := range names {
				if x, ok := tr.Disconnected(n, at(now)); ok {
					panic(fmt.Sprintf("transition %+v", x))
				}
			}
			return nil
		},
		aBeats: []window{{node: "a", from: 0, to: sec(11)}, {node: "m", from: 0, to: sec(60)}},
		end:    sec(60),
		want: []want{
			{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0},
			{"a", model.StateSuspect, sec(13.1)}, {"a", model.StateDown, sec(43.1)},
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := noHold()
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			tr := New(cfg, t0)
			var extra []seen
			hook := func(now time.Duration) {
				for _, x := range c.script(tr, now) {
					extra = append(extra, seen{now, x})
				}
			}
			windows := append([]window{{node: "b", from: 0, to: c.end + sec(1)}, {node: "c", from: 0, to: c.end + sec(1)}}, c.aBeats...)
			// Run the simulation tick by tick, merging Disconnected transitions.
			var got []seen
			all := simulate(t, tr, windows, 0, c.end, func(now time.Duration) {
				before := len(extra)
				hook(now)
				got = append(got, extra[before:]...)
			})
			// simulate returns Tick transitions; interleave them by time with
			// Disconnected ones (which happen before the Tick of their offset).
			merged := mergeSeen(got, all)
			var gotW []want
			for _, s := range merged {
				gotW = append(gotW, want{s.Node, s.To, s.at})
				if r, ok := c.reason[s.at]; ok && s.Node == "a" && s.Reason != r {
					t.Errorf("%v: reason %q, want %q", s, s.Reason, r)
				}
			}
			if !slices.Equal(gotW, c.want) {
				t.Fatalf("transitions:\n got %v\nwant %v", merged, c.want)
			}
		})
	}
}

// mergeSeen merges hook transitions (decided before the Tick at the same
// offset) with Tick transitions, by offset.
func mergeSeen(hook, ticks []seen) []seen {
	var out []seen
	i, j := 0, 0
	for i < len(hook) || j < len(ticks) {
		if j >= len(ticks) || (i < len(hook) && hook[i].at <= ticks[j].at) {
			out = append(out, hook[i])
			i++
		} else {
			out = append(out, ticks[j])
			j++
		}
	}
	return out
}

func TestDisconnectCountsAsAFlap(t *testing.T) {
	tr := New(noHold(), t0)
	for _, n := range []string{"a", "b", "c"} {
		tr.Heard(n, "x", t0)
	}
	tr.Tick(t0)
	for i := 1; i <= 4; i++ {
		now := at(sec(float64(i)))
		for _, n := range []string{"a", "b", "c"} {
			tr.Heard(n, "x", now)
		}
		x, ok := tr.Disconnected("a", now)
		if !ok || x.Flaps != i {
			t.Fatalf("disconnect %d: %+v %v, want suspect with %d flaps", i, x, ok, i)
		}
		tr.Heard("a", "x", now.Add(time.Millisecond))
		if got := tr.Tick(now.Add(time.Millisecond)); len(got) != 1 || got[0].To != model.StateUp {
			t.Fatalf("reconnect %d: %v", i, got)
		}
	}
	if n := tr.Nodes()[0]; n.Flaps != 4 || n.Grace != sec(120) {
		t.Fatalf("after 4 disconnects: %+v, want 4 flaps, grace 120 s", n)
	}
}
