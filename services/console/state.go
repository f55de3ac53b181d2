package console

import (
	"time"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/history"
)

// View is what the page shows, sent as one `state` event (JSON).
type View struct {
	// Time is when the console assembled this view.
	Time time.Time `json:"time"`
	// Bus is "ok" or "unreachable"; BusError says what failed.
	Bus      string `json:"bus"`
	BusError string `json:"bus_error,omitempty"`
	// Status is the cluster's last status (nil until the first answer).
	Status *control.ClusterStatus `json:"status,omitempty"`
	// Heal is the heal's last progress (rate, ETAs, stalled, paused).
	Heal *event.Progress `json:"heal,omitempty"`
	// Switch is the heal switch record when an operator paused the heal.
	Switch *control.HealSwitch `json:"switch,omitempty"`
	// Drains are the drains under way, or done and not yet removed.
	Drains []control.DrainStatus `json:"drains"`
	// Balance is the rebalancer's status: fills against the band, moves
	// under way, paused or not (nil until the first answer).
	Balance *control.BalanceStatus `json:"balance,omitempty"`
	// Chart is the heal's progress over the window, oldest first.
	Chart []Point `json:"chart"`
	// WindowSeconds is the chart's span.
	WindowSeconds float64 `json:"window_seconds"`
	// Incidents are the window's incidents, newest first.
	Incidents []history.Incident `json:"incidents"`
	// TraceUI is the trace viewer's base URL ("" when none).
	TraceUI string `json:"trace_ui,omitempty"`
}

// Point is one sample of the chart.
type Point struct {
	Time            time.Time `json:"t"`
	UnderReplicated int       `json:"under"`
	Lost            int       `json:"lost"`
	BytesRemaining  int64     `json:"bytes"`
}

// chartStep is the chart's resolution: one point per step (the last
// progress seen in it), so an hour is at most 360 points.
const chartStep = 10 * time.Second

// series is the chart's points over a window; not safe for concurrent use.
type series struct {
	window time.Duration
	points []Point
}

// add records a progress sample taken at t: it replaces the last point
// when both fall in the same step, and drops points older than the window
// before now.
func (s *series) add(t time.Time, p event.Progress, now time.Time) {
	pt := Point{Time: t, UnderReplicated: p.UnderReplicated, Lost: p.Lost, BytesRemaining: p.BytesRemaining}
	if n := len(s.points); n > 0 && s.points[n-1].Time.Truncate(chartStep).Equal(t.Truncate(chartStep)) {
		s.points[n-1] = pt
	} else if n > 0 && t.Before(s.points[n-1].Time) {
		return // out of order: the chart keeps time order
	} else {
		s.points = append(s.points, pt)
	}
	s.trim(now)
}

// trim drops points older than the window before now.
func (s *series) trim(now time.Time) {
	cut := now.Add(-s.window)
	i := 0
	for i < len(s.points) && s.points[i].Time.Before(cut) {
		i++
	}
	if i > 0 {
		s.points = append(s.points[:0], s.points[i:]...)
	}
}

// snapshot returns a copy of the points.
func (s *series) snapshot() []Point {
	return append([]Point(nil), s.points...)
}
