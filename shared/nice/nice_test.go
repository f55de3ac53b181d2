package nice

import (
	"errors"
	"testing"
)

func TestRunPassesResultsAndPanicsBack(t *testing.T) {
	want := errors.New("boom")
	for _, level := range []int{0, 5} {
		if err := Run(level, func() error { return want }); !errors.Is(err, want) {
			t.Errorf("level %d: error %v, want %v", level, err, want)
		}
		func() {
			defer func() {
				if p := recover(); p != "bad" {
					t.Errorf("level %d: recovered %v, want the panic of fn", level, p)
				}
			}()
			_ = Run(level, func() error { panic("bad") })
		}()
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		level int
		ok    bool
	}{{0, true}, {10, true}, {Max, true}, {-1, false}, {Max + 1, false}} {
		if err := Validate(tc.level); (err == nil) != tc.ok {
			t.Errorf("Validate(%d) = %v, want ok %v", tc.level, err, tc.ok)
		}
	}
}
