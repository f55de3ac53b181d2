package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/shardapi"
)

// fuzzToken is the bearer token of the node FuzzAPI drives.
const fuzzToken = "fuzz-token"

// validMethod reports whether m is an HTTP token net/http would hand to a
// handler at all (it answers 400 itself otherwise).
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// serveOne runs one request through h as net/http would: a handler
// aborting with http.ErrAbortHandler cuts the connection (reported as -1).
func serveOne(h http.Handler, r *http.Request) (code int, body []byte) {
	rec := httptest.NewRecorder()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			code = -1
		}
	}()
	h.ServeHTTP(rec, r)
	return rec.Code, rec.Body.Bytes()
}

// FuzzAPI drives the real shard API handler with arbitrary methods, request
// targets, bearer tokens, checksum and length headers and bodies. It must
// never panic nor answer 5xx (507, a full disk, is documented), refuse every
// /v1 request without the token with 401, leave no file outside the data
// directory and no temp file inside it, and never keep a shard it refused:
// a PUT that fails leaves the shard absent, one that succeeds holds exactly
// the body whose checksum it was given.
func FuzzAPI(f *testing.F) {
	root := f.TempDir()
	dir := filepath.Join(root, "data")
	const capacity = 1 << 20
	store, err := disk.Open(dir, disk.Options{CapacityBytes: capacity}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	reg := prometheus.NewRegistry()
	a := &api{store: store, node: "storage-f", token: []byte(fuzzToken), maxShard: 64 << 10,
		m: newMetrics(reg, store, capacity), reg: reg, log: slog.New(slog.DiscardHandler)}
	h := a.handler()
	f.Fuzz(func(t *testing.T, method, target, auth, sha, length string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !validMethod(method) {
			return // net/http answers 400 before any handler runs
		}
		size := int64(-1) // no Content-Length: a chunked body
		if length != "" {
			if size, err = strconv.ParseInt(length, 10, 64); err != nil || size < 0 {
				return // net/http answers 400 itself
			}
		}
		var rd io.Reader = bytes.NewReader(body)
		if size >= 0 {
			rd = io.LimitReader(rd, size) // net/http never reads past Content-Length
		}
		r := &http.Request{Method: method, URL: u, RequestURI: target, Host: "storage-f", Proto: "HTTP/1.1",
			ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Body: io.NopCloser(rd), ContentLength: size}
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if sha != "" {
			r.Header.Set(shardapi.HeaderSHA256, sha)
		}
		id, isShard := strings.CutPrefix(u.Path, "/v1/shards/")
		isShard = isShard && model.ValidateShardID(id) == nil
		var before disk.Info
		existed := false
		if isShard {
			before, err = store.Stat(id)
			existed = err == nil
		}

		code, answer := serveOne(h, r)
		t.Cleanup(func() { // every input starts from an empty store
			for _, s := range store.List() {
				_ = store.Delete(s.ID)
			}
		})

		if code >= 500 && code != http.StatusInsufficientStorage {
			t.Fatalf("%s %q answered %d: %s", method, target, code, answer)
		}
		authorized := auth == "Bearer "+fuzzToken
		if (u.Path == "/v1" || strings.HasPrefix(u.Path, "/v1/")) && !authorized && code != http.StatusUnauthorized {
			t.Fatalf("%s %q with Authorization %q answered %d, want 401", method, target, auth, code)
		}
		checkDataDir(t, root, dir)
		if !isShard || method != http.MethodPut {
			return
		}
		after, err := store.Stat(id)
		switch {
		case code == http.StatusCreated || code == http.StatusOK:
			if err != nil {
				t.Fatalf("PUT %s answered %d but the shard is absent: %v", id, code, err)
			}
			if !strings.EqualFold(after.SHA256, sha) {
				t.Fatalf("PUT %s with checksum %q answered %d; the node holds %q", id, sha, code, after.SHA256)
			}
			if code == http.StatusCreated {
				sum := sha256.Sum256(body[:min(int64(len(body)), size)])
				if after.Size != size || hex.EncodeToString(sum[:]) != strings.ToLower(sha) {
					t.Fatalf("PUT %s of %d bytes (checksum %q) answered 201; the node holds %d bytes", id, size, sha, after.Size)
				}
				checkReadBack(t, h, id, body[:size])
			}
		case existed:
			if err != nil || after != before {
				t.Fatalf("PUT %s refused with %d changed the shard held: %+v -> %+v (%v)", id, code, before, after, err)
			}
		case !errors.Is(err, disk.ErrNotFound):
			t.Fatalf("PUT %s refused with %d left a shard: %+v %v", id, code, after, err)
		}
	})
}

// checkDataDir fails if anything but the data directory exists under root,
// or a temp file is left inside it.
func checkDataDir(t *testing.T, root, dir string) {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != filepath.Base(dir) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("files outside the data directory: %v", names)
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			return fmt.Errorf("temp file left behind: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkReadBack fails unless GET of id answers exactly want.
func checkReadBack(t *testing.T, h http.Handler, id string, want []byte) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/v1/shards/"+id, nil)
	r.Header.Set("Authorization", "Bearer "+fuzzToken)
	code, got := serveOne(h, r)
	if code != http.StatusOK || !bytes.Equal(got, want) {
		t.Fatalf("GET %s after a verified PUT: %d, %d bytes, want 200 and the %d bytes put", id, code, len(got), len(want))
	}
}

// FuzzInventoryRequest feeds arbitrary request bodies and bus limits to the
// inventory answer: it must always answer a control reply that decodes; a
// page answered fits the limit, lists shards in id order strictly after the
// request's After, and points Next at its last shard exactly when more remain.
func FuzzInventoryRequest(f *testing.F) {
	var shards listPager
	for i := range 50 {
		shards = append(shards, disk.Info{ID: fmt.Sprintf("obj-%03d", i), Size: int64(i), SHA256: strings.Repeat("ab", 32)})
	}
	f.Add([]byte(`{"after":"obj-010","limit":5}`), 4096)
	f.Fuzz(func(t *testing.T, data []byte, maxPayload int) {
		reply, result := inventoryReply(shards, "storage-1", "boot", data, maxPayload)
		var page control.InventoryPage
		err := control.DecodeReply(reply, &page)
		switch result {
		case inventoryOK:
			if err != nil || len(reply) > maxPayload {
				t.Fatalf("answered ok: %v, %d bytes for a limit of %d", err, len(reply), maxPayload)
			}
		case inventoryInvalid:
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("judged invalid but answered %v", err)
			}
			return
		default:
			if err == nil {
				t.Fatalf("judged %s but answered a page", result)
			}
			return
		}
		req, perr := parseInventoryRequest(data)
		if perr != nil {
			t.Fatalf("answered a page to a request that does not parse: %v", perr)
		}
		ids := make([]string, len(page.Shards))
		for i, s := range page.Shards {
			ids[i] = s.ID
		}
		if !slices.IsSorted(ids) || len(ids) > req.Limit || (len(ids) > 0 && ids[0] <= req.After) {
			t.Fatalf("request %+v answered %v", req, ids)
		}
		last := len(ids) > 0 && ids[len(ids)-1] == shards[len(shards)-1].ID
		if (page.Next != "") != (len(ids) > 0 && !last) || (page.Next != "" && page.Next != ids[len(ids)-1]) {
			t.Fatalf("request %+v answered %d shards (last of all: %v) and next %q", req, len(ids), last, page.Next)
		}
	})
}
