package s3

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// signed sends a SigV4-signed raw request (body hashed into the signature).
func (c *testCluster) signed(t *testing.T, method, path, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, c.endpoint+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	sum := sha256.Sum256([]byte(body))
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	creds := aws.Credentials{AccessKeyID: testAccess, SecretAccessKey: testSecret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "s3", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHostileRequestsGetS3Errors: garbage gets a 4xx with S3's XML error
// naming the problem, never a 5xx, and the gateway keeps serving.
func TestHostileRequestsGetS3Errors(t *testing.T) {
	c := startCluster(t, 3, 3)
	if code, body := c.signed(t, "PUT", "/box", "", nil); code != 200 {
		t.Fatalf("create bucket: %d %s", code, body)
	}
	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		code                     string
	}{
		{"upload id not ours", "PUT", "/box/k?partNumber=1&uploadId=..%2F..%2Fetc", "x", nil, 404, "NoSuchUpload"},
		{"upload id unknown", "GET", "/box/k?uploadId=6f1c2b1e-9f0e-4f6a-8a61-2b8b8d7f0c11", "", nil, 404, "NoSuchUpload"},
		{"part number zero", "PUT", "/box/k?partNumber=0&uploadId=6f1c2b1e-9f0e-4f6a-8a61-2b8b8d7f0c11", "x", nil, 400, "InvalidArgument"},
		{"bucket name with a star", "GET", "/bo*x/k", "", nil, 404, "NoSuchBucket"},
		{"bucket name upper case", "PUT", "/Box", "", nil, 400, "InvalidBucketName"},
		{"bucket name too short", "PUT", "/ab", "", nil, 400, "InvalidBucketName"},
		{"key too long", "PUT", "/box/" + strings.Repeat("k", 1025), "x", nil, 400, "KeyTooLongError"},
		{"wrong Content-MD5", "PUT", "/box/md5", "hello", map[string]string{"Content-Md5": "XrY7u+Ae7tCTyyK7j1rNww=="}, 400, "BadDigest"},
		{"malformed Content-MD5", "PUT", "/box/md5", "hello", map[string]string{"Content-Md5": "nope"}, 400, "InvalidDigest"},
		{"range past the end", "GET", "/box/small", "", map[string]string{"Range": "bytes=100-200"}, 416, "InvalidRange"},
		{"complete with garbage xml", "POST", "/box/k?uploadId=6f1c2b1e-9f0e-4f6a-8a61-2b8b8d7f0c11", "<<<", nil, 404, "NoSuchUpload"},
		{"unsupported: versioning", "PUT", "/box?versioning", "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>", nil, 501, "NotImplemented"},
		{"unsupported: lifecycle", "GET", "/box?lifecycle", "", nil, 0, ""},
	}
	if code, body := c.signed(t, "PUT", "/box/small", "tiny", nil); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	for _, tc := range cases {
		code, body := c.signed(t, tc.method, tc.path, tc.body, tc.hdr)
		if code >= 500 && code != 501 {
			t.Errorf("%s: %d %s", tc.name, code, body)
			continue
		}
		if tc.status != 0 && (code != tc.status || !strings.Contains(body, "<Code>"+tc.code+"</Code>")) {
			t.Errorf("%s: %d %s; want %d %s", tc.name, code, body, tc.status, tc.code)
		}
	}
	// Unsigned and badly signed requests are refused with 403.
	resp, err := http.Get(c.endpoint + "/box/small")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), "AccessDenied") {
		t.Errorf("anonymous GET: %d %s", resp.StatusCode, b)
	}
	// Still serving.
	if code, body := c.signed(t, "GET", "/box/small", "", nil); code != 200 || body != "tiny" {
		t.Fatalf("after the garbage: %d %q", code, body)
	}
}
