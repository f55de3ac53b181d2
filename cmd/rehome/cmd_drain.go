package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/units"
)

// drainCmd is `rehome node drain ID` and its status and cancel.
func drainCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drain ID",
		Short: "planned removal: give every shard and piece on a live node a new home while it still serves",
		Long: `drain moves every copy off a live node: each is copied elsewhere and verified
before the node's copy is dropped, so redundancy never falls below target.
Repair of a dead node always goes first. The planner refuses up front when the
other nodes lack the nodes, racks or room to take its shards.
Follow it with 'rehome node drain status ID --follow'; once drained,
'rehome node remove ID' forgets the node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rep control.DrainReply
			if err := g.nodeCall(cmd.Context(), control.CtlDrain, args[0], &rep); err != nil {
				return err
			}
			d := rep.Drains[0]
			fmt.Fprintf(cmd.OutOrStdout(), "draining %s: %d shards (%s) to move\nfollow it with: rehome node drain status %s --follow\n",
				d.Node, d.ShardsRemaining, units.Bytes(d.BytesRemaining), d.Node)
			return nil
		},
	}
	var (
		asJSON, follow bool
		interval       time.Duration
	)
	status := &cobra.Command{
		Use:   "status [ID]",
		Short: "drains under way: shards and bytes left, rate, ETA",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := ""
			if len(args) == 1 {
				node = args[0]
			}
			s, err := g.connect("rehome-cli")
			if err != nil {
				return err
			}
			defer s.Close()
			poll := func(ctx context.Context) (control.DrainReply, error) {
				var rep control.DrainReply
				cctx, cancel := g.callCtx(ctx)
				defer cancel()
				return rep, bus.Call(cctx, s.nc, control.CtlDrainStatus, control.NodeRequest{Node: node}, &rep)
			}
			w := cmd.OutOrStdout()
			if follow {
				return followDrain(cmd.Context(), w, interval, asJSON, poll)
			}
			rep, err := poll(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(w, rep)
			}
			if len(rep.Drains) == 0 {
				fmt.Fprintln(w, "no drain under way")
			}
			for _, d := range rep.Drains {
				fmt.Fprintln(w, drainLine(d))
			}
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON (with --follow: one line per poll)")
	status.Flags().BoolVar(&follow, "follow", false, "draw a live progress bar until every drain shown is done (exit 0)")
	status.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "poll interval with --follow")
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "stop a drain: the node takes shards again, and what moved stays where it went",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rep control.DrainReply
			if err := g.nodeCall(cmd.Context(), control.CtlDrainCancel, args[0], &rep); err != nil {
				return err
			}
			d := rep.Drains[0]
			fmt.Fprintf(cmd.OutOrStdout(), "drain of %s cancelled: %d shards (%s) moved, %d stay on it\n",
				d.Node, d.ShardsMoved, units.Bytes(d.BytesMoved), d.ShardsRemaining)
			return nil
		},
	}
	cmd.AddCommand(status, cancel)
	return cmd
}

// removeCmd is `rehome node remove ID`.
func removeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "forget a drained node, or a dead one whose shards are all re-homed (refused otherwise, saying why)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.nodeCall(cmd.Context(), control.CtlNodeRemove, args[0], nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s removed: stop its process; a registration under its id is ignored from now on\n", args[0])
			return nil
		},
	}
}

// nodeCall sends one control.NodeRequest for node to the acting planner.
func (g *globals) nodeCall(ctx context.Context, subject, node string, out any) error {
	if err := model.ValidateNodeID(node); err != nil {
		return err
	}
	return g.callOnce(ctx, subject, control.NodeRequest{Node: node, By: operator()}, out, g.timeout)
}

// drainLine is one drain in a line.
func drainLine(d control.DrainStatus) string {
	if d.Drained {
		return fmt.Sprintf("%s: drained (%d shards, %s moved); rehome node remove %s forgets it", d.Node, d.ShardsMoved, units.Bytes(d.BytesMoved), d.Node)
	}
	eta := "-"
	if d.ETASeconds > 0 {
		eta = time.Duration(d.ETASeconds * float64(time.Second)).Round(time.Second).String()
	}
	state := ""
	if d.State != string(model.StateUp) {
		state = " (" + d.State + ": repair goes first)"
	}
	return fmt.Sprintf("%s%s: %d shards (%s) left, %d moved  rate %s/s  eta %s", d.Node, state, d.ShardsRemaining,
		units.Bytes(d.BytesRemaining), d.ShardsMoved, units.Bytes(int64(d.RateBytesPerSec)), eta)
}

// followDrain follows drain status until every drain it shows is done.
func followDrain(ctx context.Context, w io.Writer, every time.Duration, asJSON bool, poll func(context.Context) (control.DrainReply, error)) error {
	return follow(ctx, w, "drain", every, asJSON, func(ctx context.Context) (sample, error) {
		rep, err := poll(ctx)
		if err != nil {
			return sample{}, err
		}
		s := sample{JSON: rep, Done: true, DoneLine: "drained: rehome node remove ID forgets a drained node"}
		var lines []string
		for _, d := range rep.Drains {
			s.Remaining += d.BytesRemaining
			s.Done = s.Done && d.Drained
			lines = append(lines, drainLine(d))
		}
		if len(rep.Drains) == 0 {
			s.Line = "no drain under way"
		}
		s.Line += strings.Join(lines, "; ")
		return s, nil
	})
}
