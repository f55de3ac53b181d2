package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	s3sdk "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	dto "github.com/prometheus/client_model/go"

	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/shardapi"
)

// httpStatus returns the HTTP status of a failed SDK call (0 if none).
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// wantCode fails the test unless err is the S3 error code (and, when status
// is not 0, the HTTP status).
func wantCode(t *testing.T, what string, err error, code string, status int) {
	t.Helper()
	if apiCode(err) != code || (status != 0 && httpStatus(err) != status) {
		t.Errorf("%s: got %v (code %q, status %d), want %s %d", what, err, apiCode(err), httpStatus(err), code, status)
	}
}

// no500 fails the test if the gateway answered any request with a 5xx
// other than SlowDown's 503 (never an internal error).
func no500(t *testing.T, gws ...*Gateway) {
	t.Helper()
	for _, gw := range gws {
		mfs, err := gw.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "rehome_s3_requests_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if label(m, "code") == "500" {
					t.Errorf("the gateway answered %v requests of %s with 500", m.GetCounter().GetValue(), label(m, "op"))
				}
			}
		}
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// secondGateway starts another gateway on the cluster's bus and returns an
// SDK client for it.
func (c *testCluster) secondGateway() (*Gateway, *s3sdk.Client) {
	c.t.Helper()
	gcfg := DefaultConfig()
	gcfg.Listen, gcfg.AccessKey, gcfg.SecretKey = "127.0.0.1:0", testAccess, testSecret
	gw, err := New(c.ctx, gcfg, c.env.NC, c.env.JS, shardapi.New(testToken), quiet())
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	c.t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.t.Error("the second gateway did not stop")
		}
	})
	other := *c
	other.endpoint = "http://" + gw.Addr()
	return gw, other.sdk(testSecret)
}

// withHeader adds a header to every request of an SDK call.
func withHeader(name, value string) func(*s3sdk.Options) {
	return func(o *s3sdk.Options) {
		o.APIOptions = append(o.APIOptions, smithyhttp.AddHeaderValue(name, value))
	}
}

// multipartETag is S3's ETag of an object uploaded in parts of partSize.
func multipartETag(data []byte, partSize int) string {
	sum, n := md5.New(), 0
	for off := 0; off < len(data); off += partSize {
		p := md5.Sum(data[off:min(off+partSize, len(data))])
		sum.Write(p[:])
		n++
	}
	return fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(sum.Sum(nil)), n)
}

func md5ETag(b []byte) string { s := md5.Sum(b); return `"` + hex.EncodeToString(s[:]) + `"` }

func getBytes(t *testing.T, cli *s3sdk.Client, bucket, key string) ([]byte, *s3sdk.GetObjectOutput) {
	t.Helper()
	out, err := cli.GetObject(context.Background(), &s3sdk.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("read %s/%s: %v", bucket, key, err)
	}
	return b, out
}

func mustBucket(t *testing.T, cli *s3sdk.Client, name string, opts ...func(*s3sdk.Options)) {
	t.Helper()
	if _, err := cli.CreateBucket(context.Background(), &s3sdk.CreateBucketInput{Bucket: aws.String(name)}, opts...); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
}

func uploadPart(t *testing.T, cli *s3sdk.Client, bucket, key, id string, n int32, body []byte) string {
	t.Helper()
	out, err := cli.UploadPart(context.Background(), &s3sdk.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String(key),
		UploadId: aws.String(id), PartNumber: aws.Int32(n), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("upload part %d: %v", n, err)
	}
	return aws.ToString(out.ETag)
}

func completed(parts ...types.CompletedPart) *types.CompletedMultipartUpload {
	return &types.CompletedMultipartUpload{Parts: parts}
}

func part(n int32, etag string) types.CompletedPart {
	return types.CompletedPart{PartNumber: aws.Int32(n), ETag: aws.String(etag)}
}

func TestConformanceMultipart(t *testing.T) {
	c := startCluster(t, 6, 3)
	ctx := context.Background()
	cli := c.sdk(testSecret)
	gw2, cli2 := c.secondGateway()
	defer no500(t, c.gw, gw2)
	mustBucket(t, cli, "mpu")

	// The transfer manager: 40 MiB and a bit in 5 MiB parts.
	const partSize = 5 << 20
	data := randomBytes(t, 40<<20+777)
	tm := transfermanager.New(cli, func(o *transfermanager.Options) { o.PartSizeBytes = partSize; o.Concurrency = 3 })
	up, err := tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big/object.bin"),
		Body: bytes.NewReader(data), ContentType: aws.String("application/x-big")})
	if err != nil {
		t.Fatalf("transfer manager upload: %v", err)
	}
	want := multipartETag(data, partSize)
	if aws.ToString(up.ETag) != want || !strings.HasSuffix(want, `-9"`) {
		t.Errorf("multipart ETag %s, want %s", aws.ToString(up.ETag), want)
	}
	got, gout := getBytes(t, cli, "mpu", "big/object.bin")
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, not the %d written", len(got), len(data))
	}
	if aws.ToString(gout.ETag) != want || aws.ToString(gout.ContentType) != "application/x-big" {
		t.Errorf("GET ETag %s type %s, want %s application/x-big", aws.ToString(gout.ETag), aws.ToString(gout.ContentType), want)
	}
	head, err := cli2.HeadObject(ctx, &s3sdk.HeadObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big/object.bin")})
	if err != nil || aws.ToString(head.ETag) != want || aws.ToInt64(head.ContentLength) != int64(len(data)) {
		t.Errorf("HEAD: %v etag %s length %d", err, aws.ToString(head.ETag), aws.ToInt64(head.ContentLength))
	}
	_, err = cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big/object.bin"), IfNoneMatch: aws.String(want)})
	if httpStatus(err) != http.StatusNotModified {
		t.Errorf("GET If-None-Match its ETag: %v (status %d), want 304", err, httpStatus(err))
	}
	if _, err := cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big/object.bin"), IfNoneMatch: aws.String(`"0123"`)}); err != nil {
		t.Errorf("GET If-None-Match another ETag: %v", err)
	}
	// The transfer manager's download (ranged GETs in parallel).
	var dl bytes.Buffer
	gobj, err := tm.GetObject(ctx, &transfermanager.GetObjectInput{Bucket: aws.String("mpu"), Key: aws.String("big/object.bin")})
	if err != nil {
		t.Fatalf("transfer manager download: %v", err)
	}
	if _, err := io.Copy(&dl, gobj.Body); err != nil || !bytes.Equal(dl.Bytes(), data) {
		t.Errorf("transfer manager download: %d bytes (%v), want the %d written", dl.Len(), err, len(data))
	}

	// The raw calls: list parts and uploads, the errors of Complete, and an
	// upload begun on one gateway and finished on the other.
	p1, p2, p3 := randomBytes(t, partSize), randomBytes(t, partSize), randomBytes(t, 1000)
	cr, err := cli.CreateMultipartUpload(ctx, &s3sdk.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("raw key"),
		Metadata: map[string]string{"color": "blue"}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(cr.UploadId)
	e1 := uploadPart(t, cli, "mpu", "raw key", id, 1, p1)
	e2 := uploadPart(t, cli2, "mpu", "raw key", id, 2, p2) // the other gateway
	e3 := uploadPart(t, cli, "mpu", "raw key", id, 3, p3)
	if e1 != md5ETag(p1) || e2 != md5ETag(p2) || e3 != md5ETag(p3) {
		t.Errorf("part ETags %s %s %s, want their MD5s", e1, e2, e3)
	}
	lp, err := cli2.ListParts(ctx, &s3sdk.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("raw key"), UploadId: aws.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	if len(lp.Parts) != 3 || aws.ToInt32(lp.Parts[1].PartNumber) != 2 || aws.ToString(lp.Parts[1].ETag) != e2 || aws.ToInt64(lp.Parts[2].Size) != 1000 {
		t.Errorf("ListParts: %+v", lp.Parts)
	}
	lu, err := cli.ListMultipartUploads(ctx, &s3sdk.ListMultipartUploadsInput{Bucket: aws.String("mpu")})
	if err != nil {
		t.Fatal(err)
	}
	if len(lu.Uploads) != 1 || aws.ToString(lu.Uploads[0].UploadId) != id || aws.ToString(lu.Uploads[0].Key) != "raw key" {
		t.Errorf("ListMultipartUploads: %+v", lu.Uploads)
	}
	complete := func(cl *s3sdk.Client, parts ...types.CompletedPart) (*s3sdk.CompleteMultipartUploadOutput, error) {
		return cl.CompleteMultipartUpload(ctx, &s3sdk.CompleteMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("raw key"),
			UploadId: aws.String(id), MultipartUpload: completed(parts...)})
	}
	_, err = complete(cli, part(2, e2), part(1, e1), part(3, e3))
	wantCode(t, "Complete out of order", err, "InvalidPartOrder", 400)
	_, err = complete(cli, part(1, e1), part(2, md5ETag(p1)), part(3, e3))
	wantCode(t, "Complete with a wrong ETag", err, "InvalidPart", 400)
	_, err = complete(cli, part(1, e1), part(2, e2), part(4, e3))
	wantCode(t, "Complete with a part never uploaded", err, "InvalidPart", 400)
	_, err = complete(cli, part(1, e1), part(3, e3), part(2, e2))
	wantCode(t, "Complete out of order (small part inside)", err, "InvalidPartOrder", 400)
	e4 := uploadPart(t, cli, "mpu", "raw key", id, 4, p1)
	_, err = complete(cli, part(1, e1), part(3, e3), part(4, e4))
	wantCode(t, "Complete with a small part not last", err, "EntityTooSmall", 400)
	done, err := complete(cli2, part(1, e1), part(2, e2), part(3, e3))
	if err != nil {
		t.Fatalf("Complete on the second gateway: %v", err)
	}
	whole := append(append(append([]byte{}, p1...), p2...), p3...)
	if wantTag := multipartETag(whole, partSize); aws.ToString(done.ETag) != wantTag {
		t.Errorf("Complete ETag %s, want %s", aws.ToString(done.ETag), wantTag)
	}
	got, gout = getBytes(t, cli, "mpu", "raw key")
	if !bytes.Equal(got, whole) || gout.Metadata["color"] != "blue" {
		t.Errorf("the completed upload reads back %d bytes (want %d), meta %v", len(got), len(whole), gout.Metadata)
	}
	_, err = cli.ListParts(ctx, &s3sdk.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("raw key"), UploadId: aws.String(id)})
	wantCode(t, "ListParts of a completed upload", err, "NoSuchUpload", 404)

	// Abort.
	ab, err := cli2.CreateMultipartUpload(ctx, &s3sdk.CreateMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("dropped")})
	if err != nil {
		t.Fatal(err)
	}
	uploadPart(t, cli, "mpu", "dropped", aws.ToString(ab.UploadId), 1, p3)
	if _, err := cli.AbortMultipartUpload(ctx, &s3sdk.AbortMultipartUploadInput{Bucket: aws.String("mpu"), Key: aws.String("dropped"), UploadId: ab.UploadId}); err != nil {
		t.Fatalf("abort: %v", err)
	}
	_, err = cli2.ListParts(ctx, &s3sdk.ListPartsInput{Bucket: aws.String("mpu"), Key: aws.String("dropped"), UploadId: ab.UploadId})
	wantCode(t, "ListParts of an aborted upload", err, "NoSuchUpload", 404)
	if lu, err := cli.ListMultipartUploads(ctx, &s3sdk.ListMultipartUploadsInput{Bucket: aws.String("mpu")}); err != nil || len(lu.Uploads) != 0 {
		t.Errorf("uploads after complete and abort: %v %+v", err, lu)
	}
	_, err = cli.HeadObject(ctx, &s3sdk.HeadObjectInput{Bucket: aws.String("mpu"), Key: aws.String("dropped")})
	wantCode(t, "HEAD of an aborted upload's key", err, "NotFound", 404)

	// An erasure-coded bucket: a PUT and a multipart upload, and
	// STANDARD_IA in a replicated bucket.
	mustBucket(t, cli, "cold", withHeader(headerLayout, "ec=4+2"))
	ten := randomBytes(t, 10<<20)
	if _, err := cli.PutObject(ctx, &s3sdk.PutObjectInput{Bucket: aws.String("cold"), Key: aws.String("ten"), Body: bytes.NewReader(ten)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := getBytes(t, cli2, "cold", "ten"); !bytes.Equal(got, ten) {
		t.Error("10 MiB in the ec bucket does not read back")
	}
	ecData := data[:12<<20+5]
	if _, err := tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: aws.String("cold"), Key: aws.String("parts"), Body: bytes.NewReader(ecData)}); err != nil {
		t.Fatalf("multipart into the ec bucket: %v", err)
	}
	if got, _ := getBytes(t, cli, "cold", "parts"); !bytes.Equal(got, ecData) {
		t.Error("a multipart upload into the ec bucket does not read back")
	}
	if _, err := cli.PutObject(ctx, &s3sdk.PutObjectInput{Bucket: aws.String("mpu"), Key: aws.String("ia"), Body: bytes.NewReader(ten[:3<<20]),
		StorageClass: types.StorageClassStandardIa}); err != nil {
		t.Fatal(err)
	}
	for key, k := range map[string]int{"cold/ten": 4, "cold/parts": 4, "mpu/ia": 4, "mpu/big/object.bin": 0} {
		m, err := c.gw.client.Manifest(ctx, key)
		if err != nil || m.Layout.K != k {
			t.Errorf("%s: layout %v (%v), want k=%d", key, m.Layout, err, k)
		}
	}
}

// listRef is S3's answer to a listing, computed from the sorted keys.
func listRef(keys []string, prefix, delim, after string) (contents, prefixes []string) {
	seen := map[string]bool{}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) || k <= after {
			continue
		}
		if delim != "" {
			if i := strings.Index(k[len(prefix):], delim); i >= 0 {
				cp := k[:len(prefix)+i+len(delim)]
				if cp <= after {
					continue
				}
				if !seen[cp] {
					seen[cp] = true
					prefixes = append(prefixes, cp)
				}
				continue
			}
		}
		contents = append(contents, k)
	}
	return contents, prefixes
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestConformanceListing(t *testing.T) {
	c := startCluster(t, 6, 3)
	ctx := context.Background()
	cli := c.sdk(testSecret)
	defer no500(t, c.gw)
	mustBucket(t, cli, "tree")

	tops := []string{"alpha", "dir one", "ünïcode", "z"}
	subs := []string{"a", "b b", "ç", "d/e", "f"}
	var keys []string
	for i := 0; i < 1200; i++ {
		keys = append(keys, fmt.Sprintf("%s/%s/file %04d", tops[i%len(tops)], subs[(i/len(tops))%len(subs)], i))
	}
	keys = append(keys, "alpha/", "dir one/folder/", "top-level", "top level with space", "ünïcode/", "日本語/ファイル")
	sort.Strings(keys)
	var wg sync.WaitGroup
	work := make(chan string)
	var mu sync.Mutex
	var failed []string
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if _, err := cli.PutObject(ctx, &s3sdk.PutObjectInput{Bucket: aws.String("tree"), Key: aws.String(k), Body: strings.NewReader(k)}); err != nil {
					mu.Lock()
					failed = append(failed, k+": "+err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d puts failed, the first: %s", len(failed), failed[0])
	}

	// v2: paginate to the end with the paginator.
	listV2 := func(in s3sdk.ListObjectsV2Input) (contents, prefixes []string, pages int) {
		t.Helper()
		in.Bucket = aws.String("tree")
		p := s3sdk.NewListObjectsV2Paginator(cli, &in)
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("ListObjectsV2 %+v: %v", in, err)
			}
			pages++
			if n := len(out.Contents) + len(out.CommonPrefixes); in.MaxKeys != nil && n > int(*in.MaxKeys) {
				t.Errorf("a page of %d entries, max-keys %d", n, *in.MaxKeys)
			}
			if aws.ToBool(out.IsTruncated) != (out.NextContinuationToken != nil) {
				t.Errorf("IsTruncated %v with NextContinuationToken %v", aws.ToBool(out.IsTruncated), out.NextContinuationToken)
			}
			for _, o := range out.Contents {
				contents = append(contents, aws.ToString(o.Key))
			}
			for _, cp := range out.CommonPrefixes {
				prefixes = append(prefixes, aws.ToString(cp.Prefix))
			}
			if pages > 2000 {
				t.Fatal("the listing does not end")
			}
		}
		return contents, prefixes, pages
	}
	// S3 lists what was written at once (read-after-write), so no waiting.
	cases := []struct {
		prefix, delim, after string
		maxKeys              int32
	}{
		{"", "", "", 0},
		{"", "", "", 100},
		{"", "/", "", 0},
		{"", "/", "", 2},
		{"alpha/", "/", "", 3},
		{"dir one/", "", "", 77},
		{"dir one/", "/", "", 1},
		{"ünïcode/ç/", "", "", 13},
		{"z/d/", "/", "", 0},
		{"", "", "dir one/b b/file 0500", 250},
		{"", "/", "alpha/", 0},
		{"alpha/", "/", "alpha/b b/", 2},
		{"top", "", "", 1},
		{"none/", "/", "", 0},
	}
	for _, tc := range cases {
		in := s3sdk.ListObjectsV2Input{Prefix: aws.String(tc.prefix)}
		if tc.delim != "" {
			in.Delimiter = aws.String(tc.delim)
		}
		if tc.after != "" {
			in.StartAfter = aws.String(tc.after)
		}
		if tc.maxKeys > 0 {
			in.MaxKeys = aws.Int32(tc.maxKeys)
		}
		gotC, gotP, pages := listV2(in)
		wantC, wantP := listRef(keys, tc.prefix, tc.delim, tc.after)
		if !equalStrings(gotC, wantC) || !equalStrings(gotP, wantP) {
			t.Errorf("v2 prefix %q delimiter %q start-after %q max-keys %d: %d keys %d prefixes in %d pages, want %d and %d\n got prefixes %q\nwant %q",
				tc.prefix, tc.delim, tc.after, tc.maxKeys, len(gotC), len(gotP), pages, len(wantC), len(wantP), gotP, wantP)
		}
		if tc.maxKeys > 0 && pages < (len(wantC)+len(wantP))/int(tc.maxKeys) {
			t.Errorf("v2 max-keys %d: %d pages for %d entries", tc.maxKeys, pages, len(wantC)+len(wantP))
		}
	}
	// One page: KeyCount and the echoed parameters.
	one, err := cli.ListObjectsV2(ctx, &s3sdk.ListObjectsV2Input{Bucket: aws.String("tree"), Prefix: aws.String("z/"), Delimiter: aws.String("/"), MaxKeys: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt32(one.KeyCount) != 2 || !aws.ToBool(one.IsTruncated) || aws.ToString(one.Prefix) != "z/" || aws.ToString(one.Delimiter) != "/" || aws.ToInt32(one.MaxKeys) != 2 {
		t.Errorf("one page: KeyCount %d truncated %v prefix %q delimiter %q max-keys %d",
			aws.ToInt32(one.KeyCount), aws.ToBool(one.IsTruncated), aws.ToString(one.Prefix), aws.ToString(one.Delimiter), aws.ToInt32(one.MaxKeys))
	}

	// v1: marker and NextMarker (given with a delimiter, else the last key).
	for _, tc := range []struct {
		prefix, delim string
		maxKeys       int32
	}{{"", "", 97}, {"", "/", 2}, {"dir one/", "/", 1}, {"ünïcode/", "", 50}} {
		var gotC, gotP []string
		marker := ""
		for pages := 0; ; pages++ {
			in := &s3sdk.ListObjectsInput{Bucket: aws.String("tree"), Prefix: aws.String(tc.prefix), MaxKeys: aws.Int32(tc.maxKeys)}
			if tc.delim != "" {
				in.Delimiter = aws.String(tc.delim)
			}
			if marker != "" {
				in.Marker = aws.String(marker)
			}
			out, err := cli.ListObjects(ctx, in)
			if err != nil {
				t.Fatalf("ListObjects %+v: %v", in, err)
			}
			for _, o := range out.Contents {
				gotC = append(gotC, aws.ToString(o.Key))
			}
			for _, cp := range out.CommonPrefixes {
				gotP = append(gotP, aws.ToString(cp.Prefix))
			}
			if !aws.ToBool(out.IsTruncated) {
				break
			}
			marker = aws.ToString(out.NextMarker)
			if tc.delim == "" && marker == "" && len(out.Contents) > 0 {
				marker = aws.ToString(out.Contents[len(out.Contents)-1].Key) // S3 gives NextMarker only with a delimiter
			}
			if marker == "" || pages > 2000 {
				t.Fatalf("v1 prefix %q delimiter %q: truncated without a marker to go on", tc.prefix, tc.delim)
			}
		}
		wantC, wantP := listRef(keys, tc.prefix, tc.delim, "")
		if !equalStrings(gotC, wantC) || !equalStrings(gotP, wantP) {
			t.Errorf("v1 prefix %q delimiter %q max-keys %d: %d keys %d prefixes, want %d and %d (prefixes %q, want %q)",
				tc.prefix, tc.delim, tc.maxKeys, len(gotC), len(gotP), len(wantC), len(wantP), gotP, wantP)
		}
	}
	// The odd keys read back.
	for _, k := range []string{"alpha/", "top level with space", "日本語/ファイル"} {
		if got, _ := getBytes(t, cli, "tree", k); string(got) != k {
			t.Errorf("%q reads back %q", k, got)
		}
	}
}

// sdkAs returns an SDK client signing with another access key.
func (c *testCluster) sdkAs(access, secret string) *s3sdk.Client {
	return s3sdk.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(access, secret, ""), RetryMaxAttempts: 1},
		func(o *s3sdk.Options) { o.BaseEndpoint = aws.String(c.endpoint); o.UsePathStyle = true })
}

// xmlCode reads the Code of S3's XML error document.
func xmlCode(body []byte) string {
	var e struct{ Code string }
	_ = xml.Unmarshal(body, &e)
	return e.Code
}

func TestConformanceErrorsAndObjects(t *testing.T) {
	c := startCluster(t, 6, 3)
	ctx := context.Background()
	cli := c.sdk(testSecret)
	defer no500(t, c.gw)
	mustBucket(t, cli, "things")

	// Bucket names S3 forbids.
	for _, name := range []string{"Bad_Name", "ab", "UPPER", "-dash", "a..b", "192.168.1.1", strings.Repeat("a", 64)} {
		_, err := cli.CreateBucket(ctx, &s3sdk.CreateBucketInput{Bucket: aws.String(name)})
		wantCode(t, "create bucket "+name, err, "InvalidBucketName", 400)
	}
	_, err := cli.CreateBucket(ctx, &s3sdk.CreateBucketInput{Bucket: aws.String("things")})
	wantCode(t, "create a bucket twice", err, "BucketAlreadyOwnedByYou", 409)
	if _, err := cli.HeadBucket(ctx, &s3sdk.HeadBucketInput{Bucket: aws.String("things")}); err != nil {
		t.Errorf("HeadBucket: %v", err)
	}
	_, err = cli.HeadBucket(ctx, &s3sdk.HeadBucketInput{Bucket: aws.String("no-such-bucket")})
	wantCode(t, "HeadBucket of a missing bucket", err, "NotFound", 404)
	_, err = cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("no-such-bucket"), Key: aws.String("k")})
	wantCode(t, "GET in a missing bucket", err, "NoSuchBucket", 404)
	_, err = cli.PutObject(ctx, &s3sdk.PutObjectInput{Bucket: aws.String("no-such-bucket"), Key: aws.String("k"), Body: strings.NewReader("x")})
	wantCode(t, "PUT in a missing bucket", err, "NoSuchBucket", 404)
	_, err = cli.ListObjectsV2(ctx, &s3sdk.ListObjectsV2Input{Bucket: aws.String("no-such-bucket")})
	wantCode(t, "list a missing bucket", err, "NoSuchBucket", 404)

	// Keys: 1,024 bytes work, 1,025 do not.
	long := strings.Repeat("k", 1020) + "/ü" + "x" // 1,024 bytes
	if _, err := cli.PutObject(ctx, &s3sdk.PutObjectInput{Bucket: aws.String("things"), Key: aws.String(long), Body: strings.NewReader("long")}); err != nil {
		t.Errorf("a 1,024-byte key: %v", err)
	} else if got, _ := getBytes(t, cli, "things", long); string(got) != "long" {
		t.Errorf("a 1,024-byte key reads back %q", got)
	}
	_, err = cli.PutObject(ctx, &s3sdk.PutObjectInput{Bucket: aws.String("things"), Key: aws.String(long + "y"), Body: strings.NewReader("long")})
	wantCode(t, "a 1,025-byte key", err, "KeyTooLongError", 400)
	_, err = cli.CreateMultipartUpload(ctx, &s3sdk.CreateMultipartUploadInput{Bucket: aws.String("things"), Key: aws.String(long + "y")})
	wantCode(t, "a multipart upload to a 1,025-byte key", err, "KeyTooLongError", 400)

	// Objects: metadata, Content-Type, ranges, conditions.
	body := randomBytes(t, 100_000)
	put, err := cli.PutObject(ctx, &s3sdk.PutObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one"), Body: bytes.NewReader(body),
		ContentType: aws.String("image/png"), Metadata: map[string]string{"owner": "ada", "note": "héllo wörld"}})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(put.ETag) != md5ETag(body) {
		t.Errorf("PUT ETag %s, want %s", aws.ToString(put.ETag), md5ETag(body))
	}
	head, err := cli.HeadObject(ctx, &s3sdk.HeadObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(head.ContentType) != "image/png" || head.Metadata["owner"] != "ada" || head.Metadata["note"] != "héllo wörld" ||
		aws.ToInt64(head.ContentLength) != int64(len(body)) || aws.ToString(head.ETag) != md5ETag(body) || head.LastModified == nil {
		t.Errorf("HEAD: type %q meta %v length %d etag %s modified %v", aws.ToString(head.ContentType), head.Metadata,
			aws.ToInt64(head.ContentLength), aws.ToString(head.ETag), head.LastModified)
	}
	_, err = cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one"), Range: aws.String("bytes=100000-100010")})
	wantCode(t, "a range past the end", err, "InvalidRange", 416)
	rng, err := cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one"), Range: aws.String("bytes=99990-200000")})
	if err != nil {
		t.Fatalf("a range running past the end: %v", err)
	}
	tail, _ := io.ReadAll(rng.Body)
	rng.Body.Close()
	if !bytes.Equal(tail, body[99990:]) || aws.ToString(rng.ContentRange) != "bytes 99990-99999/100000" {
		t.Errorf("range running past the end: %d bytes, Content-Range %q", len(tail), aws.ToString(rng.ContentRange))
	}
	rng, err = cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one"), Range: aws.String("bytes=-10")})
	if err != nil {
		t.Fatalf("a suffix range: %v", err)
	}
	tail, _ = io.ReadAll(rng.Body)
	rng.Body.Close()
	if !bytes.Equal(tail, body[len(body)-10:]) {
		t.Errorf("suffix range: %x", tail)
	}
	future, past := time.Now().Add(time.Hour), time.Now().Add(-time.Hour)
	_, err = cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one"), IfModifiedSince: &future})
	if httpStatus(err) != http.StatusNotModified {
		t.Errorf("If-Modified-Since in the future: %v (status %d), want 304", err, httpStatus(err))
	}
	if o, err := cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one"), IfModifiedSince: &past}); err != nil {
		t.Errorf("If-Modified-Since in the past: %v", err)
	} else {
		o.Body.Close()
	}
	_, err = cli.GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one"), IfNoneMatch: put.ETag})
	if httpStatus(err) != http.StatusNotModified {
		t.Errorf("If-None-Match its ETag: %v (status %d), want 304", err, httpStatus(err))
	}

	// CopyObject: metadata copied, then replaced.
	cp, err := cli.CopyObject(ctx, &s3sdk.CopyObjectInput{Bucket: aws.String("things"), Key: aws.String("copy/same"), CopySource: aws.String("things/dir/obj%20one")})
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	if cp.CopyObjectResult == nil || aws.ToString(cp.CopyObjectResult.ETag) != md5ETag(body) {
		t.Errorf("copy result %+v, want ETag %s", cp.CopyObjectResult, md5ETag(body))
	}
	got, gout := getBytes(t, cli, "things", "copy/same")
	if !bytes.Equal(got, body) || aws.ToString(gout.ContentType) != "image/png" || gout.Metadata["owner"] != "ada" {
		t.Errorf("copy (COPY): %d bytes type %q meta %v", len(got), aws.ToString(gout.ContentType), gout.Metadata)
	}
	_, err = cli.CopyObject(ctx, &s3sdk.CopyObjectInput{Bucket: aws.String("things"), Key: aws.String("copy/new"), CopySource: aws.String("things/dir/obj%20one"),
		MetadataDirective: types.MetadataDirectiveReplace, ContentType: aws.String("text/plain"), Metadata: map[string]string{"owner": "bob"}})
	if err != nil {
		t.Fatalf("copy REPLACE: %v", err)
	}
	got, gout = getBytes(t, cli, "things", "copy/new")
	if !bytes.Equal(got, body) || aws.ToString(gout.ContentType) != "text/plain" || gout.Metadata["owner"] != "bob" || gout.Metadata["note"] != "" {
		t.Errorf("copy (REPLACE): %d bytes type %q meta %v", len(got), aws.ToString(gout.ContentType), gout.Metadata)
	}
	_, err = cli.CopyObject(ctx, &s3sdk.CopyObjectInput{Bucket: aws.String("things"), Key: aws.String("copy/x"), CopySource: aws.String("things/missing")})
	wantCode(t, "copy of a missing key", err, "NoSuchKey", 404)

	// Presigned GET with plain net/http; an expired one is refused.
	pre := s3sdk.NewPresignClient(cli)
	req, err := pre.PresignGetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one")}, s3sdk.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(req.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Errorf("presigned GET: %d, %d bytes", resp.StatusCode, len(got))
	}
	short, err := pre.PresignGetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one")}, s3sdk.WithPresignExpires(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	signed := time.Now()
	if resp, err := http.Get(short.URL); err == nil {
		resp.Body.Close()
		if time.Since(signed) < 500*time.Millisecond && resp.StatusCode != 200 {
			t.Errorf("a fresh presigned URL (1 s) is refused: %d", resp.StatusCode)
		}
	}
	var lastStatus int
	var lastBody []byte
	bustest.Eventually(t, 15*time.Second, "an expired presigned URL is refused", func() bool {
		resp, err := http.Get(short.URL)
		if err != nil {
			return false
		}
		lastBody, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		lastStatus = resp.StatusCode
		return resp.StatusCode != 200
	})
	if lastStatus != 403 || xmlCode(lastBody) != "AccessDenied" {
		t.Errorf("expired presigned URL: %d %s, want 403 AccessDenied", lastStatus, lastBody)
	}
	tampered := strings.Replace(req.URL, "obj%20one", "obj%20two", 1)
	if resp, err := http.Get(tampered); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || xmlCode(b) != "SignatureDoesNotMatch" {
			t.Errorf("a presigned URL for another key: %d %s, want 403 SignatureDoesNotMatch", resp.StatusCode, b)
		}
	}

	// Authentication.
	_, err = c.sdkAs("AKNOTAKEY", testSecret).ListBuckets(ctx, &s3sdk.ListBucketsInput{})
	wantCode(t, "a wrong access key", err, "InvalidAccessKeyId", 403)
	_, err = c.sdk("wrong").GetObject(ctx, &s3sdk.GetObjectInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one")})
	wantCode(t, "a wrong secret", err, "SignatureDoesNotMatch", 403)
	if resp, err := http.Get(c.endpoint + "/things/dir/obj%20one"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || xmlCode(b) != "AccessDenied" {
			t.Errorf("an anonymous GET: %d %s, want 403 AccessDenied", resp.StatusCode, b)
		}
	}

	// What rehome does not do is NotImplemented, never a 500.
	_, err = cli.PutBucketLifecycleConfiguration(ctx, &s3sdk.PutBucketLifecycleConfigurationInput{Bucket: aws.String("things"),
		LifecycleConfiguration: &types.BucketLifecycleConfiguration{Rules: []types.LifecycleRule{{ID: aws.String("r"), Status: types.ExpirationStatusEnabled,
			Filter: &types.LifecycleRuleFilter{Prefix: aws.String("")}, Expiration: &types.LifecycleExpiration{Days: aws.Int32(1)}}}}})
	wantCode(t, "PutBucketLifecycleConfiguration", err, "NotImplemented", 501)
	_, err = cli.PutBucketCors(ctx, &s3sdk.PutBucketCorsInput{Bucket: aws.String("things"), CORSConfiguration: &types.CORSConfiguration{
		CORSRules: []types.CORSRule{{AllowedMethods: []string{"GET"}, AllowedOrigins: []string{"*"}}}}})
	wantCode(t, "PutBucketCors", err, "NotImplemented", 501)
	_, err = cli.PutObjectTagging(ctx, &s3sdk.PutObjectTaggingInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one"),
		Tagging: &types.Tagging{TagSet: []types.Tag{{Key: aws.String("team"), Value: aws.String("infra")}}}})
	wantCode(t, "PutObjectTagging", err, "NotImplemented", 501)
	// With nothing ever configured, S3's answers to these reads are "none".
	_, err = cli.GetBucketLifecycleConfiguration(ctx, &s3sdk.GetBucketLifecycleConfigurationInput{Bucket: aws.String("things")})
	wantCode(t, "GetBucketLifecycleConfiguration", err, "NoSuchLifecycleConfiguration", 404)
	if tags, err := cli.GetObjectTagging(ctx, &s3sdk.GetObjectTaggingInput{Bucket: aws.String("things"), Key: aws.String("dir/obj one")}); err != nil || len(tags.TagSet) != 0 {
		t.Errorf("GetObjectTagging: %v %+v", err, tags)
	}

	// DeleteObjects, then the bucket.
	_, err = cli.DeleteBucket(ctx, &s3sdk.DeleteBucketInput{Bucket: aws.String("things")})
	wantCode(t, "DeleteBucket of a full bucket", err, "BucketNotEmpty", 409)
	del, err := cli.DeleteObjects(ctx, &s3sdk.DeleteObjectsInput{Bucket: aws.String("things"), Delete: &types.Delete{Objects: []types.ObjectIdentifier{
		{Key: aws.String("dir/obj one")}, {Key: aws.String("copy/same")}, {Key: aws.String("copy/new")}, {Key: aws.String(long)}, {Key: aws.String("never/was")}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Deleted) != 5 || len(del.Errors) != 0 {
		t.Errorf("DeleteObjects: %d deleted, errors %+v", len(del.Deleted), del.Errors)
	}
	for _, k := range []string{"dir/obj one", "copy/same", "copy/new"} {
		_, err = cli.HeadObject(ctx, &s3sdk.HeadObjectInput{Bucket: aws.String("things"), Key: aws.String(k)})
		wantCode(t, "HEAD of a deleted key", err, "NotFound", 404)
	}
	if _, err := cli.DeleteBucket(ctx, &s3sdk.DeleteBucketInput{Bucket: aws.String("things")}); err != nil {
		t.Errorf("DeleteBucket right after emptying it: %v", err)
	}
	_, err = cli.HeadBucket(ctx, &s3sdk.HeadBucketInput{Bucket: aws.String("things")})
	wantCode(t, "HeadBucket of a deleted bucket", err, "NotFound", 404)
}
