package liveness

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/model"
)

// TestNextDeadlineIsTheExactVerdictTime: a node that stops beating is
// suspect exactly at the deadline (not a nanosecond before), then down at
// the next one; with every node down nothing is pending.
func TestNextDeadlineIsTheExactVerdictTime(t *testing.T) {
	tr := New(Config{SuspectAfter: 3 * time.Second, Grace: 30 * time.Second, StartupHold: time.Second}, t0)
	tr.Heard("n1", "b", at(2*time.Second))
	if d, ok := tr.NextDeadline(at(2 * time.Second)); !ok || !d.Equal(at(2*time.Second)) {
		t.Fatalf("a node heard and not yet up: deadline %v %v, want now", d, ok)
	}
	if got := tr.Tick(at(2 * time.Second)); len(got) != 1 || got[0].To != model.StateUp {
		t.Fatalf("tick: %+v", got)
	}
	now := at(2 * time.Second)
	for _, want := range []model.State{model.StateSuspect, model.StateDown} {
		d, ok := tr.NextDeadline(now)
		if !ok {
			t.Fatalf("no deadline before %s", want)
		}
		if got := tr.Tick(d.Add(-time.Nanosecond)); len(got) != 0 {
			t.Fatalf("a nanosecond before the deadline %v: %+v", d, got)
		}
		got := tr.Tick(d)
		if len(got) != 1 || got[0].To != want {
			t.Fatalf("at the deadline %v: %+v, want %s", d, got, want)
		}
		now = d
	}
	if d, ok := tr.NextDeadline(at(time.Hour)); ok {
		t.Fatalf("every node down, yet a deadline at %v", d)
	}
}

// TestNextDeadlineNeverSkipsAVerdict plays random heartbeats, maintenance
// and disconnects on two trackers: one ticks every 10 ms, the other jumps
// from deadline to deadline (checking a tick just before each finds
// nothing). Both announce the same transitions, node by node, in order.
func TestNextDeadlineNeverSkipsAVerdict(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 99))
		cfg := Config{SuspectAfter: 3 * time.Second, Grace: 10 * time.Second, StartupHold: 5 * time.Second,
			FlapWindow: time.Minute, FlapThreshold: 1, MaxGrace: 40 * time.Second}
		type input struct {
			at   time.Duration
			node string
			kind int // 0 heartbeat, 1 maintenance on, 2 off, 3 disconnect
		}
		var inputs []input
		for i := range 8 {
			node := fmt.Sprintf("n%d", i)
			for ms := time.Duration(0); ms < 3*time.Minute; ms += time.Duration(500+rng.IntN(9000)) * time.Millisecond {
				kind := 0
				if r := rng.IntN(40); r < 3 {
					kind = r + 1
				}
				inputs = append(inputs, input{ms.Truncate(10 * time.Millisecond), node, kind})
			}
		}
		apply := func(tr *Tracker, in input) {
			switch in.kind {
			case 0:
				tr.Heard(in.node, "b", at(in.at))
			case 1, 2:
				tr.SetMaintenance(in.node, in.kind == 1, at(in.at))
			case 3:
				tr.Disconnected(in.node, at(in.at))
			}
		}
		sortInputs := func() {
			for i := 1; i < len(inputs); i++ {
				for j := i; j > 0 && inputs[j].at < inputs[j-1].at; j-- {
					inputs[j], inputs[j-1] = inputs[j-1], inputs[j]
				}
			}
		}
		sortInputs()
		end := 5 * time.Minute
		perNode := func(m map[string][]model.State, trs []Transition) {
			for _, x := range trs {
				m[x.Node] = append(m[x.Node], x.To)
			}
		}
		// The stepping tracker: inputs then a tick, every 10 ms.
		step := New(cfg, t0)
		stepped := map[string][]model.State{}
		next := 0
		for now := time.Duration(0); now <= end; now += 10 * time.Millisecond {
			for next < len(inputs) && inputs[next].at <= now {
				apply(step, inputs[next])
				next++
			}
			perNode(stepped, step.Tick(at(now)))
		}
		// The jumping tracker: ticks at each input and each deadline only.
		jump := New(cfg, t0)
		jumped := map[string][]model.State{}
		next = 0
		now := time.Duration(0)
		for now <= end {
			for next < len(inputs) && inputs[next].at <= now {
				apply(jump, inputs[next])
				next++
			}
			perNode(jumped, jump.Tick(at(now)))
			target := end + time.Nanosecond
			if next < len(inputs) {
				target = inputs[next].at
			}
			if d, ok := jump.NextDeadline(at(now)); ok && d.Sub(t0) < target {
				target = d.Sub(t0)
				// Round up to the stepping grid, where the other tracker ticks.
				target = (target + 10*time.Millisecond - 1).Truncate(10 * time.Millisecond)
			}
			if target <= now {
				target = now + 10*time.Millisecond
			}
			if target-10*time.Millisecond > now {
				if got := jump.Tick(at(target - 10*time.Millisecond)); len(got) != 0 {
					t.Fatalf("seed %d: a tick before the deadline announced %+v", seed, got)
				}
			}
			now = target
		}
		for i := range 8 {
			node := fmt.Sprintf("n%d", i)
			if fmt.Sprint(stepped[node]) != fmt.Sprint(jumped[node]) {
				t.Fatalf("seed %d, %s: stepping announced %v, jumping %v", seed, node, stepped[node], jumped[node])
			}
		}
	}
}
