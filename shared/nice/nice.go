// Package nice runs work at a lower CPU priority than the rest of its
// process: repair and scrub streams yield the cores to client requests
// whenever both want them, and use whatever is idle otherwise.
package nice

import "fmt"

// Max is the lowest priority a level can ask for (the kernel's nice 19).
const Max = 19

// Run runs fn on an OS thread of its own whose nice value is set to level
// (1..Max; the process runs at 0), and waits for it. The kernel's
// scheduler then serves every other thread (client requests in the same
// process, and other processes) before it when both want a core; when
// nothing else does, fn runs at full speed. The thread is discarded when fn
// returns (a goroutine that ends locked to its thread takes the thread with
// it), so the lowered priority, which an unprivileged process cannot raise
// back, never reaches other work. Goroutines fn starts run at the usual
// priority.
//
// With level <= 0, or where the platform cannot set a thread's priority, fn
// runs as is. A panic in fn is raised again in the caller, so an HTTP
// handler's recovery still sees it. Blocking; safe for concurrent use.
func Run(level int, fn func() error) error {
	if level <= 0 || !supported {
		return fn()
	}
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		lockLowered(min(level, Max)) // never unlocked: the thread ends with this goroutine
		var r result
		defer func() {
			if p := recover(); p != nil {
				r.panic = p
			}
			done <- r
		}()
		r.err = fn()
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// Validate checks a level given on a command line: 0 (off) to Max.
func Validate(level int) error {
	if level < 0 || level > Max {
		return fmt.Errorf("nice level %d: want 0 (off) to %d", level, Max)
	}
	return nil
}
