package s3

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	s3sdk "github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestAbandonedUploadsAreCollectedAfterTheGrace: an upload with a recent part
// survives a sweep; once the grace has passed since its last part, its parts
// (and their shards) and its record are gone.
func TestAbandonedUploadsAreCollectedAfterTheGrace(t *testing.T) {
	c := startCluster(t, 3, 3)
	ctx := context.Background()
	cli := c.sdk(testSecret)
	if _, err := cli.CreateBucket(ctx, &s3sdk.CreateBucketInput{Bucket: aws.String("junk")}); err != nil {
		t.Fatal(err)
	}
	up, err := cli.CreateMultipartUpload(ctx, &s3sdk.CreateMultipartUploadInput{Bucket: aws.String("junk"), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UploadPart(ctx, &s3sdk.UploadPartInput{Bucket: aws.String("junk"), Key: aws.String("big"), UploadId: up.UploadId,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(randomBytes(t, 1<<20))}); err != nil {
		t.Fatal(err)
	}
	mp := c.gw.mp
	if n, err := mp.collectOnce(ctx); err != nil || n != 0 {
		t.Fatalf("sweep within the grace dropped %d uploads (%v)", n, err)
	}
	later := time.Now().Add(mp.grace + time.Hour)
	mp.now = func() time.Time { return later }
	if n, err := mp.collectOnce(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the grace dropped %d uploads (%v), want 1", n, err)
	}
	if _, err := cli.ListParts(ctx, &s3sdk.ListPartsInput{Bucket: aws.String("junk"), Key: aws.String("big"), UploadId: up.UploadId}); apiCode(err) != "NoSuchUpload" {
		t.Errorf("list parts of a collected upload: %v, want NoSuchUpload", err)
	}
	if empty, err := mp.b.index.Empty(ctx, partsPrefix(aws.ToString(up.UploadId))); err != nil || !empty {
		t.Errorf("parts left after the sweep (empty %v, %v)", empty, err)
	}
	ups, err := cli.ListMultipartUploads(ctx, &s3sdk.ListMultipartUploadsInput{Bucket: aws.String("junk")})
	if err != nil || len(ups.Uploads) != 0 {
		t.Errorf("uploads after the sweep: %v, %v", ups, err)
	}
}
