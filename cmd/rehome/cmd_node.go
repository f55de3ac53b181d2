package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/model"
)

func nodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "operate on one storage node"}
	maint := &cobra.Command{
		Use:   "maintenance ID on|off",
		Short: "planned work: while on, the node is never declared down and nothing is re-homed from it",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, mode := args[0], args[1]
			if mode != "on" && mode != "off" {
				return fmt.Errorf("maintenance %s: want on or off", mode)
			}
			if err := model.ValidateNodeID(id); err != nil {
				return err
			}
			s, err := g.connect("rehome-cli")
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := g.callCtx(cmd.Context())
			defer cancel()
			if err := setMaintenance(ctx, s.js, id, mode == "on"); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: maintenance %s\n", id, mode)
			return nil
		},
	}
	cmd.AddCommand(maint, nodeHistoryCmd(g), drainCmd(g), removeCmd(g))
	return cmd
}

// setMaintenance turns a node's maintenance on (its liveness record reads
// "maintenance", which detectors never overwrite) or off (the record is
// removed and the detectors judge the node afresh from its heartbeats).
func setMaintenance(ctx context.Context, js jetstream.JetStream, id string, on bool) error {
	nodes, err := js.KeyValue(ctx, bus.BucketNodes)
	if err != nil {
		return fmt.Errorf("open %s: %w", bus.BucketNodes, err)
	}
	if _, err := nodes.Get(ctx, id); errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("unknown node %s (no storage node registered under that id)", id)
	} else if err != nil {
		return fmt.Errorf("read node %s: %w", id, err)
	}
	kv, err := js.KeyValue(ctx, bus.BucketLiveness)
	if err != nil {
		return fmt.Errorf("open %s: %w", bus.BucketLiveness, err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		var (
			rec model.Liveness
			rev uint64
		)
		e, err := kv.Get(ctx, id)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("read liveness of %s: %w", id, err)
		default:
			rev = e.Revision()
			_ = json.Unmarshal(e.Value(), &rec)
		}
		if !on {
			if rev == 0 || rec.State != model.StateMaintenance {
				return nil // not in maintenance: nothing to undo
			}
			err = kv.Delete(ctx, id, jetstream.LastRevision(rev))
		} else {
			if rec.State == model.StateMaintenance {
				return nil
			}
			rec = model.Liveness{V: model.Version, Node: id, State: model.StateMaintenance, Since: time.Now().UTC(),
				Reason: "maintenance on (" + operator() + ")", LastHeard: rec.LastHeard, BootID: rec.BootID}
			b, _ := json.Marshal(rec)
			if rev == 0 {
				_, err = kv.Create(ctx, id, b)
			} else {
				_, err = kv.Update(ctx, id, b, rev)
			}
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("write liveness of %s: %w", id, err)
		}
		// A detector wrote in between: read again.
	}
	return fmt.Errorf("liveness of %s kept changing; try again", id)
}
