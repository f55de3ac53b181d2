//go:build stack

package stacktest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// awsVia runs the aws CLI against the gateway published on port, with the
// stack's key pair (from its secrets.env).
func (s *stack) awsVia(t *testing.T, port string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("aws")
	if err != nil {
		t.Fatalf("the aws CLI is not on PATH (.ci/run installs it): %v", err)
	}
	env := append(append([]string{}, s.env...), "AWS_PAGER=", "AWS_MAX_ATTEMPTS=5")
	out, err := run(3*time.Minute, env, bin, append([]string{"--endpoint-url", "http://127.0.0.1:" + port}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// s3Gateways: an object uploaded through gateway s3-1 reads back identical
// through s3-2, and a multipart upload begun on s3-1 takes a part through
// s3-2 and completes through s3-2: the gateways keep no state of their own.
func (s *stack) s3Gateways(t *testing.T) {
	gw1, gw2 := getenv("REHOME_STACK_S3_PORT_1", "19000"), getenv("REHOME_STACK_S3_PORT_2", "19001")
	bucket := strings.TrimSuffix(s.prefix, "-") + "-s3"
	s.awsVia(t, gw1, "s3", "mb", "s3://"+bucket)
	obj := s.writeFile(t, "s3-object", 21<<20+11, 77)
	s.awsVia(t, gw1, "s3", "cp", filepath.Join(s.hostDir, "s3-object"), "s3://"+bucket+"/dir/object", "--only-show-errors")
	back := filepath.Join(s.hostDir, "got", "s3-object")
	s.awsVia(t, gw2, "s3", "cp", "s3://"+bucket+"/dir/object", back, "--only-show-errors")
	if got := fileSHA(t, back); got != obj.sha {
		t.Fatalf("read through s3-2: sha256 %s, wrote %s", got, obj.sha)
	}

	id := s.awsVia(t, gw1, "s3api", "create-multipart-upload", "--bucket", bucket, "--key", "mp", "--output", "text", "--query", "UploadId")
	p1 := s.writeFile(t, "s3-part1", 5<<20, 78)
	p2 := s.writeFile(t, "s3-part2", 1<<20+3, 79)
	etag1 := s.awsVia(t, gw2, "s3api", "upload-part", "--bucket", bucket, "--key", "mp", "--upload-id", id, "--part-number", "1",
		"--body", filepath.Join(s.hostDir, "s3-part1"), "--output", "text", "--query", "ETag")
	etag2 := s.awsVia(t, gw1, "s3api", "upload-part", "--bucket", bucket, "--key", "mp", "--upload-id", id, "--part-number", "2",
		"--body", filepath.Join(s.hostDir, "s3-part2"), "--output", "text", "--query", "ETag")
	parts, _ := json.Marshal(map[string]any{"Parts": []map[string]any{{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}}})
	s.awsVia(t, gw2, "s3api", "complete-multipart-upload", "--bucket", bucket, "--key", "mp", "--upload-id", id, "--multipart-upload", string(parts))
	s.awsVia(t, gw1, "s3", "cp", "s3://"+bucket+"/mp", back, "--only-show-errors")
	b1, _ := os.ReadFile(filepath.Join(s.hostDir, "s3-part1"))
	b2, _ := os.ReadFile(filepath.Join(s.hostDir, "s3-part2"))
	want := sha256.Sum256(append(b1, b2...))
	if got := fileSHA(t, back); got != hex.EncodeToString(want[:]) {
		t.Fatalf("multipart across gateways: sha256 %s, want %s (parts %s %s)", got, hex.EncodeToString(want[:]), p1.sha, p2.sha)
	}
	ls := s.awsVia(t, gw2, "s3", "ls", "--recursive", "s3://"+bucket+"/")
	for _, k := range []string{"dir/object", "mp"} {
		if !strings.Contains(ls, k) {
			t.Errorf("listing through s3-2 lacks %s:\n%s", k, ls)
		}
	}
	t.Logf("s3: %d MiB through s3-1 read through s3-2; a multipart upload across both", obj.size>>20)
}
