// Package benchenv reads the sizes of rehome's benchmark experiments from the
// environment (REHOME_BENCH_QUICK and REHOME_BENCH_<SIZE>), so `make bench`
// and `make bench QUICK=1` steer every package's benchmarks the same way.
package benchenv

import (
	"os"
	"strconv"
	"time"
)

// Quick reports whether REHOME_BENCH_QUICK asks for a smaller run.
func Quick() bool {
	v := os.Getenv("REHOME_BENCH_QUICK")
	return v != "" && v != "0" && v != "false"
}

// Int returns the positive integer in env var name, else def.
func Int(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// Duration returns the positive duration in env var name, else def.
func Duration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}
