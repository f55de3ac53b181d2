package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

// hostilePayloads are what an operator's credentials could be made to send:
// garbage, nothing, a wrong version, truncated JSON, absurd numbers, deep
// nesting, and 64 KiB of random bytes.
func hostilePayloads(t *testing.T) map[string][]byte {
	t.Helper()
	random := make([]byte, 64<<10)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"garbage":       []byte("not an event, not JSON"),
		"empty":         nil,
		"wrong-version": []byte(`{"v":999,"node":"storage-1","key":"k","size":1,"risk":true}`),
		"truncated":     []byte(`{"v":1,"key":"obj","size":1024,"layout":{"rf":`),
		"absurd":        []byte(`{"v":1,"key":"` + strings.Repeat("k", 5000) + `","size":-9223372036854775808,"limit":1e308,"node":"../../etc"}`),
		"nested":        []byte(strings.Repeat("[", 20000) + strings.Repeat("]", 20000)),
		"random-64KiB":  random,
	}
}

// operatorSubjects are every subject the operator's bus user may publish
// to (package access): operator requests, inventory requests to each node,
// and its switches in the control, detector and liveness buckets.
func operatorSubjects(nodes []string) (requests, writes []string) {
	requests = []string{event.CtlAllocate, event.CtlCommit, event.CtlDelete, event.CtlStatus, event.CtlHealStatus,
		control.CtlHealNode, control.CtlHealPlan, event.ControlPrefix + "no-such-call"}
	for _, n := range nodes {
		requests = append(requests, control.InventoryPrefix+n)
	}
	writes = []string{"$KV." + bus.BucketControl + "." + control.HealSwitchKey,
		"$KV." + bus.BucketDetector + "." + model.OverrideKey,
		"$KV." + bus.BucketLiveness + ".ghost-node"}
	return requests, writes
}

// TestHostileInputWithAuthOn is issue 10's end-to-end: with the bus's
// per-role users on (as `rehome dev` runs by default), hostile payloads on
// every subject the operator may publish to, forged verdicts, tasks and map
// writes, and path tricks and missing tokens at the storage API; then every
// process is still running and a real node kill still heals with every
// object intact.
func TestHostileInputWithAuthOn(t *testing.T) {
	c := startDev(t, "--nodes", "6", "--racks", "3", "--grace", "2s", "--suspect-after", "1s", "--heartbeat", "250ms")
	st := waitHealthy(t, c, 6)
	want := c.putRandom(t, 24, 24<<10)
	var nodes []string
	for _, n := range st.Nodes {
		nodes = append(nodes, n.ID)
	}
	events := c.tailEvents(t)

	// As the operator (secrets.env), like a shell with stolen or misused
	// credentials.
	var mu sync.Mutex
	var refused []string
	nc, err := nats.Connect(c.url, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			mu.Lock()
			refused = append(refused, err.Error())
			mu.Unlock()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	requests, writes := operatorSubjects(nodes)
	payloads := hostilePayloads(t)
	for _, subj := range requests {
		for name, p := range payloads {
			m, err := nc.Request(subj, p, 3*time.Second)
			switch {
			case subj == event.ControlPrefix+"no-such-call":
				// Nobody serves it: no responders, or a timeout while this
				// test's own event tail (rehome.>) hears the request.
			case err != nil:
				t.Errorf("%s with %s: no answer (%v); a service should refuse bad input with an error reply", subj, name, err)
			case !json.Valid(m.Data):
				t.Errorf("%s with %s: the answer is not JSON: %.200q", subj, name, m.Data)
			}
		}
	}
	for _, subj := range writes {
		for name, p := range payloads {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := js.Publish(ctx, subj, p); err != nil {
				t.Errorf("operator write %s (%s): %v", subj, name, err)
			}
			cancel()
		}
	}

	// Forged messages: the server refuses them; none reaches a stream.
	victim := nodes[2]
	forged := []string{event.DownPrefix + victim, event.SuspectPrefix + victim, event.TaskPrefix + victim,
		event.DonePrefix + victim, event.HeartbeatPrefix + victim,
		"$KV." + bus.BucketPlacement + ".forged-shard", "$KV." + bus.BucketObjects + ".forged-key",
		"$KV." + bus.BucketLease + "." + bus.LeasePlanner}
	verdict, _ := event.Encode(&event.Verdict{Node: victim, State: "down", Reason: "forged"})
	for _, subj := range forged {
		if err := nc.Publish(subj, verdict); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc.Flush()
	waitFor(t, 10*time.Second, "the server refused every forged publish", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, subj := range forged {
			found := false
			for _, r := range refused {
				found = found || strings.Contains(r, `"`+subj+`"`)
			}
			if !found {
				return false
			}
		}
		return true
	})
	admin, err := bus.Connect(c.adminURL, "e2e-admin", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ajs, _ := jetstream.New(admin)
	evs, err := ajs.Stream(t.Context(), bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{event.DownPrefix + victim, event.SuspectPrefix + victim} {
		if m, err := evs.GetLastMsgForSubject(t.Context(), subj); err == nil && strings.Contains(string(m.Data), "forged") {
			t.Fatalf("a forged verdict reached the stream: %s %s", subj, m.Data)
		}
	}
	if s := c.nodeState(victim); s != "up" {
		t.Fatalf("%s is %q after forged verdicts, want up", victim, s)
	}

	// The storage API: path tricks, missing and wrong tokens, missing and
	// wrong checksums all get a 4xx, and nothing is half-written.
	addr := c.nodeAddr(t, nodes[0])
	storageProbes(t, addr, c.token())

	// Every process is still running.
	for _, p := range c.processes() {
		if !p.Running || !alive(p.PID) {
			t.Fatalf("%s (pid %d) died after hostile input", p.ID, p.PID)
		}
	}
	if events.saw(event.DownPrefix) {
		t.Fatal("a down verdict was issued while every node was alive")
	}

	// A real node kill still heals with every object intact.
	c.killNode(t, victim, c.pid(t, victim))
	waitFor(t, 90*time.Second, "healed after a real kill", func() bool {
		st, err := c.status()
		return err == nil && st.UnderReplicated == 0 && st.Lost == 0
	})
	oc := c.objects(t)
	c.readBack(t, oc, want)
	for _, p := range c.processes() {
		if p.ID != victim && (!p.Running || !alive(p.PID)) {
			t.Fatalf("%s (pid %d) died during the heal", p.ID, p.PID)
		}
	}
}

// storageProbes sends hostile HTTP requests to one storage node, raw on
// the wire where a client library would clean them up, and wants a 4xx for
// each.
func storageProbes(t *testing.T, addr, token string) {
	t.Helper()
	body := []byte("hostile bytes")
	sum := sha256.Sum256(body)
	good := hex.EncodeToString(sum[:])
	auth := "Authorization: Bearer " + token + "\r\n"
	probes := []struct {
		name, req string
	}{
		{"no token", "GET /v1/shards HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"wrong token", "GET /v1/shards HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n"},
		{"no token on PUT", fmt.Sprintf("PUT /v1/shards/probe-1 HTTP/1.1\r\nHost: x\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s", shardapi.HeaderSHA256, good, len(body), body)},
		{"dot-dot", "GET /v1/shards/../../etc/passwd HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n"},
		{"encoded dot-dot", "GET /v1/shards/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n"},
		{"encoded dots", "GET /v1/shards/%2e%2e HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n"},
		{"absolute", "DELETE /v1/shards/%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n"},
		{"nul", "GET /v1/shards/a%00b HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n"},
		{"too long id", "GET /v1/shards/" + strings.Repeat("a", 5000) + " HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n"},
		{"PUT without checksum", fmt.Sprintf("PUT /v1/shards/probe-2 HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s", auth, len(body), body)},
		{"PUT with a wrong checksum", fmt.Sprintf("PUT /v1/shards/probe-3 HTTP/1.1\r\nHost: x\r\n%s%s: %s\r\nContent-Length: %d\r\n\r\n%s", auth, shardapi.HeaderSHA256, strings.Repeat("0", 64), len(body), body)},
		{"PUT with a malformed checksum", fmt.Sprintf("PUT /v1/shards/probe-4 HTTP/1.1\r\nHost: x\r\n%s%s: zz\r\nContent-Length: %d\r\n\r\n%s", auth, shardapi.HeaderSHA256, len(body), body)},
		{"PUT to a traversal id", fmt.Sprintf("PUT /v1/shards/..%%2fescape HTTP/1.1\r\nHost: x\r\n%s%s: %s\r\nContent-Length: %d\r\n\r\n%s", auth, shardapi.HeaderSHA256, good, len(body), body)},
	}
	for _, p := range probes {
		code := rawRequest(t, addr, p.req)
		if code < 400 || code > 499 {
			t.Errorf("storage API, %s: got %d, want a 4xx", p.name, code)
		}
	}
	// Nothing above was stored.
	client := shardapi.New(token)
	for _, id := range []string{"probe-1", "probe-2", "probe-3", "probe-4"} {
		if _, err := client.Head(context.Background(), addr, id); !errors.Is(err, shardapi.ErrNotFound) {
			t.Errorf("after a refused PUT, HEAD %s: %v, want not found", id, err)
		}
	}
}

// rawRequest writes req as is to addr and returns the response's status.
func rawRequest(t *testing.T, addr, req string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer to %.60q: %v", req, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
