package mover_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/services/mover"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/metricstest"
)

// deadLetters records every dead letter published, with its subject.
type deadLetters struct {
	mu       sync.Mutex
	subjects []string
	letters  []event.Dead
	bad      int
}

func (c *cluster) watchDead() *deadLetters {
	c.t.Helper()
	d := &deadLetters{}
	_, err := c.env.NC.Subscribe(event.DeadPrefix+">", func(m *nats.Msg) {
		var l event.Dead
		err := event.Decode(m.Data, &l)
		d.mu.Lock()
		defer d.mu.Unlock()
		if err != nil {
			d.bad++
			return
		}
		d.subjects = append(d.subjects, m.Subject)
		d.letters = append(d.letters, l)
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.env.NC.Flush(); err != nil {
		c.t.Fatal(err)
	}
	return d
}

func (d *deadLetters) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.letters)
}

// all returns the letters and the subjects they came on.
func (d *deadLetters) all() ([]event.Dead, []string, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.letters), slices.Clone(d.subjects), d.bad
}

// original is the task message a dead letter carries, as it was queued.
func original(l event.Dead) []byte {
	if l.Task != nil {
		return l.Task
	}
	return l.Payload
}

// storedDead reads the dead letters kept in the events stream.
func (c *cluster) storedDead() []event.Dead {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cons, err := c.env.JS.OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{event.DeadPrefix + ">"}})
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []event.Dead
	for range info.NumPending {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			c.t.Fatal(err)
		}
		var l event.Dead
		if err := event.Decode(m.Data(), &l); err != nil {
			c.t.Fatalf("stored dead letter %q: %v", m.Data(), err)
		}
		out = append(out, l)
	}
	return out
}

func TestMalformedTasksAreDeadLetteredWithTheirPayload(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	data := randomBytes(t, 10_000)
	c.put("storage-a", "shard-1", data)
	dead := c.watchDead()
	m := c.mover(mover.Config{ID: "m1"})

	subject := event.TaskPrefix + "storage-b"
	good, _ := event.Encode(copyTask("task-ok", "shard-1", data, "storage-b", "storage-a"))
	wrongVersion := bytes.Replace(good, []byte(`"v":1`), []byte(`"v":7`), 1)
	wrongSubject, _ := event.Encode(copyTask("task-x", "shard-1", data, "storage-a", "storage-b"))
	junk := randomBytes(t, event.MaxDeadPayload+5000)
	badID := []byte(`{"v":1,"task":"t","shard":"../../etc","kind":"copy","target":"storage-b"}`)
	sent := map[string][]byte{ // what was queued, by the start of the reason we expect
		"not json":      []byte("not json"),
		"wrong version": wrongVersion,
		"junk":          junk,
		"bad shard id":  badID,
		"wrong subject": wrongSubject,
	}
	for _, b := range [][]byte{sent["not json"], wrongVersion, junk, badID, wrongSubject} {
		c.publishRaw(subject, b)
	}
	// Queued on a subject whose token is no node id: the dead letter goes to
	// the payload's target, or to "unknown" when there is none.
	c.publishRaw(event.TaskPrefix+"no:de", wrongVersion)
	c.publishRaw(event.TaskPrefix+"no:de", []byte("\x00\x01"))
	c.publishRaw(subject, good)

	bustest.Eventually(t, timeout, "valid task done", func() bool { return len(c.doneFor("task-ok")) == 1 })
	bustest.Eventually(t, timeout, "7 dead letters", func() bool { return dead.count() == 7 })
	c.waitQueueEmpty()

	letters, subjects, bad := dead.all()
	if bad != 0 {
		t.Fatalf("%d dead letters were not valid v1 events", bad)
	}
	perSubject := map[string]int{}
	for i, l := range letters {
		perSubject[subjects[i]]++
		if !strings.HasPrefix(l.Reason, "malformed: ") || l.Deliveries != 1 || l.StreamSeq == 0 {
			t.Errorf("dead letter on %s: reason %q deliveries %d seq %d", subjects[i], l.Reason, l.Deliveries, l.StreamSeq)
		}
		if subjects[i] != event.DeadPrefix+l.Target {
			t.Errorf("dead letter for %s published on %s", l.Target, subjects[i])
		}
	}
	want := map[string]int{event.DeadPrefix + "storage-b": 6, event.DeadPrefix + "unknown": 1}
	if len(perSubject) != len(want) || perSubject[event.DeadPrefix+"storage-b"] != 6 || perSubject[event.DeadPrefix+"unknown"] != 1 {
		t.Fatalf("dead letters per subject %v, want %v", perSubject, want)
	}
	// Each payload comes back as it was queued (the junk cut to the limit).
	for name, b := range sent {
		found := false
		for _, l := range letters {
			if l.Subject == subject && bytes.Equal(original(l), b[:min(len(b), event.MaxDeadPayload)]) && l.Size == len(b) {
				found = true
			}
		}
		if !found {
			t.Errorf("no dead letter carries the %s payload", name)
		}
	}
	for _, l := range letters {
		if l.Subject == subject && bytes.Equal(l.Task, wrongSubject) {
			var tk event.Task
			if err := json.Unmarshal(l.Task, &tk); err != nil || tk.Task != "task-x" {
				t.Fatalf("dead letter's task does not decode back: %v %+v", err, tk)
			}
		}
	}
	// They are durable: the events stream keeps them.
	if got := len(c.storedDead()); got != 7 {
		t.Fatalf("events stream holds %d dead letters, want 7", got)
	}
	reg := m.Registry()
	if got := metricstest.Value(t, reg, "rehome_mover_dead_letters_total", "reason", mover.DeadMalformed); got != 7 {
		t.Fatalf("dead letters metric = %v, want 7", got)
	}
	if got := metricstest.Value(t, reg, "rehome_mover_malformed_events_total", "subject", "task"); got != 7 {
		t.Fatalf("malformed metric = %v, want 7", got)
	}
}

func TestPermanentFailureIsDeadLetteredBeforeItsFinalReport(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	want := randomBytes(t, 50_000)
	c.put("storage-a", "shard-1", randomBytes(t, 50_000)) // other bytes under that id
	dead := c.watchDead()
	m := c.mover(mover.Config{ID: "m1"})

	task := copyTask("task-1", "shard-1", want, "storage-b", "storage-a")
	c.publish(task)
	bustest.Eventually(t, timeout, "final failure", func() bool { return len(c.failedFor("task-1")) == 1 })
	bustest.Eventually(t, timeout, "dead letter", func() bool { return dead.count() == 1 })
	c.waitQueueEmpty()
	// The dead letter was stored before the final report.
	s, err := c.env.JS.Stream(context.Background(), bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	dm, err1 := s.GetLastMsgForSubject(context.Background(), event.DeadPrefix+"storage-b")
	fm, err2 := s.GetLastMsgForSubject(context.Background(), event.FailedPrefix+"storage-b")
	if err1 != nil || err2 != nil || dm.Sequence > fm.Sequence {
		t.Fatalf("dead letter at %v (%v), final failure at %v (%v): want the dead letter first", dm, err1, fm, err2)
	}
	letters, subjects, _ := dead.all()
	l := letters[0]
	if subjects[0] != event.DeadPrefix+"storage-b" || !strings.HasPrefix(l.Reason, "permanent: ") ||
		!strings.Contains(l.Reason, "storage-a") || l.Deliveries != 1 || l.Subject != event.TaskPrefix+"storage-b" {
		t.Fatalf("dead letter on %s = %+v", subjects[0], l)
	}
	var back event.Task
	if err := event.Decode(l.Task, &back); err != nil || back.Task != "task-1" || back.SHA256 != task.SHA256 || back.Kind != event.KindCopy {
		t.Fatalf("dead letter's task = %+v (%v), want the original", back, err)
	}
	if got := metricstest.Value(t, m.Registry(), "rehome_mover_dead_letters_total", "reason", mover.DeadPermanent); got != 1 {
		t.Fatalf("dead letters metric = %v, want 1", got)
	}
}

func TestTaskOutOfAttemptsIsDeadLetteredOnce(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.register("storage-gone", deadAddr(t))
	data := randomBytes(t, 10_000)
	c.put("storage-a", "shard-1", data)
	dead := c.watchDead()
	m := c.mover(mover.Config{ID: "m1", MaxDeliver: 3})

	c.publish(copyTask("task-1", "shard-1", data, "storage-gone", "storage-a"))
	bustest.Eventually(t, timeout, "three failed attempts", func() bool { return len(c.failedFor("task-1")) == 3 })
	c.waitQueueEmpty()
	letters, subjects, _ := dead.all()
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want 1 (the last attempt only)", len(letters))
	}
	if l := letters[0]; subjects[0] != event.DeadPrefix+"storage-gone" || !strings.HasPrefix(l.Reason, "max_deliveries: attempt 3 of 3") || l.Deliveries != 3 {
		t.Fatalf("dead letter on %s = %+v", subjects[0], l)
	}
	if got := metricstest.Value(t, m.Registry(), "rehome_mover_dead_letters_total", "reason", mover.DeadMaxDeliveries); got != 1 {
		t.Fatalf("dead letters metric = %v, want 1", got)
	}
}

func TestAbandonedTaskIsDeadLetteredFromTheAdvisory(t *testing.T) {
	c := newCluster(t)
	c.storage("storage-a")
	c.storage("storage-b")
	data := randomBytes(t, 1000)
	c.put("storage-a", "shard-1", data)
	dead := c.watchDead()
	cfg := mover.Config{ID: "m1", AckWait: time.Second, MaxDeliver: 1}
	// A mover that takes the task and dies without answering.
	ctx := context.Background()
	cons, err := c.env.JS.CreateOrUpdateConsumer(ctx, bus.StreamTasks, jetstream.ConsumerConfig{
		Durable: bus.MoverConsumer, Description: "rehome movers: repair tasks", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: cfg.AckWait, MaxDeliver: cfg.MaxDeliver, MaxAckPending: mover.DefaultConfig().MaxAckPending,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.publish(copyTask("task-1", "shard-1", data, "storage-b", "storage-a"))
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(collect(batch.Messages())); got != 1 {
		t.Fatalf("fetched %d tasks, want 1", got)
	}
	m := c.mover(cfg)

	bustest.Eventually(t, timeout, "dead letter after max deliveries", func() bool { return dead.count() == 1 })
	bustest.Eventually(t, timeout, "final failure", func() bool { return len(c.failedFor("task-1")) == 1 })
	c.waitQueueEmpty()
	letters, subjects, _ := dead.all()
	l := letters[0]
	var back event.Task
	if subjects[0] != event.DeadPrefix+"storage-b" || !strings.HasPrefix(l.Reason, "max_deliveries: no answer after 1 deliveries") ||
		l.Deliveries != 1 || event.Decode(l.Task, &back) != nil || back.Task != "task-1" {
		t.Fatalf("dead letter on %s = %+v", subjects[0], l)
	}
	if got := metricstest.Value(t, m.Registry(), "rehome_mover_dead_letters_total", "reason", mover.DeadMaxDeliveries); got != 1 {
		t.Fatalf("dead letters metric = %v, want 1", got)
	}
}

// While the events stream does not take dead letters, a poison task is kept
// (handed back), never dropped; once it does, the letter goes out.
func TestPoisonTaskIsKeptUntilItsDeadLetterIsStored(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	s, err := c.env.JS.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	sc.Subjects = slices.DeleteFunc(slices.Clone(sc.Subjects), func(subj string) bool { return strings.HasPrefix(subj, event.DeadPrefix) })
	if _, err := c.env.JS.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	// No plain subscriber on the dead subjects either: a publish finds no stream.
	c.mover(mover.Config{ID: "m1", BackoffMax: 200 * time.Millisecond})
	c.publishRaw(event.TaskPrefix+"storage-b", []byte("poison"))

	bustest.Eventually(t, timeout, "poison task delivered again and again", func() bool {
		cons, err := c.env.JS.Consumer(ctx, bus.StreamTasks, bus.MoverConsumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumRedelivered > 0
	})
	if q := c.queued(); q != 1 {
		t.Fatalf("queue holds %d tasks while the dead letter could not be stored, want 1", q)
	}
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := bus.Ensure(ectx, c.env.JS, bus.Config{}); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, timeout, "dead letter stored", func() bool { return len(c.storedDead()) == 1 })
	c.waitQueueEmpty()
	if l := c.storedDead()[0]; !bytes.Equal(l.Payload, []byte("poison")) || l.Deliveries < 2 {
		t.Fatalf("stored dead letter %+v", l)
	}
}
