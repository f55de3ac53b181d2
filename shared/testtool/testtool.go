// Package testtool decides what a test does when a program it drives (a
// browser, promtool) is not installed: it skips, saying so, on a developer's
// machine, and fails where the programs are required, as in CI (.ci/run
// installs them and sets EnvRequire), so a missing tool never passes as a skip.
package testtool

import (
	"os"
	"testing"
)

// EnvRequire, when set to anything, turns a missing tool into a failure.
const EnvRequire = "REHOME_REQUIRE_TOOLS"

// Missing ends the test because a tool it needs is absent: t.Skip(why), or
// t.Fatal(why) when EnvRequire is set. It does not return.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(EnvRequire) != "" {
		t.Fatalf("%s (%s is set: this machine must have it)", why, EnvRequire)
	}
	t.Skip(why)
}
