package e2e

import (
	"encoding/json"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/event/eventtest"
)

// capture is every line `rehome events --json --heartbeats` printed.
type capture struct {
	mu    sync.Mutex
	lines []struct {
		Subject string          `json:"subject"`
		Data    json.RawMessage `json:"data"`
	}
	bad []string // lines that are not {"subject","data"}
}

func (c *capture) count(schema string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.lines {
		if event.SchemaName(l.Subject) == schema {
			n++
		}
	}
	return n
}

// tailAll runs `rehome events --json --heartbeats` until the test ends.
func (c *cluster) tailAll(t *testing.T) *capture {
	t.Helper()
	capt := &capture{}
	c.tailLines(t, []string{"--heartbeats"}, func(raw []byte) {
		var l struct {
			Subject string          `json:"subject"`
			Data    json.RawMessage `json:"data"`
		}
		capt.mu.Lock()
		if err := json.Unmarshal(raw, &l); err != nil || l.Subject == "" {
			capt.bad = append(capt.bad, string(raw))
		} else {
			capt.lines = append(capt.lines, l)
		}
		capt.mu.Unlock()
	})
	waitFor(t, 10*time.Second, "events tail running", func() bool { return capt.count("heartbeat.json") > 0 })
	return capt
}

// TestCapturedEventsConformToTheirSchemas tails every subject during a node
// loss, a heal and a pause/resume, and validates each event against the JSON
// Schema its subject names, as a consumer in another language would.
func TestCapturedEventsConformToTheirSchemas(t *testing.T) {
	v, err := eventtest.New()
	if err != nil {
		t.Fatal(err)
	}
	c := startDev(t, "--nodes", "4", "--racks", "4", "--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "1s")
	waitHealthy(t, c, 4)
	capt := c.tailAll(t)
	c.putRandom(t, 20, 32<<10)
	c.signal(t, "storage-4", syscall.SIGKILL)
	waitFor(t, 30*time.Second, "storage-4 declared down", func() bool { return c.nodeState("storage-4") == "down" })
	c.waitHealed(t, 60*time.Second)
	for _, args := range [][]string{{"heal", "pause"}, {"heal", "resume"}} {
		if _, err := c.rehome(args...); err != nil {
			t.Fatal(err)
		}
	}
	c.restart(t, "storage-4") // comes back up: an up verdict, and its surplus copies are trimmed
	for _, schema := range []string{"heartbeat.json", "verdict.json", "plan.json", "task.json", "done.json", "progress.json", "heal_switch.json"} {
		waitFor(t, 30*time.Second, "events of "+schema, func() bool { return capt.count(schema) > 0 })
	}
	waitFor(t, 30*time.Second, "storage-4 up again", func() bool { return c.nodeState("storage-4") == "up" })

	capt.mu.Lock()
	defer capt.mu.Unlock()
	for _, l := range capt.bad {
		t.Errorf("events --json printed a line that is not {subject, data}: %q", l)
	}
	bySchema := map[string]int{}
	for _, l := range capt.lines {
		if err := v.Validate(l.Subject, l.Data); err != nil {
			t.Errorf("%v\n%s", err, l.Data)
			continue
		}
		bySchema[event.SchemaName(l.Subject)]++
	}
	t.Logf("%d events validated, by schema: %v", len(capt.lines), bySchema)
	var kinds []string
	for _, l := range capt.lines {
		if strings.HasPrefix(l.Subject, event.DownPrefix) {
			kinds = append(kinds, l.Subject)
		}
	}
	if len(kinds) == 0 {
		t.Error("no down verdict captured")
	}
}
