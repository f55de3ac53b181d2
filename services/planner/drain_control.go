package planner

import (
	"github.com/rehome/rehome/services/planner/core"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Drains and removals on the bus: the control calls (answered by the acting
// planner), the records in bus.BucketControl every planner watches, and the
// draining/drained events. The decisions are in drain.go.

// nodeRequest decodes and checks a control.NodeRequest; the node is
// required unless optional.
func nodeRequest(data []byte, optional bool) (control.NodeRequest, error) {
	var req control.NodeRequest
	if err := decodeOptional(data, &req); err != nil {
		return req, err
	}
	if req.Node == "" && optional {
		return req, nil
	}
	if err := model.ValidateNodeID(req.Node); err != nil {
		return req, fmt.Errorf("%w request: %w", model.ErrInvalid, err)
	}
	return req, nil
}

// asRefusal turns a view's answer into the refusal a caller sees: an
// unknown node is not found, anything else a conflict.
func asRefusal(err error) error {
	if errors.Is(err, core.ErrUnknownNode) {
		return refuse(control.ErrNotFound, "%s", err)
	}
	return refuse(control.ErrConflict, "%s", err)
}

// ctlDrain answers control.CtlDrain: it checks the drain can finish, writes
// the node's drain record (idempotent: a node already draining answers its
// status), applies it, and announces it on rehome.node.draining.<node>.
func (s *Service) ctlDrain(ctx context.Context, data []byte) (any, error) {
	req, err := nodeRequest(data, false)
	if err != nil {
		return nil, err
	}
	now := s.now()
	s.mu.Lock()
	r, known := s.v.NodeIndex[req.Node]
	already := known && s.v.Nodes[r].Draining
	if !already {
		err = s.v.Drainable(req.Node, s.cfg.MaxFill)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, asRefusal(err)
	}
	if !already {
		rec := control.Drain{V: model.Version, Node: req.Node, By: req.By, Since: now.UTC()}
		body, _ := json.Marshal(rec)
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		rev, err := s.kvCtl.Put(pctx, control.DrainKeyPrefix+req.Node, body)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("record the drain of %s: %w", req.Node, err)
		}
		s.mu.Lock()
		_, _ = s.v.SetDrain(req.Node, true, core.DrainState{Since: rec.Since, By: rec.By})
		n := s.v.Nodes[s.v.NodeIndex[req.Node]]
		s.mu.Unlock()
		s.log.Info("drain started", "node", req.Node, "by", req.By, "shards", n.Shards, "bytes", n.Bytes)
		ev := &event.Drain{Header: event.Header{TS: now.UTC()}, Node: req.Node, By: req.By, Shards: n.Shards, Bytes: n.Bytes}
		pctx, cancel = context.WithTimeout(ctx, opTimeout)
		if err := s.pub.Publish(pctx, event.DrainingPrefix+req.Node, ev, "draining-"+req.Node+"-"+strconv.FormatUint(rev, 10)); err != nil {
			s.log.Warn("publish draining", "node", req.Node, "err", err)
		}
		cancel()
		s.plan()
	}
	return s.drainReply(req.Node)
}

// drainReply is the status of node's drain (every drain for "").
func (s *Service) drainReply(node string) (control.DrainReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ds, err := s.v.DrainStatus(node, s.now())
	if err != nil {
		return control.DrainReply{}, asRefusal(err)
	}
	if ds == nil {
		ds = []control.DrainStatus{}
	}
	return control.DrainReply{Drains: ds}, nil
}

// ctlDrainCancel answers control.CtlDrainCancel: the drain record goes, the
// node takes shards again, and what moved stays where it went.
func (s *Service) ctlDrainCancel(ctx context.Context, data []byte) (any, error) {
	req, err := nodeRequest(data, false)
	if err != nil {
		return nil, err
	}
	st, err := s.drainReply(req.Node)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := s.kvCtl.Delete(pctx, control.DrainKeyPrefix+req.Node); err != nil {
		return nil, fmt.Errorf("cancel the drain of %s: %w", req.Node, err)
	}
	s.mu.Lock()
	_, _ = s.v.SetDrain(req.Node, false, core.DrainState{})
	s.mu.Unlock()
	s.log.Info("drain cancelled", "node", req.Node, "by", req.By, "moved_shards", st.Drains[0].ShardsMoved)
	s.plan()
	return st, nil
}

// ctlNodeRemove answers control.CtlNodeRemove: a drained node, or a dead
// one the map no longer lists, is forgotten (its registration, liveness
// and drain records deleted, a removed record written so a late
// registration under its id is ignored). Anything else is refused, saying why.
func (s *Service) ctlNodeRemove(ctx context.Context, data []byte) (any, error) {
	req, err := nodeRequest(data, false)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	err = s.v.Removable(req.Node)
	s.mu.Unlock()
	if err != nil {
		return nil, asRefusal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rec, _ := json.Marshal(control.Removed{V: model.Version, Node: req.Node, By: req.By, Since: s.now().UTC()})
	if _, err := s.kvCtl.Put(pctx, control.RemovedKeyPrefix+req.Node, rec); err != nil {
		return nil, fmt.Errorf("remove %s: %w", req.Node, err)
	}
	for _, del := range []struct {
		kv  jetstream.KeyValue
		key string
	}{{s.kvNodes, req.Node}, {s.kvLive, req.Node}, {s.kvCtl, control.DrainKeyPrefix + req.Node}} {
		if err := del.kv.Delete(pctx, del.key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("remove %s: %w", req.Node, err)
		}
	}
	s.mu.Lock()
	s.v.Forget(req.Node)
	s.mu.Unlock()
	s.log.Info("node removed", "node", req.Node, "by", req.By)
	return struct{}{}, nil
}

// applyNodeRecord folds a drain or removed record of bus.BucketControl into
// the view (every planner, acting or not); it reports whether the view
// changed. A malformed record is counted and ignored.
func (s *Service) applyNodeRecord(e jetstream.KeyValueEntry) bool {
	key := e.Key()
	put := e.Operation() == jetstream.KeyValuePut
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case strings.HasPrefix(key, control.DrainKeyPrefix):
		node := strings.TrimPrefix(key, control.DrainKeyPrefix)
		var rec control.Drain
		if put {
			if err := decodeRecord(e.Value(), &rec); err != nil || rec.Node != node {
				s.malformed(bus.BucketControl, fmt.Errorf("drain record %q: %v", key, err))
				return false
			}
		}
		if _, err := s.v.Ref(node); err != nil {
			s.malformed(bus.BucketControl, err)
			return false
		}
		changed, _ := s.v.SetDrain(node, put, core.DrainState{Since: rec.Since, By: rec.By})
		return changed
	case strings.HasPrefix(key, control.RemovedKeyPrefix):
		node := strings.TrimPrefix(key, control.RemovedKeyPrefix)
		if put {
			s.v.Forget(node)
		} else {
			s.v.Unforget(node)
		}
		return true
	}
	return false
}

// announceDrained publishes rehome.node.drained.<node> once for each
// draining node that holds nothing any more (acting planner, each tick).
func (s *Service) announceDrained(ctx context.Context) {
	type done struct {
		node          string
		shards, since int64
		bytes         int64
	}
	var out []done
	s.mu.Lock()
	for i := range s.v.Nodes {
		n := &s.v.Nodes[i]
		if n.Draining && !n.Drain.Announced && n.Shards == 0 && n.EffState().Live() {
			out = append(out, done{node: n.ID, shards: int64(n.Drain.StartShards), bytes: n.Drain.StartBytes, since: n.Drain.Since.UnixMilli()})
		}
	}
	s.mu.Unlock()
	for _, d := range out {
		ev := &event.Drain{Header: event.Header{TS: s.now().UTC()}, Node: d.node, Shards: int(d.shards), Bytes: d.bytes}
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		err := s.pub.Publish(pctx, event.DrainedPrefix+d.node, ev, "drained-"+d.node+"-"+strconv.FormatInt(d.since, 10))
		cancel()
		if err != nil {
			s.log.Warn("publish drained", "node", d.node, "err", err)
			continue
		}
		s.log.Info("node drained: it holds nothing; `rehome node remove` forgets it", "node", d.node, "shards", d.shards, "bytes", d.bytes)
		s.mu.Lock()
		if r, ok := s.v.NodeIndex[d.node]; ok {
			s.v.Nodes[r].Drain.Announced = true
		}
		s.mu.Unlock()
	}
}

// controlWatchKeys returns the keys of bus.BucketControl a planner watches,
// in a new slice each time (WatchFiltered rewrites the one it is given).
func controlWatchKeys() []string {
	return []string{control.HealSwitchKey, control.RebalanceSwitchKey, control.DrainKeyPrefix + ">", control.RemovedKeyPrefix + ">"}
}
