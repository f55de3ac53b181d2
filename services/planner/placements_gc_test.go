package planner

import (
	"runtime/debug"
	"testing"
)

// TestRelaxGCForLoad: the load runs at loadGCPercent and the collector's
// target is restored after it; an operator's GOGC is left alone.
func TestRelaxGCForLoad(t *testing.T) {
	t.Setenv("GOGC", "")
	before := debug.SetGCPercent(150)
	defer debug.SetGCPercent(before)
	restore := relaxGCForLoad()
	if got := debug.SetGCPercent(loadGCPercent); got != loadGCPercent {
		t.Fatalf("GC target during the load %d, want %d", got, loadGCPercent)
	}
	restore()
	restore() // idempotent
	if got := debug.SetGCPercent(150); got != 150 {
		t.Fatalf("GC target after the load %d, want 150 restored", got)
	}
	t.Setenv("GOGC", "150")
	relaxGCForLoad()()
	if got := debug.SetGCPercent(150); got != 150 {
		t.Fatalf("with GOGC set, the target became %d", got)
	}
}
