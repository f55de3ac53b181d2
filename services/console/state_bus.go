package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/history"
)

// followSubjects are the events the console folds: verdicts, plans and
// repair results, lost and corrupt shards (incidents) and the heal's
// progress (the chart).
var followSubjects = []string{
	"rehome.node.>", event.PlanPrefix + ">", event.DonePrefix + ">", event.FailedPrefix + ">",
	"rehome.shard.>", event.HealProgress,
}

// callTimeout bounds one status call; a bus that does not answer within it
// is reported unreachable.
const callTimeout = 2 * time.Second

// poll asks the planner for the cluster's status and the heal's progress,
// and reads the heal switch, every cfg.Poll until ctx ends.
func (c *Console) poll(ctx context.Context) {
	t := time.NewTicker(c.cfg.Poll)
	defer t.Stop()
	for {
		c.pollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollOnce runs one round of calls and publishes the result to the page.
func (c *Console) pollOnce(ctx context.Context) {
	round, err := c.fetch(ctx)
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	if err != nil {
		if c.busErr == "" {
			c.log.Warn("bus unreachable", "err", err)
		}
		c.busErr = err.Error()
	} else {
		if c.busErr != "" {
			c.log.Info("bus reachable again")
		}
		c.busErr = ""
		c.last = round
	}
	c.mu.Unlock()
	c.notify()
}

// polled is what one round of calls found.
type polled struct {
	status  control.ClusterStatus
	heal    event.Progress
	hswitch *control.HealSwitch
	drains  []control.DrainStatus
	balance control.BalanceStatus
}

// fetch makes the calls of one round: the cluster's status, the heal's
// progress, the drains under way, the rebalancer's status and the heal switch.
func (c *Console) fetch(ctx context.Context) (*polled, error) {
	if !c.nc.IsConnected() {
		return nil, errors.New("not connected to NATS")
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var r polled
	var drains control.DrainReply
	calls := []struct {
		what, subject string
		req, reply    any
	}{
		{"cluster status", event.CtlStatus, control.StatusRequest{}, &r.status},
		{"heal status", event.CtlHealStatus, control.HealStatusRequest{}, &r.heal},
		{"drain status", control.CtlDrainStatus, control.NodeRequest{}, &drains},
		{"rebalance status", control.CtlRebalanceStatus, struct{}{}, &r.balance},
	}
	for _, call := range calls {
		if err := bus.Call(cctx, c.nc, call.subject, call.req, call.reply); err != nil {
			return nil, fmt.Errorf("%s: %w", call.what, err)
		}
	}
	r.drains = drains.Drains
	sw, err := c.readSwitch(cctx)
	if err != nil {
		return nil, err
	}
	r.hswitch = sw
	return &r, nil
}

// readSwitch returns the heal switch record, or nil when no one ever
// flipped it.
func (c *Console) readSwitch(ctx context.Context) (*control.HealSwitch, error) {
	kv, err := c.js.KeyValue(ctx, bus.BucketControl)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", bus.BucketControl, err)
	}
	e, err := kv.Get(ctx, control.HealSwitchKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the heal switch: %w", err)
	}
	var sw control.HealSwitch
	if err := json.Unmarshal(e.Value(), &sw); err != nil {
		return nil, fmt.Errorf("read the heal switch: %w", err)
	}
	return &sw, nil
}

// follow folds the events stream from one window ago, then live, until ctx
// ends. When the stream read fails (the bus went away) it starts over from
// a fresh fold once the bus answers again: the console keeps no state.
func (c *Console) follow(ctx context.Context) {
	for ctx.Err() == nil {
		c.mu.Lock()
		c.hlog, c.chart = history.NewLog(), &series{window: c.cfg.Window}
		c.mu.Unlock()
		err := history.Follow(ctx, c.js, c.now().Add(-c.cfg.Window), followSubjects, c.fold)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		c.log.Warn("following the events stream; starting over", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// fold adds one event to the incidents and, for progress, to the chart.
func (c *Console) fold(e history.Event) {
	c.mu.Lock()
	c.hlog.Add(e)
	if e.Subject == event.HealProgress {
		var p event.Progress
		if err := event.Decode(e.Data, &p); err == nil {
			t := p.TS
			if t.IsZero() {
				t = e.Time
			}
			c.chart.add(t, p, c.now())
		}
	}
	c.mu.Unlock()
	c.notify()
}

// View assembles what the page shows now.
func (c *Console) View() View {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	v := View{Time: now.UTC(), Bus: "ok", TraceUI: c.cfg.TraceUI, WindowSeconds: c.cfg.Window.Seconds(),
		Drains: []control.DrainStatus{}}
	if r := c.last; r != nil {
		v.Status, v.Heal, v.Switch, v.Balance = &r.status, &r.heal, r.hswitch, &r.balance
		if r.drains != nil {
			v.Drains = r.drains
		}
	}
	if c.busErr != "" {
		v.Bus, v.BusError = "unreachable", c.busErr
	}
	c.chart.trim(now)
	v.Chart = c.chart.snapshot()
	v.Incidents = c.hlog.Incidents(now.Add(-c.cfg.Window))
	if v.Incidents == nil {
		v.Incidents = []history.Incident{}
	}
	return v
}
