package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/rehome/rehome/shared/control"
)

// rebalanceCmd is `rehome rebalance status|pause|resume`.
func rebalanceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "background moves that even out node fill after nodes are added (status, pause, resume)",
		Long: `The acting planner moves copies from the fullest nodes to the emptiest until
every node's fill is within the planner's --balance-band (default 5 percentage
points) of the mean, after every repair, never lowering redundancy and keeping
the rack rules. Where the racks pin their share (RF 3 on 3 racks: each rack
holds a copy of everything), nodes can only even out within their rack.`,
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "each node's fill against the mean and the band, and the moves under way",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st control.BalanceStatus
			if err := g.callOnce(cmd.Context(), control.CtlRebalanceStatus, struct{}{}, &st, g.timeout); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			return printBalance(cmd.OutOrStdout(), st)
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(status, rebalanceSwitchCmd(g, true), rebalanceSwitchCmd(g, false))
	return cmd
}

// rebalanceSwitchCmd is `rebalance pause` or `rebalance resume`: a durable
// switch every planner watches; moves already copying finish.
func rebalanceSwitchCmd(g *globals, pause bool) *cobra.Command {
	if pause {
		return switchCmd(g, control.RebalanceSwitchKey, true, "pause rebalancing (durable: survives planner restarts) until rebalance resume",
			"rebalancing paused: moves copying now finish, no new ones start (rehome rebalance resume)")
	}
	return switchCmd(g, control.RebalanceSwitchKey, false, "resume rebalancing after a pause", "rebalancing resumed")
}

// printBalance writes the balance as a table.
func printBalance(w io.Writer, st control.BalanceStatus) error {
	state := "balanced"
	switch {
	case st.Paused:
		state = "paused"
	case !st.Balanced:
		state = fmt.Sprintf("rebalancing: %d moves under way", st.MovesInFlight)
	}
	fmt.Fprintf(w, "%s; mean fill %.1f%%, band ±%.1f pp, widest %.1f pp\n", state, 100*st.MeanFill, 100*st.Band, 100*st.MaxDeviation)
	for _, n := range st.Nodes {
		fmt.Fprintf(w, "  %-12s %-8s fill %5.1f%%  %+5.1f pp\n", n.ID, n.Rack, 100*n.Fill, 100*n.Deviation)
	}
	return nil
}
