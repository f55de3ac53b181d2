package objects

import (
	"context"
	"encoding/json"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/model"
)

// liveView keeps a view of node addresses and states current from watches on
// the nodes and liveness buckets, so a long-running client (the S3 gateway)
// does not read both buckets for every object it reads. Its maps are
// copy-on-write (an update replaces the map it changes), so a read shares
// them without copying: updates are rare, reads are every request.
type liveView struct {
	mu    sync.Mutex
	v     view
	ready [2]bool // nodes, liveness: initial values seen and watch alive
}

// Watch keeps the client's view of nodes and their states current until ctx
// ends, restarting a watch that stops. Until both watches have delivered
// their initial values, reads load the view afresh. Call it once, on its own
// goroutine or not: it returns at once.
func (c *Client) Watch(ctx context.Context) {
	lv := &liveView{v: view{addr: map[string]string{}, rack: map[string]string{}, state: map[string]model.State{}}}
	c.live = lv
	go lv.follow(ctx, c.nodes, 0, func(b []byte) {
		var n model.Node
		if json.Unmarshal(b, &n) == nil {
			lv.v.addr, lv.v.rack = with(lv.v.addr, n.ID, n.Addr), with(lv.v.rack, n.ID, n.Rack)
		}
	})
	go lv.follow(ctx, c.liveness, 1, func(b []byte) {
		var l model.Liveness
		if json.Unmarshal(b, &l) == nil {
			lv.v.state = with(lv.v.state, l.Node, l.State)
		}
	})
}

// with returns a copy of m with k set to v (m itself is never changed:
// snapshots share it).
func with[V comparable](m map[string]V, k string, v V) map[string]V {
	if old, ok := m[k]; ok && old == v {
		return m
	}
	out := maps.Clone(m)
	out[k] = v
	return out
}

// follow applies every value of kv to the view (under the lock) until ctx
// ends, marking slot ready once the initial values are in.
func (lv *liveView) follow(ctx context.Context, kv jetstream.KeyValue, slot int, apply func([]byte)) {
	for ctx.Err() == nil {
		w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err == nil {
			for e := range w.Updates() {
				lv.mu.Lock()
				if e == nil {
					lv.ready[slot] = true
				} else {
					apply(e.Value())
				}
				lv.mu.Unlock()
			}
			_ = w.Stop()
		}
		lv.mu.Lock()
		lv.ready[slot] = false
		lv.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// snapshot returns the current view (shared, read-only), or false while it
// is not ready.
func (lv *liveView) snapshot() (view, bool) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if !lv.ready[0] || !lv.ready[1] {
		return view{}, false
	}
	return lv.v, true
}
