//go:build !linux

package nice

// supported: only Linux sets a priority per thread; elsewhere Run runs fn as is.
const supported = false

func lockLowered(int) {}
