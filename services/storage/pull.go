package storage

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/shardapi"
)

// shardSource is how a node reads a shard from another node for a pull
// (*shardapi.Client implements it).
type shardSource interface {
	Get(ctx context.Context, addr, id string) (io.ReadCloser, shardapi.Info, error)
}

// maxPullRequest bounds the JSON body of a pull request.
const maxPullRequest = 4 << 10

// pull serves POST /v1/shards/{id}/pull: the node fetches the shard from the
// source named in the body (a repair-class GET: the source sends it from
// disk unverified, with sendfile where it can) and stores it through
// Store.Put, which hashes it once as it writes the temp file, fsyncs, checks
// the checksum, renames and fsyncs the directory. Only then does it answer
// 201 (200 when it already held the shard with that checksum, without
// contacting the source). Bytes that do not match the checksum or the size
// answer 424 (a corrupt source: nothing is kept), a source that cannot be
// read from 502, the rest as PUT does.
func (a *api) pull(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req shardapi.PullRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxPullRequest))
	if err := dec.Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "pull request: "+err.Error())
		return
	}
	switch {
	case req.Source == "" || strings.ContainsAny(req.Source, "/?#@ "):
		fail(w, http.StatusBadRequest, "pull request: source must be a host:port")
		return
	case req.Size < 0:
		fail(w, http.StatusBadRequest, "pull request: negative size")
		return
	case a.tooLarge(w, req.Size):
		return
	}
	if _, err := disk.ParseSHA256(req.SHA256); err != nil {
		fail(w, http.StatusBadRequest, "pull request: "+err.Error())
		return
	}
	if info, err := a.store.Stat(id); err == nil {
		if info.Size == req.Size && strings.EqualFold(info.SHA256, req.SHA256) {
			writeJSON(w, http.StatusOK, shardapi.Info(info))
			return
		}
		fail(w, http.StatusConflict, "shard "+id+" is held with sha256 "+info.SHA256)
		return
	}
	class := shardapi.RequestClass(r) // the read from the source keeps it: repair when none
	if class == "" {
		class = shardapi.ClassRepair
	}
	ctx, cancel := context.WithTimeout(shardapi.WithClass(r.Context(), class), transferDeadline(req.Size))
	defer cancel()
	body, info, err := a.source.Get(ctx, req.Source, id)
	if err != nil {
		fail(w, http.StatusBadGateway, "source "+req.Source+": "+err.Error())
		return
	}
	defer body.Close()
	if info.Size != req.Size || (info.SHA256 != "" && !strings.EqualFold(info.SHA256, req.SHA256)) {
		fail(w, http.StatusFailedDependency, "source "+req.Source+" holds "+strconv.FormatInt(info.Size, 10)+
			" bytes with sha256 "+info.SHA256+", want "+strconv.FormatInt(req.Size, 10)+" with "+req.SHA256)
		return
	}
	var created bool
	err = a.prio.run(func() (err error) {
		created, err = a.store.Put(id, req.SHA256, req.Size, a.prio.repairReader(ctx, body))
		return err
	})
	if err != nil {
		code := statusOf(err)
		switch {
		case errors.Is(err, disk.ErrChecksum), errors.Is(err, disk.ErrSize):
			code = http.StatusFailedDependency
			a.log.WarnContext(r.Context(), "pulled bytes do not match: corrupt source", "shard", id, "source", req.Source, "err", err)
		case errors.Is(err, disk.ErrRead):
			code = http.StatusBadGateway
		case code >= 500 && code != http.StatusInsufficientStorage:
			a.log.ErrorContext(r.Context(), "pull failed", "shard", id, "source", req.Source, "err", err)
		}
		fail(w, code, "pull from "+req.Source+": "+err.Error())
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
		a.m.bytesWritten.Add(float64(req.Size))
	}
	stored, _ := a.store.Stat(id)
	writeJSON(w, code, shardapi.Info(stored))
}

// verify serves POST /v1/shards/{id}/verify: the shard is re-read and its
// checksum checked (Store.Verify); a mismatch quarantines and reports it
// and answers 422.
func (a *api) verify(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.store.Verify(id, nil); err != nil {
		code := statusOf(err)
		if errors.Is(err, disk.ErrCorrupt) {
			code = http.StatusUnprocessableEntity
		}
		fail(w, code, err.Error())
		return
	}
	info, err := a.store.Stat(id)
	if err != nil {
		fail(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, shardapi.Info(info))
}

// sendRaw sends size bytes of f (positioned at the shard's first byte) to w
// through the priority gate, one repairChunk at a time. Each chunk goes out
// as an io.LimitedReader over the *os.File, which net/http hands to the
// connection's ReadFrom: sendfile on a plain TCP connection, a buffered copy
// under TLS. It returns the bytes sent.
func (a *api) sendRaw(ctx context.Context, w io.Writer, f *os.File, size int64) (int64, error) {
	var n int64
	for n < size {
		chunk := min(size-n, repairChunk)
		if err := a.prio.wait(ctx, int(chunk)); err != nil {
			return n, err
		}
		m, err := io.Copy(w, io.LimitReader(f, chunk))
		n += m
		if err != nil {
			return n, err
		}
		if m < chunk {
			return n, io.ErrUnexpectedEOF
		}
	}
	return n, nil
}
