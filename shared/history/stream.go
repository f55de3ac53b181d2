package history

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/telemetry"
)

// Follow reads the events stream from since (only subjects matching one of
// subjects; nil means every subject), calls fn for each message in stream
// order, then keeps following new ones until ctx ends, when it returns nil.
// It blocks; fn runs on the calling goroutine. An ordered consumer rides
// out reconnects by itself.
func Follow(ctx context.Context, js jetstream.JetStream, since time.Time, subjects []string, fn func(Event)) error {
	return consume(ctx, js, since, subjects, false, fn)
}

// Read is Follow that returns once it has delivered every message the
// stream held when it started (nil), or when ctx ends (ctx's error).
func Read(ctx context.Context, js jetstream.JetStream, since time.Time, subjects []string, fn func(Event)) error {
	return consume(ctx, js, since, subjects, true, fn)
}

// firstWait is how long Read waits for a first message when the stream has
// messages but perhaps none matching its subjects.
const firstWait = 2 * time.Second

func consume(ctx context.Context, js jetstream.JetStream, since time.Time, subjects []string, stopAtEnd bool, fn func(Event)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	var last uint64 // Read: the stream's last sequence when it started
	if stopAtEnd {
		st, err := js.Stream(ctx, bus.StreamEvents)
		if err != nil {
			return fmt.Errorf("history: read %s: %w", bus.StreamEvents, err)
		}
		state := st.CachedInfo().State
		if last = state.LastSeq; state.Msgs == 0 || state.LastTime.Before(since) {
			return nil
		}
	}
	cons, err := js.OrderedConsumer(ctx, bus.StreamEvents, cfg)
	if err != nil {
		return fmt.Errorf("history: read %s: %w", bus.StreamEvents, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return fmt.Errorf("history: read %s: %w", bus.StreamEvents, err)
	}
	defer it.Stop()
	for got := false; ; got = true {
		nctx, cancel := ctx, context.CancelFunc(func() {})
		if stopAtEnd && !got {
			nctx, cancel = context.WithTimeout(ctx, firstWait)
		}
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			if stopAtEnd {
				return ctx.Err()
			}
			return nil
		case nctx.Err() != nil:
			return nil // Read: nothing matched
		default:
			return fmt.Errorf("history: read %s: %w", bus.StreamEvents, err)
		}
		e := Event{Subject: m.Subject(), Data: m.Data()}
		meta, merr := m.Metadata()
		if merr == nil {
			e.Time = meta.Timestamp.UTC()
		}
		if sc := trace.SpanContextFromContext(telemetry.Extract(ctx, m.Headers())); sc.HasTraceID() {
			e.TraceID = sc.TraceID().String()
		}
		fn(e)
		if stopAtEnd && merr == nil && (meta.NumPending == 0 || meta.Sequence.Stream >= last) {
			return nil
		}
	}
}
