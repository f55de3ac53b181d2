package e2e

import (
	"encoding/json"
	"testing"

	"github.com/rehome/rehome/shared/history"
)

// nodeHistory is `rehome node history ID --json`, decoded.
type nodeHistory struct {
	Node       string             `json:"node"`
	Registered bool               `json:"registered"`
	Entries    []history.Entry    `json:"entries"`
	Incidents  []history.Incident `json:"incidents"`
}

// nodeHistory runs `rehome node history id --json`.
func (c *cluster) nodeHistory(t *testing.T, id string) nodeHistory {
	t.Helper()
	out, err := c.rehome("node", "history", id, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var h nodeHistory
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("node history %s --json: %v\n%s", id, err, out)
	}
	return h
}

// entriesOf returns h's entries of kind.
func (h nodeHistory) entriesOf(kind string) []history.Entry {
	var out []history.Entry
	for _, e := range h.Entries {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}
