// Package telemetry sets up what every rehome process reports about itself:
// structured logs now, traces and metrics as they are added.
package telemetry

import (
	"io"
	"log/slog"
	"os"
)

// Logger returns a JSON slog logger tagged with the service name, writing to w
// (stderr when nil). Level "debug" enables debug lines.
func Logger(w io.Writer, service, level string) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	lv := slog.LevelInfo
	if level == "debug" {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})).With("service", service)
}
