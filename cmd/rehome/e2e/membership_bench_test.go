package e2e

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/benchenv"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// call makes one control call straight on the bench's bus connection.
func (bc *benchCluster) call(subject string, req, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bus.Call(ctx, bc.nc, subject, req, out)
}

// drainTimed drains node and polls every poll until it is drained; it
// returns how long that took and how many status samples showed an
// under-replicated shard (of how many).
func (bc *benchCluster) drainTimed(node string, poll time.Duration) (took time.Duration, under, samples int) {
	bc.b.Helper()
	start := time.Now()
	if err := bc.call(control.CtlDrain, control.NodeRequest{Node: node, By: "bench"}, nil); err != nil {
		bc.b.Fatal(err)
	}
	deadline := start.Add(benchHealTimeout)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for ; ; <-tick.C {
		var rep control.DrainReply
		err := bc.call(control.CtlDrainStatus, control.NodeRequest{Node: node}, &rep)
		now := time.Now()
		if err == nil && len(rep.Drains) == 1 && rep.Drains[0].Drained {
			return now.Sub(start), under, samples
		}
		var st control.ClusterStatus
		if bc.call(event.CtlStatus, struct{}{}, &st) == nil {
			samples++
			if st.UnderReplicated > 0 {
				under++
			}
		}
		if now.After(deadline) {
			bc.b.Fatalf("%s not drained within %s: %+v (err %v)", node, benchHealTimeout, rep, err)
		}
	}
}

// BenchmarkDrainVsRepair drains the fullest node of a 6-node / 3-rack
// cluster holding ~500 MB (REHOME_BENCH_MB written, 1000 by default) and, on a
// fresh cluster of the same shape and data, kills that node and times its
// repair: drain MB/s over repair MB/s (SPEC §11: >= 0.8x, with no
// under-replicated status sample during the drain).
func BenchmarkDrainVsRepair(b *testing.B) {
	written := int64(1000)
	if benchenv.Quick() {
		written = 200
	}
	written = int64(benchenv.Int("REHOME_BENCH_MB", int(written)))
	const objSize = 4 * model.DefaultChunkSize
	objs := max(1, int(float64(written)*benchMB/objSize+0.5))
	for range b.N {
		bc := startBenchCluster(b, 6, 3)
		bc.putObjects("bulk", objs, objSize, 2)
		node := bc.fullestOutside(nil)
		syscall.Sync() // both runs start with the writes' writeback done
		drainTook, under, samples := bc.drainTimed(node.ID, 25*time.Millisecond)
		bc.stop()

		rc := startBenchCluster(b, 6, 3)
		rc.putObjects("bulk", objs, objSize, 2)
		before := rc.placements()
		victim := rc.fullestOutside(nil)
		syscall.Sync()
		in := rc.killAndHeal(victim.ID, before, 25*time.Millisecond)
		rc.stop()

		drain, repair := mbps(node.Bytes, drainTook), mbps(in.bytes, in.verdictToHealthy())
		b.ReportMetric(drain, "drain_MBps")
		b.ReportMetric(repair, "repair_MBps")
		b.ReportMetric(drain/repair, "ratio")
		b.ReportMetric(float64(node.Bytes)/benchMB, "drained_MB")
		b.ReportMetric(float64(under), "under_replicated_samples")
		b.ReportMetric(float64(samples), "status_samples")
		b.Logf("drain of %s: %.0f MB in %s (%.0f MB/s), %d of %d status samples under-replicated; repair of %s: %.0f MB in %s (%.0f MB/s); ratio %.2f (target >= 0.8: %s)",
			node.ID, float64(node.Bytes)/benchMB, drainTook.Round(time.Millisecond), drain, under, samples,
			victim.ID, float64(in.bytes)/benchMB, in.verdictToHealthy().Round(time.Millisecond), repair, drain/repair, meets(drain/repair >= 0.8 && under == 0))
	}
}

// BenchmarkRebalanceAfterAddingANode fills 6 nodes (6 racks: with RF 3 on 3
// racks each rack's share is fixed, see docs/membership.md) to ~60% of their
// capacity, adds storage-7 in its own rack and times the rebalance into the
// 5-point band: the widest deviation at the end, bytes moved against the
// least any plan must move, and client GET p99 while it ran against idle
// (SPEC §11: band <= 5 pp, moved <= 1.1x, GET p99 <= 1.5x). The clients are
// the open loop of BenchmarkGetLatencyDuringRebuild: 200 objects of 64 KiB
// read at REHOME_BENCH_GET_RATE per second (default 300), each timed from
// when it was due.
func BenchmarkRebalanceAfterAddingANode(b *testing.B) {
	written := int64(600)
	if benchenv.Quick() {
		written = 120
	}
	written = int64(benchenv.Int("REHOME_BENCH_REBALANCE_MB", int(written)))
	const objSize = model.DefaultChunkSize
	objs := max(1, int(float64(written)*benchMB/objSize+0.5))
	const smalls, smallSize = 200, 64 << 10
	capacity := int64(float64(objs*objSize+smalls*smallSize)*3/6/0.6) + 1
	perSec := benchenv.Int("REHOME_BENCH_GET_RATE", 300)
	const band = 0.05
	for range b.N {
		bc := startBenchCluster(b, 6, 6, "--capacity", strconv.FormatInt(capacity, 10))
		keys := bc.putObjects("small", smalls, smallSize, 8)
		bc.putObjects("bulk", objs, objSize, 2)
		if err := bc.putSwitch(true); err != nil {
			b.Fatal(err)
		}
		syscall.Sync() // the bulk's writeback is not the idle phase's latency
		gets := bc.openLoopGets(keys, perSec)
		waitFor(b, time.Minute, "5 s of idle GETs", func() bool { return gets.count() >= 5*perSec })
		idleEnd := time.Now()
		bc.addNode(b, "storage-7", "rack-7", capacity)
		waitHealthy(b, bc.cluster, 7)
		var before control.BalanceStatus
		if err := bc.call(control.CtlRebalanceStatus, struct{}{}, &before); err != nil {
			b.Fatal(err)
		}
		minimum := 0.0
		var shed, gain float64
		for _, n := range before.Nodes {
			shed += math.Max(0, n.Fill-(before.MeanFill+band)) * float64(capacity)
			gain += math.Max(0, (before.MeanFill-band)-n.Fill) * float64(capacity)
		}
		minimum = math.Max(shed, gain)
		moved := bc.tap.movedBytes()
		start := time.Now()
		if err := bc.putSwitch(false); err != nil {
			b.Fatal(err)
		}
		var st control.BalanceStatus
		waitFor(b, benchHealTimeout, "balanced", func() bool {
			return bc.call(control.CtlRebalanceStatus, struct{}{}, &st) == nil && st.Balanced && st.MovesInFlight == 0
		})
		took := time.Since(start)
		client := gets.finish()
		var idle, busy []time.Duration
		for _, s := range client {
			switch {
			case s.err != nil:
			case s.due.Before(idleEnd):
				idle = append(idle, s.took)
			case !s.due.Before(start) && s.due.Before(start.Add(took)):
				busy = append(busy, s.took)
			}
		}
		bytesMoved := float64(bc.tap.movedBytes() - moved)
		pIdle, pBusy := percentile(idle, 0.99), percentile(busy, 0.99)
		bc.stop()
		b.ReportMetric(100*st.MaxDeviation, "band_pp")
		b.ReportMetric(bytesMoved/minimum, "moved_vs_minimum")
		b.ReportMetric(bytesMoved/benchMB, "moved_MB")
		b.ReportMetric(took.Seconds(), "rebalance_seconds")
		b.ReportMetric(float64(pBusy)/float64(pIdle), "get_p99_ratio")
		b.ReportMetric(float64(pIdle.Microseconds())/1000, "get_p99_idle_ms")
		b.ReportMetric(float64(pBusy.Microseconds())/1000, "get_p99_rebalance_ms")
		b.Logf("rebalance after adding storage-7: %s, widest %.1f pp (target <= 5: %s); moved %.0f MB, %.2fx the minimum %.0f MB (target <= 1.1: %s); GET p99 %s idle (%d) vs %s rebalancing (%d): %.2fx (target <= 1.5: %s)",
			took.Round(time.Millisecond), 100*st.MaxDeviation, meets(st.MaxDeviation <= band), bytesMoved/benchMB, bytesMoved/minimum, minimum/benchMB,
			meets(bytesMoved/minimum <= 1.1), pIdle, len(idle), pBusy, len(busy), float64(pBusy)/float64(pIdle), meets(float64(pBusy) <= 1.5*float64(pIdle)))
	}
}

// putSwitch pauses or resumes the rebalancer (what `rehome rebalance
// pause|resume` writes).
func (bc *benchCluster) putSwitch(paused bool) error {
	verb := "resume"
	if paused {
		verb = "pause"
	}
	if out, err := bc.rehome("rebalance", verb); err != nil {
		return fmt.Errorf("rebalance %s: %w: %s", verb, err, out)
	}
	return nil
}

// rebalanceIncident is the incident the planner's rebalancing copies carry.
const rebalanceIncident = "rebalance"

// movedBytes is the bytes of rebalancing copies verified so far.
func (t *busTap) movedBytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.moved
}

// count is how many client GETs the open loop has timed.
func (o *openLoop) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.samples)
}
