// Package objects is the client side of rehome's object API: it cuts files
// into chunks, asks the acting planner where they go, writes replicas to
// storage nodes over HTTP and commits the manifest; it reads objects back from
// any live replica, verifying every checksum. A Client is safe for concurrent use.
package objects

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
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
	"github.com/rehome/rehome/shared/erasure"
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
	// CallTimeout bounds each call to the planner (allocate, commit, delete),
	// so a put fails with a clear error instead of hanging when none answers.
	CallTimeout time.Duration
	live        *liveView // set by Watch
}

// call makes one control call to the acting planner, bounded by CallTimeout.
func (c *Client) call(ctx context.Context, subject string, req, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.CallTimeout)
	defer cancel()
	return bus.Call(ctx, c.nc, subject, req, out)
}

// New binds a client to the bus's buckets. It fails if they do not exist
// (no cluster has been started on this bus).
func New(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, shards *shardapi.Client) (*Client, error) {
	c := &Client{nc: nc, shards: shards, ChunkSize: model.DefaultChunkSize, Parallel: 4, CallTimeout: 30 * time.Second}
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
	// ContentType and Meta are kept in the manifest (S3 attributes).
	ContentType string
	Meta        map[string]string
	// ExpectMD5 and ExpectSHA256 (hex), when set, are what the bytes must
	// hash to: a mismatch fails Put with ErrDigest before anything is
	// committed (S3's Content-MD5 and signed x-amz-content-sha256).
	ExpectMD5, ExpectSHA256 string
}

// ErrDigest is returned by Put when the bytes do not hash to what the caller
// said they would.
var ErrDigest = errors.New("digest mismatch")

type chunk struct {
	ref  model.ShardRef
	data []byte
}

// Put stores the size bytes of r under key. A replicated object is cut into
// ChunkSize chunks, each written to Layout.RF nodes; an erasure-coded one into
// stripes of K pieces of ChunkSize (the last stripe smaller), each encoded
// into K+M pieces on K+M distinct nodes. Put returns once every chunk is
// verified by a majority of its replicas, or every stripe by K of its nodes
// plus one more when M > 1, and the manifest is committed; what could not be
// written is left to the repair loop. Writing an
// existing key fails with control.ErrConflict unless opts.Overwrite. The
// manifest's ETag is the hex MD5 of the bytes (S3's ETag of a single PUT).
// Put reads r exactly size bytes far: a shorter reader is an error and
// nothing is committed.
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
	if !opts.Overwrite {
		if _, err := c.objects.Get(ctx, model.ObjectKVKey(key)); err == nil {
			return model.Manifest{}, fmt.Errorf("object %q exists (use --overwrite to replace it): %w", key, control.ErrConflict)
		}
	}
	objID := uuid.NewString()
	units, codec, err := c.cut(objID, size, opts.Layout)
	if err != nil {
		return model.Manifest{}, err
	}
	var specs []control.ShardSpec
	for _, u := range units {
		specs = append(specs, u.specs...)
	}
	var alloc control.AllocateReply
	if err := c.call(ctx, event.CtlAllocate, control.AllocateRequest{Key: key, Layout: opts.Layout, Shards: specs}, &alloc); err != nil {
		return model.Manifest{}, fmt.Errorf("allocate: %w", err)
	}
	if len(alloc.Allocations) != len(specs) {
		return model.Manifest{}, fmt.Errorf("allocate: planner answered %d allocations for %d shards", len(alloc.Allocations), len(specs))
	}

	whole, etag := sha256.New(), md5.New()
	refs := make([]model.ShardRef, 0, len(specs))
	acked := make(map[string][]string, len(specs))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.Parallel)
	next := 0 // first allocation of the unit
	for ui, u := range units {
		buf := make([]byte, u.length)
		if _, err := io.ReadFull(r, buf); err != nil {
			_ = g.Wait()
			return model.Manifest{}, fmt.Errorf("read stripe %d: %w", ui, err)
		}
		whole.Write(buf)
		etag.Write(buf)
		pieces := [][]byte{buf}
		if codec != nil {
			if pieces, err = codec.Encode(buf); err != nil {
				_ = g.Wait()
				return model.Manifest{}, err
			}
		}
		unitRefs := make([]model.ShardRef, len(u.specs))
		for i, sp := range u.specs {
			sum := sha256.Sum256(pieces[i])
			unitRefs[i] = model.ShardRef{ID: sp.ID, Stripe: sp.Stripe, Index: sp.Index, Size: sp.Size, SHA256: hex.EncodeToString(sum[:])}
		}
		refs = append(refs, unitRefs...)
		allocs := alloc.Allocations[next : next+len(u.specs)]
		next += len(u.specs)
		g.Go(func() error {
			got, err := c.writeUnit(gctx, opts.Layout, unitRefs, pieces, allocs)
			if err != nil {
				return err
			}
			mu.Lock()
			maps.Copy(acked, got)
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
	sum, md := hex.EncodeToString(whole.Sum(nil)), hex.EncodeToString(etag.Sum(nil))
	if opts.ExpectMD5 != "" && opts.ExpectMD5 != md {
		return model.Manifest{}, fmt.Errorf("object %q: MD5 %s, the client said %s: %w", key, md, opts.ExpectMD5, ErrDigest)
	}
	if opts.ExpectSHA256 != "" && opts.ExpectSHA256 != sum {
		return model.Manifest{}, fmt.Errorf("object %q: SHA-256 %s, the client said %s: %w", key, sum, opts.ExpectSHA256, ErrDigest)
	}
	m := model.Manifest{
		V: model.Version, Key: key, ID: objID, Size: size,
		SHA256: sum, Layout: opts.Layout,
		ChunkSize: c.ChunkSize, Shards: refs, Created: time.Now().UTC(),
		ETag: md, ContentType: opts.ContentType, Meta: opts.Meta,
	}
	if err := c.call(ctx, event.CtlCommit, control.CommitRequest{Manifest: m, Nodes: acked, Overwrite: opts.Overwrite}, nil); err != nil {
		return model.Manifest{}, fmt.Errorf("commit %q: %w", key, err)
	}
	return m, nil
}

// unit is what Put reads and writes at once: one replicated chunk, or one
// erasure-coded stripe (its K+M pieces).
type unit struct {
	length int // data bytes read from the object
	specs  []control.ShardSpec
}

// cut lays an object of size bytes out in units; codec is nil for a
// replicated layout. An empty object still has one (empty) unit, so it has a home.
func (c *Client) cut(objID string, size int64, l model.Layout) ([]unit, *erasure.Codec, error) {
	if !l.Erasure() {
		n := max(1, int((size+c.ChunkSize-1)/c.ChunkSize))
		units := make([]unit, n)
		for i := range units {
			sz := min(c.ChunkSize, size-int64(i)*c.ChunkSize)
			units[i] = unit{length: int(sz), specs: []control.ShardSpec{{ID: fmt.Sprintf("%s-c%06d", objID, i), Stripe: i, Size: sz}}}
		}
		return units, nil, nil
	}
	codec, err := erasure.New(l.K, l.M)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", model.ErrInvalid, err)
	}
	var units []unit
	for s, n := range codec.Stripes(size, int(c.ChunkSize)) {
		u := unit{length: n}
		ps := int64(codec.PieceSize(n))
		for i := 0; i < l.K+l.M; i++ {
			u.specs = append(u.specs, control.ShardSpec{ID: pieceID(objID, s, i), Stripe: s, Index: i, Size: ps})
		}
		units = append(units, u)
	}
	return units, codec, nil
}

// pieceID names piece index of stripe s of an erasure-coded object.
func pieceID(objID string, s, index int) string { return fmt.Sprintf("%s-s%06dp%03d", objID, s, index) }

// writeUnit writes one unit and returns, per shard, the nodes that verified
// it. A replicated chunk needs a majority of its replicas; a stripe needs K
// pieces plus one more when M > 1 (so a stripe is never born a loss away from
// being unreadable).
func (c *Client) writeUnit(ctx context.Context, l model.Layout, refs []model.ShardRef, pieces [][]byte, allocs []control.Allocation) (map[string][]string, error) {
	if !l.Erasure() {
		nodes, err := c.writeReplicas(ctx, refs[0], pieces[0], allocs[0].Nodes)
		if err != nil {
			return nil, err
		}
		return map[string][]string{refs[0].ID: nodes}, nil
	}
	var (
		mu   sync.Mutex
		got  = map[string][]string{}
		errs []error
		wg   sync.WaitGroup
	)
	for i, ref := range refs {
		if len(allocs[i].Nodes) != 1 {
			return nil, fmt.Errorf("allocate: piece %s got %d nodes, want 1", ref.ID, len(allocs[i].Nodes))
		}
		ep := allocs[i].Nodes[0]
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.shards.Put(ctx, ep.Addr, ref.ID, ref.SHA256, ref.Size, bytes.NewReader(pieces[i]))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", ep.Node, err))
				return
			}
			got[ref.ID] = []string{ep.Node}
		}()
	}
	wg.Wait()
	if need := l.K + min(1, l.M-1); len(got) < need {
		return nil, fmt.Errorf("write stripe %d: %d of %d pieces verified, need %d: %w", refs[0].Stripe, len(got), len(refs), need, errors.Join(errs...))
	}
	return got, nil
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

// readStripe fetches K verified pieces of one stripe, K at a time in
// parallel, moving on to the next candidate whenever one fails. Candidates are
// pieces on live nodes before pieces on down ones, data pieces before parity.
func (c *Client) readStripe(ctx context.Context, v view, refs []model.ShardRef, l model.Layout) ([][]byte, error) {
	type cand struct {
		ref  model.ShardRef
		node string
	}
	var cands []cand
	for _, ref := range refs {
		p, err := c.placementOf(ctx, ref.ID)
		if err != nil {
			continue // no placement entry: the piece cannot be read
		}
		for _, n := range v.order(p.Nodes) {
			cands = append(cands, cand{ref, n})
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		li, lj := v.live(cands[i].node), v.live(cands[j].node)
		if li != lj {
			return li
		}
		return (cands[i].ref.Index < l.K) && !(cands[j].ref.Index < l.K)
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		index int
		data  []byte
		err   error
	}
	results := make(chan result, len(cands))
	pieces := make([][]byte, l.K+l.M)
	started := map[int]bool{}
	next, inflight, have := 0, 0, 0
	var errs []error
	launch := func() {
		for next < len(cands) && inflight+have < l.K {
			cd := cands[next]
			next++
			if started[cd.ref.Index] && pieces[cd.ref.Index] != nil {
				continue
			}
			started[cd.ref.Index] = true
			addr := v.addr[cd.node]
			inflight++
			go func() {
				if addr == "" {
					results <- result{cd.ref.Index, nil, fmt.Errorf("%s: address unknown", cd.node)}
					return
				}
				data, err := c.fetch(ctx, addr, cd.ref)
				if err != nil {
					err = fmt.Errorf("piece %d on %s: %w", cd.ref.Index, cd.node, err)
				}
				results <- result{cd.ref.Index, data, err}
			}()
		}
	}
	launch()
	for inflight > 0 {
		r := <-results
		inflight--
		if r.err == nil && pieces[r.index] == nil {
			pieces[r.index] = r.data
			have++
		} else if r.err != nil {
			errs = append(errs, r.err)
		}
		if have == l.K {
			return pieces, nil
		}
		launch()
	}
	return nil, fmt.Errorf("%d of %d pieces readable, need %d: %w", have, l.K+l.M, l.K, errors.Join(errs...))
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
	if c.live != nil {
		if v, ok := c.live.snapshot(); ok {
			return v, nil
		}
	}
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

// Compose joins the part objects of a multipart upload into one object
// (event.CtlCompose) and returns its manifest.
func (c *Client) Compose(ctx context.Context, req control.ComposeRequest) (model.Manifest, error) {
	var m model.Manifest
	if err := c.call(ctx, event.CtlCompose, req, &m); err != nil {
		if errors.Is(err, control.ErrNotFound) {
			return m, fmt.Errorf("compose %q: %w: %w", req.Manifest.Key, ErrNotFound, err)
		}
		return m, fmt.Errorf("compose %q: %w", req.Manifest.Key, err)
	}
	return m, nil
}

// Delete removes key; its shards are deleted from the storage nodes by movers.
func (c *Client) Delete(ctx context.Context, key string) error {
	if err := c.call(ctx, event.CtlDelete, control.DeleteRequest{Key: key}, nil); err != nil {
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
