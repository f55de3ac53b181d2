package liveness

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const tick = 100 * time.Millisecond

// at turns an offset from t0 into a time.
func at(d time.Duration) time.Time { return t0.Add(d) }

func sec(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// window: node beats every second in [from, to) (offsets from t0), with boot id boot.
type window struct {
	node     string
	from, to time.Duration
	boot     string
}

// seen is one transition and the tick offset at which Tick returned it.
type seen struct {
	at time.Duration
	Transition
}

func (s seen) String() string {
	return fmt.Sprintf("%s %s %s->%s", s.at, s.Node, s.From, s.To)
}

// simulate delivers the windows' heartbeats and ticks every 100 ms from start
// until end (offsets), returning every transition.
func simulate(t *testing.T, tr *Tracker, windows []window, start, end time.Duration, hook func(now time.Duration)) []seen {
	t.Helper()
	var beats []struct {
		at         time.Duration
		node, boot string
	}
	for _, w := range windows {
		for b := w.from; b < w.to; b += time.Second {
			beats = append(beats, struct {
				at         time.Duration
				node, boot string
			}{b, w.node, w.boot})
		}
	}
	slices.SortStableFunc(beats, func(a, b struct {
		at         time.Duration
		node, boot string
	}) int {
		return int(a.at - b.at)
	})
	var out []seen
	i := 0
	for now := start; now <= end; now += tick {
		for i < len(beats) && beats[i].at <= now {
			boot := beats[i].boot
			if boot == "" {
				boot = "boot-1"
			}
			tr.Heard(beats[i].node, boot, at(beats[i].at))
			i++
		}
		if hook != nil {
			hook(now)
		}
		for _, x := range tr.Tick(at(now)) {
			out = append(out, seen{now, x})
		}
	}
	return out
}

// want is an expected transition: node, target state, tick offset.
type want struct {
	node string
	to   model.State
	at   time.Duration
}

func noHold() Config {
	c := DefaultConfig()
	c.StartupHold = time.Nanosecond
	return c
}

func TestTrackerScenarios(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		start   time.Duration
		seed    func(tr *Tracker)
		windows []window
		end     time.Duration
		want    []want
	}{{
		name: "blip inside the grace: suspect then up, never down",
		cfg:  noHold(),
		windows: []window{
			{node: "a", from: 0, to: sec(10)}, {node: "a", from: sec(20), to: sec(60)},
		},
		end: sec(60),
		want: []want{
			{"a", model.StateUp, 0},
			{"a", model.StateSuspect, sec(12.1)}, // last beat 9 s, silent > 3 s
			{"a", model.StateUp, sec(20)},
		},
	}, {
		name: "death: down exactly one tick after suspect + grace",
		cfg:  noHold(),
		windows: []window{
			{node: "a", from: 0, to: sec(10)}, {node: "b", from: 0, to: sec(90)}, {node: "c", from: 0, to: sec(90)},
		},
		end: sec(90),
		want: []want{
			{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0},
			{"a", model.StateSuspect, sec(12.1)},
			{"a", model.StateDown, sec(42.1)}, // 9 s + 3 s + 30 s, next tick
		},
	}, {
		name: "return after down: up",
		cfg:  noHold(),
		windows: []window{
			{node: "a", from: 0, to: sec(10)}, {node: "a", from: sec(60), to: sec(70)},
			{node: "b", from: 0, to: sec(70)}, {node: "c", from: 0, to: sec(70)},
		},
		end: sec(70),
		want: []want{
			{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0},
			{"a", model.StateSuspect, sec(12.1)},
			{"a", model.StateDown, sec(42.1)},
			{"a", model.StateUp, sec(60)},
		},
	}, {
		name:  "restart: nothing judged during the hold, then a seeded silent node is down",
		cfg:   DefaultConfig(),
		start: sec(100),
		seed: func(tr *Tracker) {
			tr.Seed("a", at(sec(90)), model.StateUp)   // died while no detector ran
			tr.Seed("b", at(sec(99.5)), model.StateUp) // alive, keeps beating
			tr.Seed("c", at(sec(10)), model.StateDown) // long dead, already judged
			tr.Seed("e", at(sec(95)), model.StateSuspect)
		},
		windows: []window{
			{node: "b", from: sec(100), to: sec(140)}, {node: "d", from: sec(100), to: sec(140)},
			{node: "e", from: sec(110), to: sec(140)},
		},
		end: sec(140),
		want: []want{
			{"d", model.StateUp, sec(100)}, // a newcomer is announced at once
			{"e", model.StateUp, sec(110)}, // up verdicts are not held
			{"a", model.StateSuspect, sec(133)},
			{"a", model.StateDown, sec(133)},
		},
	}, {
		name: "mass silence: downs held, suspects reported, released when the share drops",
		cfg:  noHold(),
		windows: []window{
			{node: "a", from: 0, to: sec(10)}, {node: "b", from: 0, to: sec(10)}, {node: "c", from: 0, to: sec(10)},
			{node: "b", from: sec(50), to: sec(60)}, {node: "c", from: sec(50), to: sec(60)},
			{node: "d", from: 0, to: sec(60)},
		},
		end: sec(60),
		want: []want{
			{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0}, {"d", model.StateUp, 0},
			{"a", model.StateSuspect, sec(12.1)}, {"b", model.StateSuspect, sec(12.1)}, {"c", model.StateSuspect, sec(12.1)},
			{"b", model.StateUp, sec(50)}, {"c", model.StateUp, sec(50)},
			{"a", model.StateDown, sec(50)},
		},
	}, {
		name: "several nodes fail independently",
		cfg:  noHold(),
		windows: []window{
			{node: "a", from: 0, to: sec(10)}, {node: "b", from: 0, to: sec(20)},
			{node: "c", from: 0, to: sec(80)}, {node: "d", from: 0, to: sec(80)}, {node: "e", from: 0, to: sec(80)},
		},
		end: sec(80),
		want: []want{
			{"a", model.StateUp, 0}, {"b", model.StateUp, 0}, {"c", model.StateUp, 0}, {"d", model.StateUp, 0}, {"e", model.StateUp, 0},
			{"a", model.StateSuspect, sec(12.1)},
			{"b", model.StateSuspect, sec(22.1)},
			{"a", model.StateDown, sec(42.1)},
			{"b", model.StateDown, sec(52.1)},
		},
	}, {
		name: "maintenance: never down; judged afresh from the end of maintenance",
		cfg:  noHold(),
		seed: func(tr *Tracker) { tr.SetMaintenance("a", true, t0) },
		windows: []window{
			{node: "a", from: 0, to: sec(10)}, {node: "b", from: 0, to: sec(110)}, {node: "c", from: 0, to: sec(110)},
		},
		end: sec(110),
		want: []want{
			{"b", model.StateUp, 0}, {"c", model.StateUp, 0},
			{"a", model.StateSuspect, sec(63.1)}, // maintenance off at 60 s
			{"a", model.StateDown, sec(93.1)},
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := New(c.cfg, at(c.start))
			if c.seed != nil {
				c.seed(tr)
			}
			var hook func(time.Duration)
			if strings.HasPrefix(c.name, "maintenance") {
				hook = func(now time.Duration) {
					if now == sec(60) {
						tr.SetMaintenance("a", false, at(now))
					}
				}
			}
			got := simulate(t, tr, c.windows, c.start, c.end, hook)
			var gotW []want
			for _, s := range got {
				gotW = append(gotW, want{s.Node, s.To, s.at})
			}
			if !slices.Equal(gotW, c.want) {
				t.Fatalf("transitions:\n got %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestDownCarriesSilenceAndLastHeard(t *testing.T) {
	tr := New(noHold(), t0)
	got := simulate(t, tr, []window{
		{node: "a", from: 0, to: sec(10)}, {node: "b", from: 0, to: sec(50)}, {node: "c", from: 0, to: sec(50)},
	}, 0, sec(50), nil)
	for _, s := range got {
		if s.Node == "a" && s.To == model.StateDown {
			if s.From != model.StateSuspect || !s.LastHeard.Equal(at(sec(9))) || s.Silent != sec(33.1) {
				t.Fatalf("down = %+v, want from suspect, last heard 9 s, silent 33.1 s", s.Transition)
			}
			if !strings.Contains(s.Reason, "no heartbeat") {
				t.Fatalf("down reason %q says nothing about silence", s.Reason)
			}
			return
		}
	}
	t.Fatalf("no down for a in %v", got)
}

func TestMassSilenceHeldReports(t *testing.T) {
	tr := New(noHold(), t0)
	for _, n := range []string{"a", "b", "c"} {
		tr.Heard(n, "x", t0)
	}
	tr.Tick(t0)
	if held, _ := tr.Held(); held {
		t.Fatal("held with every node beating")
	}
	tr.Heard("c", "x", at(sec(40)))
	got := tr.Tick(at(sec(40)))
	held, reason := tr.Held()
	if !held || !strings.Contains(reason, "2 of 3") {
		t.Fatalf("Held() = %v %q, want held naming 2 of 3", held, reason)
	}
	for _, x := range got {
		if x.To == model.StateDown {
			t.Fatalf("down verdict %+v while held", x)
		}
	}
	// A single node alone is never a "mass" silence.
	solo := New(noHold(), t0)
	solo.Heard("a", "x", t0)
	solo.Tick(t0)
	solo.Tick(at(sec(40)))
	if held, _ := solo.Held(); held {
		t.Fatal("one silent node of one held verdicts")
	}
}

func TestRestartReportedWithoutTransition(t *testing.T) {
	tr := New(noHold(), t0)
	if tr.Heard("a", "boot-1", t0) {
		t.Fatal("first heartbeat reported as a restart")
	}
	tr.Tick(t0)
	if tr.Heard("a", "boot-1", at(sec(1))) {
		t.Fatal("same boot id reported as a restart")
	}
	if !tr.Heard("a", "boot-2", at(sec(2))) {
		t.Fatal("new boot id on an up node not reported")
	}
	if got := tr.Tick(at(sec(2))); len(got) != 0 {
		t.Fatalf("restart inside the grace produced transitions %v", got)
	}
	if n := tr.Nodes(); len(n) != 1 || n[0].BootID != "boot-2" || n[0].State != model.StateUp {
		t.Fatalf("Nodes() = %+v", n)
	}
}

func TestLateHeartbeatNeverMovesLastHeardBack(t *testing.T) {
	tr := New(noHold(), t0)
	tr.Heard("a", "b", at(sec(10)))
	tr.Heard("a", "b", at(sec(5)))
	tr.Seed("a", at(sec(1)), model.StateUp)
	if got := tr.Nodes()[0].LastHeard; !got.Equal(at(sec(10))) {
		t.Fatalf("last heard %v, want 10 s", got.Sub(t0))
	}
}

func TestRestartHoldsAgain(t *testing.T) {
	tr := New(DefaultConfig(), t0)
	tr.Heard("a", "x", t0)
	tr.Heard("b", "x", t0)
	tr.Tick(t0)
	tr.Restart(at(sec(20))) // e.g. the bus came back: hold until 53 s
	if got := tr.Tick(at(sec(40))); len(got) != 0 {
		t.Fatalf("transitions %v during a restart hold", got)
	}
	got := tr.Tick(at(sec(54)))
	if len(got) != 2 || got[0].To != model.StateSuspect || got[1].To != model.StateSuspect {
		t.Fatalf("after the hold got %v, want two suspects and no down (2 of 2 silent)", got)
	}
}

// Property: heartbeat gaps shorter than SuspectAfter+Grace never produce a down
// verdict, whatever their pattern, on any number of nodes.
func TestPropertyShortGapsNeverDown(t *testing.T) {
	cfg := noHold()
	limit := cfg.SuspectAfter + cfg.Grace
	for seed := uint64(1); seed <= 60; seed++ {
		rng := rand.New(rand.NewPCG(seed, 42))
		nodes := 1 + rng.IntN(6)
		type beat struct {
			at   time.Duration
			node string
		}
		var beats []beat
		for n := 0; n < nodes; n++ {
			id := fmt.Sprintf("n%d", n)
			for b := time.Duration(0); b < 10*time.Minute; {
				beats = append(beats, beat{b, id})
				var gap time.Duration
				if rng.IntN(4) == 0 {
					gap = time.Duration(rng.Int64N(int64(limit))) // any pause below the limit
				} else {
					gap = time.Duration(rng.Int64N(int64(2 * time.Second)))
				}
				b += max(gap, time.Millisecond)
			}
		}
		slices.SortFunc(beats, func(a, b beat) int { return int(a.at - b.at) })
		tr := New(cfg, t0)
		i := 0
		step := time.Duration(10+rng.IntN(500)) * time.Millisecond
		for now := time.Duration(0); now <= 10*time.Minute; now += step {
			for i < len(beats) && beats[i].at <= now {
				tr.Heard(beats[i].node, "b", at(beats[i].at))
				i++
			}
			for _, x := range tr.Tick(at(now)) {
				if x.To == model.StateDown {
					t.Fatalf("seed %d: %s down at %s after silence %s < %s", seed, x.Node, now, x.Silent, limit)
				}
			}
		}
	}
}

// Property: a node that stops for good, while most others beat, is declared
// down after between SuspectAfter+Grace and one tick more of silence.
func TestPropertyDeathDetectedWithinOneTick(t *testing.T) {
	cfg := noHold()
	cfg.Grace = 12 * time.Second
	for seed := uint64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		deathAt := time.Duration(rng.Int64N(int64(time.Minute)))
		tr := New(cfg, t0)
		var last time.Duration
		var down *Transition
		for now := time.Duration(0); now <= 2*time.Minute && down == nil; now += tick {
			tr.Heard("alive-1", "b", at(now))
			tr.Heard("alive-2", "b", at(now))
			if now < deathAt {
				tr.Heard("dies", "b", at(now))
				last = now
			}
			for _, x := range tr.Tick(at(now)) {
				if x.To == model.StateDown {
					x := x
					down = &x
				}
			}
		}
		if down == nil || down.Node != "dies" {
			t.Fatalf("seed %d: down = %+v", seed, down)
		}
		timeout := cfg.SuspectAfter + cfg.Grace
		if down.Silent <= timeout || down.Silent > timeout+tick || !down.LastHeard.Equal(at(last)) {
			t.Fatalf("seed %d: down after %s of silence (last %s), want in (%s, %s]", seed, down.Silent, last, timeout, timeout+tick)
		}
	}
}

func TestHoldFollowsTheConfiguredGrace(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Grace = 10 * time.Second // rehome dev --grace 10s
	if got := New(cfg, t0).HoldUntil(); !got.Equal(at(sec(13))) {
		t.Fatalf("hold until %s, want suspect + grace = 13 s", got.Sub(t0))
	}
	if got := New(DefaultConfig(), t0).HoldUntil(); !got.Equal(at(sec(33))) {
		t.Fatalf("default hold until %s, want 33 s", got.Sub(t0))
	}
}
