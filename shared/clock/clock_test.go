package clock_test

import (
	"context"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/clock"
)

// TestManualTicksOnlyWhenFired: a loop on a manual ticker sees exactly the
// ticks fired, in order, and Fire returns only once the loop took each.
func TestManualTicksOnlyWhenFired(t *testing.T) {
	m := clock.NewManual()
	got := make(chan time.Time, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := m.NewTicker(time.Second)
		defer tk.Stop()
		for i := 0; i < 3; i++ {
			got <- <-tk.C()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		if err := m.Fire(ctx, time.Second, base.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	for i := range 3 {
		if at := <-got; !at.Equal(base.Add(time.Duration(i) * time.Second)) {
			t.Fatalf("tick %d at %v", i, at)
		}
	}
	if err := m.Fire(ctx, time.Second, base); err == nil {
		t.Fatal("a tick was taken by a stopped ticker")
	}
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := m.Fire(short, time.Minute, base); err == nil {
		t.Fatal("a tick of a period no ticker has was taken")
	}
}
