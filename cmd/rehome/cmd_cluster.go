package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

func clusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "cluster-wide views"}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "nodes by rack with state, shards, bytes and fill; redundancy totals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.connect("rehome-cli")
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := g.callCtx(cmd.Context())
			defer cancel()
			var st control.ClusterStatus
			if err := bus.Call(ctx, s.nc, event.CtlStatus, struct{}{}, &st); err != nil {
				return err
			}
			if h, err := readHold(ctx, s.js); err != nil {
				return err
			} else if h.Held {
				st.VerdictsHeld, st.HeldReason = true, h.Reason
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var holdFor time.Duration
	release := &cobra.Command{
		Use:   "release-hold [--for 10m]",
		Short: "let detectors issue down verdicts although many nodes are silent at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if holdFor <= 0 || holdFor > 24*time.Hour {
				return fmt.Errorf("--for %s: want a duration up to 24h", holdFor)
			}
			s, err := g.connect("rehome-cli")
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := g.callCtx(cmd.Context())
			defer cancel()
			kv, err := s.js.KeyValue(ctx, bus.BucketDetector)
			if err != nil {
				return fmt.Errorf("open %s: %w", bus.BucketDetector, err)
			}
			host, _ := os.Hostname()
			until := time.Now().Add(holdFor).UTC()
			b, _ := json.Marshal(model.HoldOverride{V: model.Version, Until: until, By: "operator at " + host})
			if _, err := kv.Put(ctx, model.OverrideKey, b); err != nil {
				return fmt.Errorf("write override: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "down verdicts released until %s\n", until.Format(time.RFC3339))
			return nil
		},
	}
	release.Flags().DurationVar(&holdFor, "for", 10*time.Minute, "how long the guard is overridden")
	cmd.AddCommand(status, release)
	return cmd
}

// readHold returns the detectors' mass-silence guard state (zero if none was written).
func readHold(ctx context.Context, js jetstream.JetStream) (model.Hold, error) {
	var h model.Hold
	kv, err := js.KeyValue(ctx, bus.BucketDetector)
	if err != nil {
		return h, fmt.Errorf("open %s: %w", bus.BucketDetector, err)
	}
	e, err := kv.Get(ctx, model.HoldKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return h, nil
	}
	if err != nil {
		return h, fmt.Errorf("read hold: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return h, fmt.Errorf("hold record is corrupt: %w", err)
	}
	return h, nil
}

func printStatus(w io.Writer, st control.ClusterStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RACK\tNODE\tSTATE\tADDR\tSHARDS\tBYTES\tFILL\tFLAPS\tGRACE")
	prev := ""
	for _, n := range st.Nodes {
		rack := n.Rack
		if rack == prev {
			rack = ""
		}
		prev = n.Rack
		grace := "-"
		if n.GraceMS > 0 {
			grace = (time.Duration(n.GraceMS) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%.1f%%\t%d\t%s\n", rack, n.ID, n.State, n.Addr, n.Shards, humanBytes(n.Bytes), 100*n.Fill, n.Flaps, grace)
	}
	tw.Flush()
	if st.VerdictsHeld {
		fmt.Fprintf(w, "\nVERDICTS HELD: %s\n  (rehome cluster release-hold to override)\n", st.HeldReason)
	}
	fmt.Fprintf(w, "\nobjects %d  shards %d  under-replicated %d  lost %d  bytes to rebuild %s  tasks in flight %d\n",
		st.Objects, st.Shards, st.UnderReplicated, st.Lost, humanBytes(st.BytesRemaining), st.InFlight)
}

func healCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "heal", Short: "follow and steer repair"}
	var (
		asJSON   bool
		follow   bool
		interval time.Duration
	)
	status := &cobra.Command{
		Use:   "status [--follow]",
		Short: "under-replicated shards, bytes remaining, rate, ETA, stalled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.connect("rehome-cli")
			if err != nil {
				return err
			}
			defer s.Close()
			if follow {
				return followHeal(cmd.Context(), g, s.nc, cmd.OutOrStdout(), interval, asJSON)
			}
			p, err := healStatus(cmd.Context(), g, s.nc)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), p)
			}
			fmt.Fprintln(cmd.OutOrStdout(), progressLine(p))
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON (with --follow: one line per poll)")
	status.Flags().BoolVar(&follow, "follow", false, "draw a live progress bar until healthy (exit 0) or only lost shards remain (exit 2)")
	status.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "poll interval with --follow")
	cmd.AddCommand(status)
	return cmd
}

func healStatus(ctx context.Context, g *globals, nc *nats.Conn) (event.Progress, error) {
	var p event.Progress
	ctx, cancel := g.callCtx(ctx)
	defer cancel()
	err := bus.Call(ctx, nc, event.CtlHealStatus, struct{}{}, &p)
	return p, err
}

func progressLine(p event.Progress) string {
	eta := "-"
	if p.ETASeconds > 0 {
		eta = (time.Duration(p.ETASeconds * float64(time.Second))).Round(time.Second).String()
	}
	line := fmt.Sprintf("under-replicated %d  lost %d  remaining %s  rate %s/s  eta %s  in flight %d",
		p.UnderReplicated, p.Lost, humanBytes(p.BytesRemaining), humanBytes(int64(p.RateBytesPerSec)), eta, p.InFlight)
	if p.SuspectNodes > 0 {
		line += fmt.Sprintf("  suspect nodes %d", p.SuspectNodes)
	}
	if p.Stalled {
		line += "  STALLED"
	}
	return line
}

// healthy reports whether nothing is left to repair and no verdict is pending.
func healthy(p event.Progress) bool {
	return p.UnderReplicated == 0 && p.Lost == 0 && p.InFlight == 0 && p.SuspectNodes == 0
}

// isTerminal reports whether w is a character device (a live progress bar
// makes sense there; elsewhere plain lines are printed).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// followHeal polls heal status until the cluster is healthy (nil), only lost
// shards remain (exit 2) or ctx ends. On a terminal it draws a progress bar of
// bytes rebuilt; otherwise it prints a line (JSON with asJSON) per change.
func followHeal(ctx context.Context, g *globals, nc *nats.Conn, w io.Writer, every time.Duration, asJSON bool) error {
	var (
		bar      *mpb.Bar
		progress *mpb.Progress
		total    int64
		last     string
		p        event.Progress
	)
	if !asJSON && isTerminal(w) {
		progress = mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(30), mpb.WithAutoRefresh())
		bar = progress.New(0, mpb.BarStyle(),
			mpb.PrependDecorators(decor.Name("heal "), decor.Percentage(decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return "  " + progressLine(p) })))
	}
	finish := func() {
		if progress != nil {
			bar.SetTotal(-1, true)
			progress.Wait()
		}
	}
	defer finish()
	for {
		var err error
		if p, err = healStatus(ctx, g, nc); err != nil {
			return err
		}
		switch {
		case bar != nil:
			// The total grows when more work appears (a second failure).
			if rebuilt := bar.Current(); rebuilt+p.BytesRemaining > total {
				total = rebuilt + p.BytesRemaining
			}
			bar.SetTotal(total, false)
			bar.SetCurrent(total - p.BytesRemaining)
		case asJSON:
			if err := json.NewEncoder(w).Encode(p); err != nil {
				return err
			}
		default:
			if line := progressLine(p); line != last {
				fmt.Fprintln(w, line)
				last = line
			}
		}
		switch {
		case healthy(p):
			finish()
			progress = nil
			if !asJSON {
				fmt.Fprintln(w, "healthy: every shard is at full redundancy")
			}
			return nil
		case p.UnderReplicated == 0 && p.InFlight == 0 && p.SuspectNodes == 0 && p.Lost > 0:
			return &exitError{code: 2, err: fmt.Errorf("%d shards lost: no surviving copy can rebuild them", p.Lost)}
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted before the cluster was healthy")
		case <-time.After(every):
		}
	}
}

func eventsCmd(g *globals) *cobra.Command {
	var (
		asJSON     bool
		heartbeats bool
	)
	cmd := &cobra.Command{
		Use:   "events [SUBJECT]",
		Short: "tail rehome's event subjects (default rehome.> without heartbeats)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			subject := "rehome.>"
			if len(args) == 1 {
				subject = args[0]
				heartbeats = true
			}
			s, err := g.connect("rehome-events")
			if err != nil {
				return err
			}
			defer s.Close()
			msgs := make(chan *nats.Msg, 1024)
			sub, err := s.nc.ChanSubscribe(subject, msgs)
			if err != nil {
				return fmt.Errorf("subscribe %s: %w", subject, err)
			}
			defer sub.Unsubscribe()
			w := cmd.OutOrStdout()
			for {
				select {
				case <-cmd.Context().Done():
					return nil
				case m := <-msgs:
					if strings.HasPrefix(m.Subject, event.ControlPrefix) ||
						(!heartbeats && strings.HasPrefix(m.Subject, event.HeartbeatPrefix)) {
						continue
					}
					if err := printEvent(w, m, asJSON); err != nil {
						return err
					}
				}
			}
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `one JSON line per event: {"subject":...,"data":{...}}`)
	cmd.Flags().BoolVar(&heartbeats, "heartbeats", false, "include heartbeats")
	return cmd
}

func printEvent(w io.Writer, m *nats.Msg, asJSON bool) error {
	data := json.RawMessage(m.Data)
	if !json.Valid(m.Data) {
		b, _ := json.Marshal(string(m.Data))
		data = b
	}
	if asJSON {
		b, err := json.Marshal(struct {
			Subject string          `json:"subject"`
			Data    json.RawMessage `json:"data"`
		}{m.Subject, data})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(w, "%s  %-36s %s\n", time.Now().Format("15:04:05.000"), m.Subject, data)
	return err
}
