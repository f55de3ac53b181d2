package s3

import (
	"bytes"
	"context"
	"io"
	"sort"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	miniocreds "github.com/minio/minio-go/v7/pkg/credentials"
)

// minioClient returns a minio-go client for the gateway (path style, plain HTTP).
func (c *testCluster) minioClient(t *testing.T) *minio.Client {
	t.Helper()
	mc, err := minio.New(strings.TrimPrefix(c.endpoint, "http://"), &minio.Options{
		Creds: miniocreds.NewStaticV4(testAccess, testSecret, ""), Secure: false, Region: "us-east-1",
		BucketLookup: minio.BucketLookupPath, MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

func TestMinioClient(t *testing.T) {
	c := startCluster(t, 6, 3)
	ctx := context.Background()
	mc := c.minioClient(t)
	defer no500(t, c.gw)

	if err := mc.MakeBucket(ctx, "minio-bucket", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("MakeBucket: %v", err)
	}
	if ok, err := mc.BucketExists(ctx, "minio-bucket"); err != nil || !ok {
		t.Fatalf("BucketExists: %v %v", ok, err)
	}
	err := mc.MakeBucket(ctx, "minio-bucket", minio.MakeBucketOptions{})
	if minio.ToErrorResponse(err).Code != "BucketAlreadyOwnedByYou" {
		t.Errorf("MakeBucket twice: %v", err)
	}

	// 17 MiB with minio-go's multipart, 5 MiB parts: 4 parts.
	data := randomBytes(t, 17<<20)
	info, err := mc.PutObject(ctx, "minio-bucket", "deep/dir/big.bin", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		PartSize: 5 << 20, ContentType: "application/x-minio", UserMetadata: map[string]string{"origin": "minio"}})
	if err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	if want := strings.Trim(multipartETag(data, 5<<20), `"`); info.ETag != want || info.Size != int64(len(data)) {
		t.Errorf("PutObject: etag %s size %d, want %s %d", info.ETag, info.Size, want, len(data))
	}
	obj, err := mc.GetObject(ctx, "minio-bucket", "deep/dir/big.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetObject: %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	st, err := mc.StatObject(ctx, "minio-bucket", "deep/dir/big.bin", minio.StatObjectOptions{})
	if err != nil || st.ETag != info.ETag || st.ContentType != "application/x-minio" || st.UserMetadata["Origin"] != "minio" {
		t.Errorf("StatObject: %v etag %s type %s meta %v", err, st.ETag, st.ContentType, st.UserMetadata)
	}
	// A ranged read through minio-go's ReaderAt.
	part := make([]byte, 1000)
	obj, err = mc.GetObject(ctx, "minio-bucket", "deep/dir/big.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.ReadAt(part, 5<<20-500); err != nil || !bytes.Equal(part, data[5<<20-500:5<<20+500]) {
		t.Errorf("ReadAt across a part boundary: %v", err)
	}
	obj.Close()

	small := []string{"a.txt", "deep/b.txt", "deep/dir/c.txt", "deep/other/d.txt", "z z/ü.txt"}
	for _, k := range small {
		if _, err := mc.PutObject(ctx, "minio-bucket", k, strings.NewReader(k), int64(len(k)), minio.PutObjectOptions{}); err != nil {
			t.Fatalf("PutObject %s: %v", k, err)
		}
	}
	list := func(prefix string, recursive, v1 bool) []string {
		var out []string
		for o := range mc.ListObjects(ctx, "minio-bucket", minio.ListObjectsOptions{Prefix: prefix, Recursive: recursive, UseV1: v1, MaxKeys: 2}) {
			if o.Err != nil {
				t.Fatalf("ListObjects %q: %v", prefix, o.Err)
			}
			out = append(out, o.Key)
		}
		return out
	}
	all := append([]string{"deep/dir/big.bin"}, small...)
	sort.Strings(all)
	for _, v1 := range []bool{false, true} {
		if got := list("", true, v1); !equalStrings(got, all) {
			t.Errorf("recursive (v1 %v): %q, want %q", v1, got, all)
		}
		if got, want := list("", false, v1), []string{"a.txt", "deep/", "z z/"}; !equalStrings(got, want) {
			t.Errorf("top level (v1 %v): %q, want %q", v1, got, want)
		}
		if got, want := list("deep/", false, v1), []string{"deep/b.txt", "deep/dir/", "deep/other/"}; !equalStrings(got, want) {
			t.Errorf("deep/ (v1 %v): %q, want %q", v1, got, want)
		}
	}

	if err := mc.RemoveObject(ctx, "minio-bucket", "deep/dir/big.bin", minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("RemoveObject: %v", err)
	}
	if _, err := mc.StatObject(ctx, "minio-bucket", "deep/dir/big.bin", minio.StatObjectOptions{}); minio.ToErrorResponse(err).Code != "NoSuchKey" {
		t.Errorf("StatObject of a removed object: %v, want NoSuchKey", err)
	}
	objs := make(chan minio.ObjectInfo, len(small))
	for _, k := range small {
		objs <- minio.ObjectInfo{Key: k}
	}
	close(objs)
	for e := range mc.RemoveObjects(ctx, "minio-bucket", objs, minio.RemoveObjectsOptions{}) {
		t.Errorf("RemoveObjects: %s: %v", e.ObjectName, e.Err)
	}
	if err := mc.RemoveBucket(ctx, "minio-bucket"); err != nil {
		t.Errorf("RemoveBucket right after emptying it: %v", err)
	}
	if ok, err := mc.BucketExists(ctx, "minio-bucket"); err != nil || ok {
		t.Errorf("BucketExists after RemoveBucket: %v %v", ok, err)
	}
}
