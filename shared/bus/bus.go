// Package bus connects rehome's services to NATS JetStream and owns the names
// and configuration of every stream and KV bucket. Ensure is idempotent: every
// service calls it at start, so whichever starts first creates the resources.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/telemetry"
)

// DefaultURL is where the CLI and services look for NATS unless told otherwise.
const DefaultURL = "nats://127.0.0.1:4222"

// EnvURL names the environment variable that overrides DefaultURL.
const EnvURL = "REHOME_NATS_URL"

// Stream and bucket names.
const (
	StreamHeartbeats = "REHOME_HEARTBEATS"
	StreamEvents     = "REHOME_EVENTS"
	StreamTasks      = "REHOME_TASKS"
	BucketNodes      = "rehome-nodes"
	BucketLiveness   = "rehome-liveness"
	BucketPlacement  = "rehome-placement"
	BucketObjects    = "rehome-objects"
	// BucketDetector holds the detectors' guard state and operator overrides
	// (model.HoldKey, model.OverrideKey).
	BucketDetector = "rehome-detector"
	// BucketControl holds operator switches (control.HealSwitchKey).
	BucketControl = "rehome-control"
	// BucketLease holds leases (key LeasePlanner: the acting planner); its
	// keys expire LeaseTTL after their last write.
	BucketLease = "rehome-lease"
	// BucketIndex holds the listing index: the object keys in byte order,
	// in linked pages (package listing). Only the acting planner writes it.
	BucketIndex = "rehome-index"
	// BucketS3 holds the S3 gateways' state: buckets ("bucket.<name>") and
	// multipart uploads ("upload.<id>", "part.<id>.<n>").
	BucketS3 = "rehome-s3"
	// LeasePlanner is the key of the planner lease in BucketLease.
	LeasePlanner = "planner"
	// MoverConsumer is the one durable consumer all movers share on StreamTasks.
	MoverConsumer = "movers"
	// PlannerConsumer is the planner's durable consumer of mover results.
	PlannerConsumer = "planner-results"
)

// EventsMaxAge and EventsMaxBytes bound StreamEvents: what is older, or
// beyond the newest EventsMaxBytes, is dropped.
const (
	EventsMaxAge   = 7 * 24 * time.Hour
	EventsMaxBytes = 1 << 30
)

// LeaseTTL is the TTL of BucketLease: the longest a lease may go without
// renewal.
const LeaseTTL = 5 * time.Second

// URL returns the NATS URL from flag (if set), then $REHOME_NATS_URL, then DefaultURL.
func URL(flag string) string {
	if flag != "" {
		return flag
	}
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// Connect dials NATS as the named client. It fails within timeout when no
// server answers, naming the URL; once connected it reconnects forever. It
// speaks TLS when $REHOME_TLS_CA is set or WithTLS says so (see tlsOptions).
func Connect(url, name string, timeout time.Duration, opts ...Option) (*nats.Conn, error) {
	tlsOpts, err := tlsOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", Redact(url), err)
	}
	nc, err := nats.Connect(url, append(tlsOpts,
		nats.Name(name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// Notice a dead server (or a cut network) in seconds, not minutes.
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(3),
		nats.RetryOnFailedConnect(false),
	)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", Redact(url), err)
	}
	return nc, nil
}

// Redact returns a NATS URL (or comma-separated list) with any password
// replaced by "xxxxx", for messages and logs.
func Redact(natsURL string) string {
	parts := strings.Split(natsURL, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		} else if strings.Contains(p, "@") {
			parts[i] = "(unparsable URL)"
		}
	}
	return strings.Join(parts, ",")
}

// Config sets how resources are created: Replicas is 1 on a single server and
// 3 on a NATS cluster.
type Config struct {
	Replicas int
}

func (c Config) replicas() int {
	if c.Replicas < 1 {
		return 1
	}
	return c.Replicas
}

// Ensure creates or updates every stream and KV bucket rehome uses. It is
// idempotent and safe to call from many processes at once. On a cluster still
// electing its leader it retries until ctx ends.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	r := cfg.replicas()
	streams := []jetstream.StreamConfig{{
		Name:              StreamHeartbeats,
		Subjects:          []string{event.HeartbeatPrefix + "*"},
		MaxMsgsPerSubject: 1,
		Storage:           jetstream.FileStorage,
		Replicas:          r,
		Discard:           jetstream.DiscardOld,
	}, {
		Name: StreamEvents,
		Subjects: []string{
			"rehome.node.>", "rehome.detector.>", event.PlanPrefix + ">", event.DonePrefix + ">", event.FailedPrefix + ">",
			event.DeadPrefix + ">", "rehome.shard.>", "rehome.heal.>",
		},
		// The events are also the nodes' history (rehome node history) and
		// the console's incidents: a week, or the newest GiB.
		MaxAge:     EventsMaxAge,
		MaxBytes:   EventsMaxBytes,
		Storage:    jetstream.FileStorage,
		Replicas:   r,
		Duplicates: 2 * time.Minute,
	}, {
		Name:       StreamTasks,
		Subjects:   []string{event.TaskPrefix + "*"},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   r,
		Duplicates: 2 * time.Minute,
	}}
	for _, sc := range streams {
		if err := retry(ctx, func(ctx context.Context) error {
			if st, err := js.Stream(ctx, sc.Name); err == nil && streamMatches(st.CachedInfo().Config, sc) {
				return nil
			}
			_, err := js.CreateOrUpdateStream(ctx, sc)
			return err
		}); err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
	}
	var kvs []jetstream.KeyValueConfig
	for _, b := range []string{BucketNodes, BucketLiveness, BucketPlacement, BucketObjects, BucketDetector, BucketControl, BucketIndex, BucketS3} {
		kvs = append(kvs, jetstream.KeyValueConfig{Bucket: b, Storage: jetstream.FileStorage, Replicas: r, History: 1})
	}
	kvs = append(kvs, jetstream.KeyValueConfig{Bucket: BucketLease, Storage: jetstream.FileStorage, Replicas: r, History: 1, TTL: LeaseTTL})
	for _, kc := range kvs {
		if err := retry(ctx, func(ctx context.Context) error {
			if kv, err := js.KeyValue(ctx, kc.Bucket); err == nil && bucketMatches(ctx, kv, kc) {
				return nil
			}
			_, err := js.CreateOrUpdateKeyValue(ctx, kc)
			return err
		}); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", kc.Bucket, err)
		}
	}
	return nil
}

// streamMatches reports whether an existing stream already has every setting
// Ensure would give it, so a service whose bus user may not create or update
// streams (see package access) can start once the bootstrap made them.
func streamMatches(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention &&
		(have.MaxMsgsPerSubject == want.MaxMsgsPerSubject || want.MaxMsgsPerSubject == 0 && have.MaxMsgsPerSubject == -1) &&
		(want.MaxAge == 0 || have.MaxAge == want.MaxAge) &&
		(want.MaxBytes == 0 || have.MaxBytes == want.MaxBytes) &&
		have.Storage == want.Storage &&
		have.Replicas == max(want.Replicas, 1) &&
		have.Discard == want.Discard &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates)
}

// bucketMatches is streamMatches for a KV bucket.
func bucketMatches(ctx context.Context, kv jetstream.KeyValue, want jetstream.KeyValueConfig) bool {
	st, err := kv.Status(ctx)
	if err != nil {
		return false
	}
	return st.History() == int64(want.History) && st.TTL() == want.TTL &&
		st.BackingStore() == "JetStream" && replicasOf(st) == max(want.Replicas, 1)
}

// replicasOf returns the replicas of a bucket's stream (0 if unknown).
func replicasOf(st jetstream.KeyValueStatus) int {
	if js, ok := st.(*jetstream.KeyValueBucketStatus); ok && js.StreamInfo() != nil {
		return js.StreamInfo().Config.Replicas
	}
	return 0
}

// retry calls f with a short per-attempt timeout until it succeeds or ctx ends.
func retry(ctx context.Context, f func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Call sends a control request to the acting planner and decodes the reply
// into out. It fails with a clear error when no planner answers before ctx ends.
func Call(ctx context.Context, nc *nats.Conn, subject string, req, out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", subject, err)
	}
	msg, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%s: no planner is running", subject)
		}
		return fmt.Errorf("%s: %w", subject, err)
	}
	return control.DecodeReply(msg.Data, out)
}

// Publish encodes p and publishes it to JetStream on subject, with msgID as the
// dedup id when non-empty. The trace context of ctx, if any, travels in the
// message headers (W3C traceparent; a consumer continues the trace with
// telemetry.Extract(ctx, msg.Headers()) or telemetry.StartProcess). It blocks
// until the stream acknowledges.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, p event.Payload, msgID string) error {
	_, err := PublishAck(ctx, js, subject, p, msgID)
	return err
}

// PublishAck is Publish returning the stream's acknowledgement, whose
// Duplicate is set when msgID was already seen inside the stream's
// duplicates window (nothing was stored).
func PublishAck(ctx context.Context, js jetstream.JetStream, subject string, p event.Payload, msgID string) (*jetstream.PubAck, error) {
	data, err := event.Encode(p)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	telemetry.Inject(ctx, msg.Header)
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack, nil
}
