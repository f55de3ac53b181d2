// Package shardapi is the storage node's HTTP shard protocol, shared by its
// server (services/storage) and its clients (mover, CLI):
//
//	PUT    /v1/shards/{id}   body = the bytes; headers X-Rehome-Sha256 (hex) and
//	                         Content-Length required. 201 written and verified,
//	                         200 already present with that checksum, 409 present
//	                         with another, 422 body did not match the checksum,
//	                         413 too large, 507 disk full or read-only, 400 bad id or header.
//	GET    /v1/shards/{id}   200 with X-Rehome-Sha256; the server verifies while it
//	                         streams and cuts the connection on a mismatch.
//	HEAD   /v1/shards/{id}   as GET without the body; 404 if absent.
//	DELETE /v1/shards/{id}   204, or 404 if absent.
//	GET    /v1/shards        inventory: {"node":..., "shards":[Info...]}
//	POST   /v1/shards/{id}/pull    body PullRequest: the node fetches the shard from
//	                         another node (a repair-class GET) into a temp file,
//	                         hashing once as it writes, fsyncs, checks the checksum,
//	                         renames, fsyncs the directory, and only then answers
//	                         201 (or 200 already present with that checksum); 424
//	                         the source served other bytes than the checksum says
//	                         (a corrupt source), 502 the source could not be read
//	                         from, else as PUT.
//	POST   /v1/shards/{id}/verify    the node re-reads the shard and checks its
//	                         checksum: 200 Info when it matches, 422 when it did not
//	                         (the shard is quarantined and reported), 404 if absent.
//
// With a token configured every /v1 request needs "Authorization: Bearer <token>" (401).
// A request carrying "X-Rehome-Class: repair" (see AsRepair) is repair traffic, which
// a node serves behind its clients' requests, and "X-Rehome-Class: background"
// (rebalancing, see WithClass) is paced harder still; every other request is
// foreground.
// A repair-class GET is answered with the bytes as they are on disk, unverified
// (with sendfile when the node serves plain HTTP): its reader verifies them, and
// asks the node to verify the shard when they do not match.
// A node may serve HTTPS, and require client certificates too (see New).
package shardapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/rehome/rehome/shared/telemetry"
	"github.com/rehome/rehome/shared/tlsconf"
)

// HeaderSHA256 carries a shard's hex SHA-256 on PUT requests and GET/HEAD responses.
const HeaderSHA256 = "X-Rehome-Sha256"

// HeaderClass carries a request's traffic class: ClassRepair (repair and
// drains) or ClassBackground (rebalancing: it may wait longest); absent or
// anything else, foreground (a client's request).
const (
	HeaderClass     = "X-Rehome-Class"
	ClassRepair     = "repair"
	ClassBackground = "background"
)

// classKey marks a context whose requests carry a traffic class.
type classKey struct{}

// AsRepair returns ctx marked so that every request a Client makes with it
// (or a context derived from it) carries HeaderClass: ClassRepair. Storage
// nodes give such requests lower priority than their clients' requests: a
// mover marks its repair work with it.
func AsRepair(ctx context.Context) context.Context { return WithClass(ctx, ClassRepair) }

// WithClass returns ctx marked with traffic class (ClassRepair or
// ClassBackground; anything else marks nothing).
func WithClass(ctx context.Context, class string) context.Context {
	if class != ClassRepair && class != ClassBackground {
		return ctx
	}
	return context.WithValue(ctx, classKey{}, class)
}

// ClassOf returns the traffic class ctx is marked with ("" for foreground).
func ClassOf(ctx context.Context) string {
	class, _ := ctx.Value(classKey{}).(string)
	return class
}

// RequestClass returns the traffic class of r as a storage node receives
// it: ClassRepair, ClassBackground, or "" (foreground).
func RequestClass(r *http.Request) string {
	switch c := strings.ToLower(r.Header.Get(HeaderClass)); c {
	case ClassRepair, ClassBackground:
		return c
	}
	return ""
}

// IsRepair reports whether r, as a storage node receives it, is marked as
// repair or background traffic (anything but a client's request).
func IsRepair(r *http.Request) bool { return RequestClass(r) != "" }

// EnvToken names the environment variable holding the storage API bearer token.
const EnvToken = "REHOME_TOKEN"

// Info describes one stored shard.
type Info struct {
	ID     string `json:"id"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Inventory is the body of GET /v1/shards.
type Inventory struct {
	Node   string `json:"node"`
	Shards []Info `json:"shards"`
}

// Errors a caller may branch on (wrapped in *StatusError).
var (
	ErrNotFound = errors.New("shard not found")
	ErrConflict = errors.New("shard exists with another checksum")
	ErrChecksum = errors.New("checksum mismatch")
	ErrFull     = errors.New("node full")
	// ErrSourceCorrupt: a pull's source served bytes that do not match the
	// checksum (424).
	ErrSourceCorrupt = errors.New("source served bytes that do not match the checksum")
	// ErrSource: a pull's source could not be read from (502).
	ErrSource = errors.New("source could not be read from")
)

// PullRequest is the body of POST /v1/shards/{id}/pull: where to fetch the
// shard from and what it must be.
type PullRequest struct {
	Source string `json:"source"` // host:port of a node holding the shard
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// StatusError is a non-success HTTP answer from a storage node.
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string { return fmt.Sprintf("storage answered %d: %s", e.Code, e.Msg) }

// Is maps status codes onto the sentinel errors above.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == http.StatusNotFound
	case ErrConflict:
		return e.Code == http.StatusConflict
	case ErrChecksum:
		return e.Code == http.StatusUnprocessableEntity
	case ErrFull:
		return e.Code == http.StatusInsufficientStorage
	case ErrSourceCorrupt:
		return e.Code == http.StatusFailedDependency
	case ErrSource:
		return e.Code == http.StatusBadGateway
	}
	return false
}

// Permanent reports whether retrying the same request cannot help (4xx other
// than 404/408/429).
func (e *StatusError) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusNotFound &&
		e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests
}

// Client talks to storage nodes. It is safe for concurrent use and reuses
// connections across nodes.
type Client struct {
	HTTP  *http.Client
	Token string
	// Slow serves requests whose answer comes only after a whole transfer
	// (pulls): HTTP without a response header timeout. Nil: HTTP.
	Slow *http.Client

	secure bool  // https, else http
	err    error // why the client cannot work (its TLS files did not load)
}

// New returns a client with pooled connections and sane dial and header
// timeouts (bodies may stream for as long as ctx allows). Requests made with
// a context carrying a span are traced (see Traced); others go out as they are.
//
// When $REHOME_TLS_CA is set the client speaks HTTPS, trusting only that CA
// and presenting $REHOME_TLS_CERT with $REHOME_TLS_KEY when set (for nodes
// that require client certificates); if those files do not load, every
// request fails with that error rather than falling back to plain HTTP.
func New(token string) *Client {
	cfg, err := tlsconf.ClientFromEnv()
	c := NewTLS(token, cfg)
	if err != nil {
		c.err = fmt.Errorf("storage client: %w", err)
	}
	return c
}

// NewTLS is New speaking HTTPS with cfg (tlsconf.Client builds one), or plain
// HTTP when cfg is nil, whatever the environment says.
func NewTLS(token string, cfg *tls.Config) *Client {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       cfg,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}
	slow := tr.Clone()
	slow.ResponseHeaderTimeout = 0 // a pull answers once the shard is durable; ctx bounds it
	return &Client{HTTP: &http.Client{Transport: Traced(tr)}, Slow: &http.Client{Transport: Traced(slow)}, Token: token, secure: cfg != nil}
}

// Traced wraps base so that a request whose context carries a span (a mover's
// copy span, say) gets a client span of its own, child of that one, and
// carries the trace context to the storage node in W3C traceparent headers
// (otelhttp). The client span uses the tracer provider of the parent span and
// ends when the response body is read to its end or closed. Requests without
// a span in their context pass straight to base, untraced. Closing idle
// connections reaches base.
func Traced(base *http.Transport) http.RoundTripper {
	return tracedTransport{
		RoundTripper: otelhttp.NewTransport(base,
			otelhttp.WithPropagators(telemetry.Propagator()),
			otelhttp.WithFilter(func(r *http.Request) bool { return trace.SpanContextFromContext(r.Context()).IsValid() }),
			otelhttp.WithSpanNameFormatter(spanName),
		),
		base: base,
	}
}

// spanName names a client span as HTTP semantic conventions do: method and
// route template ("PUT /v1/shards/{id}"), the shard id staying out of it.
func spanName(_ string, r *http.Request) string {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/shards/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 { // an action on the shard: /pull, /verify
			return r.Method + " /v1/shards/{id}" + rest[i:]
		}
		return r.Method + " /v1/shards/{id}"
	}
	return r.Method + " " + r.URL.Path
}

// tracedTransport is an otelhttp transport that still lets http.Client close
// the idle connections of the transport it wraps.
type tracedTransport struct {
	http.RoundTripper
	base *http.Transport
}

// CloseIdleConnections closes base's idle connections.
func (t tracedTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }

func (c *Client) request(ctx context.Context, method, addr, path string, body io.Reader) (*http.Request, error) {
	if c.err != nil {
		return nil, fmt.Errorf("%s %s%s: %w", method, addr, path, c.err)
	}
	scheme := "http://"
	if c.secure {
		scheme = "https://"
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+addr+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s: %w", method, addr, path, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if class := ClassOf(ctx); class != "" {
		req.Header.Set(HeaderClass, class)
	}
	return req, nil
}

func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return &StatusError{Code: resp.StatusCode, Msg: strings.TrimSpace(string(b))}
}

// Put streams size bytes from body to shard id on addr. It returns nil once the
// node has verified sha against the bytes and made them durable (or already
// held them with that checksum).
func (c *Client) Put(ctx context.Context, addr, id, sha string, size int64, body io.Reader) error {
	req, err := c.request(ctx, http.MethodPut, addr, "/v1/shards/"+id, body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set(HeaderSHA256, sha)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("put %s to %s: %w", id, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("put %s to %s: %w", id, addr, statusError(resp))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// Pull has the node at addr fetch shard id from the node at source, which
// must hold it with checksum sha and size bytes. It blocks until the node has
// the bytes verified and durable (created true) or already held them with
// that checksum (created false). Errors match ErrSourceCorrupt when the
// source's bytes did not match sha, ErrSource when the source could not be
// read from; any other error is the node's own (ErrConflict, ErrFull, ...).
// The request carries ctx's traffic class (AsRepair, WithClass), and so does
// the node's read from the source (repair when ctx has none).
func (c *Client) Pull(ctx context.Context, addr, id, source, sha string, size int64) (created bool, err error) {
	body, err := json.Marshal(PullRequest{Source: source, SHA256: sha, Size: size})
	if err != nil {
		return false, fmt.Errorf("pull %s to %s: %w", id, addr, err)
	}
	req, err := c.request(ctx, http.MethodPost, addr, "/v1/shards/"+id+"/pull", bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := c.Slow
	if hc == nil {
		hc = c.HTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("pull %s to %s: %w", id, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("pull %s from %s to %s: %w", id, source, addr, statusError(resp))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusCreated, nil
}

// Verify has the node at addr re-read shard id and check its checksum. It
// returns what the node holds, verified, or an error matching ErrChecksum
// when the bytes did not match (the node quarantined and reported the
// shard), ErrNotFound when the node does not hold it (any more).
func (c *Client) Verify(ctx context.Context, addr, id string) (Info, error) {
	var info Info
	req, err := c.request(ctx, http.MethodPost, addr, "/v1/shards/"+id+"/verify", nil)
	if err != nil {
		return info, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return info, fmt.Errorf("verify %s on %s: %w", id, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return info, fmt.Errorf("verify %s on %s: %w", id, addr, statusError(resp))
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return info, fmt.Errorf("verify %s on %s: %w", id, addr, err)
	}
	return info, nil
}

// Get opens shard id on addr. The caller reads and closes the body and should
// verify the bytes against the checksum it expects.
func (c *Client) Get(ctx context.Context, addr, id string) (io.ReadCloser, Info, error) {
	req, err := c.request(ctx, http.MethodGet, addr, "/v1/shards/"+id, nil)
	if err != nil {
		return nil, Info{}, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, Info{}, fmt.Errorf("get %s from %s: %w", id, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, Info{}, fmt.Errorf("get %s from %s: %w", id, addr, statusError(resp))
	}
	return resp.Body, infoFrom(id, resp), nil
}

// Head returns what addr holds under id, or an error matching ErrNotFound.
func (c *Client) Head(ctx context.Context, addr, id string) (Info, error) {
	req, err := c.request(ctx, http.MethodHead, addr, "/v1/shards/"+id, nil)
	if err != nil {
		return Info{}, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Info{}, fmt.Errorf("head %s on %s: %w", id, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Info{}, fmt.Errorf("head %s on %s: %w", id, addr, &StatusError{Code: resp.StatusCode, Msg: resp.Status})
	}
	return infoFrom(id, resp), nil
}

// Delete removes shard id from addr. Deleting an absent shard is not an error.
func (c *Client) Delete(ctx context.Context, addr, id string) error {
	req, err := c.request(ctx, http.MethodDelete, addr, "/v1/shards/"+id, nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("delete %s on %s: %w", id, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("delete %s on %s: %w", id, addr, statusError(resp))
	}
	return nil
}

// List returns addr's inventory.
func (c *Client) List(ctx context.Context, addr string) (Inventory, error) {
	var inv Inventory
	req, err := c.request(ctx, http.MethodGet, addr, "/v1/shards", nil)
	if err != nil {
		return inv, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return inv, fmt.Errorf("list %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return inv, fmt.Errorf("list %s: %w", addr, statusError(resp))
	}
	if err := json.NewDecoder(resp.Body).Decode(&inv); err != nil {
		return inv, fmt.Errorf("list %s: %w", addr, err)
	}
	return inv, nil
}

func infoFrom(id string, resp *http.Response) Info {
	size, _ := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
	if resp.ContentLength >= 0 {
		size = resp.ContentLength
	}
	return Info{ID: id, Size: size, SHA256: resp.Header.Get(HeaderSHA256)}
}
