package mover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rehome/rehome/shared/event"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

func TestClassify(t *testing.T) {
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	status := func(code int) error { return fmt.Errorf("put x: %w", &shardapi.StatusError{Code: code}) }
	corrupt := fmt.Errorf("%w: bad bytes", errCorrupt)
	cases := []struct {
		name string
		err  error
		want Class
	}{
		{"network error", fmt.Errorf("target b: %w", netErr), Transient},
		{"context deadline", context.DeadlineExceeded, Transient},
		{"unknown node", fmt.Errorf("%w: storage-9", errUnknownNode), Transient},
		{"500", status(500), Transient},
		{"503", status(503), Transient},
		{"404", status(404), Transient},
		{"429", status(429), Transient},
		{"409 conflict", status(409), Permanent},
		{"422 checksum refused", status(422), Permanent},
		{"413 too large", status(413), Permanent},
		{"507 target full or read-only", fmt.Errorf("target b: %w", status(507)), TargetFull},
		{"conflict found by HEAD", fmt.Errorf("target b: %w", errConflict), Permanent},
		{"invalid", fmt.Errorf("%w shard id", model.ErrInvalid), Permanent},
		{"malformed", fmt.Errorf("%w: kind", event.ErrMalformed), Permanent},
		{"no source but the target", &sourcesError{}, Permanent},
		{"every source corrupt", &sourcesError{failures: []sourceFailure{{"a", corrupt}, {"b", corrupt}}}, Permanent},
		{"one source down, one corrupt", &sourcesError{failures: []sourceFailure{{"a", netErr}, {"b", corrupt}}}, Transient},
		{"source 404", &sourcesError{failures: []sourceFailure{{"a", status(404)}}}, Transient},
		{"source 401 is the source's problem", &sourcesError{failures: []sourceFailure{{"a", status(401)}}}, Transient},
		{"stripe: a holder down", &stripeError{got: 3, need: 4, sources: &sourcesError{failures: []sourceFailure{{"a", netErr}}}}, Transient},
		{"stripe: every failed holder corrupt", &stripeError{got: 3, need: 4, sources: &sourcesError{failures: []sourceFailure{{"a", corrupt}}}}, Permanent},
		{"rebuild: one piece's target conflicts, one is down", &rebuildError{failures: []pieceFailure{{err: status(409)}, {err: netErr}}}, Transient},
		{"rebuild: every piece permanent", &rebuildError{failures: []pieceFailure{{err: status(409)}, {err: status(507)}}}, Permanent},
		{"rebuild: every piece's target full", &rebuildError{failures: []pieceFailure{{err: status(507)}, {err: status(507)}}}, TargetFull},
		{"rebuild: one target full, one down", &rebuildError{failures: []pieceFailure{{err: status(507)}, {err: netErr}}}, Transient},
		{"rebuild: stripe unreadable, holder down", &rebuildError{failures: []pieceFailure{{err: &stripeError{got: 3, need: 4,
			sources: &sourcesError{failures: []sourceFailure{{"a", status(404)}, {"b", corrupt}}}}}}}, Transient},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.err); got != c.want {
				t.Fatalf("Classify(%v) = %s, want %s", c.err, got, c.want)
			}
		})
	}
}

// TestSide: the side a Failed event blames is the one the error came from.
func TestSide(t *testing.T) {
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	status := func(code int) error { return fmt.Errorf("pull x: %w", &shardapi.StatusError{Code: code}) }
	srcs := func(errs ...error) *sourcesError {
		s := &sourcesError{}
		for _, err := range errs {
			s.failures = append(s.failures, sourceFailure{"a", err})
		}
		return s
	}
	tgt := func(err error) error { return &targetError{node: "b", err: err} }
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"pull: source sent bad bytes (424)", srcs(fmt.Errorf("%w: bad", errCorrupt)), event.SideSource},
		{"pull: source unreadable (502)", srcs(status(502)), event.SideSource},
		{"source not registered", srcs(fmt.Errorf("%w: a", errUnknownNode)), event.SideSource},
		{"no source but the target", &sourcesError{}, event.SideSource},
		{"stripe unreadable", &stripeError{got: 1, need: 2, sources: srcs(status(404))}, event.SideSource},
		{"target full (507)", tgt(status(507)), event.SideTarget},
		{"target unreachable", tgt(netErr), event.SideTarget},
		{"target conflict", tgt(errConflict), event.SideTarget},
		{"target not registered", tgt(errUnknownNode), event.SideTarget},
		{"target wrapped again", fmt.Errorf("attempt: %w", tgt(status(500))), event.SideTarget},
		{"rebuild: every piece's target", &rebuildError{failures: []pieceFailure{{err: tgt(netErr)}, {err: tgt(status(507))}}}, event.SideTarget},
		{"rebuild: stripe unreadable", &rebuildError{failures: []pieceFailure{{err: &stripeError{sources: srcs(netErr)}}}}, event.SideSource},
		{"rebuild: one target, one stripe", &rebuildError{failures: []pieceFailure{{err: tgt(netErr)}, {err: &stripeError{sources: srcs(netErr)}}}}, ""},
		{"malformed task", fmt.Errorf("%w: kind", event.ErrMalformed), ""},
		{"cancelled", fmt.Errorf("copy from a: %w", context.Canceled), ""},
		{"nil", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Side(c.err); got != c.want {
				t.Fatalf("Side(%v) = %q, want %q", c.err, got, c.want)
			}
		})
	}
}

func TestBackoffDoublesFromMinToMax(t *testing.T) {
	min, max := 250*time.Millisecond, 10*time.Second
	want := []time.Duration{250, 500, 1000, 2000, 4000, 8000, 10000, 10000}
	for i, w := range want {
		if got := Backoff(i+1, min, max); got != w*time.Millisecond {
			t.Errorf("Backoff(%d) = %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
	// Properties over a wide range: within bounds and never decreasing.
	prev := time.Duration(0)
	for a := -2; a < 200; a++ {
		d := Backoff(a, min, max)
		if d < min || d > max || d < prev {
			t.Fatalf("Backoff(%d) = %s: outside [%s, %s] or below the previous %s", a, d, min, max, prev)
		}
		prev = d
	}
}

func TestOneLine(t *testing.T) {
	got := oneLine(errors.Join(errors.New("first\tproblem"), errors.New("second")))
	if got != "first problem; second" {
		t.Fatalf("oneLine = %q", got)
	}
	long := oneLine(errors.New(strings.Repeat("é", 1000)))
	if len(long) > maxErrorLen || strings.ContainsRune(long, '\n') || !strings.HasSuffix(long, "...") {
		t.Fatalf("oneLine of a long error: %d bytes %q", len(long), long[len(long)-10:])
	}
	if !strings.HasPrefix(long, "é") || !isValidUTF8(long) {
		t.Fatal("oneLine cut a rune in half")
	}
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestDecodeTask(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	good := func() *event.Task {
		return &event.Task{Task: "t1", Shard: "s1", Kind: event.KindCopy, Sources: []string{"a"}, Target: "b", Bytes: 3, SHA256: sha}
	}
	enc := func(tk *event.Task) []byte {
		b, err := event.Encode(tk)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v2 := enc(good())
	v2 = []byte(strings.Replace(string(v2), `"v":1`, `"v":2`, 1))
	cases := []struct {
		name    string
		subject string
		data    []byte
		ok      bool
	}{
		{"valid", event.TaskPrefix + "b", enc(good()), true},
		{"not json", event.TaskPrefix + "b", []byte("not json"), false},
		{"wrong version", event.TaskPrefix + "b", v2, false},
		{"wrong subject", event.TaskPrefix + "c", enc(good()), false},
		{"rebuild without its stripe", event.TaskPrefix + "b", enc(func() *event.Task { tk := good(); tk.Kind = event.KindRebuild; return tk }()), false},
		{"rebuild", event.TaskPrefix + "b", enc(rebuildTask(sha)), true},
		{"rebuild of pieces of two sizes", event.TaskPrefix + "b", enc(func() *event.Task { tk := rebuildTask(sha); tk.Stripe[3].Size = 9; return tk }()), false},
		{"rebuild of a piece the stripe names otherwise", event.TaskPrefix + "b", enc(func() *event.Task { tk := rebuildTask(sha); tk.Rebuild[0].Shard = "other"; return tk }()), false},
		{"rebuild of a piece with another checksum", event.TaskPrefix + "b", enc(func() *event.Task { tk := rebuildTask(sha); tk.Rebuild[0].SHA256 = strings.Repeat("cd", 32); return tk }()), false},
		{"rebuild of one piece twice", event.TaskPrefix + "b", enc(func() *event.Task {
			tk := rebuildTask(sha)
			tk.Rebuild = append(tk.Rebuild, tk.Rebuild[0])
			return tk
		}()), false},
		{"rebuild with fewer than k held", event.TaskPrefix + "b", enc(func() *event.Task { tk := rebuildTask(sha); tk.Stripe[2].Node, tk.Stripe[3].Node = "", ""; return tk }()), false},
		{"path trick in shard id", event.TaskPrefix + "b", enc(func() *event.Task { tk := good(); tk.Shard = "../x"; return tk }()), false},
		{"copy without sources", event.TaskPrefix + "b", enc(func() *event.Task { tk := good(); tk.Sources = nil; return tk }()), false},
		{"delete needs no sources", event.TaskPrefix + "b", enc(func() *event.Task { tk := good(); tk.Kind = event.KindDelete; tk.Sources = nil; return tk }()), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tk event.Task
			err := decodeTask(c.subject, c.data, &tk)
			if (err == nil) != c.ok {
				t.Fatalf("decodeTask: err = %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, event.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

// rebuildTask is a valid 4+2 rebuild of piece 0 onto node b.
func rebuildTask(sha string) *event.Task {
	tk := &event.Task{Task: "t2", Kind: event.KindRebuild, K: 4, M: 2}
	for i := 0; i < 6; i++ {
		p := event.Piece{Shard: fmt.Sprintf("s-p%d", i), Index: i, Node: fmt.Sprintf("n%d", i), Size: 5, SHA256: sha}
		if i == 0 {
			p.Node = ""
		}
		tk.Stripe = append(tk.Stripe, p)
	}
	r := tk.Stripe[0]
	r.Node = "b"
	tk.Rebuild = []event.Piece{r}
	tk.Shard, tk.Target, tk.Bytes, tk.SHA256 = r.Shard, r.Node, r.Size, r.SHA256
	return tk
}
