package detector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/services/detector/liveness"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// loadHold reads the guard state recorded in the detector bucket, so that a
// restarted detector announces a release of a hold it (or a dead peer) left.
func (s *Service) loadHold(ctx context.Context) error {
	e, err := s.dkv.Get(ctx, model.HoldKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("detector: read %s/%s: %w", bus.BucketDetector, model.HoldKey, err)
	}
	var rec model.Hold
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.V != model.Version {
		s.malformed("hold", model.HoldKey, fmt.Errorf("%w: hold record v%d: %v", event.ErrMalformed, rec.V, err))
		return nil
	}
	s.holdAnnounced, s.holdSince = rec.Held, rec.Since
	return nil
}

// seedOverride applies the operator's override (if any) before the first
// tick and returns the watcher, positioned after the initial value.
func (s *Service) seedOverride(ctx context.Context) (jetstream.KeyWatcher, error) {
	w, err := s.dkv.Watch(ctx, model.OverrideKey)
	if err != nil {
		return nil, fmt.Errorf("detector: watch %s/%s: %w", bus.BucketDetector, model.OverrideKey, err)
	}
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("detector: watch %s/%s closed", bus.BucketDetector, model.OverrideKey)
			}
			if e == nil {
				return w, nil
			}
			s.onOverride(e)
		}
	}
}

// onOverride applies a change of the override key: a put sets the override,
// a delete or purge cancels it. A malformed record is counted and ignored
// (the override in force stays).
func (s *Service) onOverride(e jetstream.KeyValueEntry) {
	var until time.Time
	by := ""
	if e.Operation() == jetstream.KeyValuePut {
		var o model.HoldOverride
		if err := json.Unmarshal(e.Value(), &o); err != nil {
			s.malformed("override", e.Key(), fmt.Errorf("%w: %w", event.ErrMalformed, err))
			return
		}
		if o.V != model.Version || o.Until.IsZero() {
			s.malformed("override", e.Key(), fmt.Errorf("%w: override v%d until %s", event.ErrMalformed, o.V, o.Until))
			return
		}
		until, by = o.Until, o.By
	}
	s.mu.Lock()
	s.tr.Override(until)
	s.mu.Unlock()
	if until.IsZero() {
		s.log.Info("operator override of the mass-silence guard cancelled")
		return
	}
	s.log.Warn("operator override of the mass-silence guard", "until", until.UTC().Format(time.RFC3339), "by", by,
		"in_force", s.now().Before(until))
}

// announceHold records the guard's new state in the detector bucket and
// publishes it on rehome.detector.held or .released. On failure it leaves
// holdAnnounced unchanged so the next tick retries; retries are idempotent
// (the event's message id names the hold and the override).
func (s *Service) announceHold(ctx context.Context, h liveness.Hold, now time.Time) {
	since := now
	subject := event.DetectorReleased
	msgID := "released-" + nanos(s.holdSince) + "-" + nanos(h.OverrideUntil)
	if h.Held {
		since = h.Since
		subject = event.DetectorHeld
		msgID = "held-" + nanos(h.Since) + "-" + nanos(h.OverrideUntil)
	}
	err := s.writeHold(ctx, h, since, subject, msgID)
	if err != nil {
		s.holdTries++
		s.m.failedPubs.Inc()
		if s.holdTries == 1 || s.holdTries%50 == 0 {
			s.log.Warn("could not announce the guard state; will retry", "held", h.Held, "tries", s.holdTries, "err", err)
		}
		return
	}
	s.holdTries = 0
	s.holdAnnounced = h.Held
	if h.Held {
		s.holdSince = h.Since
		s.log.Warn("holding down verdicts", "reason", h.Reason, "silent", h.Nodes)
	} else {
		s.log.Info("down verdicts flow again", "reason", h.Reason)
	}
}

func (s *Service) writeHold(ctx context.Context, h liveness.Hold, since time.Time, subject, msgID string) error {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rec := model.Hold{
		V: model.Version, Held: h.Held, Reason: h.Reason, Since: since.UTC(),
		Silent: h.Silent, Judged: h.Judged,
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode hold: %w", err)
	}
	if _, err := s.dkv.Put(octx, model.HoldKey, data); err != nil {
		return fmt.Errorf("write %s/%s: %w", bus.BucketDetector, model.HoldKey, err)
	}
	ev := &event.Hold{
		Header: event.Header{TS: s.now().UTC()},
		Held:   h.Held, Reason: h.Reason, Silent: h.Silent, Judged: h.Judged, Nodes: h.Nodes,
		Detector: s.nc.Opts.Name,
	}
	return bus.Publish(octx, s.js, subject, ev, msgID)
}

// nanos renders t as Unix nanoseconds, "0" for the zero time.
func nanos(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}
