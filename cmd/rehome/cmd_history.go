package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/history"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/units"
)

// nodeHistory is what `rehome node history --json` prints.
type nodeHistory struct {
	Node string `json:"node"`
	// Registered says the node is in the nodes bucket (a removed node's
	// history outlives its registration).
	Registered bool `json:"registered"`
	// Since is where the history starts: the --since bound, or the oldest
	// event the stream still keeps.
	Since     time.Time          `json:"since,omitzero"`
	KeptFor   string             `json:"kept_for"`
	Entries   []history.Entry    `json:"entries"`
	Incidents []history.Incident `json:"incidents"`
}

// historySubjects are the events a node's history is folded from: its
// verdicts and disk conditions, its corrupt shards, the results of copies to
// it, and everything that may name it in its payload (plans, copies from it,
// lost shards). Progress is left out: a week of it is 600,000 events.
func historySubjects(node string) []string {
	return []string{
		"rehome.node.*." + node, // verdicts, disk conditions, drains
		event.CorruptPrefix + node,
		event.FailedPrefix + node,
		event.DonePrefix + ">",
		event.PlanPrefix + ">",
		event.LostPrefix + ">",
	}
}

func nodeHistoryCmd(g *globals) *cobra.Command {
	var (
		asJSON bool
		since  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "history ID",
		Short: "what happened to a node: verdicts, flaps, incidents, repairs to and from it, corrupt shards, full or read-only disk",
		Long: `history lists what happened to a storage node, oldest first, from the
events stream, which keeps a week of events (or the newest GiB).
Copies to or from the node are counted into one line per incident.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := model.ValidateNodeID(id); err != nil {
				return err
			}
			if since < 0 {
				return fmt.Errorf("--since %s: want a positive duration", since)
			}
			s, err := g.connect("rehome-cli")
			if err != nil {
				return err
			}
			defer s.Close()
			ctx := cmd.Context()
			h, err := readNodeHistory(ctx, s.js, id, since, g.timeout)
			if err != nil {
				return err
			}
			if !h.Registered && len(h.Entries) == 0 {
				return fmt.Errorf("unknown node %s: not registered, and no event names it in the kept history (%s)", id, h.KeptFor)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), h)
			}
			return printNodeHistory(cmd.OutOrStdout(), h)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().DurationVar(&since, "since", 0, "only the last DURATION (e.g. 24h); 0: everything the stream keeps")
	return cmd
}

// readNodeHistory folds the kept events into node id's history. Each bus
// round trip is bounded by timeout; reading the stream is bounded by ctx.
func readNodeHistory(ctx context.Context, js jetstream.JetStream, id string, since, timeout time.Duration) (nodeHistory, error) {
	h := nodeHistory{Node: id, KeptFor: keptFor()}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nodes, err := js.KeyValue(cctx, bus.BucketNodes)
	if err != nil {
		return h, fmt.Errorf("open %s: %w", bus.BucketNodes, err)
	}
	switch _, err := nodes.Get(cctx, id); {
	case err == nil:
		h.Registered = true
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return h, fmt.Errorf("read node %s: %w", id, err)
	}
	var from time.Time
	if since > 0 {
		from = time.Now().Add(-since)
		h.Since = from.UTC()
	}
	log := history.NewLog()
	first := true
	if err := history.Read(ctx, js, from, historySubjects(id), func(e history.Event) {
		if first && h.Since.IsZero() {
			h.Since = e.Time
		}
		first = false
		log.Add(e)
	}); err != nil {
		return h, fmt.Errorf("read the history of %s: %w", id, err)
	}
	h.Entries = log.Node(id)
	if h.Entries == nil {
		h.Entries = []history.Entry{}
	}
	h.Incidents = []history.Incident{}
	for _, inc := range log.Incidents(from) {
		if inc.Node == id {
			inc.Steps = nil // the entries tell them; progress is not read here
			h.Incidents = append(h.Incidents, inc)
		}
	}
	return h, nil
}

// keptFor says how long the events stream keeps events.
func keptFor() string {
	return fmt.Sprintf("%d days or the newest %s of events", int(bus.EventsMaxAge/(24*time.Hour)), units.Bytes(bus.EventsMaxBytes))
}

// printNodeHistory writes one line per entry, then one per incident.
func printNodeHistory(w io.Writer, h nodeHistory) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	state := "registered"
	if !h.Registered {
		state = "not registered (removed?)"
	}
	fmt.Fprintf(tw, "%s: %s; history kept %s\n", h.Node, state, h.KeptFor)
	if len(h.Entries) == 0 {
		fmt.Fprintln(tw, "nothing happened to it in the kept history")
	}
	for _, e := range h.Entries {
		detail := e.Detail
		if e.Incident != "" {
			detail += "  [" + e.Incident + "]"
		}
		when := stamp(e.Time)
		if !e.First.IsZero() && !e.First.Equal(e.Time) {
			when = stamp(e.First) + " .. " + e.Time.UTC().Format("15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", when, strings.ReplaceAll(e.Kind, "_", " "), detail)
	}
	if len(h.Incidents) > 0 {
		fmt.Fprintln(tw, "\nincidents:")
	}
	for _, inc := range h.Incidents {
		line := fmt.Sprintf("%s\t%s\t%d shards (%s) planned, %d copies verified (%s)", stamp(inc.Opened), inc.ID,
			inc.PlannedShards, units.Bytes(inc.PlannedBytes), inc.Repaired, units.Bytes(inc.RepairedBytes))
		if inc.Failed > 0 {
			line += fmt.Sprintf(", %d failed attempts", inc.Failed)
		}
		if inc.Lost > 0 {
			line += fmt.Sprintf(", %d shards lost", inc.Lost)
		}
		if inc.TraceID != "" {
			line += ", trace " + inc.TraceID
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// stamp renders t for a history line (UTC, to the second).
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }
