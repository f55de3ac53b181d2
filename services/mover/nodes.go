package mover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/model"
)

// directory maps node ids to shard API addresses, kept current by watching
// the nodes KV bucket (a node writes its record, with a new address, each time
// it starts). It is safe for concurrent use.
type directory struct {
	log       *slog.Logger
	malformed func(error) // counts a record that could not be used, and why

	mu    sync.RWMutex
	addrs map[string]string
	kv    jetstream.KeyValue // set once watching starts; used when a node is not known yet
}

func newDirectory(log *slog.Logger, malformed func(error)) *directory {
	return &directory{log: log, malformed: malformed, addrs: map[string]string{}}
}

// Addr returns the node's current address. A node missing from the watched
// view is looked up in the bucket directly (the watch may lag a restart); an
// unregistered node yields an error wrapping errUnknownNode.
func (d *directory) Addr(ctx context.Context, node string) (string, error) {
	d.mu.RLock()
	addr, ok := d.addrs[node]
	kv := d.kv
	d.mu.RUnlock()
	if ok {
		return addr, nil
	}
	if kv == nil {
		return "", fmt.Errorf("%w: %s", errUnknownNode, node)
	}
	e, err := kv.Get(ctx, node)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("%w: %s", errUnknownNode, node)
	}
	if err != nil {
		return "", fmt.Errorf("look up node %s: %w", node, err)
	}
	n, err := decodeNode(e.Key(), e.Value())
	if err != nil {
		d.malformed(err)
		return "", fmt.Errorf("%w: %s: %w", errUnknownNode, node, err)
	}
	return n.Addr, nil
}

// decodeNode parses and validates one record of the nodes bucket.
func decodeNode(key string, value []byte) (model.Node, error) {
	var n model.Node
	if err := json.Unmarshal(value, &n); err != nil {
		return n, fmt.Errorf("%w node record %s: %w", model.ErrInvalid, key, err)
	}
	if err := n.Validate(); err != nil {
		return n, err
	}
	if n.ID != key {
		return n, fmt.Errorf("%w node record under key %s names %s", model.ErrInvalid, key, n.ID)
	}
	return n, nil
}

// apply folds one bucket update into view (the map being built or the live one).
func (d *directory) apply(view map[string]string, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		delete(view, e.Key())
		return
	}
	n, err := decodeNode(e.Key(), e.Value())
	if err != nil {
		d.malformed(err)
		d.log.Debug("ignoring malformed node record", "key", e.Key(), "err", err)
		return
	}
	view[n.ID] = n.Addr
}

// watch keeps the directory current until ctx ends. It closes ready once the
// bucket's current records are loaded (or when it gives up waiting for the
// bucket because ctx ended). A broken watch is restarted and replaces the view.
func (d *directory) watch(ctx context.Context, js jetstream.JetStream, ready chan<- struct{}) {
	rewatch(ctx, d.log, "watching node registrations", ready, func(markReady func()) error {
		return d.watchOnce(ctx, js, markReady)
	})
}

func (d *directory) watchOnce(ctx context.Context, js jetstream.JetStream, markReady func()) error {
	kv, w, err := watchBucket(ctx, js, bus.BucketNodes)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	d.mu.Lock()
	d.kv = kv
	d.mu.Unlock()
	initial := map[string]string{}
	loading := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("node watch closed")
			}
			switch {
			case e == nil && loading:
				loading = false
				d.mu.Lock()
				d.addrs = initial
				d.mu.Unlock()
				markReady()
			case e == nil:
			case loading:
				d.apply(initial, e)
			default:
				d.mu.Lock()
				d.apply(d.addrs, e)
				d.mu.Unlock()
			}
		}
	}
}

// watchBucket opens bucket and watches all its keys; the caller stops the
// watcher.
func watchBucket(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, jetstream.KeyWatcher, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("watch bucket %s: %w", bucket, err)
	}
	return kv, w, nil
}

// rewatch runs once (a KV watch that calls markReady once its initial values
// are in) until ctx ends, restarting it after a pause whenever it breaks. ready
// is closed after the first load, or when rewatch returns.
func rewatch(ctx context.Context, log *slog.Logger, what string, ready chan<- struct{}, once func(markReady func()) error) {
	var done sync.Once
	markReady := func() { done.Do(func() { close(ready) }) }
	defer markReady()
	for ctx.Err() == nil {
		if err := once(markReady); err != nil && ctx.Err() == nil {
			log.Warn(what, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}
