package e2e

// S3 benchmarks through the real binary (SPEC §11): `rehome dev` with its S3
// gateway, driven by aws-sdk-go-v2 as a user would drive it after sourcing
// secrets.env (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_REGION), path-style, the SDK's defaults (checksums, retries) left on.
// Each runs once under `make bench`; by hand:
//
//	go test -run '^$' -bench BenchmarkS3 -benchtime 1x ./cmd/rehome/e2e
//
// Sizes: REHOME_BENCH_QUICK=1 runs smaller experiments (each says so in a log
// line and in its size metric); REHOME_BENCH_S3_MIB (PutGet),
// REHOME_BENCH_S3_RSS_MIB (RSS) and REHOME_BENCH_S3_KEYS (ListObjectsV2)
// override them.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/rehome/rehome/shared/benchenv"
	"github.com/rehome/rehome/shared/bus"
)

const (
	// s3BenchPartSize and s3BenchConcurrency are the transfer manager's
	// settings in every benchmark: parts of 16 MiB, 5 at a time.
	s3BenchPartSize    = 16 << 20
	s3BenchConcurrency = 5
	mib                = 1 << 20
)

// s3Client is an aws-sdk-go-v2 client configured only from the cluster's
// environment (secrets.env), path-style; conns bounds its idle connections
// to the gateway (the SDK's default keeps 10).
func (c *cluster) s3Client(t testing.TB, conns int) *s3.Client {
	t.Helper()
	endpoint, ak, sk, region := c.getenv("AWS_ENDPOINT_URL"), c.getenv("AWS_ACCESS_KEY_ID"), c.getenv("AWS_SECRET_ACCESS_KEY"), c.getenv("AWS_REGION")
	if endpoint == "" || ak == "" || sk == "" {
		t.Fatalf("secrets.env has no AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (endpoint %q)", endpoint)
	}
	if region == "" {
		region = "us-east-1"
	}
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns = max(tr.MaxIdleConns, conns)
		tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, conns)
	})
	cfg := aws.Config{Region: region, Credentials: credentials.NewStaticCredentialsProvider(ak, sk, ""), HTTPClient: hc}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
}

// transfers is the transfer manager every benchmark uses.
func transfers(cli *s3.Client) *transfermanager.Client {
	return transfermanager.New(cli, func(o *transfermanager.Options) {
		o.PartSizeBytes = s3BenchPartSize
		o.Concurrency = s3BenchConcurrency
	})
}

func createBucket(t testing.TB, cli *s3.Client, name string) {
	t.Helper()
	if _, err := cli.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
}

// timed returns how long f took.
func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// quickNote is what a quick run adds to its log line.
func quickNote() string {
	if benchenv.Quick() {
		return " [QUICK MODE: reduced size]"
	}
	return ""
}

// BenchmarkS3PutGet1GiB writes a 1 GiB random file (REHOME_BENCH_QUICK: 256
// MiB) to one 6-node cluster with `rehome put FILE --key K` (the CLI, as a
// user runs it) and with the transfer manager's multipart upload (parts of
// 16 MiB, 5 at a time), then reads each copy back with `rehome get K -o F`
// and the transfer manager's download. Each way runs twice in ABBA order
// (CLI, S3, S3, CLI; the same for reads) with the page cache's dirty data
// synced before each timing, so neither way gains from going first on empty
// disks. Every copy read back is checked by SHA-256 after its timing.
// Reports MB/s (10^6 bytes; both runs of a way together) and the S3/CLI
// ratios for PUT and GET (SPEC §11: >= 0.8).
func BenchmarkS3PutGet1GiB(b *testing.B) {
	size := int64(benchenv.Int("REHOME_BENCH_S3_MIB", map[bool]int{false: 1024, true: 256}[benchenv.Quick()])) * mib
	order := []string{"cli", "s3", "s3", "cli"}
	for range b.N {
		c := startDev(b)
		waitHealthy(b, c, 6)
		dir := b.TempDir()
		src := filepath.Join(dir, "big.bin")
		want := randomFile(b, src, size)
		cli := c.s3Client(b, 2*s3BenchConcurrency)
		tm := transfers(cli)
		ctx := context.Background()
		createBucket(b, cli, "bench")

		put := map[string]time.Duration{}
		for i, way := range order {
			syscall.Sync()
			var err error
			switch way {
			case "cli":
				put[way] += timed(func() { _, err = c.rehome("put", src, "--key", fmt.Sprintf("cli/big-%d.bin", i)) })
			case "s3":
				f, ferr := os.Open(src)
				if ferr != nil {
					b.Fatal(ferr)
				}
				put[way] += timed(func() {
					_, err = tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: aws.String("bench"), Key: aws.String(fmt.Sprintf("big-%d.bin", i)), Body: f})
				})
				f.Close()
			}
			if err != nil {
				b.Fatalf("%s put: %v", way, err)
			}
		}
		get := map[string]time.Duration{}
		for i, way := range order {
			syscall.Sync()
			back := filepath.Join(dir, "back")
			var err error
			switch way {
			case "cli":
				get[way] += timed(func() { _, err = c.rehome("get", fmt.Sprintf("cli/big-%d.bin", i), "-o", back) })
			case "s3":
				out, ferr := os.Create(back)
				if ferr != nil {
					b.Fatal(ferr)
				}
				get[way] += timed(func() {
					var o *transfermanager.DownloadObjectOutput
					o, err = tm.DownloadObject(ctx, &transfermanager.DownloadObjectInput{Bucket: aws.String("bench"), Key: aws.String(fmt.Sprintf("big-%d.bin", i)), WriterAt: out})
					if err == nil && aws.ToInt64(o.ContentLength) != size {
						err = fmt.Errorf("%d bytes, want %d", aws.ToInt64(o.ContentLength), size)
					}
					if err == nil {
						err = out.Sync() // rehome get -o syncs its file too
					}
				})
				out.Close()
			}
			if err != nil {
				b.Fatalf("%s get: %v", way, err)
			}
			if fileSum(b, back) != want {
				b.Fatalf("%s get (run %d): the bytes read back differ", way, i)
			}
			_ = os.Remove(back)
		}

		runs := int64(len(order) / 2)
		cp, cg, sp, sg := mbps(runs*size, put["cli"]), mbps(runs*size, get["cli"]), mbps(runs*size, put["s3"]), mbps(runs*size, get["s3"])
		b.ReportMetric(float64(size)/mib, "object_MiB")
		b.ReportMetric(cp, "cli_put_MBps")
		b.ReportMetric(cg, "cli_get_MBps")
		b.ReportMetric(sp, "s3_put_MBps")
		b.ReportMetric(sg, "s3_get_MBps")
		b.ReportMetric(sp/cp, "put_ratio")
		b.ReportMetric(sg/cg, "get_ratio")
		b.Logf("S3 vs CLI, a %d MiB random file, 6 nodes / 3 racks, RF 3, each way twice (ABBA)%s: rehome put %.1f MB/s, rehome get -o %.1f MB/s; "+
			"S3 multipart upload (%d MiB parts x %d) %.1f MB/s, download %.1f MB/s; PUT ratio %.2f %s, GET ratio %.2f %s (target >= 0.8); every copy verified by SHA-256",
			size/mib, quickNote(), cp, cg, s3BenchPartSize/mib, s3BenchConcurrency, sp, sg,
			sp/cp, meets(sp/cp >= 0.8), sg/cg, meets(sg/cg >= 0.8))
	}
}

// vmRSS returns the resident set of process pid in bytes (VmRSS).
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS line")
}

// rssSampler reads a process's VmRSS every interval until stopped.
type rssSampler struct {
	peak, samples atomic.Int64
	stop          chan struct{}
	done          chan struct{}
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if rss, err := vmRSS(pid); err == nil {
				s.samples.Add(1)
				if rss > s.peak.Load() {
					s.peak.Store(rss)
				}
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) finish() int64 { close(s.stop); <-s.done; return s.peak.Load() }

// prngStream is size bytes of a deterministic pseudo-random stream, only an
// io.Reader (the transfer manager cannot seek it or learn its length), that
// keeps a copy of its last len(tail) bytes.
type prngStream struct {
	r    io.Reader
	off  int64
	size int64
	tail []byte
}

func newPRNGStream(seed string, size int64, tail int) *prngStream {
	var s [32]byte
	copy(s[:], seed)
	return &prngStream{r: io.LimitReader(mrand.NewChaCha8(s), size), size: size, tail: make([]byte, tail)}
}

func (p *prngStream) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	start := p.size - int64(len(p.tail))
	if lo, hi := max(p.off, start), p.off+int64(n); lo < hi { // the part in the tail
		copy(p.tail[lo-start:], b[lo-p.off:hi-p.off])
	}
	p.off += int64(n)
	return n, err
}

// BenchmarkS3GatewayRSS5GiBMultipart streams a 5 GiB multipart upload
// (REHOME_BENCH_QUICK: 1 GiB) of a pseudo-random stream, not a file, through
// the transfer manager (parts of 16 MiB, 5 at a time) while it samples the
// gateway's VmRSS every 100 ms; reports the peak in MiB (SPEC §11: <= 256),
// then checks the object's length (HeadObject) and its last MiB (a ranged GET).
func BenchmarkS3GatewayRSS5GiBMultipart(b *testing.B) {
	size := int64(benchenv.Int("REHOME_BENCH_S3_RSS_MIB", map[bool]int{false: 5 << 10, true: 1 << 10}[benchenv.Quick()])) * mib
	for range b.N {
		c := startDev(b)
		waitHealthy(b, c, 6)
		pid := 0
		for _, p := range c.processes() {
			if p.Role == "s3" {
				pid = p.PID
			}
		}
		if pid == 0 {
			b.Fatalf("no s3 process in processes.json: %+v", c.processes())
		}
		cli := c.s3Client(b, 2*s3BenchConcurrency)
		ctx := context.Background()
		createBucket(b, cli, "rss")
		idle, err := vmRSS(pid)
		if err != nil {
			b.Fatal(err)
		}
		stream := newPRNGStream("rss", size, mib)
		sampler := sampleRSS(pid, 100*time.Millisecond)
		took := timed(func() {
			_, err = transfers(cli).UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: aws.String("rss"), Key: aws.String("stream.bin"), Body: stream})
		})
		peak := sampler.finish()
		if err != nil {
			b.Fatalf("upload: %v", err)
		}
		after, _ := vmRSS(pid)
		head, err := cli.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("rss"), Key: aws.String("stream.bin")})
		if err != nil {
			b.Fatal(err)
		}
		if n := aws.ToInt64(head.ContentLength); n != size {
			b.Fatalf("HeadObject: %d bytes, want %d", n, size)
		}
		rng, err := cli.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("rss"), Key: aws.String("stream.bin"), Range: aws.String(fmt.Sprintf("bytes=%d-%d", size-mib, size-1))})
		if err != nil {
			b.Fatal(err)
		}
		tail, err := io.ReadAll(rng.Body)
		rng.Body.Close()
		if err != nil || !bytes.Equal(tail, stream.tail) {
			b.Fatalf("the last MiB read back differs from the stream's (%d bytes, %v)", len(tail), err)
		}
		b.ReportMetric(float64(size)/mib, "object_MiB")
		b.ReportMetric(float64(peak)/mib, "peak_rss_MiB")
		b.ReportMetric(float64(idle)/mib, "idle_rss_MiB")
		b.ReportMetric(mbps(size, took), "upload_MBps")
		b.Logf("S3 gateway RSS, %d MiB multipart upload from a PRNG stream (%d MiB parts x %d)%s: idle %.1f MiB, peak %.1f MiB over %d samples every 100 ms, %.1f MiB after; %.1f MB/s; %s target <= 256 MiB; HeadObject length and last MiB verified",
			size/mib, s3BenchPartSize/mib, s3BenchConcurrency, quickNote(), float64(idle)/mib, float64(peak)/mib, sampler.samples.Load(), float64(after)/mib,
			mbps(size, took), meets(float64(peak)/mib <= 256))
	}
}

// logKey is key i of n in the listing benchmark: 1 000 files per host.
func logKey(i int) string {
	return fmt.Sprintf("logs/2026/12/05/host-%03d/file-%05d.json", i/1000, i%1000)
}

// medianDur is the median of ds.
func medianDur(ds []time.Duration) time.Duration { return percentile(ds, 0.5) }

// BenchmarkS3ListObjectsV2 puts 100 000 tiny objects (REHOME_BENCH_QUICK:
// 20 000) through S3 PutObject from 64 goroutines, keys shaped
// "logs/2026/12/05/host-NNN/file-NNNNN.json" (1 000 per host), waits for the
// listing index to hold them all, then times ListObjectsV2's first page of
// 1 000 (median of 9), the walk of every page of 1 000 to the end (median of
// 3; each walk checked for count and order) and a delimiter listing of
// "logs/2026/12/05/" that must answer exactly the host-NNN/ prefixes (median
// of 5). SPEC §11: every page <= 2 s, the first <= 50 ms.
func BenchmarkS3ListObjectsV2(b *testing.B) {
	n := benchenv.Int("REHOME_BENCH_S3_KEYS", map[bool]int{false: 100_000, true: 20_000}[benchenv.Quick()])
	const workers = 64
	for range b.N {
		c := startDev(b)
		waitHealthy(b, c, 6)
		cli := c.s3Client(b, 2*workers)
		ctx := context.Background()
		createBucket(b, cli, "logs")
		want := make([]string, n)
		for i := range want {
			want[i] = logKey(i)
		}
		var next atomic.Int64
		g, gctx := errgroup.WithContext(ctx)
		putTook := timed(func() {
			for range workers {
				g.Go(func() error {
					for {
						i := int(next.Add(1)) - 1
						if i >= n {
							return nil
						}
						body := fmt.Sprintf(`{"host":%d,"seq":%d,"msg":"ok"}`, i/1000, i%1000)
						if _, err := cli.PutObject(gctx, &s3.PutObjectInput{Bucket: aws.String("logs"), Key: aws.String(want[i]), Body: strings.NewReader(body)}); err != nil {
							return fmt.Errorf("put %s: %w", want[i], err)
						}
					}
				})
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		})

		walk := func() ([]string, int) {
			var keys []string
			pages := 0
			p := s3.NewListObjectsV2Paginator(cli, &s3.ListObjectsV2Input{Bucket: aws.String("logs"), MaxKeys: aws.Int32(1000)})
			for p.HasMorePages() {
				out, err := p.NextPage(ctx)
				if err != nil {
					b.Fatalf("ListObjectsV2 page %d: %v", pages+1, err)
				}
				pages++
				if len(out.Contents) > 1000 {
					b.Fatalf("page %d holds %d keys, more than MaxKeys 1000", pages, len(out.Contents))
				}
				for _, o := range out.Contents {
					keys = append(keys, aws.ToString(o.Key))
				}
			}
			return keys, pages
		}
		// The listing index follows the objects' stream: wait until it holds them all.
		indexed := time.Now()
		var lag time.Duration
		waitFor(b, 2*time.Minute, fmt.Sprintf("the listing holding all %d keys", n), func() bool {
			keys, _ := walk()
			lag = time.Since(indexed)
			return len(keys) >= n
		})

		var first []time.Duration
		for range 9 {
			var out *s3.ListObjectsV2Output
			var err error
			first = append(first, timed(func() {
				out, err = cli.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("logs"), MaxKeys: aws.Int32(1000)})
			}))
			if err != nil {
				b.Fatal(err)
			}
			if len(out.Contents) != 1000 || aws.ToString(out.Contents[0].Key) != want[0] || aws.ToString(out.Contents[999].Key) != want[999] || !aws.ToBool(out.IsTruncated) {
				b.Fatalf("first page: %d keys, truncated %v", len(out.Contents), aws.ToBool(out.IsTruncated))
			}
		}
		var all []time.Duration
		pages := 0
		for range 3 {
			var keys []string
			all = append(all, timed(func() { keys, pages = walk() }))
			if !slices.Equal(keys, want) {
				b.Fatalf("the walk listed %d keys, want the %d written in order", len(keys), n)
			}
		}
		hosts := (n + 999) / 1000
		var delim []time.Duration
		for range 5 {
			var out *s3.ListObjectsV2Output
			var err error
			delim = append(delim, timed(func() {
				out, err = cli.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("logs"), Prefix: aws.String("logs/2026/12/05/"), Delimiter: aws.String("/"), MaxKeys: aws.Int32(1000)})
			}))
			if err != nil {
				b.Fatal(err)
			}
			var got []string
			for _, p := range out.CommonPrefixes {
				got = append(got, aws.ToString(p.Prefix))
			}
			var wantP []string
			for h := range hosts {
				wantP = append(wantP, fmt.Sprintf("logs/2026/12/05/host-%03d/", h))
			}
			if !slices.Equal(got, wantP) || len(out.Contents) != 0 {
				b.Fatalf("delimiter listing: %d prefixes (%.60q...) and %d keys, want the %d host-NNN/ prefixes only", len(got), got, len(out.Contents), hosts)
			}
		}
		fp, ap, dp := medianDur(first), medianDur(all), medianDur(delim)
		b.ReportMetric(float64(n), "keys")
		b.ReportMetric(ms(fp), "first_page_ms")
		b.ReportMetric(ms(ap), "all_pages_ms")
		b.ReportMetric(ms(dp), "delimiter_ms")
		b.ReportMetric(float64(n)/putTook.Seconds(), "puts_per_s")
		b.Logf("ListObjectsV2 over %d keys (%d hosts x 1000)%s: put by %d goroutines at %.0f objects/s (%s), listing complete %s after the last put; "+
			"first page of 1000 median %.1f ms (max %.1f) %s <= 50 ms; all %d pages median %.0f ms (max %.0f) %s <= 2000 ms, count and order checked; "+
			"delimiter listing of %d host prefixes median %.1f ms",
			n, hosts, quickNote(), workers, float64(n)/putTook.Seconds(), putTook.Round(time.Millisecond), lag.Round(time.Millisecond),
			ms(fp), ms(slices.Max(first)), meets(ms(fp) <= 50), pages, ms(ap), ms(slices.Max(all)), meets(ms(ap) <= 2000), hosts, ms(dp))
	}
}

// ttfbLoad is a closed loop of workers GETting random keys through the SDK:
// each sample is the time from the request to the first body byte; every
// body is read to the end and checked against its SHA-256.
func ttfbLoad(cli *s3.Client, bucket string, keys []string, sums map[string][32]byte, workers int, d time.Duration) (ttfb []time.Duration, errs int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	until := time.Now().Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for time.Now().Before(until) {
				key := keys[rng.IntN(len(keys))]
				start := time.Now()
				took, err := func() (time.Duration, error) {
					out, err := cli.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
					if err != nil {
						return 0, err
					}
					defer out.Body.Close()
					var one [1]byte
					if _, err := io.ReadFull(out.Body, one[:]); err != nil {
						return 0, err
					}
					took := time.Since(start)
					h := sha256.New()
					h.Write(one[:])
					if _, err := io.Copy(h, out.Body); err != nil {
						return 0, err
					}
					if [32]byte(h.Sum(nil)) != sums[key] {
						return 0, fmt.Errorf("%s: bytes differ", key)
					}
					return took, nil
				}()
				mu.Lock()
				if err != nil {
					errs++
				} else {
					ttfb = append(ttfb, took)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ttfb, errs
}

// BenchmarkS3GetTTFBNodeDead puts 200 objects of 1 MiB through S3 on a 6-node
// cluster with dev's default detector timing (suspect after 3 s, down 10 s
// later), then measures GET time to first byte with a closed loop of 4
// workers (not open-loop) for 8 s healthy, kills the fullest storage node
// with SIGKILL and measures 8 s more straight away: before the down verdict
// (the log says whether one arrived in the window) and so before any
// repair. Reports both p99s and their ratio (SPEC §11: dead/healthy <= 2).
func BenchmarkS3GetTTFBNodeDead(b *testing.B) {
	const (
		objects = 200
		workers = 4
		window  = 8 * time.Second
	)
	for range b.N {
		c := startDev(b)
		waitHealthy(b, c, 6)
		cli := c.s3Client(b, 16)
		ctx := context.Background()
		createBucket(b, cli, "ttfb")
		keys := make([]string, objects)
		sums := map[string][32]byte{}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for i := range keys {
			keys[i] = fmt.Sprintf("obj-%03d", i)
			body := make([]byte, mib)
			_, _ = mrand.NewChaCha8([32]byte{byte(i), byte(i >> 8), 't'}).Read(body)
			sums[keys[i]] = sha256.Sum256(body)
			g.Go(func() error {
				_, err := cli.PutObject(gctx, &s3.PutObjectInput{Bucket: aws.String("ttfb"), Key: aws.String(keys[i]), Body: bytes.NewReader(body)})
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		// Warm the connections and the gateway's caches, then measure.
		ttfbLoad(cli, "ttfb", keys, sums, workers, time.Second)
		healthy, hErrs := ttfbLoad(cli, "ttfb", keys, sums, workers, window)

		st, err := c.status()
		if err != nil {
			b.Fatal(err)
		}
		victim := st.Nodes[0]
		for _, n := range st.Nodes {
			if n.Bytes > victim.Bytes {
				victim = n
			}
		}
		// The down verdict arrives on the bus: watch for it without
		// spawning CLI processes during the measurement.
		nc, err := bus.Connect(c.url, "bench-s3-ttfb", 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		var downAt atomic.Int64
		sub, err := nc.Subscribe("rehome.node.down."+victim.ID, func(*nats.Msg) { downAt.CompareAndSwap(0, time.Now().UnixNano()) })
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		_ = nc.Flush()
		killed := time.Now()
		c.signal(b, victim.ID, syscall.SIGKILL)
		dead, dErrs := ttfbLoad(cli, "ttfb", keys, sums, workers, window)
		verdict := "no down verdict within the window"
		if at := downAt.Load(); at != 0 {
			verdict = fmt.Sprintf("down verdict %s after the kill, inside the window", time.Duration(at-killed.UnixNano()).Round(time.Millisecond))
		}
		st, _ = c.status()
		if hErrs+dErrs > 0 {
			b.Errorf("%d healthy and %d dead-node GETs failed", hErrs, dErrs)
		}
		hp, dp := percentile(healthy, 0.99), percentile(dead, 0.99)
		b.ReportMetric(ms(hp), "healthy_p99_ms")
		b.ReportMetric(ms(dp), "dead_p99_ms")
		b.ReportMetric(ms(dp)/ms(hp), "ratio")
		b.ReportMetric(ms(percentile(healthy, 0.5)), "healthy_p50_ms")
		b.ReportMetric(ms(percentile(dead, 0.5)), "dead_p50_ms")
		b.ReportMetric(float64(hErrs+dErrs), "errors")
		b.Logf("S3 GET TTFB, %d objects of 1 MiB, closed loop of %d workers, %s per phase: healthy p50 %.2f ms p99 %.2f ms (n=%d); "+
			"%s (%s bytes) killed: p50 %.2f ms p99 %.2f ms (n=%d), ratio %.2f %s <= 2; %s; after the window: %s %s, %d under-replicated; errors %d/%d",
			objects, workers, window, ms(percentile(healthy, 0.5)), ms(hp), len(healthy), victim.ID, strconv.FormatInt(victim.Bytes, 10),
			ms(percentile(dead, 0.5)), ms(dp), len(dead), ms(dp)/ms(hp), meets(ms(dp)/ms(hp) <= 2), verdict,
			victim.ID, c.nodeState(victim.ID), st.UnderReplicated, hErrs, dErrs)
	}
}
