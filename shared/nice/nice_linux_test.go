package nice

import (
	"runtime"
	"syscall"
	"testing"
)

// threadNice is the calling thread's nice value (the raw getpriority
// answer on Linux is 20 - nice).
func threadNice(t *testing.T) int {
	t.Helper()
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	return 20 - p
}

func TestRunLowersOnlyItsOwnThread(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNice(t)
	var inside int
	err := Run(7, func() error {
		inside = threadNice(t)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != 7 && !(before > 7 && inside == before) { // a thread already lower may stay so
		t.Errorf("fn ran at nice %d, want 7 (the caller runs at %d)", inside, before)
	}
	if after := threadNice(t); after != before {
		t.Errorf("the caller's thread went from nice %d to %d", before, after)
	}
	// Work after Run does not land on the lowered thread: it ended with fn.
	for range 20 {
		done := make(chan int)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			done <- threadNice(t)
		}()
		if n := <-done; n != before {
			t.Fatalf("a later goroutine ran on a thread at nice %d", n)
		}
	}
}
