package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rehome/rehome/shared/units"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

func clusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "cluster-wide views"}
	var asJSON, risk bool
	status := &cobra.Command{
		Use:   "status [--risk]",
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
			if err := bus.Call(ctx, s.nc, event.CtlStatus, control.StatusRequest{Risk: risk}, &st); err != nil {
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
	status.Flags().BoolVar(&risk, "risk", false, "add what one more node or rack failure would cost now")
	var holdFor time.Duration
	release := &cobra.Command{
		Use:   "release-hold [--for 10m]",
		Short: "let detectors issue down verdicts although many nodes are silent at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if holdFor <= 0 || holdFor > 24*time.Hour {
				return fmt.Errorf("--for %s: want a duration up to 24h", holdFor)
			}
			until := time.Now().Add(holdFor).UTC()
			rec := model.HoldOverride{V: model.Version, Until: until, By: operator()}
			if err := g.putSwitch(cmd.Context(), bus.BucketDetector, model.OverrideKey, rec); err != nil {
				return err
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
		fill := fmt.Sprintf("%.1f%%", 100*n.Fill)
		switch { // the node refuses new shards: say why beside its fill
		case n.ReadOnly:
			fill += " read-only"
		case n.Full:
			fill += " full"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", rack, n.ID, n.State, n.Addr, n.Shards, units.Bytes(n.Bytes), fill, n.Flaps, grace)
	}
	tw.Flush()
	if st.HealPaused {
		fmt.Fprintln(w, "\nREPAIRS PAUSED (rehome heal resume)")
	}
	if st.Risk != nil {
		printRisk(w, st.Risk)
	}
	if st.VerdictsHeld {
		fmt.Fprintf(w, "\nVERDICTS HELD: %s\n  (rehome cluster release-hold to override)\n", st.HeldReason)
	}
	fmt.Fprintf(w, "\nobjects %d  shards %d  under-replicated %d  lost %d  bytes to rebuild %s  tasks in flight %d\n",
		st.Objects, st.Shards, st.UnderReplicated, st.Lost, units.Bytes(st.BytesRemaining), st.InFlight)
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
	// One line per event whatever arrives: JSON compacted (no newlines or
	// carriage returns between its tokens), anything else as a JSON string.
	var compact bytes.Buffer
	data := json.RawMessage(m.Data)
	if json.Compact(&compact, m.Data) == nil {
		data = compact.Bytes()
	} else {
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

func printRisk(w io.Writer, r *control.Risk) {
	fmt.Fprintln(w, "\nif one more failed now:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FAILURE\tLOST\tSINGLE-COPY")
	for _, l := range r.Nodes {
		fmt.Fprintf(tw, "  node %s\t%d\t%d\n", l.Node, l.Lost, l.SingleCopy)
	}
	for _, l := range r.Racks {
		fmt.Fprintf(tw, "  rack %s\t%d\t%d\n", l.Rack, l.Lost, l.SingleCopy)
	}
	tw.Flush()
	if r.WorstNode != nil {
		fmt.Fprintf(w, "worst node: %s (%d lost, %d single-copy)\n", r.WorstNode.Node, r.WorstNode.Lost, r.WorstNode.SingleCopy)
	}
	if r.WorstRack != nil {
		fmt.Fprintf(w, "worst rack: %s (%d lost, %d single-copy)\n", r.WorstRack.Rack, r.WorstRack.Lost, r.WorstRack.SingleCopy)
	}
}

// operator names who flipped a switch, for the records and events.
func operator() string {
	host, _ := os.Hostname()
	return "operator at " + host
}

// putSwitch writes an operator's durable switch (a JSON record under key in
// bucket), which the services watch.
func (g *globals) putSwitch(ctx context.Context, bucket, key string, rec any) error {
	s, err := g.connect("rehome-cli")
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := g.callCtx(ctx)
	defer cancel()
	kv, err := s.js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("open %s: %w", bucket, err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, key, b); err != nil {
		return fmt.Errorf("write %s/%s: %w", bucket, key, err)
	}
	return nil
}
