package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rehome/rehome/services/console"
	"github.com/rehome/rehome/shared/bus"
	"github.com/rehome/rehome/shared/bustest"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// planner answers the status calls the console makes, like the acting planner.
func planner(t *testing.T, nc *nats.Conn, nodes int) *nats.Subscription {
	t.Helper()
	st := control.ClusterStatus{Shards: 12, Objects: 4}
	for i := 1; i <= nodes; i++ {
		st.Nodes = append(st.Nodes, control.NodeStatus{ID: fmt.Sprintf("storage-%d", i), Rack: fmt.Sprintf("rack-%d", (i-1)%3+1), State: model.StateUp, Fill: 0.25})
	}
	sub, err := nc.Subscribe(event.ControlPrefix+">", func(m *nats.Msg) {
		var reply []byte
		switch m.Subject {
		case event.CtlStatus:
			reply, _ = control.OKReply(st)
		case event.CtlHealStatus:
			reply, _ = control.OKReply(event.Progress{Header: event.Header{V: 1, TS: time.Now().UTC()}})
		case control.CtlDrainStatus:
			reply, _ = control.OKReply(control.DrainReply{Drains: []control.DrainStatus{
				{Node: "storage-3", State: string(model.StateDraining), ShardsRemaining: 5, ShardsMoved: 7, ETASeconds: 12}}})
		case control.CtlRebalanceStatus:
			reply, _ = control.OKReply(control.BalanceStatus{Paused: true, Band: 0.05, MaxDeviation: 0.08, MovesInFlight: 2})
		default:
			reply = control.ErrorReply(errors.New("not here"))
		}
		_ = m.Respond(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

type rig struct {
	con   *console.Console
	base  string
	clock *clock
	env   *bustest.Env
}

// start runs a console with the operator's credentials op:secret on a free port.
func start(t *testing.T, env *bustest.Env, clk *clock) *rig {
	t.Helper()
	cfg := console.DefaultConfig()
	cfg.Listen, cfg.User, cfg.Password, cfg.Poll = "127.0.0.1:0", "op", "secret", 100*time.Millisecond
	cfg.TraceUI = "http://127.0.0.1:16686"
	con, err := console.New(cfg, env.NC, env.JS, slog.New(slog.DiscardHandler), clk.now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- con.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return &rig{con: con, base: "http://" + con.Addr(), clock: clk, env: env}
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}

func (r *rig) login(t *testing.T, user, pass string) *http.Response {
	t.Helper()
	resp, err := noRedirect.PostForm(r.base+"/login", url.Values{"user": {user}, "password": {pass}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func get(t *testing.T, u string, ck *http.Cookie) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if ck != nil {
		req.AddCookie(ck)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestLoginGuardsThePageAndItsAPI(t *testing.T) {
	env := bustest.Start(t)
	planner(t, env.NC, 3)
	r := start(t, env, &clock{t: time.Now()})

	for _, p := range []string{"/api/state", "/api/events"} {
		if resp := get(t, r.base+p, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a session: %s, want 401", p, resp.Status)
		}
	}
	if resp := get(t, r.base+"/", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("GET / without a session: %s to %q, want 303 to /login", resp.Status, resp.Header.Get("Location"))
	}
	if resp := get(t, r.base+"/login", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /login: %s", resp.Status)
	}
	for _, bad := range [][2]string{{"op", "wrong"}, {"someone", "secret"}, {"", ""}} {
		resp := r.login(t, bad[0], bad[1])
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Errorf("login as %q/%q: %s with cookies %v, want 401 and none", bad[0], bad[1], resp.Status, resp.Cookies())
		}
	}
	resp, err := noRedirect.Post(r.base+"/login", "application/x-www-form-urlencoded", strings.NewReader("user=%zz"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("login with a malformed form: %s, want 400", resp.Status)
	}
	if resp := get(t, r.base+"/nothing-here", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %s, want 404", resp.Status)
	}

	resp = r.login(t, "op", "secret")
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login with the operator's credentials: %s with cookies %v, want 303 and one cookie", resp.Status, resp.Cookies())
	}
	ck := resp.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || len(ck.Value) < 32 {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict and a long random token", ck)
	}
	if resp := get(t, r.base+"/", ck); resp.StatusCode != http.StatusOK {
		t.Errorf("GET / with a session: %s", resp.Status)
	}
	bustest.CheckFor(t, 10*time.Second, func() error {
		resp := get(t, r.base+"/api/state", ck)
		var v console.View
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return fmt.Errorf("GET /api/state: %s: %w", resp.Status, err)
		}
		if v.Status == nil || len(v.Status.Nodes) != 3 || v.Bus != "ok" {
			return fmt.Errorf("GET /api/state: bus %q, status %+v; want 3 nodes", v.Bus, v.Status)
		}
		return nil
	})

	// A session ends after its TTL.
	r.clock.add(console.DefaultConfig().SessionTTL + time.Second)
	if resp := get(t, r.base+"/api/state", ck); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/state with an expired session: %s, want 401", resp.Status)
	}
}

// readState reads the first `state` event of an event stream.
func readState(t *testing.T, body io.Reader) console.View {
	t.Helper()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	isState := false
	for sc.Scan() {
		line := sc.Text()
		if line == "event: state" {
			isState = true
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok && isState {
			var v console.View
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatalf("state event %q: %v", data, err)
			}
			return v
		}
	}
	t.Fatalf("the stream ended without a state event: %v", sc.Err())
	return console.View{}
}

func TestEventStreamSendsState(t *testing.T) {
	env := bustest.Start(t)
	planner(t, env.NC, 6)
	r := start(t, env, &clock{t: time.Now()})
	ck := r.login(t, "op", "secret").Cookies()[0]

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/api/events", nil)
	req.AddCookie(ck)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("GET /api/events: %s, %s", resp.Status, ct)
	}
	// The stream goes on: within a few events the planner's answer shows.
	var v console.View
	for range 50 {
		if v = readState(t, resp.Body); v.Status != nil {
			break
		}
	}
	if v.Status == nil || len(v.Status.Nodes) != 6 || v.TraceUI != "http://127.0.0.1:16686" {
		t.Fatalf("state events never carried the 6 nodes and the trace UI; last: %+v", v)
	}
	if len(v.Drains) != 1 || v.Drains[0].Node != "storage-3" || v.Drains[0].ShardsRemaining != 5 ||
		v.Balance == nil || !v.Balance.Paused || v.Balance.MovesInFlight != 2 {
		t.Fatalf("the state lacks the planner's drain and rebalance status: drains %+v, balance %+v", v.Drains, v.Balance)
	}
}

func publishProgress(t *testing.T, env *bustest.Env, ts time.Time, under int, bytes int64) {
	t.Helper()
	p := event.Progress{Header: event.Header{TS: ts.UTC()}, UnderReplicated: under, BytesRemaining: bytes}
	if err := bus.Publish(context.Background(), env.JS, event.HealProgress, &p, ""); err != nil {
		t.Fatal(err)
	}
}

func TestChartBackfillsTheHourFromProgressEvents(t *testing.T) {
	env := bustest.Start(t)
	planner(t, env.NC, 3)
	now := time.Now()
	// Progress published before the console starts: one too old for the hour, two inside it.
	publishProgress(t, env, now.Add(-2*time.Hour), 99, 99)
	publishProgress(t, env, now.Add(-50*time.Minute), 40, 4<<20)
	publishProgress(t, env, now.Add(-30*time.Minute), 10, 1<<20)
	r := start(t, env, &clock{t: now})

	chart := func() []console.Point { return r.con.View().Chart }
	bustest.CheckFor(t, 10*time.Second, func() error {
		c := chart()
		if len(c) != 2 || c[0].UnderReplicated != 40 || c[1].UnderReplicated != 10 || c[0].BytesRemaining != 4<<20 {
			return fmt.Errorf("a fresh console's chart is %+v; want the hour's two samples (40, then 10)", c)
		}
		return nil
	})
	// Then it appends live.
	publishProgress(t, env, now, 0, 0)
	bustest.CheckFor(t, 10*time.Second, func() error {
		if c := chart(); len(c) != 3 || c[2].UnderReplicated != 0 {
			return fmt.Errorf("after a live sample the chart is %+v; want 3 points ending at 0", c)
		}
		return nil
	})
}

func TestBusAwayShowsUnreachableAndRecovers(t *testing.T) {
	env := bustest.Start(t)
	r := start(t, env, &clock{t: time.Now()})
	// No planner answers: the page says so.
	bustest.CheckFor(t, 15*time.Second, func() error {
		if v := r.con.View(); v.Bus != "unreachable" || v.BusError == "" {
			return fmt.Errorf("with no one answering the bus is %q (%q); want unreachable with a reason", v.Bus, v.BusError)
		}
		return nil
	})
	planner(t, env.NC, 2)
	bustest.CheckFor(t, 15*time.Second, func() error {
		if v := r.con.View(); v.Bus != "ok" || v.Status == nil || len(v.Status.Nodes) != 2 {
			return fmt.Errorf("after the planner answers again the bus is %q, status %+v", v.Bus, v.Status)
		}
		return nil
	})
}

func TestOpenBusLeavesThePageOpen(t *testing.T) {
	env := bustest.Start(t)
	planner(t, env.NC, 1)
	cfg := console.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	user, pass := console.CredentialsFromURL(env.URL)
	cfg.User, cfg.Password = user, pass
	con, err := console.New(cfg, env.NC, env.JS, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- con.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if resp := get(t, "http://"+con.Addr()+"/api/state", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("open bus: GET /api/state without a session: %s, want 200", resp.Status)
	}
	if u, p := console.CredentialsFromURL("nats://operator:pw@127.0.0.1:4222"); u != "operator" || p != "pw" {
		t.Errorf("CredentialsFromURL: %q %q", u, p)
	}
}
