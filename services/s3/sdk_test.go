package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	s3sdk "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// apiCode returns the S3 error code of err ("" if none).
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestSDKBucketAndObjectRoundTrip(t *testing.T) {
	c := startCluster(t, 6, 3)
	ctx := context.Background()
	cli := c.sdk(testSecret)
	if _, err := cli.CreateBucket(ctx, &s3sdk.CreateBucketInput{Bucket: aws.String("photos")}); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 9<<20+123) // three chunks, the last short
	put, err := cli.PutObject(ctx, &s3sdk.PutObjectInput{
		Bucket: aws.String("photos"), Key: aws.String("2026/ünï cödé.bin"), Body: bytes.NewReader(data),
		ContentType: aws.String("application/x-test"), Metadata: map[string]string{"owner": "ada"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("photos"), Key: aws.String("2026/ünï cödé.bin")})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(got.Body)
	got.Body.Close()
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("read back %d bytes (%v), want the %d written", len(body), err, len(data))
	}
	if aws.ToString(got.ETag) != aws.ToString(put.ETag) || aws.ToString(got.ContentType) != "application/x-test" || got.Metadata["owner"] != "ada" {
		t.Errorf("GET etag %s type %s meta %v; PUT etag %s", aws.ToString(got.ETag), aws.ToString(got.ContentType), got.Metadata, aws.ToString(put.ETag))
	}
	rng, err := cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("photos"), Key: aws.String("2026/ünï cödé.bin"), Range: aws.String("bytes=4194300-4194310")})
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(rng.Body)
	rng.Body.Close()
	if !bytes.Equal(part, data[4194300:4194311]) {
		t.Errorf("range across a chunk boundary: got %x, want %x", part, data[4194300:4194311])
	}
	list, err := cli.ListObjectsV2(ctx, &s3sdk.ListObjectsV2Input{Bucket: aws.String("photos")})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Contents) != 1 || aws.ToString(list.Contents[0].Key) != "2026/ünï cödé.bin" || aws.ToInt64(list.Contents[0].Size) != int64(len(data)) {
		t.Errorf("listing: %+v", list.Contents)
	}
	_, err = cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("photos"), Key: aws.String("nope")})
	if apiCode(err) != "NoSuchKey" {
		t.Errorf("missing key: %v, want NoSuchKey", err)
	}
	_, err = c.sdk("wrong-secret").ListBuckets(ctx, &s3sdk.ListBucketsInput{})
	if apiCode(err) != "SignatureDoesNotMatch" {
		t.Errorf("wrong secret: %v, want SignatureDoesNotMatch", err)
	}
	if _, err := cli.DeleteBucket(ctx, &s3sdk.DeleteBucketInput{Bucket: aws.String("photos")}); apiCode(err) != "BucketNotEmpty" {
		t.Errorf("delete a full bucket: %v, want BucketNotEmpty", err)
	}
	_ = strings.Repeat
}
