package mover

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// Why a task went to the dead-letter subject: the values of the "reason"
// label of rehome_mover_dead_letters_total.
const (
	DeadMalformed     = "malformed"      // the message was not a task this mover may run
	DeadPermanent     = "permanent"      // an attempt failed in a way retrying cannot fix
	DeadMaxDeliveries = "max_deliveries" // the task used up its MaxDeliver attempts
)

// deadLetter is what a terminated task message becomes on the dead-letter
// subject.
type deadLetter struct {
	subject string
	msgID   string
	event   *event.Dead
}

// buryAs builds the dead letter of the task message data, queued on subject at
// stream sequence seq and delivered deliveries times, terminated for reason.
// It is a pure function: the payload is copied (the message's buffer may be
// reused once it is answered), kept verbatim as JSON when it is JSON and short
// enough, otherwise cut to event.MaxDeadPayload raw bytes. The target is the
// subject's last token when that is a node id, else the payload's "target"
// when that is one, else event.DeadUnknownTarget. The message id is stable
// for one stream message, so a dead letter published again is deduplicated.
func buryAs(subject string, data []byte, seq uint64, deliveries int, reason string) deadLetter {
	d := &event.Dead{
		Size:       len(data),
		Subject:    subject,
		Target:     deadTarget(subject, data),
		Reason:     reason,
		Deliveries: deliveries,
		StreamSeq:  seq,
	}
	if len(data) <= event.MaxDeadPayload && json.Valid(data) {
		d.Task = json.RawMessage(bytes.Clone(data))
	} else {
		d.Payload = bytes.Clone(data[:min(len(data), event.MaxDeadPayload)])
	}
	return deadLetter{
		subject: event.DeadPrefix + d.Target,
		msgID:   fmt.Sprintf("dead-%d-%08x", seq, crc32.ChecksumIEEE(data)),
		event:   d,
	}
}

// deadTarget finds the node a task message was meant for (see buryAs).
func deadTarget(subject string, data []byte) string {
	if strings.HasPrefix(subject, event.TaskPrefix) {
		if tok := event.LastToken(subject); model.ValidateNodeID(tok) == nil {
			return tok
		}
	}
	var t struct {
		Target string `json:"target"`
	}
	if len(data) <= event.MaxDeadPayload && json.Unmarshal(data, &t) == nil && model.ValidateNodeID(t.Target) == nil {
		return t.Target
	}
	return event.DeadUnknownTarget
}

// bury publishes the dead letter of a task message (see buryAs) and counts it
// under kind (DeadMalformed, DeadPermanent, DeadMaxDeliveries). It blocks until
// the events stream stored it; on error nothing was counted and the caller
// must keep the task (hand it back) so that it is not lost.
func (s *Service) bury(ctx context.Context, subject string, data []byte, seq uint64, deliveries int, kind, reason string) error {
	dl := buryAs(subject, data, seq, deliveries, kind+": "+reason)
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := bus.Publish(pctx, s.js, dl.subject, dl.event, dl.msgID); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	s.m.dead.WithLabelValues(kind).Inc()
	s.log.Warn("task sent to the dead-letter subject", "subject", dl.subject, "reason", dl.event.Reason,
		"queued_on", subject, "stream_seq", seq, "deliveries", deliveries)
	return nil
}
