package shardapi_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/rehome/rehome/shared/shardapi"
)

// answer is a canned response for every request.
type answer struct {
	code   int
	header http.Header
	body   []byte
}

func (a answer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	cl := int64(len(a.body))
	if v := a.header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			cl = n
		}
	}
	return &http.Response{StatusCode: a.code, Status: strconv.Itoa(a.code), Header: a.header,
		Body: io.NopCloser(bytes.NewReader(a.body)), ContentLength: cl, Request: r}, nil
}

// FuzzClientResponses answers every client call with an arbitrary status,
// checksum header, length and body, as a broken or hostile storage node
// might: no call may panic; a call that fails on a non-2xx answer reports it
// as a *StatusError carrying that code; Get on 200 hands over the body;
// List on 200 returns the decoded inventory or an error.
func FuzzClientResponses(f *testing.F) {
	f.Add(200, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "4", []byte(`{"node":"storage-1","shards":[{"id":"a","size":4,"sha256":"x"}]}`))
	f.Fuzz(func(t *testing.T, code int, sha, length string, body []byte) {
		if code < 100 || code > 999 {
			code = 100 + (code%900+900)%900 // net/http answers only carry three-digit codes
		}
		h := http.Header{}
		h.Set(shardapi.HeaderSHA256, sha)
		h.Set("Content-Length", length)
		c := &shardapi.Client{HTTP: &http.Client{Transport: answer{code: code, header: h, body: body}}, Token: "t"}
		ctx := context.Background()
		addr := "node.invalid:1"
		check := func(call string, err error, ok ...int) {
			t.Helper()
			var st *shardapi.StatusError
			for _, c := range ok {
				if code == c {
					return
				}
			}
			if err == nil {
				t.Fatalf("%s answered %d: no error", call, code)
			}
			if errors.As(err, &st) && st.Code != code {
				t.Fatalf("%s answered %d: error carries %d", call, code, st.Code)
			}
		}
		err := c.Put(ctx, addr, "s-1", sha, 3, bytes.NewReader([]byte("abc")))
		check("put", err, 200, 201)
		rc, info, err := c.Get(ctx, addr, "s-1")
		check("get", err, 200)
		if err == nil {
			got, _ := io.ReadAll(rc)
			_ = rc.Close()
			if !bytes.Equal(got, body) || info.ID != "s-1" || info.SHA256 != h.Get(shardapi.HeaderSHA256) {
				t.Fatalf("get: body %q info %+v, want %q", got, info, body)
			}
		}
		_, err = c.Head(ctx, addr, "s-1")
		check("head", err, 200)
		err = c.Delete(ctx, addr, "s-1")
		check("delete", err, 200, 204, 404)
		_, err = c.List(ctx, addr)
		check("list", err, 200)
	})
}
