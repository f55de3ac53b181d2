package main

import (
	"bytes"
	"strings"
	"testing"
)

// runRoot runs the real command tree on args and returns its output.
func runRoot(args ...string) (string, error) {
	root := newRoot(&globals{})
	var out bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	err := root.Execute()
	return out.String(), err
}

// TestSimRunsSchedules: `rehome sim` runs the schedules asked for and says
// none broke an invariant; a seed replays to the same summary.
func TestSimRunsSchedules(t *testing.T) {
	out, err := runRoot("sim", "--schedules", "4", "--seed", "5")
	if err != nil || !strings.Contains(out, "4 schedules on --nodes 30: 0 broke an invariant") {
		t.Fatalf("err %v, output:\n%s", err, out)
	}
	one := func() string {
		out, err := runRoot("sim", "--seed", "12", "--keep", "0,1")
		if err != nil {
			t.Fatal(err)
		}
		return out[:strings.LastIndex(out, ";")] // without the wall-clock rate
	}
	if a, b := one(), one(); a != b {
		t.Fatalf("replays differ:\n%s\n%s", a, b)
	}
}

// TestSimRefusesBadFlags: bad flags get a one-line error naming the flag.
func TestSimRefusesBadFlags(t *testing.T) {
	for args, want := range map[string]string{
		"--nodes 2":                   "--nodes 2",
		"--racks 40":                  "--racks 40",
		"--placement spread":          "--placement",
		"--schedules 0":               "--schedules 0",
		"--keep x":                    "--keep",
		"--keep 1 --schedules 3":      "--keep",
		"--restore 2":                 "--nodes 2",
		"--restore 30 --placement no": "--placement",
	} {
		_, err := runRoot(append([]string{"sim"}, strings.Fields(args)...)...)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("sim %s: error %v, want one line naming %q", args, err, want)
		}
	}
}

// TestPlannerRefusesBadPlacementBeforeConnecting: a bad --placement or
// --scatter-width is a one-line error at once, with no bus to wait for.
func TestPlannerRefusesBadPlacementBeforeConnecting(t *testing.T) {
	for args, want := range map[string]string{
		"--placement spread": `placement "spread"`,
		"--scatter-width -1": "ScatterWidth is negative",
	} {
		_, err := runRoot(append([]string{"planner", "--nats", "nats://127.0.0.1:1"}, strings.Fields(args)...)...)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("planner %s: error %v, want one line naming %q", args, err, want)
		}
	}
}

// TestStorageRefusesBadFlagsBeforeConnecting: a --repair-nice or
// --repair-pace out of range is a one-line error at once, with no bus to
// wait for.
func TestStorageRefusesBadFlagsBeforeConnecting(t *testing.T) {
	for args, want := range map[string]string{
		"--repair-nice 25": "nice level 25",
		"--repair-nice -1": "nice level -1",
		"--repair-pace 5":  "below 1 MiB/s",
	} {
		base := []string{"storage", "--nats", "nats://127.0.0.1:1", "--id", "s", "--rack", "r", "--dir", t.TempDir()}
		_, err := runRoot(append(base, strings.Fields(args)...)...)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("storage %s: error %v, want one line naming %q", args, err, want)
		}
	}
}
