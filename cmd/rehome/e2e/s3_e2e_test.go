package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/objects"
)

// awsCLI runs the preinstalled `aws` CLI with the cluster's secrets.env in
// its environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_ENDPOINT_URL, AWS_REGION): no flag says where the gateway is.
func (c *cluster) awsCLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("aws")
	if err != nil {
		t.Fatalf("the aws CLI is not on PATH (.ci/run installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if !honoursEndpointEnv(bin) {
		args = append([]string{"--endpoint-url", c.getenv("AWS_ENDPOINT_URL")}, args...)
	}
	if strings.Contains(" cp sync rm mv ", " "+s3Verb(args)+" ") {
		args = append(args, "--only-show-errors") // no progress lines
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(c.env, "AWS_MAX_ATTEMPTS=3", "AWS_PAGER=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("aws %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// s3Verb returns the subcommand of an `aws s3 ...` command line ("" if none).
func s3Verb(args []string) string {
	for i, a := range args {
		if a == "s3" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// honoursEndpointEnv reports whether this aws CLI reads AWS_ENDPOINT_URL
// (v1 from 1.29, v2 from 2.13); older ones need --endpoint-url.
func honoursEndpointEnv(bin string) bool {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(strings.TrimPrefix(strings.Fields(string(out) + " x")[0], "aws-cli/"), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major == 1 && minor >= 29 || major == 2 && minor >= 13 || major > 2
}

func randomFile(t testing.TB, path string, size int64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func fileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestS3WithTheAWSCLI drives the gateway `rehome dev` runs with the aws CLI
// as a user would after sourcing secrets.env: a 100 MiB multipart copy both
// ways, a sync of a nested tree, a recursive listing and a recursive delete;
// the CLI sees the objects and where their replicas are.
func TestS3WithTheAWSCLI(t *testing.T) {
	c := startDev(t)
	waitHealthy(t, c, 6)
	dir := t.TempDir()
	if _, err := c.awsCLI(t, "s3", "mb", "s3://backups"); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.iso")
	want := randomFile(t, big, 100<<20)
	if _, err := c.awsCLI(t, "s3", "cp", big, "s3://backups/"); err != nil {
		t.Fatal(err)
	}
	back := filepath.Join(dir, "big.back")
	if _, err := c.awsCLI(t, "s3", "cp", "s3://backups/big.iso", back); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, back) != want {
		t.Fatal("the 100 MiB object read back differs")
	}
	// The CLI sees it, chunked and placed like its own: 3 replicas in 3 racks.
	out, err := c.rehome("inspect", "backups/big.iso", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var in objects.Inspection
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatal(err)
	}
	if in.Size != 100<<20 || len(in.Shards) != 25 {
		t.Fatalf("inspect: %d bytes in %d shards, want 104857600 in 25", in.Size, len(in.Shards))
	}
	for _, sh := range in.Shards {
		racks := map[string]bool{}
		for _, r := range sh.Racks {
			racks[r] = true
		}
		if len(sh.Nodes) != 3 || len(racks) != 3 {
			t.Errorf("shard %s on %v (racks %v), want 3 nodes in 3 racks", sh.ID, sh.Nodes, sh.Racks)
		}
	}
	if out, err := c.rehome("ls"); err != nil || !strings.Contains(out, "backups/big.iso") || strings.Contains(out, ".uploads/") {
		t.Errorf("rehome ls: %v\n%s", err, out)
	}

	tree := filepath.Join(dir, "tree")
	files := []string{"a/1.txt", "a/b/ünï cödé.txt", "a/b/c/deep file.bin", "top.txt", "z/ü/ß.txt"}
	for i, f := range files {
		p := filepath.Join(tree, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.awsCLI(t, "s3", "sync", tree, "s3://backups/tree/"); err != nil {
		t.Fatal(err)
	}
	out, err = c.awsCLI(t, "s3", "ls", "--recursive", "s3://backups/")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			listed = append(listed, strings.Join(f[3:], " "))
		}
	}
	wantKeys := []string{"big.iso"}
	for _, f := range files {
		wantKeys = append(wantKeys, "tree/"+f)
	}
	sort.Strings(wantKeys)
	if strings.Join(listed, "|") != strings.Join(wantKeys, "|") {
		t.Errorf("aws s3 ls --recursive:\n got %q\nwant %q", listed, wantKeys)
	}
	// A second sync copies nothing: sizes and times match.
	if out, err := c.awsCLI(t, "s3", "sync", tree, "s3://backups/tree/", "--dryrun"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("second sync would copy: %v\n%s", err, out)
	}
	if _, err := c.awsCLI(t, "s3", "rm", "--recursive", "s3://backups/"); err != nil {
		t.Fatal(err)
	}
	if out, err := c.awsCLI(t, "s3", "ls", "--recursive", "s3://backups/"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("after rm --recursive: %v\n%s", err, out)
	}
	if _, err := c.awsCLI(t, "s3", "rb", "s3://backups"); err != nil {
		t.Errorf("remove the emptied bucket: %v", err)
	}
}

// TestS3SurvivesANodeKilledMidTransfer kills one storage node with SIGKILL in
// the middle of a multipart upload and another in the middle of a download:
// both succeed with identical bytes, and the cluster heals.
func TestS3SurvivesANodeKilledMidTransfer(t *testing.T) {
	c := startDev(t, "--grace", "2s", "--suspect-after", "1s", "--heartbeat", "250ms")
	waitHealthy(t, c, 6)
	dir := t.TempDir()
	if _, err := c.awsCLI(t, "s3", "mb", "s3://vault"); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "data.bin")
	want := randomFile(t, src, 160<<20)

	upload := make(chan error, 1)
	go func() {
		_, err := c.awsCLI(t, "s3", "cp", src, "s3://vault/data.bin", "--expected-size", fmt.Sprint(160<<20))
		upload <- err
	}()
	// Kill once the upload is under way: parts have landed.
	waitFor(t, 60*time.Second, "the multipart upload under way", func() bool {
		out, err := c.rehome("ls")
		return err == nil && strings.Count(out, ".uploads/") >= 2
	})
	c.signal(t, "storage-1", syscall.SIGKILL)
	if err := <-upload; err != nil {
		t.Fatalf("upload with storage-1 killed mid-way: %v", err)
	}

	back := filepath.Join(dir, "data.back")
	download := make(chan error, 1)
	go func() {
		_, err := c.awsCLI(t, "s3", "cp", "s3://vault/data.bin", back)
		download <- err
	}()
	waitFor(t, 60*time.Second, "the download under way", func() bool {
		st, err := os.Stat(back)
		if err == nil && st.Size() > 0 {
			return true
		}
		m, _ := filepath.Glob(back + ".*") // the CLI writes to a temp name first
		return len(m) > 0
	})
	c.signal(t, "storage-2", syscall.SIGKILL)
	if err := <-download; err != nil {
		t.Fatalf("download with storage-2 killed mid-way: %v", err)
	}
	if fileSum(t, back) != want {
		t.Fatal("the object read back differs")
	}
	waitFor(t, 2*time.Minute, "healed: nothing under-replicated or lost", func() bool {
		st, err := c.status()
		return err == nil && st.UnderReplicated == 0 && st.Lost == 0 && c.nodeState("storage-1") == "down" && c.nodeState("storage-2") == "down"
	})
	if _, err := c.awsCLI(t, "s3", "cp", "s3://vault/data.bin", back); err != nil || fileSum(t, back) != want {
		t.Fatalf("read after the heal: %v", err)
	}
}
