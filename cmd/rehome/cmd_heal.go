package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/rehome/rehome/shared/units"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

func healCmd(g *globals) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "heal --node ID",
		Short: "heal a node in place: check its inventory against the map and rebuild what it lacks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" {
				return errors.New("heal needs --node ID (or a subcommand: status, plan, pause, resume)")
			}
			// Reading a node's whole inventory takes longer than a status call.
			var r control.HealNodeReply
			if err := g.callOnce(cmd.Context(), control.CtlHealNode, control.HealNodeRequest{Node: node}, &r, 6*g.timeout); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d shards checked, %d missing (%s): %d being rebuilt onto %s, %d already whole elsewhere\n",
				r.Node, r.Checked, r.Missing, units.Bytes(r.MissingBytes), r.Rebuilding, r.Node, r.Dropped)
			fmt.Fprintf(cmd.OutOrStdout(), "follow it with: rehome heal status --node %s --follow\n", r.Node)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node to heal (a replacement under the old identity, or a node back with a partial disk)")
	var (
		asJSON     bool
		follow     bool
		interval   time.Duration
		statusNode string
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
				return followHeal(cmd.Context(), g, s.nc, cmd.OutOrStdout(), statusNode, interval, asJSON)
			}
			p, err := healStatus(cmd.Context(), g, s.nc, statusNode)
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
	status.Flags().BoolVar(&follow, "follow", false, "draw a live progress bar until healthy (exit 0) or only lost shards remain (exit 1, naming how many)")
	status.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "poll interval with --follow")
	status.Flags().StringVar(&statusNode, "node", "", "only this node's in-place heal")
	cmd.AddCommand(status, healPlanCmd(g), healSwitchCmd(g, true), healSwitchCmd(g, false))
	return cmd
}

func healPlanCmd(g *globals) *cobra.Command {
	var (
		node   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "plan --node ID",
		Short: "dry run: what a heal of the node would move where, and how long it would take; changes nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" {
				return errors.New("heal plan needs --node ID")
			}
			var p control.HealPlan
			if err := g.callOnce(cmd.Context(), control.CtlHealPlan, control.HealNodeRequest{Node: node}, &p, 6*g.timeout); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), p)
			}
			w := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SHARD\tKIND\tSOURCE\tRACK\tTARGET\tRACK\tBYTES")
			for _, m := range p.Moves {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Shard, m.Kind, m.Source, m.SourceRack, m.Target, m.TargetRack, units.Bytes(m.Bytes))
			}
			tw.Flush()
			eta := time.Duration(p.EstimatedSeconds * float64(time.Second)).Round(time.Second)
			fmt.Fprintf(w, "\n%d shards, %s onto %s; about %s under current throttles (%s). Nothing was changed.\n",
				p.Shards, units.Bytes(p.Bytes), p.Node, eta, p.Throttle)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node a heal would rebuild")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// healSwitchCmd is `heal pause` or `heal resume`: a durable switch in KV that
// every planner watches; in-flight tasks finish, no new ones start.
func healSwitchCmd(g *globals, pause bool) *cobra.Command {
	if pause {
		return switchCmd(g, control.HealSwitchKey, true, "pause repairs (durable: survives planner restarts) until heal resume",
			"repairs paused: tasks in flight finish, no new ones start (rehome heal resume)")
	}
	return switchCmd(g, control.HealSwitchKey, false, "resume repairs after a pause", "repairs resumed")
}

// switchCmd is a `pause` or `resume` command writing the durable switch
// under key in bus.BucketControl (a control.HealSwitch record), then
// printing done.
func switchCmd(g *globals, key string, pause bool, short, done string) *cobra.Command {
	use := "resume"
	if pause {
		use = "pause"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rec := control.HealSwitch{V: model.Version, Paused: pause, By: operator(), Since: time.Now().UTC()}
			if err := g.putSwitch(cmd.Context(), bus.BucketControl, key, rec); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), done)
			return nil
		},
	}
}

func healStatus(ctx context.Context, g *globals, nc *nats.Conn, node string) (event.Progress, error) {
	var p event.Progress
	ctx, cancel := g.callCtx(ctx)
	defer cancel()
	err := bus.Call(ctx, nc, event.CtlHealStatus, control.HealStatusRequest{Node: node}, &p)
	return p, err
}

func progressLine(p event.Progress) string {
	eta := "-"
	if p.ETASeconds > 0 {
		eta = (time.Duration(p.ETASeconds * float64(time.Second))).Round(time.Second).String()
	}
	line := fmt.Sprintf("under-replicated %d  lost %d  remaining %s  rate %s/s  eta %s  in flight %d",
		p.UnderReplicated, p.Lost, units.Bytes(p.BytesRemaining), units.Bytes(int64(p.RateBytesPerSec)), eta, p.InFlight)
	if p.SingleCopy > 0 {
		line += fmt.Sprintf("  single-copy %d", p.SingleCopy)
	}
	if p.SuspectNodes > 0 {
		line += fmt.Sprintf("  suspect nodes %d", p.SuspectNodes)
	}
	if p.Stalled {
		line += "  STALLED"
	}
	if p.Paused {
		line += "  PAUSED"
	}
	return line
}

// healthy reports whether nothing is left to repair and no verdict is pending.
func healthy(p event.Progress) bool {
	return p.UnderReplicated == 0 && p.Lost == 0 && p.InFlight == 0 && p.SuspectNodes == 0
}

// lostError is followHeal's end when only lost shards remain.
func lostError(lost int) error {
	return fmt.Errorf("%d shards lost: no surviving copy can rebuild them, nothing more will heal them", lost)
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
// shards remain (an error naming how many: nothing more can heal them, so
// the exit is 1, as for any other failure) or ctx ends. On a terminal it draws a progress bar of
// bytes rebuilt; otherwise it prints a line (JSON with asJSON) per change.
func followHeal(ctx context.Context, g *globals, nc *nats.Conn, w io.Writer, node string, every time.Duration, asJSON bool) error {
	return follow(ctx, w, "heal", every, asJSON, func(ctx context.Context) (sample, error) {
		p, err := healStatus(ctx, g, nc, node)
		if err != nil {
			return sample{}, err
		}
		s := sample{Remaining: p.BytesRemaining, Line: progressLine(p), JSON: p}
		switch {
		case healthy(p):
			s.Done, s.DoneLine = true, "healthy: every shard is at full redundancy"
		case p.UnderReplicated == 0 && p.InFlight == 0 && p.SuspectNodes == 0 && p.Lost > 0:
			s.Done, s.Err = true, lostError(p.Lost)
		}
		return s, nil
	})
}
