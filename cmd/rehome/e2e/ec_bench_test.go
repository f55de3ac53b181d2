package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/benchenv"

	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/objects"
)

var ecLayout = model.Layout{K: 4, M: 2}

// BenchmarkDegradedRead compares GET latency of 4+2 objects while every piece
// is present with the same GETs after a node holding pieces was killed (long
// grace: no repair runs, every read that needs that node's pieces decodes from
// parity). Objects of 1 MiB and 16 MiB; p50 and p99 of each, and the ratios.
func BenchmarkDegradedRead(b *testing.B) {
	for i := 0; i < b.N; i++ {
		c := startDev(b, "--nodes", "8", "--racks", "4", "--heartbeat", "250ms", "--suspect-after", "1s", "--grace", "10m")
		waitHealthy(b, c, 8)
		rounds := 20
		if benchenv.Quick() {
			rounds = 5
		}
		oc := c.objects(b)
		sizes := []int{1 << 20, 16 << 20}
		sets := map[int]map[string][]byte{}
		for _, size := range sizes {
			sets[size] = map[string][]byte{}
			for j := 0; j < 8; j++ {
				sets[size][fmt.Sprintf("deg-%d-%d", size, j)] = nil
			}
			c.putEC(b, sets[size], size)
		}
		measure := func(names map[string][]byte) []time.Duration {
			var ds []time.Duration
			for r := 0; r < rounds; r++ {
				for name := range names {
					start := time.Now()
					if _, err := oc.Get(context.Background(), name, io.Discard); err != nil {
						b.Fatal(err)
					}
					ds = append(ds, time.Since(start))
				}
			}
			return ds
		}
		healthy := map[int][]time.Duration{}
		for _, size := range sizes {
			healthy[size] = measure(sets[size])
		}
		c.signal(b, "storage-1", syscall.SIGKILL)
		for _, size := range sizes {
			degraded := measure(sets[size])
			hp50, hp99 := percentile(healthy[size], .5), percentile(healthy[size], .99)
			dp50, dp99 := percentile(degraded, .5), percentile(degraded, .99)
			label := fmt.Sprintf("%dMiB", size>>20)
			b.ReportMetric(ms(hp99), label+"_healthy_p99_ms")
			b.ReportMetric(ms(dp99), label+"_degraded_p99_ms")
			b.ReportMetric(float64(dp50)/float64(hp50), label+"_p50_ratio")
			b.Logf("4+2 objects of %s, 8 nodes / 4 racks, storage-1 killed (no repair): healthy p50 %s p99 %s; degraded p50 %s p99 %s; p50 ratio %.2f",
				label, hp50.Round(10*time.Microsecond), hp99.Round(10*time.Microsecond), dp50.Round(10*time.Microsecond), dp99.Round(10*time.Microsecond), float64(dp50)/float64(hp50))
		}
		c.stop()
	}
}

// putEC writes random 4+2 objects of size bytes under the given names
// through the objects client.
func (c *cluster) putEC(b testing.TB, names map[string][]byte, size int) {
	b.Helper()
	oc := c.objects(b)
	for name := range names {
		data := bytes.Repeat([]byte(name), size/len(name)+1)[:size]
		names[name] = data
		if _, err := oc.Put(context.Background(), name, bytes.NewReader(data), int64(size), objects.PutOptions{Layout: ecLayout}); err != nil {
			b.Fatal(err)
		}
	}
}
