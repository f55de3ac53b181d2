package sim

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Point is one measured restore time: Nodes in the cluster, Seconds to
// restore one node's loss.
type Point struct {
	Nodes   int
	Seconds float64
}

// WritePlot draws points as an SVG chart on log-log axes: the measured
// restore times, the 1/N line through the first point, and floor (the time
// to copy one shard: no restore can be faster) as a dashed line. It writes
// nothing but the SVG document.
func WritePlot(w io.Writer, title string, points []Point, floor float64) error {
	if len(points) == 0 {
		return fmt.Errorf("sim: plot: no points")
	}
	const W, H, left, right, top, bottom = 640, 400, 70, 20, 40, 50
	minN, maxN := float64(points[0].Nodes), float64(points[0].Nodes)
	minS, maxS := floor, floor
	for _, p := range points {
		minN, maxN = math.Min(minN, float64(p.Nodes)), math.Max(maxN, float64(p.Nodes))
		minS, maxS = math.Min(minS, p.Seconds), math.Max(maxS, p.Seconds)
	}
	// Whole decades around the data.
	x0, x1 := math.Floor(math.Log10(minN)), math.Ceil(math.Log10(maxN))
	y0, y1 := math.Floor(math.Log10(minS)), math.Ceil(math.Log10(maxS))
	if x1 == x0 {
		x1++
	}
	if y1 == y0 {
		y1++
	}
	x := func(n float64) float64 { return left + (math.Log10(n)-x0)/(x1-x0)*(W-left-right) }
	y := func(s float64) float64 { return H - bottom - (math.Log10(s)-y0)/(y1-y0)*(H-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14">%s</text>`+"\n", left, escape(title))
	for d := x0; d <= x1; d++ {
		px := x(math.Pow(10, d))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%g</text>`+"\n",
			px, top, px, H-bottom, px, H-bottom+16, math.Pow(10, d))
	}
	for d := y0; d <= y1; d++ {
		py := y(math.Pow(10, d))
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g s</text>`+"\n",
			left, py, W-right, py, left-6, py+4, math.Pow(10, d))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">nodes</text>`+"\n", (W+left)/2, H-12)
	// 1/N through the first point, and the floor.
	p0 := points[0]
	ref := func(n float64) float64 { return p0.Seconds * float64(p0.Nodes) / n }
	end := math.Min(maxN, p0.Seconds*float64(p0.Nodes)/math.Pow(10, y0)) // where 1/N leaves the chart
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999" stroke-dasharray="2,3"/>`+"\n",
		x(float64(p0.Nodes)), y(ref(float64(p0.Nodes))), x(end), y(ref(end)))
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c33" stroke-dasharray="6,4"/>`+"\n", left, y(floor), W-right, y(floor))
	fmt.Fprintf(&b, `<text x="%d" y="%.1f" fill="#c33" text-anchor="end">one shard's copy: %.3g s</text>`+"\n", W-right-4, y(floor)-6, floor)
	var path []string
	for _, p := range points {
		path = append(path, fmt.Sprintf("%.1f,%.1f", x(float64(p.Nodes)), y(p.Seconds)))
	}
	fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="#1f5fa8" stroke-width="2"/>`+"\n", strings.Join(path, " "))
	for _, p := range points {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="#1f5fa8"><title>%d nodes: %.3g s</title></circle><text x="%.1f" y="%.1f" text-anchor="end">%.3g s</text>`+"\n",
			x(float64(p.Nodes)), y(p.Seconds), p.Nodes, p.Seconds, x(float64(p.Nodes))-4, y(p.Seconds)-8, p.Seconds)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#999">dotted: 1/N from the first point</text>`+"\n", left+8, top+14)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
