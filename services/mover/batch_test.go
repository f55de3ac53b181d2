package mover_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// batchTask makes one batched copy task of the given shards (task ids
// t-<shard>) from source to target, each announcing the bytes in want.
func batchTask(target, source string, shards []string, want map[string][]byte) *event.Task {
	var t *event.Task
	for _, sh := range shards {
		m := copyTask("t-"+sh, sh, want[sh], target, source)
		if t == nil {
			t = m
		}
		t.Batch = append(t.Batch, event.BatchShard{Task: m.Task, Incident: m.Incident, Shard: sh, Sources: m.Sources,
			Bytes: m.Bytes, SHA256: m.SHA256, Attempt: 1})
	}
	return t
}

func TestBatchedCopyVerifiesEachShardAndReportsEachAlone(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	want := map[string][]byte{}
	var shards []string
	for i := range 5 {
		sh := fmt.Sprintf("shard-%d", i)
		shards = append(shards, sh)
		want[sh] = randomBytes(t, 4096+i)
		if i == 2 {
			c.put("storage-a", sh, randomBytes(t, 4096+i)) // other bytes under that id
			continue
		}
		c.put("storage-a", sh, want[sh])
	}
	m := c.mover(mover.Config{ID: "m1"})
	c.publish(batchTask("storage-b", "storage-a", shards, want))

	bustest.Eventually(t, timeout, "a report for every shard", func() bool {
		n := 0
		for _, sh := range shards {
			n += len(c.doneFor("t-"+sh)) + len(c.failedFor("t-"+sh))
		}
		return n == len(shards)
	})
	c.waitQueueEmpty()
	for _, sh := range shards {
		done, failed := c.doneFor("t-"+sh), c.failedFor("t-"+sh)
		if sh == "shard-2" {
			if len(done) != 0 || len(failed) != 1 || !failed[0].Final || failed[0].Side != event.SideSource || failed[0].Shard != sh {
				t.Fatalf("%s (wrong bytes at the source): done %+v failed %+v, want one final failure of the source", sh, done, failed)
			}
			if got := c.read("storage-b", sh); got != nil {
				t.Fatalf("storage-b holds %d bytes of a shard whose source bytes failed their check", len(got))
			}
			continue
		}
		if len(done) != 1 || len(failed) != 0 {
			t.Fatalf("%s: %d done, %d failed reports, want one done", sh, len(done), len(failed))
		}
		if d := done[0]; d.Shard != sh || d.Target != "storage-b" || d.Source != "storage-a" || d.Bytes != int64(len(want[sh])) || d.Kind != event.KindCopy {
			t.Fatalf("done report %+v", d)
		}
		if got := c.read("storage-b", sh); !bytes.Equal(got, want[sh]) {
			t.Fatalf("storage-b holds %d bytes under %s, want the %d verified bytes", len(got), sh, len(want[sh]))
		}
	}
	if got := metricstest.Value(t, m.Registry(), "rehome_mover_bytes_copied_total"); got != float64(4*4096+0+1+3+4) {
		t.Fatalf("bytes copied metric = %v", got)
	}
}

func TestBatchedCopyToUnreachableTargetIsRetriedThenEveryShardGivenUp(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.register("storage-gone", deadAddr(t))
	want := map[string][]byte{}
	shards := []string{"shard-1", "shard-2"}
	for _, sh := range shards {
		want[sh] = randomBytes(t, 1000)
		c.put("storage-a", sh, want[sh])
	}
	c.mover(mover.Config{ID: "m1", MaxDeliver: 2})
	c.publish(batchTask("storage-gone", "storage-a", shards, want))

	bustest.Eventually(t, timeout, "two attempts reported for each shard", func() bool {
		return len(c.failedFor("t-shard-1")) == 2 && len(c.failedFor("t-shard-2")) == 2
	})
	c.waitQueueEmpty()
	for _, sh := range shards {
		for i, f := range c.failedFor("t-" + sh) {
			if f.Attempt != i+1 || f.Final != (i == 1) || f.Side != event.SideTarget || f.Shard != sh {
				t.Fatalf("%s report %d = %+v, want attempt %d of the target, final only on the last", sh, i, f, i+1)
			}
		}
	}
}
