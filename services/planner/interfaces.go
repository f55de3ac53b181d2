package planner

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/event"
)

// The planner's consumer-side interfaces: what the adapter needs of the bus,
// narrowed to the calls it makes, so the seams between the bus and the
// decisions of package core are visible in one place.

// mapStore is the placement map as the adapter writes it: entries read with
// their revision, created, updated with a compare-and-set on the revision,
// deleted. Watching it is the view's input (see Service.open). A
// jetstream.KeyValue satisfies it. Calls block until ctx ends; all are
// safe for concurrent use.
type mapStore interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	Status(ctx context.Context) (jetstream.KeyValueStatus, error)
}

// taskQueue is the work-queue stream as the adapter reads it: its bounds,
// and one message by sequence (whether a task still waits there). A
// jetstream.Stream satisfies it.
type taskQueue interface {
	Info(ctx context.Context, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error)
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
}

// publisher publishes events and tasks with a dedup id (msgID "" for none).
// Publish waits for the stream's acknowledgement; PublishAck returns it
// (Duplicate set when msgID was seen within the dedup window).
type publisher interface {
	Publish(ctx context.Context, subject string, p event.Payload, msgID string) error
	PublishAck(ctx context.Context, subject string, p event.Payload, msgID string) (*jetstream.PubAck, error)
}

// jsPublisher publishes through JetStream (see bus.Publish).
type jsPublisher struct{ js jetstream.JetStream }

func (p jsPublisher) Publish(ctx context.Context, subject string, e event.Payload, msgID string) error {
	return bus.Publish(ctx, p.js, subject, e, msgID)
}

func (p jsPublisher) PublishAck(ctx context.Context, subject string, e event.Payload, msgID string) (*jetstream.PubAck, error) {
	return bus.PublishAck(ctx, p.js, subject, e, msgID)
}
