package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/history"
)

// Timing of the detector tests' clusters: heartbeats every 250 ms, suspect
// after 1 s, down after a further 4 s.
var detectorTiming = []string{"--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "4s"}

const suspectPlusGrace = 5 * time.Second

func (c *cluster) pid(t testing.TB, id string) int {
	t.Helper()
	for _, p := range c.processes() {
		if p.ID == id {
			return p.PID
		}
	}
	t.Fatalf("%s not in processes.json", id)
	return 0
}

func (c *cluster) signal(t testing.TB, id string, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(c.pid(t, id), sig); err != nil {
		t.Fatalf("signal %s: %v", id, err)
	}
}

func (c *cluster) nodeState(id string) string {
	st, err := c.status()
	if err != nil {
		return ""
	}
	for _, n := range st.Nodes {
		if n.ID == id {
			return string(n.State)
		}
	}
	return ""
}

// putSome stores n small objects so that a lost node has something to re-home.
func (c *cluster) putSome(t *testing.T, n int) {
	t.Helper()
	dir := t.TempDir()
	var files []string
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("o-%d", i))
		if err := os.WriteFile(p, []byte(strings.Repeat(fmt.Sprint(i), 1000)), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	if _, err := c.rehome(append([]string{"put"}, files...)...); err != nil {
		t.Fatal(err)
	}
}

// TestBlipInsideGraceCostsNothing: a node paused for less than the grace is
// suspect, then up again; no down verdict, no repair task.
func TestBlipInsideGraceCostsNothing(t *testing.T) {
	c := startDev(t, append([]string{"--nodes", "6", "--racks", "3"}, detectorTiming...)...)
	waitHealthy(t, c, 6)
	c.putSome(t, 20)
	events := c.tailEvents(t)

	c.signal(t, "storage-2", syscall.SIGSTOP)
	stopped := time.Now()
	waitFor(t, 10*time.Second, "storage-2 suspect", func() bool { return events.saw("rehome.node.suspect.storage-2") })
	// Stay paused until well inside the grace, then resume.
	time.Sleep(time.Until(stopped.Add(suspectPlusGrace - 2*time.Second)))
	c.signal(t, "storage-2", syscall.SIGCONT)
	waitFor(t, 10*time.Second, "storage-2 up again", func() bool { return events.saw("rehome.node.up.storage-2") })
	// Past the time it would have been declared down, nothing happened.
	bustest.Consistently(t, time.Until(stopped.Add(suspectPlusGrace+2*time.Second)), "no down verdict and no task", func() bool {
		return !events.saw("rehome.node.down.") && !events.saw("rehome.repair.task.")
	})
	if s := c.nodeState("storage-2"); s != "up" {
		t.Fatalf("storage-2 is %q after the blip, want up", s)
	}
	if h := c.nodeHistory(t, "storage-2"); len(h.entriesOf(history.KindFlap)) != 1 || len(h.entriesOf(history.KindDown)) != 0 || len(h.Incidents) != 0 {
		t.Fatalf("history of storage-2 after a blip: %+v, want one flap and no incident", h)
	}
}

// TestRestartedDetectorDeclaresNodeThatDiedMeanwhile: the detector is killed,
// a node dies while none runs, the detector is started again by hand: the dead
// node is declared down (and healed), no healthy node is.
func TestRestartedDetectorDeclaresNodeThatDiedMeanwhile(t *testing.T) {
	c := startDev(t, append([]string{"--nodes", "6", "--racks", "3"}, detectorTiming...)...)
	waitHealthy(t, c, 6)
	c.putSome(t, 20)
	var detArgs []string
	for _, p := range c.processes() {
		if p.ID == "detector" {
			detArgs = p.Args
		}
	}
	events := c.tailEvents(t)
	c.signal(t, "detector", syscall.SIGKILL)
	c.signal(t, "storage-4", syscall.SIGKILL)
	died := time.Now()
	// The node stays dead for longer than suspect+grace with no detector watching.
	time.Sleep(time.Until(died.Add(suspectPlusGrace + time.Second)))
	if events.saw("rehome.node.suspect.") || events.saw("rehome.node.down.") {
		t.Fatal("a verdict was published while no detector ran")
	}

	det := exec.Command(detArgs[0], detArgs[1:]...)
	det.Env = c.env
	logf, err := os.Create(filepath.Join(c.dir, "logs", "detector-restarted.log"))
	if err != nil {
		t.Fatal(err)
	}
	det.Stdout, det.Stderr = logf, logf
	if err := det.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = det.Process.Kill(); _ = det.Wait(); logf.Close() })

	waitFor(t, 30*time.Second, "storage-4 declared down by the restarted detector", func() bool {
		return events.saw("rehome.node.down.storage-4")
	})
	waitFor(t, 30*time.Second, "healed", func() bool {
		st, err := c.status()
		return err == nil && st.UnderReplicated == 0 && st.InFlight == 0
	})
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		want := "up"
		if n.ID == "storage-4" {
			want = "down"
		}
		if string(n.State) != want {
			t.Errorf("%s is %s, want %s", n.ID, n.State, want)
		}
	}
	for i := 1; i <= 6; i++ {
		if id := fmt.Sprintf("storage-%d", i); id != "storage-4" && events.saw("rehome.node.down."+id) {
			t.Errorf("healthy %s was declared down", id)
		}
	}
}

// TestMassSilenceHoldsVerdicts: more than half the nodes paused at once is
// more likely a cut-off watcher than a mass death: no down verdict, the held
// reason in cluster status; an operator's release lets verdicts flow.
func TestMassSilenceHoldsVerdicts(t *testing.T) {
	c := startDev(t, append([]string{"--nodes", "6", "--racks", "3"}, detectorTiming...)...)
	waitHealthy(t, c, 6)
	events := c.tailEvents(t)
	paused := []string{"storage-1", "storage-2", "storage-3", "storage-5"}
	for _, id := range paused {
		c.signal(t, id, syscall.SIGSTOP)
	}
	t.Cleanup(func() {
		for _, id := range paused {
			_ = syscall.Kill(c.pid(t, id), syscall.SIGCONT)
		}
	})
	stopped := time.Now()
	var st control.ClusterStatus
	waitFor(t, 15*time.Second, "verdicts held shown in cluster status", func() bool {
		var err error
		st, err = c.status()
		return err == nil && st.VerdictsHeld && st.HeldReason != ""
	})
	t.Logf("held: %s", st.HeldReason)
	out, err := c.rehome("cluster", "status")
	if err != nil || !strings.Contains(out, "VERDICTS HELD") {
		t.Fatalf("cluster status does not say verdicts are held (%v):\n%s", err, out)
	}
	bustest.Consistently(t, time.Until(stopped.Add(suspectPlusGrace+2*time.Second)), "no down verdict while held", func() bool {
		return !events.saw("rehome.node.down.")
	})
	waitFor(t, 5*time.Second, "hold announced", func() bool { return events.saw("rehome.detector.held") })

	// The operator knows better: release the hold; the silent nodes go down.
	if _, err := c.rehome("cluster", "release-hold", "--for", "1m"); err != nil {
		t.Fatal(err)
	}
	for _, id := range paused {
		waitFor(t, 15*time.Second, id+" down after release", func() bool { return events.saw("rehome.node.down." + id) })
	}
	// They come back: up again.
	for _, id := range paused {
		c.signal(t, id, syscall.SIGCONT)
	}
	for _, id := range paused {
		waitFor(t, 15*time.Second, id+" up again", func() bool { return events.saw("rehome.node.up." + id) })
	}
}

// TestMaintenanceIsNeverDown: a node in maintenance that dies is not declared
// down and nothing is re-homed; once maintenance is off it is judged again.
func TestMaintenanceIsNeverDown(t *testing.T) {
	c := startDev(t, append([]string{"--nodes", "6", "--racks", "3"}, detectorTiming...)...)
	waitHealthy(t, c, 6)
	c.putSome(t, 20)
	events := c.tailEvents(t)
	if out, err := c.rehome("node", "maintenance", "storage-3", "on"); err != nil || !strings.Contains(out, "maintenance on") {
		t.Fatalf("maintenance on: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, "storage-3 in maintenance", func() bool { return c.nodeState("storage-3") == "maintenance" })
	c.signal(t, "storage-3", syscall.SIGKILL)
	killed := time.Now()
	bustest.Consistently(t, time.Until(killed.Add(suspectPlusGrace+2*time.Second)), "no down verdict, nothing re-homed", func() bool {
		return !events.saw("rehome.node.down.") && !events.saw("rehome.repair.task.")
	})
	if st, err := c.status(); err != nil || st.UnderReplicated != 0 || c.nodeState("storage-3") != "maintenance" {
		t.Fatalf("after the grace: %+v %v; storage-3 %s, want maintenance and nothing under-replicated", st, err, c.nodeState("storage-3"))
	}
	if _, err := c.rehome("node", "maintenance", "nosuch-node", "on"); err == nil || !strings.Contains(err.Error(), "unknown node") {
		t.Fatalf("maintenance of an unknown node: want 'unknown node', got %v", err)
	}
	if _, err := c.rehome("node", "maintenance", "storage-3", "off"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "storage-3 down once maintenance is off", func() bool { return events.saw("rehome.node.down.storage-3") })
	waitFor(t, 30*time.Second, "healed", func() bool {
		st, err := c.status()
		return err == nil && st.UnderReplicated == 0 && st.InFlight == 0
	})
}
