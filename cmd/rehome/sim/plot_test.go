package sim

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// TestPlotIsSVGWithEveryPoint: the plot is well-formed XML with one marker
// per point, labelled with its value.
func TestPlotIsSVGWithEveryPoint(t *testing.T) {
	var b bytes.Buffer
	pts := []Point{{100, 62}, {1000, 31}, {10000, 21}}
	if err := WritePlot(&b, "restore <time>", pts, 10.24); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	circles := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, b.String())
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "circle" {
			circles++
		}
	}
	if circles != len(pts) {
		t.Fatalf("%d markers, want %d", circles, len(pts))
	}
	for _, want := range []string{"62 s", "31 s", "21 s", "10.2 s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("plot lacks %q", want)
		}
	}
	if err := WritePlot(&b, "x", nil, 1); err == nil {
		t.Fatal("a plot of no points: no error")
	}
}
