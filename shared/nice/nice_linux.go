package nice

import (
	"runtime"
	"syscall"
)

// supported: Linux sets priorities per thread.
const supported = true

// lockLowered locks the calling goroutine to its thread and lowers that
// thread's priority to nice level (best effort: a refusal leaves it as is).
func lockLowered(level int) {
	runtime.LockOSThread()
	// On Linux, PRIO_PROCESS with a thread id sets that thread alone.
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), level)
}
