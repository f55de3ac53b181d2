// Package objects is the client side of rehome's object API: it cuts files
// into chunks, asks the acting planner where they go, writes replicas to
// storage nodes over HTTP and commits the manifest; it reads objects back from
// any live replica, verifying every checksum. A Client is safe for concurrent use.
package objects

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

// ErrNotFound is returned for a key that names no object.
var ErrNotFound = errors.New("no such object")

// Client reads and writes objects. Build it with New.
type Client struct {
	nc        *nats.Conn
	shards    *shardapi.Client
	objects   jetstream.KeyValue
	placement jetstream.KeyValue
	nodes     jetstream.KeyValue
	liveness  jetstream.KeyValue
	// ChunkSize is the size of a replicated chunk (model.DefaultChunkSize).
	ChunkSize int64
	// Parallel bounds how many chunks are written or read at once.
	Parallel int
}

// New binds a client to the bus's buckets. It fails if they do not exist
// (no cluster has been started on this bus).
func New(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, shards *shardapi.Client) (*Client, error) {
	c := &Client{nc: nc, shards: shards, ChunkSize: model.DefaultChunkSize, Parallel: 4}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{bus.BucketObjects, &c.objects}, {bus.BucketPlacement, &c.placement}, {bus.BucketNodes, &c.nodes}, {bus.BucketLiveness, &c.liveness}} {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return nil, fmt.Errorf("open bucket %s (is a rehome cluster running on this bus?): %w", b.name, err)
		}
		*b.kv = kv
	}
	return c, nil
}

// PutOptions tunes Put.
type PutOptions struct {
	Layout    model.Layout
	Overwrite bool
}

type chunk struct {
	ref  model.ShardRef
	data []byte
}

// Put stores the size bytes of r under key. It returns once every chunk has
// been verified by a majority of its replicas and the manifest is committed;
// replicas that could not be written are left to the repair loop. Writing an
// existing key fails with control.ErrConflict unless opts.Overwrite.
func (c *Client) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (model.Manifest, error) {
	if opts.Layout == (model.Layout{}) {
		opts.Layout = model.Layout{RF: model.DefaultRF}
	}
	if err := model.ValidateKey(key); err != nil {
		return model.Manifest{}, err
	}
	if err := opts.Layout.Validate(); err != nil {
		return model.Manifest{}, err
	}
	if opts.Layout.Erasure() {
		return model.Manifest{}, fmt.Errorf("%w: erasure-coded objects are not supported yet", model.ErrInvalid)
	}
	if !opts.Overwrite {
		if _, err := c.objects.Get(ctx, model.ObjectKVKey(key)); err == nil {
			return model.Manifest{}, fmt.Errorf("object %q exists (use --overwrite to replace it): %w", key, control.ErrConflict)
		}
	}
	objID := uuid.NewString()
	n := int((size + c.ChunkSize - 1) / c.ChunkSize)
	if size == 0 {
		n = 1 // an empty object still has one (empty) chunk, so it has a home
	}
	specs := make([]control.ShardSpec, n)
	for i := range specs {
		sz := min(c.ChunkSize, size-int64(i)*c.ChunkSize)
		specs[i] = control.ShardSpec{ID: fmt.Sprintf("%s-c%06d", objID, i), Stripe: i, Size: sz}
	}
	var alloc control.AllocateReply
	if err := bus.Call(ctx, c.nc, event.CtlAllocate, control.AllocateRequest{Key: key, Layout: opts.Layout, Shards: specs}, &alloc); err != nil {
		return model.Manifest{}, fmt.Errorf("allocate: %w", err)
	}
	if len(alloc.Allocations) != n {
		return model.Manifest{}, fmt.Errorf("allocate: planner answered %d allocations for %d chunks", len(alloc.Allocations), n)
	}

	whole := sha256.New()
	refs := make([]model.ShardRef, n)
	acked := make(map[string][]string, n)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.Parallel)
	for i := 0; i < n; i++ {
		buf := make([]byte, specs[i].Size)
		if _, err := io.ReadFull(r, buf); err != nil {
			_ = g.Wait()
			return model.Manifest{}, fmt.Errorf("read chunk %d: %w", i, err)
		}
		whole.Write(buf)
		sum := sha256.Sum256(buf)
		ref := model.ShardRef{ID: specs[i].ID, Stripe: i, Size: specs[i].Size, SHA256: hex.EncodeToString(sum[:])}
		refs[i] = ref
		a := alloc.Allocations[i]
		g.Go(func() error {
			nodes, err := c.writeReplicas(gctx, ref, buf, a.Nodes)
			if err != nil {
				return err
			}
			mu.Lock()
			acked[ref.ID] = nodes
			mu.Unlock()
			return nil
		})
		if gctx.Err() != nil {
			break
		}
	}
	if err := g.Wait(); err != nil {
		return model.Manifest{}, err
	}
	m := model.Manifest{
		V: model.Version, Key: key, ID: objID, Size: size,
		SHA256: hex.EncodeToString(whole.Sum(nil)), Layout: opts.Layout,
		ChunkSize: c.ChunkSize, Shards: refs, Created: time.Now().UTC(),
	}
	if err := bus.Call(ctx, c.nc, event.CtlCommit, control.CommitRequest{Manifest: m, Nodes: acked, Overwrite: opts.Overwrite}, nil); err != nil {
		return model.Manifest{}, fmt.Errorf("commit %q: %w", key, err)
	}
	return m, nil
}

// writeReplicas PUTs one chunk to every allocated node in parallel and returns
// the nodes that verified it; fewer than a majority is an error.
func (c *Client) writeReplicas(ctx context.Context, ref model.ShardRef, buf []byte, to []control.Endpoint) ([]string, error) {
	var (
		mu   sync.Mutex
		ok   []string
		errs []error
		wg   sync.WaitGroup
	)
	for _, ep := range to {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.shards.Put(ctx, ep.Addr, ref.ID, ref.SHA256, ref.Size, bytes.NewReader(buf))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", ep.Node, err))
				return
			}
			ok = append(ok, ep.Node)
		}()
	}
	wg.Wait()
	if need := len(to)/2 + 1; len(ok) < need {
		return nil, fmt.Errorf("write chunk %s: %d of %d replicas verified: %w", ref.ID, len(ok), len(to), errors.Join(errs...))
	}
	sort.Strings(ok)
	return ok, nil
}

// Manifest returns the manifest of key, or an error matching ErrNotFound.
func (c *Client) Manifest(ctx context.Context, key string) (model.Manifest, error) {
	var m model.Manifest
	e, err := c.objects.Get(ctx, model.ObjectKVKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return m, fmt.Errorf("object %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("read manifest %q: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return m, fmt.Errorf("manifest %q is corrupt: %w", key, err)
	}
	return m, nil
}

// Get writes the object's bytes to w in order, each chunk verified before it is
// written, trying every live replica of a chunk before giving up. It returns
// the manifest it read.
func (c *Client) Get(ctx context.Context, key string, w io.Writer) (model.Manifest, error) {
	m, err := c.Manifest(ctx, key)
	if err != nil {
		return m, err
	}
	view, err := c.loadView(ctx)
	if err != nil {
		return m, err
	}
	whole := sha256.New()
	// Read ahead up to Parallel chunks, write them out in order.
	type result struct {
		data []byte
		err  error
	}
	results := make([]chan result, len(m.Shards))
	sem := make(chan struct{}, max(1, c.Parallel))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for i, ref := range m.Shards {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] <- result{err: ctx.Err()}
				continue
			}
			go func() {
				data, err := c.readShard(ctx, view, ref)
				results[i] <- result{data, err}
			}()
		}
	}()
	for i := range m.Shards {
		res := <-results[i]
		<-sem
		if res.err != nil {
			return m, res.err
		}
		whole.Write(res.data)
		if _, err := w.Write(res.data); err != nil {
			return m, fmt.Errorf("write output: %w", err)
		}
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != m.SHA256 {
		return m, fmt.Errorf("object %q: checksum %s, manifest says %s", key, got, m.SHA256)
	}
	return m, nil
}

// GetFile writes the object to path atomically: a temp file beside it, synced
// and renamed only once every byte is verified.
func (c *Client) GetFile(ctx context.Context, key, path string) (model.Manifest, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".rehome-*")
	if err != nil {
		return model.Manifest{}, fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	m, err := c.Get(ctx, key, f)
	if err != nil {
		return m, err
	}
	if err := f.Sync(); err != nil {
		return m, fmt.Errorf("sync output: %w", err)
	}
	if err := f.Close(); err != nil {
		return m, fmt.Errorf("close output: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return m, fmt.Errorf("rename output: %w", err)
	}
	return m, nil
}

// readShard fetches one shard from its live holders (random order, down nodes
// last) and returns its verified bytes.
func (c *Client) readShard(ctx context.Context, v view, ref model.ShardRef) ([]byte, error) {
	p, err := c.placementOf(ctx, ref.ID)
	if err != nil {
		return nil, err
	}
	holders := v.order(p.Nodes)
	var errs []error
	for _, node := range holders {
		addr := v.addr[node]
		if addr == "" {
			errs = append(errs, fmt.Errorf("%s: address unknown", node))
			continue
		}
		data, err := c.fetch(ctx, addr, ref)
		if err == nil {
			return data, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", node, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("read shard %s: no replica could be read: %w", ref.ID, errors.Join(errs...))
}

func (c *Client) fetch(ctx context.Context, addr string, ref model.ShardRef) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body, _, err := c.shards.Get(ctx, addr, ref.ID)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, ref.Size+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != ref.Size || hex.EncodeToString(sum[:]) != ref.SHA256 {
		return nil, errors.New("bytes do not match the manifest's checksum")
	}
	return data, nil
}

func (c *Client) placementOf(ctx context.Context, shard string) (model.Placement, error) {
	var p model.Placement
	e, err := c.placement.Get(ctx, shard)
	if err != nil {
		return p, fmt.Errorf("placement of %s: %w", shard, err)
	}
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return p, fmt.Errorf("placement of %s is corrupt: %w", shard, err)
	}
	return p, nil
}

// view is a snapshot of node addresses and states.
type view struct {
	addr  map[string]string
	rack  map[string]string
	state map[string]model.State
}

// order returns holders with live ones first (shuffled, to spread reads) and
// down ones last.
func (v view) order(holders []string) []string {
	out := slices.Clone(holders)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	sort.SliceStable(out, func(i, j int) bool {
		return v.live(out[i]) && !v.live(out[j])
	})
	return out
}

func (v view) live(node string) bool {
	s, ok := v.state[node]
	return !ok || s.Live()
}

func (c *Client) loadView(ctx context.Context) (view, error) {
	v := view{addr: map[string]string{}, rack: map[string]string{}, state: map[string]model.State{}}
	err := eachValue(ctx, c.nodes, func(b []byte) {
		var n model.Node
		if json.Unmarshal(b, &n) == nil {
			v.addr[n.ID], v.rack[n.ID] = n.Addr, n.Rack
		}
	})
	if err != nil {
		return v, fmt.Errorf("read nodes: %w", err)
	}
	err = eachValue(ctx, c.liveness, func(b []byte) {
		var l model.Liveness
		if json.Unmarshal(b, &l) == nil {
			v.state[l.Node] = l.State
		}
	})
	if err != nil {
		return v, fmt.Errorf("read liveness: %w", err)
	}
	return v, nil
}

func eachValue(ctx context.Context, kv jetstream.KeyValue, f func([]byte)) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return nil
			}
			f(e.Value())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Delete removes key; its shards are deleted from the storage nodes by movers.
func (c *Client) Delete(ctx context.Context, key string) error {
	if err := bus.Call(ctx, c.nc, event.CtlDelete, control.DeleteRequest{Key: key}, nil); err != nil {
		if errors.Is(err, control.ErrNotFound) {
			return fmt.Errorf("object %q: %w", key, ErrNotFound)
		}
		return err
	}
	return nil
}

// Manifests returns every object's manifest, sorted by key.
func (c *Client) Manifests(ctx context.Context) ([]model.Manifest, error) {
	var out []model.Manifest
	err := eachValue(ctx, c.objects, func(b []byte) {
		var m model.Manifest
		if json.Unmarshal(b, &m) == nil {
			out = append(out, m)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// ShardView is one shard of Inspect's answer (SPEC §3 `inspect --json`).
type ShardView struct {
	ID        string   `json:"id"`
	Stripe    int      `json:"stripe"`
	Index     int      `json:"index"`
	Size      int64    `json:"size"`
	SHA256    string   `json:"sha256"`
	Nodes     []string `json:"nodes"`
	Racks     []string `json:"racks"`
	DownNodes []string `json:"down_nodes,omitempty"`
}

// Inspection is Inspect's answer.
type Inspection struct {
	Key     string       `json:"key"`
	ID      string       `json:"id"`
	Size    int64        `json:"size"`
	SHA256  string       `json:"sha256"`
	Layout  model.Layout `json:"layout"`
	Created time.Time    `json:"created"`
	Shards  []ShardView  `json:"shards"`
}

// Inspect returns where every shard of key lives: live holders in Nodes (with
// their racks), holders currently judged down in DownNodes.
func (c *Client) Inspect(ctx context.Context, key string) (Inspection, error) {
	m, err := c.Manifest(ctx, key)
	if err != nil {
		return Inspection{}, err
	}
	v, err := c.loadView(ctx)
	if err != nil {
		return Inspection{}, err
	}
	in := Inspection{Key: m.Key, ID: m.ID, Size: m.Size, SHA256: m.SHA256, Layout: m.Layout, Created: m.Created}
	for _, ref := range m.Shards {
		p, err := c.placementOf(ctx, ref.ID)
		if err != nil {
			return in, err
		}
		sv := ShardView{ID: ref.ID, Stripe: ref.Stripe, Index: ref.Index, Size: ref.Size, SHA256: ref.SHA256, Nodes: []string{}, Racks: []string{}}
		for _, n := range p.Nodes {
			if v.live(n) {
				sv.Nodes = append(sv.Nodes, n)
				sv.Racks = append(sv.Racks, v.rack[n])
			} else {
				sv.DownNodes = append(sv.DownNodes, n)
			}
		}
		in.Shards = append(in.Shards, sv)
	}
	return in, nil
}
