package core

import (
	"fmt"
	"testing"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
)

// TestRiskTable: what one more node or rack failure would cost, on 6 nodes
// in 3 racks (storage-i in rack-((i-1)%3+1): rack-1 = storage-1, storage-4).
func TestRiskTable(t *testing.T) {
	type cost struct{ lost, single int }
	cases := []struct {
		name       string
		setup      func(t *testing.T, v *View)
		nodes      map[string]cost // lines not listed cost nothing
		racks      map[string]cost
		worstNode  string // "" none
		worstRack  string
		nodeLines  int
		rackLines  int
		mustAbsent []string
	}{{
		name:  "three copies in three racks cost nothing",
		setup: func(t *testing.T, v *View) { Put(t, v, "s", 1, "storage-1", "storage-2", "storage-3") },
		nodes: nil, racks: nil, nodeLines: 6, rackLines: 3,
	}, {
		name: "a holder down leaves the others single-copy",
		setup: func(t *testing.T, v *View) {
			Put(t, v, "s", 1, "storage-1", "storage-2", "storage-3")
			setState(t, v, "storage-1", model.StateDown, Epoch)
		},
		nodes:     map[string]cost{"storage-2": {0, 1}, "storage-3": {0, 1}},
		racks:     map[string]cost{"rack-2": {0, 1}, "rack-3": {0, 1}},
		worstNode: "storage-2", worstRack: "rack-2", nodeLines: 5, rackLines: 3,
		mustAbsent: []string{"storage-1"},
	}, {
		name: "one live copy: its node loses it; an already lost shard counts nowhere",
		setup: func(t *testing.T, v *View) {
			Put(t, v, "s", 1, "storage-1", "storage-2", "storage-3")
			Put(t, v, "gone", 1, "storage-1")
			setState(t, v, "storage-1", model.StateDown, Epoch)
			setState(t, v, "storage-3", model.StateDown, Epoch)
		},
		nodes:     map[string]cost{"storage-2": {1, 0}},
		racks:     map[string]cost{"rack-2": {1, 0}},
		worstNode: "storage-2", worstRack: "rack-2", nodeLines: 4, rackLines: 3,
	}, {
		name: "two copies in one rack: the rack failure leaves one",
		setup: func(t *testing.T, v *View) {
			Put(t, v, "s", 1, "storage-1", "storage-4", "storage-2")
		},
		racks:     map[string]cost{"rack-1": {0, 1}},
		worstRack: "rack-1", nodeLines: 6, rackLines: 3,
	}, {
		name: "a holder lacking its copy does not count",
		setup: func(t *testing.T, v *View) {
			Put(t, v, "s", 1, "storage-1", "storage-2", "storage-3")
			h, _ := v.IDs.Lookup("s")
			v.MarkMissing(h, v.NodeIndex["storage-3"])
		},
		nodes:     map[string]cost{"storage-1": {0, 1}, "storage-2": {0, 1}},
		racks:     map[string]cost{"rack-1": {0, 1}, "rack-2": {0, 1}},
		worstNode: "storage-1", worstRack: "rack-1", nodeLines: 6, rackLines: 3,
	}, {
		name: "erasure-coded 2+1: a healthy stripe would be left with K pieces",
		setup: func(t *testing.T, v *View) {
			PutStripe(t, v, "obj", 0, 2, 1, 10, nodeNames(1, 2, 3)...)
		},
		nodes:     map[string]cost{"storage-1": {0, 1}, "storage-2": {0, 1}, "storage-3": {0, 1}},
		racks:     map[string]cost{"rack-1": {0, 1}, "rack-2": {0, 1}, "rack-3": {0, 1}},
		worstNode: "storage-1", worstRack: "rack-1", nodeLines: 6, rackLines: 3,
	}, {
		name: "erasure-coded 2+1 at K pieces: any holder's failure loses every piece",
		setup: func(t *testing.T, v *View) {
			PutStripe(t, v, "obj", 0, 2, 1, 10, nodeNames(1, 2, 3)...)
			setState(t, v, "storage-3", model.StateDown, Epoch)
		},
		nodes:     map[string]cost{"storage-1": {3, 0}, "storage-2": {3, 0}},
		racks:     map[string]cost{"rack-1": {3, 0}, "rack-2": {3, 0}},
		worstNode: "storage-1", worstRack: "rack-1", nodeLines: 5, rackLines: 3,
	}, {
		name: "erasure-coded 4+2 two pieces per rack: a rack failure leaves K",
		setup: func(t *testing.T, v *View) {
			PutStripe(t, v, "obj", 0, 4, 2, 10, nodeNames(1, 4, 2, 5, 3, 6)...)
		},
		racks:     map[string]cost{"rack-1": {0, 1}, "rack-2": {0, 1}, "rack-3": {0, 1}},
		worstRack: "rack-1", nodeLines: 6, rackLines: 3,
	}, {
		name: "the worst is the most lost, then the most single-copy",
		setup: func(t *testing.T, v *View) {
			for i := 0; i < 3; i++ {
				Put(t, v, fmt.Sprintf("two-%d", i), 1, "storage-1", "storage-5")
			}
			Put(t, v, "one", 1, "storage-6")
		},
		nodes:     map[string]cost{"storage-1": {0, 3}, "storage-5": {0, 3}, "storage-6": {1, 0}},
		racks:     map[string]cost{"rack-1": {0, 3}, "rack-2": {0, 3}, "rack-3": {1, 0}},
		worstNode: "storage-6", worstRack: "rack-3", nodeLines: 6, rackLines: 3,
	}, {
		name: "a rack all down has no line",
		setup: func(t *testing.T, v *View) {
			Put(t, v, "s", 1, "storage-1", "storage-2", "storage-3")
			setState(t, v, "storage-1", model.StateDown, Epoch)
			setState(t, v, "storage-4", model.StateDown, Epoch)
		},
		nodes:     map[string]cost{"storage-2": {0, 1}, "storage-3": {0, 1}},
		racks:     map[string]cost{"rack-2": {0, 1}, "rack-3": {0, 1}},
		worstNode: "storage-2", worstRack: "rack-2", nodeLines: 4, rackLines: 2,
		mustAbsent: []string{"rack-1"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := TestView(t, 6, 3)
			c.setup(t, v)
			r := v.Risk()
			if len(r.Nodes) != c.nodeLines || len(r.Racks) != c.rackLines {
				t.Fatalf("%d node lines, %d rack lines; want %d, %d: %+v", len(r.Nodes), len(r.Racks), c.nodeLines, c.rackLines, r)
			}
			check := func(lines []control.RiskLine, key func(control.RiskLine) string, want map[string]cost) {
				for _, l := range lines {
					k := key(l)
					if got, w := (cost{l.Lost, l.SingleCopy}), want[k]; got != w {
						t.Errorf("%s: lost %d single %d, want %d %d", k, got.lost, got.single, w.lost, w.single)
					}
					for _, a := range c.mustAbsent {
						if a == k {
							t.Errorf("%s has a line", k)
						}
					}
				}
			}
			check(r.Nodes, func(l control.RiskLine) string { return l.Node }, c.nodes)
			check(r.Racks, func(l control.RiskLine) string { return l.Rack }, c.racks)
			if got := worstName(r.WorstNode, true); got != c.worstNode {
				t.Errorf("worst node %q, want %q", got, c.worstNode)
			}
			if got := worstName(r.WorstRack, false); got != c.worstRack {
				t.Errorf("worst rack %q, want %q", got, c.worstRack)
			}
		})
	}
}

func worstName(l *control.RiskLine, node bool) string {
	switch {
	case l == nil:
		return ""
	case node:
		return l.Node
	}
	return l.Rack
}
