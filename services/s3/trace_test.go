package s3

import (
	"bytes"
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	s3sdk "github.com/aws/aws-sdk-go-v2/service/s3"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestOneSpanPerRequestCarriesIntoShardWrites: a PUT is one server span, and
// the shard writes it makes to the storage nodes are in its trace.
func TestOneSpanPerRequestCarriesIntoShardWrites(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	c := startCluster(t, 3, 3)
	ctx := context.Background()
	cli := c.sdk(testSecret)
	if _, err := cli.CreateBucket(ctx, &s3sdk.CreateBucketInput{Bucket: aws.String("traced")}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.PutObject(ctx, &s3sdk.PutObjectInput{Bucket: aws.String("traced"), Key: aws.String("k"), Body: bytes.NewReader(randomBytes(t, 6<<20))}); err != nil {
		t.Fatal(err)
	}
	var put sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "s3 PutObject" {
			put = s
		}
	}
	if put == nil || put.SpanKind() != trace.SpanKindServer {
		t.Fatalf("no server span for the PUT among %d spans", len(rec.Ended()))
	}
	writes := 0
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == put.SpanContext().TraceID() && s.SpanKind() == trace.SpanKindClient {
			writes++
		}
	}
	if writes < 6 { // two chunks, three replicas each
		t.Errorf("%d client spans in the PUT's trace, want the 6 shard writes", writes)
	}
}
