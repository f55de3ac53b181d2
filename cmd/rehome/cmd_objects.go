package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rehome/rehome/shared/units"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/objects"
)

// objectSession opens the bus and an objects client.
func (g *globals) objectSession(ctx context.Context) (*session, *objects.Client, error) {
	s, err := g.connect("rehome-cli")
	if err != nil {
		return nil, nil, err
	}
	cctx, cancel := g.callCtx(ctx)
	defer cancel()
	c, err := objects.New(cctx, s.nc, s.js, shardClient())
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, c, nil
}

// putPlan is what `rehome put` will do, read from its flags and arguments.
type putPlan struct {
	files     []string
	keys      []string // one per file
	layout    model.Layout
	overwrite bool
}

// planPut reads put's flags and FILE arguments: --key names the object of
// a single FILE (default: each file's base name), --rf N replicates, --ec K+M
// erasure-codes (exclusive with --rf).
func planPut(fl *pflag.FlagSet, files []string) (putPlan, error) {
	key, _ := fl.GetString("key")
	rf, _ := fl.GetInt("rf")
	ec, _ := fl.GetString("ec")
	overwrite, _ := fl.GetBool("overwrite")
	p := putPlan{files: files, layout: model.Layout{RF: rf}, overwrite: overwrite}
	if fl.Changed("ec") {
		if fl.Changed("rf") {
			return p, errors.New("--rf and --ec are exclusive: replicate or erasure-code")
		}
		var err error
		if p.layout, err = parseEC(ec); err != nil {
			return p, err
		}
	}
	if err := p.layout.Validate(); err != nil {
		return p, err
	}
	if key != "" && len(files) > 1 {
		return p, fmt.Errorf("--key names one object: give one FILE with it, not %d", len(files))
	}
	for _, f := range files {
		k := key
		if k == "" {
			k = filepath.Base(f)
		}
		p.keys = append(p.keys, k)
	}
	return p, nil
}

func putCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "put FILE... [--key K] [--rf 3 | --ec 4+2]",
		Short: "store files as objects (key defaults to the file name)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := planPut(cmd.Flags(), args)
			if err != nil {
				return err
			}
			s, c, err := g.objectSession(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			for i, file := range p.files {
				m, err := putFile(cmd.Context(), c, file, p.keys[i], objects.PutOptions{Layout: p.layout, Overwrite: p.overwrite})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%d bytes\t%d shards\t%s\n", m.Key, m.Size, len(m.Shards), m.Layout)
			}
			return nil
		},
	}
	// --ec takes a value always (no NoOptDefVal): an optional value would
	// make `--ec 4+2` read 4+2 as a FILE.
	cmd.Flags().String("key", "", "object key (default: the file's base name)")
	cmd.Flags().Int("rf", model.DefaultRF, "replicas per chunk")
	cmd.Flags().String("ec", "", "erasure-code as K data + M parity pieces per stripe, e.g. 4+2")
	cmd.Flags().Bool("overwrite", false, "replace an existing object")
	return cmd
}

// parseEC reads "K+M" (e.g. 4+2).
func parseEC(s string) (model.Layout, error) {
	ks, ms, ok := strings.Cut(s, "+")
	k, kerr := strconv.Atoi(ks)
	m, merr := strconv.Atoi(ms)
	if !ok || kerr != nil || merr != nil {
		return model.Layout{}, fmt.Errorf("--ec %q: want K+M, e.g. 4+2", s)
	}
	l := model.Layout{K: k, M: m}
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("--ec %q: want K >= 1, M >= 1, K+M <= 255", s)
	}
	return l, nil
}

func putFile(ctx context.Context, c *objects.Client, file, key string, opts objects.PutOptions) (model.Manifest, error) {
	f, err := os.Open(file)
	if err != nil {
		return model.Manifest{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return model.Manifest{}, err
	}
	if !st.Mode().IsRegular() {
		return model.Manifest{}, fmt.Errorf("%s is not a regular file", file)
	}
	return c.Put(ctx, key, f, st.Size(), opts)
}

func getCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get KEY [-o FILE]",
		Short: "read an object (to stdout, or atomically to FILE)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, c, err := g.objectSession(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			if out != "" && out != "-" {
				_, err = c.GetFile(cmd.Context(), args[0], out)
				return err
			}
			_, err = c.Get(cmd.Context(), args[0], cmd.OutOrStdout())
			return err
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of stdout")
	return cmd
}

func lsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "list objects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, c, err := g.objectSession(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*g.timeout)
			defer cancel()
			ms, err := c.Manifests(ctx)
			if err != nil {
				return err
			}
			type row struct {
				Key     string       `json:"key"`
				Size    int64        `json:"size"`
				SHA256  string       `json:"sha256"`
				Layout  model.Layout `json:"layout"`
				Shards  int          `json:"shards"`
				Created time.Time    `json:"created"`
			}
			rows := make([]row, 0, len(ms))
			for _, m := range ms {
				rows = append(rows, row{m.Key, m.Size, m.SHA256, m.Layout, len(m.Shards), m.Created})
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tSIZE\tLAYOUT\tSHARDS\tCREATED")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", r.Key, units.Bytes(r.Size), r.Layout, r.Shards, r.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func rmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm KEY",
		Short: "delete an object (its shards are removed from the nodes in the background)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, c, err := g.objectSession(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := g.callCtx(cmd.Context())
			defer cancel()
			return c.Delete(ctx, args[0])
		},
	}
}

func inspectCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect KEY",
		Short: "show an object's layout and where each shard lives",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, c, err := g.objectSession(cmd.Context())
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 4*g.timeout)
			defer cancel()
			in, err := c.Inspect(ctx, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), in)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "key     %s\nsize    %s (%d bytes)\nsha256  %s\nlayout  %s\nshards  %d\n\n", in.Key, units.Bytes(in.Size), in.Size, in.SHA256, in.Layout, len(in.Shards))
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SHARD\tSTRIPE\tINDEX\tSIZE\tNODES\tRACKS\tDOWN")
			for _, sv := range in.Shards {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", sv.ID, sv.Stripe, sv.Index, units.Bytes(sv.Size),
					strings.Join(sv.Nodes, ","), strings.Join(sv.Racks, ","), strings.Join(sv.DownNodes, ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
