package detector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// disconnectEvent is the part of the server's client-disconnect advisory
// (io.nats.server.advisory.v1.client_disconnect) the detector reads.
type disconnectEvent struct {
	Type   string `json:"type"`
	Client struct {
		Name    string `json:"name"`
		Account string `json:"acc"`
	} `json:"client"`
	Reason string `json:"reason"`
}

const disconnectType = "io.nats.server.advisory.v1.client_disconnect"

// pingSubject is answered only inside the system account: it tells a usable
// SystemURL from one that reaches an ordinary account.
const pingSubject = "$SYS.REQ.SERVER.PING.STATSZ"

// listenDisconnects connects to Config.SystemURL, checks that it reaches the
// system account and subscribes to the disconnect events. The caller closes
// the returned connection.
func (s *Service) listenDisconnects(ctx context.Context) (*nats.Conn, error) {
	where := redacted(s.cfg.SystemURL)
	name := s.nc.Opts.Name
	if name == "" {
		name = "detector"
	}
	nc, err := bus.Connect(s.cfg.SystemURL, name+"-system", opTimeout)
	if err != nil {
		// bus.Connect names the URL, credentials included: name it redacted.
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return nil, fmt.Errorf("detector: connect to the system account at %s: %w", where, err)
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := nc.RequestWithContext(pctx, pingSubject, nil); err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("detector: %s does not reach the NATS system account (server ping: %w)", where, err)
	}
	if _, err := nc.Subscribe(disconnectSubject, s.onDisconnectMsg); err != nil {
		nc.Close()
		return nil, fmt.Errorf("detector: subscribe %s: %w", disconnectSubject, err)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("detector: subscribe %s: %w", disconnectSubject, err)
	}
	s.log.Info("listening to client disconnects", "url", where)
	return nc, nil
}

// onDisconnectMsg handles one disconnect advisory (on a NATS goroutine):
// the client's name goes to the Run loop when it could be a node id. Other
// clients (CLI, services) are ignored. Thread-safe, never blocks.
func (s *Service) onDisconnectMsg(msg *nats.Msg) {
	var ev disconnectEvent
	if len(msg.Data) > maxDisconnectBytes {
		s.malformed("disconnect", msg.Subject, fmt.Errorf("%w: %d bytes, limit %d", event.ErrMalformed, len(msg.Data), maxDisconnectBytes))
		return
	}
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		s.malformed("disconnect", msg.Subject, fmt.Errorf("%w: %w", event.ErrMalformed, err))
		return
	}
	if ev.Type != disconnectType {
		s.malformed("disconnect", msg.Subject, fmt.Errorf("%w: type %q", event.ErrMalformed, ev.Type))
		return
	}
	if model.ValidateNodeID(ev.Client.Name) != nil {
		s.m.disconnects.WithLabelValues("ignored").Inc()
		return
	}
	select {
	case s.disc <- ev.Client.Name:
	default:
		s.m.disconnects.WithLabelValues("dropped").Inc()
		s.log.Debug("disconnect notice dropped: queue full", "client", ev.Client.Name)
	}
}

// onDisconnect suspects node at once if it is up (see
// liveness.Tracker.Disconnected) and announces the verdict.
func (s *Service) onDisconnect(ctx context.Context, node string) {
	if s.offline || !s.nc.IsConnected() {
		s.m.disconnects.WithLabelValues("ignored").Inc()
		return
	}
	now := s.now()
	s.mu.Lock()
	tr, ok := s.tr.Disconnected(node, now)
	s.mu.Unlock()
	if !ok {
		s.m.disconnects.WithLabelValues("ignored").Inc()
		return
	}
	s.m.disconnects.WithLabelValues("suspected").Inc()
	s.log.Info("connection to NATS closed: suspect at once", "node", node,
		"silent", tr.Silent.Round(time.Millisecond), "flaps", tr.Flaps, "grace", tr.Grace)
	s.backlog = append(s.backlog, pending{Transition: tr, at: now})
	s.flush(ctx)
}
