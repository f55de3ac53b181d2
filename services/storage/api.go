package storage

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/httpstatus"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
	"github.com/rehome/rehome/shared/telemetry"
)

const (
	// drainLimit is how much of an unread PUT body is discarded to keep the
	// connection reusable after an early answer (200, 409, 507).
	drainLimit = 8 << 20
	// minRate and transferGrace bound how long one shard body may take to
	// arrive or leave (guards against clients that stall forever).
	minRate       = 256 << 10 // bytes per second
	transferGrace = 60 * time.Second
	ioBufSize     = 256 << 10
)

var ioBufPool = sync.Pool{New: func() any { b := make([]byte, ioBufSize); return &b }}

// api serves the shard protocol of package shardapi over a disk.Store.
type api struct {
	store    *disk.Store
	node     string
	token    []byte
	maxShard int64
	prio     *priority   // serves clients' transfers before repair's (nil: no priority)
	source   shardSource // reads shards from other nodes for pulls
	m        *metrics
	reg      *prometheus.Registry
	log      *slog.Logger
}

// handler returns the node's HTTP handler: /v1 (token-guarded), /healthz, /metrics.
func (a *api) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/shards/{id}", a.put)
	mux.HandleFunc("GET /v1/shards/{id}", a.get)
	mux.HandleFunc("HEAD /v1/shards/{id}", a.head)
	mux.HandleFunc("DELETE /v1/shards/{id}", a.delete)
	mux.HandleFunc("POST /v1/shards/{id}/pull", a.pull)
	mux.HandleFunc("POST /v1/shards/{id}/verify", a.verify)
	mux.HandleFunc("GET /v1/shards", a.list)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	return a.observe(a.guard(mux))
}

// traced wraps h so that a /v1 request arriving with a W3C trace context
// (a mover's GET or PUT) is served in a server span, child of the caller's,
// named after its route ("PUT /v1/shards/{id}"). Requests without one, and
// /healthz and /metrics, are served untraced: a client that does not trace
// starts no trace here.
func traced(h http.Handler, tp trace.TracerProvider) http.Handler {
	return otelhttp.NewHandler(h, "storage",
		otelhttp.WithTracerProvider(telemetry.Provider(tp)),
		otelhttp.WithPropagators(telemetry.Propagator()),
		otelhttp.WithFilter(func(r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, "/v1/") {
				return false
			}
			ctx := telemetry.Propagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			return trace.SpanContextFromContext(ctx).IsValid()
		}),
	)
}

// fail answers with code and a one-line plain-text message.
func fail(w http.ResponseWriter, code int, msg string) {
	msg = strings.ReplaceAll(strings.ReplaceAll(msg, "\r", " "), "\n", " ")
	http.Error(w, msg, code)
}

// statusOf maps a store error onto the protocol's status codes.
func statusOf(err error) int {
	switch {
	case errors.Is(err, model.ErrInvalid), errors.Is(err, disk.ErrSize), errors.Is(err, disk.ErrRead):
		return http.StatusBadRequest
	case errors.Is(err, disk.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, disk.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, disk.ErrChecksum):
		return http.StatusUnprocessableEntity
	case errors.Is(err, disk.ErrFull), errors.Is(err, disk.ErrReadOnly):
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

// transferDeadline is how long a body of size bytes may take.
func transferDeadline(size int64) time.Duration {
	return transferGrace + time.Duration(size/minRate)*time.Second
}

// guard checks the bearer token on /v1 and refuses malformed shard ids before
// any routing (so "..", "a/b", "%2F" and the like get a 400, never a redirect).
func (a *api) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "/v1" || strings.HasPrefix(p, "/v1/") {
			if !a.authorized(r) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="rehome"`)
				fail(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
			if id, ok := strings.CutPrefix(p, "/v1/shards/"); ok {
				if r.Method == http.MethodPost {
					id = strings.TrimSuffix(strings.TrimSuffix(id, "/pull"), "/verify")
				}
				if err := model.ValidateShardID(id); err != nil {
					fail(w, http.StatusBadRequest, err.Error())
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (a *api) authorized(r *http.Request) bool {
	if len(a.token) == 0 {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), a.token) == 1
}

// observe counts every answer and turns an unexpected panic into a 500 (or a
// cut connection if the answer had begun) instead of a crash.
func (a *api) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &httpstatus.Recorder{ResponseWriter: w}
		defer func() {
			p := recover()
			code := strconv.Itoa(rec.Status())
			switch {
			case p == nil:
			case p == http.ErrAbortHandler:
				code = "aborted"
			default:
				a.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				if rec.Code == 0 {
					fail(rec, http.StatusInternalServerError, "internal error")
					code, p = "500", nil
				} else {
					code, p = "aborted", http.ErrAbortHandler
				}
			}
			a.m.requests.WithLabelValues(methodLabel(r.Method), code).Inc()
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

func (a *api) put(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sha := r.Header.Get(shardapi.HeaderSHA256)
	switch {
	case sha == "":
		fail(w, http.StatusBadRequest, "missing "+shardapi.HeaderSHA256+" header (hex sha256 of the body)")
		return
	case r.ContentLength < 0:
		fail(w, http.StatusBadRequest, "missing Content-Length header")
		return
	case a.tooLarge(w, r.ContentLength):
		return
	}
	if _, err := disk.ParseSHA256(sha); err != nil {
		fail(w, http.StatusBadRequest, shardapi.HeaderSHA256+": "+err.Error())
		return
	}
	var body io.Reader = r.Body
	run := func(fn func() error) error { return fn() }
	if shardapi.IsRepair(r) { // paced, and at the repair streams' CPU priority
		body = a.prio.repairReader(trafficContext(r), body)
		run = a.prio.run
	} else {
		defer a.prio.serve()()
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(transferDeadline(r.ContentLength)))
	var created bool
	err := run(func() (err error) {
		created, err = a.store.Put(id, sha, r.ContentLength, body)
		return err
	})
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		code := statusOf(err)
		if code == http.StatusConflict || code == http.StatusInsufficientStorage {
			drain(r)
		}
		switch {
		case code == http.StatusInsufficientStorage:
			a.log.WarnContext(r.Context(), "put refused: no room or read-only disk", "shard", id, "err", err)
		case code >= 500:
			a.log.ErrorContext(r.Context(), "put failed", "shard", id, "err", err)
		default:
			a.log.DebugContext(r.Context(), "put refused", "shard", id, "code", code, "err", err)
		}
		fail(w, code, err.Error())
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
		a.m.bytesWritten.Add(float64(r.ContentLength))
	} else {
		drain(r)
	}
	info, _ := a.store.Stat(id)
	writeJSON(w, code, shardapi.Info(info))
}

// tooLarge answers 413 and reports true when a shard of size bytes exceeds
// the node's limit.
func (a *api) tooLarge(w http.ResponseWriter, size int64) bool {
	if size <= a.maxShard {
		return false
	}
	fail(w, http.StatusRequestEntityTooLarge, "shard of "+strconv.FormatInt(size, 10)+
		" bytes exceeds the limit of "+strconv.FormatInt(a.maxShard, 10))
	return true
}

// drain discards a small unread body so the connection can be reused.
func drain(r *http.Request) {
	if r.ContentLength <= drainLimit {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, drainLimit))
	}
}

func (a *api) shardHeaders(w http.ResponseWriter, info disk.Info) {
	h := w.Header()
	h.Set(shardapi.HeaderSHA256, info.SHA256)
	h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
	h.Set("Content-Type", "application/octet-stream")
}

// answerShard begins a 200 answer carrying shard info: a write deadline for
// its size, then its headers. The returned func clears the deadline.
func (a *api) answerShard(w http.ResponseWriter, info disk.Info) (clear func()) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(transferDeadline(info.Size)))
	a.shardHeaders(w, info)
	w.WriteHeader(http.StatusOK)
	return func() { _ = rc.SetWriteDeadline(time.Time{}) }
}

func (a *api) head(w http.ResponseWriter, r *http.Request) {
	info, err := a.store.Stat(r.PathValue("id"))
	if err != nil {
		fail(w, statusOf(err), err.Error())
		return
	}
	a.shardHeaders(w, info)
	w.WriteHeader(http.StatusOK)
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if shardapi.IsRepair(r) {
		a.getRaw(w, r, id)
		return
	}
	start := time.Now()
	defer a.prio.serve()()
	rd, info, err := a.store.Get(id)
	if err != nil {
		if errors.Is(err, disk.ErrCorrupt) {
			a.log.WarnContext(r.Context(), "shard damaged, quarantined", "shard", id, "err", err)
		}
		fail(w, statusOf(err), err.Error())
		return
	}
	defer rd.Close()
	defer a.answerShard(w, info)()
	n, err := copyOut(&firstByte{w: w, start: start, report: a.prio.observe}, rd)
	a.m.bytesRead.Add(float64(n))
	if err != nil {
		if errors.Is(err, disk.ErrCorrupt) {
			a.log.WarnContext(r.Context(), "shard failed verification while sent, transfer cut", "shard", id, "err", err)
		} else {
			a.log.DebugContext(r.Context(), "get cut short", "shard", id, "sent", n, "err", err)
		}
		// The client must see a broken transfer, never bytes that did not verify.
		panic(http.ErrAbortHandler)
	}
}

// getRaw serves a repair-class GET: the bytes as they are on disk, unverified
// here (the reader verifies them and, on a mismatch, asks this node to
// Verify the shard), through the priority gate, with sendfile where the
// connection allows it (see sendRaw).
func (a *api) getRaw(w http.ResponseWriter, r *http.Request, id string) {
	f, info, err := a.store.OpenRaw(id)
	if err != nil {
		if errors.Is(err, disk.ErrCorrupt) {
			a.log.WarnContext(r.Context(), "shard damaged, quarantined", "shard", id, "err", err)
		}
		fail(w, statusOf(err), err.Error())
		return
	}
	defer f.Close()
	defer a.answerShard(w, info)()
	var n int64
	err = a.prio.run(func() (err error) {
		n, err = a.sendRaw(trafficContext(r), w, f, info.Size)
		return err
	})
	a.m.bytesRead.Add(float64(n))
	if err != nil {
		a.log.DebugContext(r.Context(), "repair get cut short", "shard", id, "sent", n, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// trafficContext returns r's context marked with r's traffic class, which
// the priority gate paces by.
func trafficContext(r *http.Request) context.Context {
	return shardapi.WithClass(r.Context(), shardapi.RequestClass(r))
}

// copyOut streams rd to w with a large pooled buffer.
func copyOut(w io.Writer, rd io.Reader) (int64, error) {
	bp := ioBufPool.Get().(*[]byte)
	defer ioBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := rd.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	if err := a.store.Delete(r.PathValue("id")); err != nil {
		fail(w, statusOf(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) list(w http.ResponseWriter, _ *http.Request) {
	shards := a.store.List()
	inv := shardapi.Inventory{Node: a.node, Shards: make([]shardapi.Info, len(shards))}
	for i, s := range shards {
		inv.Shards[i] = shardapi.Info(s)
	}
	writeJSON(w, http.StatusOK, inv)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
