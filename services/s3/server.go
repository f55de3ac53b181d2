package s3

import (
	"context"
	"encoding/xml"
	"errors"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/signature"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/httpstatus"
	"github.com/rehome/rehome/shared/telemetry"
)

// headerLayout, on CreateBucket, sets the layout of the bucket's objects.
const headerLayout = "X-Rehome-Layout"

type ctxKey int

const (
	requestKey ctxKey = iota
	etagKey
)

// requestOf returns the HTTP request a backend call serves (nil outside one).
func requestOf(ctx context.Context) *http.Request {
	r, _ := ctx.Value(requestKey).(*http.Request)
	return r
}

// etagFix carries an object's real ETag from the backend to the response:
// gofakes3 renders an ETag from an MD5 and cannot say "<md5>-<parts>".
type etagFix struct {
	mu   sync.Mutex
	etag string
}

func (f *etagFix) set(e string) { f.mu.Lock(); f.etag = e; f.mu.Unlock() }
func (f *etagFix) get() string  { f.mu.Lock(); defer f.mu.Unlock(); return f.etag }

func etagFixOf(ctx context.Context) *etagFix {
	f, _ := ctx.Value(etagKey).(*etagFix)
	return f
}

// etagWriter sets the real ETag header just before the headers go out.
type etagWriter struct {
	http.ResponseWriter
	fix   *etagFix
	wrote bool
}

func (w *etagWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		if e := w.fix.get(); e != "" && w.Header().Get("ETag") != "" {
			w.Header().Set("ETag", quote(e))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *etagWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *etagWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// stripParts turns a multipart ETag in a condition header ("<md5>-<n>") into
// the MD5 gofakes3 compares with.
func stripParts(h http.Header, name string) {
	v := h.Get(name)
	if v == "" {
		return
	}
	var out []string
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if i := strings.LastIndexByte(e, '-'); i > 0 && strings.HasPrefix(e, `"`) {
			if _, err := strconv.Atoi(strings.TrimSuffix(e[i+1:], `"`)); err == nil {
				e = e[:i] + `"`
			}
		}
		out = append(out, e)
	}
	h.Set(name, strings.Join(out, ", "))
}

// splitPath returns the bucket and key of a path-style request.
func splitPath(r *http.Request) (bucket, key string) {
	p := strings.TrimLeft(r.URL.Path, "/")
	bucket, key, _ = strings.Cut(p, "/")
	return bucket, key
}

// routes builds the gateway's handler: every request is counted, timed and
// traced, then authenticated (SigV4 in headers or a presigned URL), then
// served: multipart uploads and bucket creation by the gateway itself (their
// state lives on the bus, so any gateway continues what another began),
// everything else by gofakes3 over the backend.
func (g *Gateway) routes(b *backend, mp *multipart) http.Handler {
	fake := gofakes3.New(b,
		gofakes3.WithoutVersioning(),
		gofakes3.WithIntegrityCheck(true),
		gofakes3.WithLogger(gofakes3.DiscardLog()),
	)
	inner := fake.Server()
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bucket, key := splitPath(r)
		q := r.URL.Query()
		ctx := context.WithValue(r.Context(), requestKey, r)
		r = r.WithContext(ctx)
		switch {
		case bucket != "" && (q.Get("uploadId") != "" || q.Has("uploads")):
			mp.serve(w, r, bucket, key)
		case bucket != "" && key == "" && r.Method == http.MethodPut && len(q) == 0:
			g.createBucket(w, r, b, bucket)
		default:
			fix := &etagFix{}
			r = r.WithContext(context.WithValue(ctx, etagKey, fix))
			stripParts(r.Header, "If-None-Match")
			stripParts(r.Header, "If-Match")
			ew := &etagWriter{ResponseWriter: w, fix: fix}
			inner.ServeHTTP(ew, r)
			if !ew.wrote { // a HEAD answers without writing: fix its ETag too
				ew.WriteHeader(http.StatusOK)
			}
		}
	})
	return g.instrument(g.authenticate(serve))
}

// createBucket answers CreateBucket: gofakes3 cannot say
// BucketAlreadyOwnedByYou, which S3 answers to a second create.
func (g *Gateway) createBucket(w http.ResponseWriter, r *http.Request, b *backend, bucket string) {
	if err := gofakes3.ValidateBucketName(bucket); err != nil {
		writeError(w, r, s3Code(err), http.StatusBadRequest, "The specified bucket is not valid.", bucket)
		return
	}
	err := b.CreateBucket(r.Context(), bucket)
	var e gofakes3.Error
	switch {
	case err == nil:
		w.Header().Set("Location", "/"+bucket)
		w.WriteHeader(http.StatusOK)
	case gofakes3.HasErrorCode(err, gofakes3.ErrBucketAlreadyExists):
		writeError(w, r, "BucketAlreadyOwnedByYou", http.StatusConflict, "Your previous request to create the named bucket succeeded and you already own it.", bucket)
	case errors.As(err, &e):
		writeError(w, r, string(e.ErrorCode()), e.ErrorCode().Status(), e.Error(), bucket)
	default:
		writeError(w, r, string(gofakes3.ErrSlowDown), http.StatusServiceUnavailable, oneLine(err.Error()), bucket)
	}
}

func s3Code(err error) string {
	var e gofakes3.Error
	if errors.As(err, &e) {
		return string(e.ErrorCode())
	}
	return string(gofakes3.ErrInvalidArgument)
}

// s3ErrorBody is S3's XML error document.
type s3ErrorBody struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Resource  string   `xml:"Resource,omitempty"`
	RequestID string   `xml:"RequestId"`
}

// writeError answers with S3's XML error (no body for HEAD).
func writeError(w http.ResponseWriter, r *http.Request, code string, status int, msg, resource string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	body, _ := xml.Marshal(s3ErrorBody{Code: code, Message: msg, Resource: resource, RequestID: w.Header().Get("x-amz-request-id")})
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

// authenticate refuses a request whose SigV4 signature (header or presigned
// URL) does not verify against the gateway's key pair, with S3's 403.
func (g *Gateway) authenticate(next http.Handler) http.Handler {
	lookup := func(ak string) (string, bool) {
		if ak == g.cfg.AccessKey {
			return g.cfg.SecretKey, true
		}
		return "", false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code := signature.V4SignVerifyWithLookup(r, lookup); code != signature.ErrNone {
			e := signature.GetAPIError(code)
			writeError(w, r, e.Code, e.HTTPStatusCode, e.Description, r.URL.Path)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// instrument gives each request an id, a span (continuing a traceparent the
// client sent), a count in rehome_s3_requests_total{op,code} and a latency
// observation, and turns a panic into a 500 that does not kill the gateway.
func (g *Gateway) instrument(next http.Handler) http.Handler {
	tracer := otel.Tracer("rehome-s3")
	var seq uint64
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		op := operation(r)
		mu.Lock()
		seq++
		id := strconv.FormatUint(uint64(start.UnixNano())^seq, 16)
		mu.Unlock()
		w.Header().Set("x-amz-request-id", strings.ToUpper(id))
		w.Header().Set("Server", "rehome")
		ctx := telemetry.Propagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, "s3 "+op, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
		rec := &httpstatus.Recorder{ResponseWriter: w}
		defer func() {
			p := recover()
			if p != nil && p != http.ErrAbortHandler {
				g.log.Error("s3 handler panic", "op", op, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				if rec.Code == 0 {
					writeError(rec, r, string(gofakes3.ErrInternal), http.StatusInternalServerError, "internal error", r.URL.Path)
					p = nil
				} else {
					p = http.ErrAbortHandler // the answer had begun: cut it rather than end it as if whole
				}
			}
			status := rec.Status()
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 || p != nil {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			span.End()
			g.metrics.observe(op, status, time.Since(start))
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(rec, r.WithContext(ctx))
	})
}

// operation names a request's S3 operation (the op label).
func operation(r *http.Request) string {
	bucket, key := splitPath(r)
	q := r.URL.Query()
	switch {
	case bucket == "":
		return "ListBuckets"
	case q.Has("uploads") && r.Method == http.MethodPost:
		return "CreateMultipartUpload"
	case q.Has("uploads"):
		return "ListMultipartUploads"
	case q.Get("uploadId") != "":
		switch r.Method {
		case http.MethodPut:
			if r.Header.Get("X-Amz-Copy-Source") != "" {
				return "UploadPartCopy"
			}
			return "UploadPart"
		case http.MethodPost:
			return "CompleteMultipartUpload"
		case http.MethodDelete:
			return "AbortMultipartUpload"
		default:
			return "ListParts"
		}
	case key == "":
		switch r.Method {
		case http.MethodPut:
			return "CreateBucket"
		case http.MethodDelete:
			return "DeleteBucket"
		case http.MethodHead:
			return "HeadBucket"
		case http.MethodPost:
			if q.Has("delete") {
				return "DeleteObjects"
			}
			return "PostBucket"
		case http.MethodGet:
			if q.Get("list-type") == "2" {
				return "ListObjectsV2"
			}
			if len(q) == 0 || q.Has("prefix") || q.Has("delimiter") || q.Has("marker") || q.Has("max-keys") {
				return "ListObjects"
			}
			return "GetBucketOther"
		}
	}
	switch r.Method {
	case http.MethodGet:
		return "GetObject"
	case http.MethodHead:
		return "HeadObject"
	case http.MethodPut:
		if r.Header.Get("X-Amz-Copy-Source") != "" {
			return "CopyObject"
		}
		return "PutObject"
	case http.MethodDelete:
		return "DeleteObject"
	}
	return "Other"
}
