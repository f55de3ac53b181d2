package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// sample is one poll of something a --follow watches fall to zero.
type sample struct {
	// Remaining is what is left (bytes): the bar's total minus its current.
	Remaining int64
	// Line is the one-line summary printed per change, and beside the bar.
	Line string
	// JSON is what --json prints for this poll.
	JSON any
	// Done ends the follow: with Err nil and DoneLine printed (not with
	// --json), or with Err returned.
	Done     bool
	DoneLine string
	Err      error
}

// follow polls every interval until a sample says Done, poll fails or ctx
// ends. On a terminal it draws a bar named name of what has gone since the
// start (its total grows when more appears); otherwise it prints Line per
// change, or JSON per poll with asJSON. Blocking.
func follow(ctx context.Context, w io.Writer, name string, every time.Duration, asJSON bool, poll func(context.Context) (sample, error)) error {
	var (
		bar      *mpb.Bar
		progress *mpb.Progress
		total    int64
		last     string
		s        sample
	)
	if !asJSON && isTerminal(w) {
		progress = mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(30), mpb.WithAutoRefresh())
		bar = progress.New(0, mpb.BarStyle(),
			mpb.PrependDecorators(decor.Name(name+" "), decor.Percentage(decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return "  " + s.Line })))
	}
	finish := func() {
		if progress != nil {
			bar.SetTotal(-1, true)
			progress.Wait()
			progress = nil
		}
	}
	defer finish()
	for {
		var err error
		if s, err = poll(ctx); err != nil {
			return err
		}
		switch {
		case bar != nil:
			if done := bar.Current(); done+s.Remaining > total {
				total = done + s.Remaining
			}
			bar.SetTotal(total, false)
			bar.SetCurrent(total - s.Remaining)
		case asJSON:
			if err := json.NewEncoder(w).Encode(s.JSON); err != nil {
				return err
			}
		case s.Line != last:
			fmt.Fprintln(w, s.Line)
			last = s.Line
		}
		if s.Done {
			finish()
			if s.Err == nil && !asJSON && s.DoneLine != "" {
				fmt.Fprintln(w, s.DoneLine)
			}
			return s.Err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted before %s finished", name)
		case <-time.After(every):
		}
	}
}
