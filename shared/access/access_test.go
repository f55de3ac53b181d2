package access_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/access"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/embedded"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// authBus is an embedded server with one user per role (storage users for
// storage-1 and storage-2), bootstrapped by the admin.
type authBus struct {
	url   string
	users map[string]access.User
	admin jetstream.JetStream
}

func startAuthBus(t *testing.T) *authBus {
	t.Helper()
	b := &authBus{users: map[string]access.User{}}
	var list []access.User
	add := func(role access.Role, node string) {
		u, err := access.NewUser(role, node)
		if err != nil {
			t.Fatal(err)
		}
		b.users[u.Name] = u
		list = append(list, u)
	}
	for _, r := range []access.Role{access.Admin, access.Operator, access.Detector, access.Planner, access.Mover, access.S3} {
		add(r, "")
	}
	add(access.Storage, "storage-1")
	add(access.Storage, "storage-2")
	add(access.S3, "s3-1") // one user per gateway instance
	s, err := embedded.Start(embedded.Config{Port: -1, StoreDir: t.TempDir(), Users: list,
		SystemUser: "sys", SystemPassword: "sys-secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	b.url = s.ClientURL()
	nc := b.connect(t, "admin", nil)
	b.admin, _ = jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Ensure(ctx, b.admin, bus.Config{}); err != nil {
		t.Fatal(err)
	}
	return b
}

// violations records the permission violations the server reports to one
// connection.
type violations struct {
	mu   sync.Mutex
	msgs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		v.mu.Lock()
		v.msgs = append(v.msgs, err.Error())
		v.mu.Unlock()
	}
}

func (v *violations) about(subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, m := range v.msgs {
		if strings.Contains(m, `"`+subject+`"`) {
			return true
		}
	}
	return false
}

func (b *authBus) connect(t *testing.T, user string, v *violations) *nats.Conn {
	t.Helper()
	u, ok := b.users[user]
	if !ok {
		t.Fatalf("no user %s", user)
	}
	opts := []nats.Option{nats.Name(user)}
	if v != nil {
		opts = append(opts, nats.ErrorHandler(v.handler))
	}
	nc, err := nats.Connect(u.URL(b.url), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// lastSeq returns the stream sequence of the last message on subject (0:
// none).
func (b *authBus) lastSeq(t *testing.T, subject string) uint64 {
	t.Helper()
	st, err := b.admin.Stream(context.Background(), streamOf(subject))
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return m.Sequence
}

func kv(bucket, key string) string { return "$KV." + bucket + "." + key }

func streamOf(subject string) string {
	switch {
	case strings.HasPrefix(subject, "$KV."):
		return "KV_" + strings.Split(subject, ".")[1]
	case strings.HasPrefix(subject, event.HeartbeatPrefix):
		return bus.StreamHeartbeats
	case strings.HasPrefix(subject, event.TaskPrefix):
		return bus.StreamTasks
	default:
		return bus.StreamEvents
	}
}

// TestEachRoleMayWriteOnlyWhatItsJobNeeds publishes, as every role, to the
// stream and bucket subjects that matter, and checks the server stored the
// allowed ones and refused (and reported) the rest: forged verdicts, tasks,
// map writes and other nodes' heartbeats never reach a stream.
func TestEachRoleMayWriteOnlyWhatItsJobNeeds(t *testing.T) {
	b := startAuthBus(t)
	// Each role's allowed writes must be stored; its denied ones refused.
	cases := map[string]struct{ allow, deny []string }{
		"node-storage-1": {
			allow: []string{event.HeartbeatPrefix + "storage-1", event.CorruptPrefix + "storage-1", kv(bus.BucketNodes, "storage-1")},
			deny: []string{event.HeartbeatPrefix + "storage-2", event.CorruptPrefix + "storage-2", kv(bus.BucketNodes, "storage-2"),
				event.DownPrefix + "storage-2", event.TaskPrefix + "storage-1", kv(bus.BucketPlacement, "s1"),
				event.DonePrefix + "storage-1", kv(bus.BucketLiveness, "storage-1")},
		},
		"detector": {
			allow: []string{event.DownPrefix + "storage-1", event.SuspectPrefix + "storage-1", event.UpPrefix + "storage-1",
				kv(bus.BucketLiveness, "storage-1"), kv(bus.BucketDetector, model.HoldKey)},
			deny: []string{event.TaskPrefix + "storage-1", kv(bus.BucketPlacement, "s1"), event.HeartbeatPrefix + "storage-2",
				kv(bus.BucketDetector, model.OverrideKey), event.DonePrefix + "storage-1", kv(bus.BucketObjects, "k1")},
		},
		"planner": {
			allow: []string{event.TaskPrefix + "storage-1", event.PlanPrefix + "i1", event.LostPrefix + "s1", event.HealProgress,
				kv(bus.BucketPlacement, "s1"), kv(bus.BucketObjects, "k1"), kv(bus.BucketLease, bus.LeasePlanner),
				kv(bus.BucketIndex, "root"),
				// node remove deletes the removed node's registration and liveness;
				// a KV delete is a publish on the key, so the grant is the key.
				kv(bus.BucketLiveness, "storage-2"), kv(bus.BucketNodes, "storage-2")},
			deny: []string{event.DownPrefix + "storage-2", event.UpPrefix + "storage-2",
				event.DonePrefix + "storage-2", event.HeartbeatPrefix + "storage-2", kv(bus.BucketDetector, model.HoldKey)},
		},
		"mover": {
			allow: []string{event.DonePrefix + "storage-1", event.FailedPrefix + "storage-1", event.DeadPrefix + "storage-1"},
			deny: []string{event.TaskPrefix + "storage-2", event.DownPrefix + "storage-2", kv(bus.BucketPlacement, "s2"),
				kv(bus.BucketObjects, "k2"), event.HealProgress},
		},
		"gateway-s3-1": {
			allow: []string{kv(bus.BucketS3, "bucket.docs")},
			deny:  []string{kv(bus.BucketObjects, "k4"), kv(bus.BucketIndex, "p.0"), event.TaskPrefix + "storage-2"},
		},
		"s3": {
			allow: []string{kv(bus.BucketS3, "bucket.photos"), kv(bus.BucketS3, "upload.u1")},
			deny: []string{kv(bus.BucketObjects, "k3"), kv(bus.BucketPlacement, "s3"), kv(bus.BucketIndex, "root"),
				event.TaskPrefix + "storage-1", event.DownPrefix + "storage-1", event.DonePrefix + "storage-1",
				kv(bus.BucketLease, bus.LeasePlanner), kv(bus.BucketControl, control.HealSwitchKey), event.HeartbeatPrefix + "storage-1"},
		},
		"operator": {
			allow: []string{kv(bus.BucketControl, control.HealSwitchKey), kv(bus.BucketDetector, model.OverrideKey),
				kv(bus.BucketLiveness, "storage-2")},
			deny: []string{event.DownPrefix + "storage-2", event.UpPrefix + "storage-2", event.SuspectPrefix + "storage-2",
				event.TaskPrefix + "storage-2", kv(bus.BucketPlacement, "s2"), kv(bus.BucketObjects, "k2"),
				event.HeartbeatPrefix + "storage-2", kv(bus.BucketDetector, model.HoldKey), event.DonePrefix + "storage-2",
				kv(bus.BucketLease, bus.LeasePlanner), event.LostPrefix + "s2"},
		},
	}
	for user, c := range cases {
		t.Run(user, func(t *testing.T) {
			v := &violations{}
			nc := b.connect(t, user, v)
			js, _ := jetstream.New(nc)
			for _, subj := range c.allow {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := js.Publish(ctx, subj, []byte(`{"v":1}`))
				cancel()
				if err != nil {
					t.Errorf("%s may publish %s, got %v", user, subj, err)
				}
			}
			before := map[string]uint64{}
			for _, subj := range c.deny {
				before[subj] = b.lastSeq(t, subj)
				if err := nc.Publish(subj, []byte(`{"v":1}`)); err != nil {
					t.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			for _, subj := range c.deny {
				bustest.Eventually(t, 5*time.Second, user+" refused on "+subj, func() bool { return v.about(subj) })
				if b.lastSeq(t, subj) != before[subj] {
					t.Errorf("%s published %s and the stream stored it", user, subj)
				}
			}
		})
	}
}

// TestAdministrationAndQueueAreGuarded: no service role may delete or purge
// a stream, only movers and the planner may touch the task queue, and only
// the planner its durable consumer of results.
func TestAdministrationAndQueueAreGuarded(t *testing.T) {
	b := startAuthBus(t)
	for _, user := range []string{"operator", "node-storage-1", "detector", "mover", "planner", "s3"} {
		v := &violations{}
		nc := b.connect(t, user, v)
		probes := []string{"$JS.API.STREAM.DELETE." + bus.StreamEvents, "$JS.API.STREAM.PURGE." + bus.StreamTasks}
		if user != "planner" {
			results := bus.StreamEvents + "." + bus.PlannerConsumer
			probes = append(probes, "$JS.API.CONSUMER.MSG.NEXT."+results, "$JS.API.CONSUMER.DELETE."+results,
				"$JS.API.CONSUMER.CREATE."+results+".rehome.repair.done.>", "$JS.ACK."+results+".1.1.1.1.1.0")
		}
		if user != "planner" && user != "mover" {
			probes = append(probes, "$JS.API.CONSUMER.CREATE."+bus.StreamTasks+".thief.>", "$JS.API.STREAM.MSG.DELETE."+bus.StreamTasks)
		}
		for _, p := range probes {
			_ = nc.Publish(p, []byte("{}"))
		}
		_ = nc.Flush()
		for _, p := range probes {
			bustest.Eventually(t, 5*time.Second, user+" refused on "+p, func() bool { return v.about(p) })
		}
	}
	if _, err := b.admin.Stream(context.Background(), bus.StreamEvents); err != nil {
		t.Fatalf("events stream after delete attempts: %v", err)
	}
}

// TestSubscriptionsAndRequests: a storage node cannot listen to another
// node's inventory requests; the operator reads every event and may send
// operator requests; the services' bootstrap check passes for every role
// once the admin created the resources; anonymous clients are refused.
func TestSubscriptionsAndRequests(t *testing.T) {
	b := startAuthBus(t)
	v := &violations{}
	nc := b.connect(t, "node-storage-1", v)
	if _, err := nc.SubscribeSync(control.InventoryPrefix + "storage-2"); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	bustest.Eventually(t, 5*time.Second, "storage-1 refused on storage-2's inventory", func() bool {
		return v.about(control.InventoryPrefix + "storage-2")
	})

	op := b.connect(t, "operator", nil)
	sub, err := op.SubscribeSync("rehome.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = op.Flush()
	det := b.connect(t, "detector", nil)
	if err := det.Publish(event.SuspectPrefix+"storage-1", []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || m.Subject != event.SuspectPrefix+"storage-1" {
		t.Fatalf("operator reading events: %v %v", m, err)
	}
	_ = sub.Unsubscribe() // else the operator itself would be the request's only responder
	if _, err := op.Request(event.CtlStatus, nil, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("operator request with no planner: want no responders (allowed, nobody home), got %v", err)
	}

	for name := range b.users {
		js, _ := jetstream.New(b.connect(t, name, nil))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := bus.Ensure(ctx, js, bus.Config{}); err != nil {
			t.Errorf("Ensure as %s on a bootstrapped bus: %v", name, err)
		}
		cancel()
	}

	if _, err := nats.Connect(b.url); err == nil {
		t.Fatal("anonymous client connected")
	}
	wrong := b.users["operator"]
	wrong.Password = "not-it"
	if _, err := nats.Connect(wrong.URL(b.url)); err == nil {
		t.Fatal("wrong password connected")
	}
}

func TestPermissionsForRefusesNonsense(t *testing.T) {
	for _, c := range []struct {
		role access.Role
		node string
	}{{access.Storage, ""}, {access.Storage, "../x"}, {access.Storage, "a.b"}, {access.Planner, "storage-1"}, {"root", ""}} {
		if _, err := access.PermissionsFor(c.role, c.node); err == nil {
			t.Errorf("PermissionsFor(%q, %q) accepted", c.role, c.node)
		}
	}
	if _, err := access.ServerConf([]access.User{{Name: "a", Password: `x"y`, Role: access.Mover}}, access.System{}); err == nil {
		t.Error("a password with a quote was rendered")
	}
}
