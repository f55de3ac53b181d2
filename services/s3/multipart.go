package s3

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rclone/gofakes3"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/listing"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/objects"
)

// minPartSize is S3's smallest part but the last.
const minPartSize = 5 << 20

// s3NS is the namespace of S3's XML documents.
const s3NS = "http://s3.amazonaws.com/doc/2006-03-01/"

// uploadRecord is one multipart upload in progress (KV bus.BucketS3, key
// "upload.<id>"). Its parts are rehome objects under partKey, committed
// (placed, replicated, healed) as they arrive; Complete joins them.
type uploadRecord struct {
	V           int               `json:"v"`
	ID          string            `json:"id"`
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	Layout      model.Layout      `json:"layout"`
	ContentType string            `json:"content_type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Initiated   time.Time         `json:"initiated"`
}

// partsPrefix is the key prefix of upload id's part objects.
func partsPrefix(id string) string { return model.UploadPrefix + id + "/" }

// partKey is the rehome key of part n of upload id (zero-padded, so the
// listing index orders parts by number).
func partKey(id string, n int) string { return fmt.Sprintf("%s%05d", partsPrefix(id), n) }

// multipart serves S3's multipart upload calls from state on the bus, so an
// upload begun on one gateway continues on any other, and survives a
// gateway's restart. Safe for concurrent use.
type multipart struct {
	b     *backend
	kv    jetstream.KeyValue
	log   *slog.Logger
	now   func() time.Time
	grace time.Duration
}

// mpError is an S3 error of the multipart calls.
type mpError struct {
	code   string
	status int
	msg    string
}

func (e *mpError) Error() string { return e.code + ": " + e.msg }

func noSuchUpload(id string) error {
	return &mpError{string(gofakes3.ErrNoSuchUpload), http.StatusNotFound, "The specified upload does not exist: " + id}
}

func badRequest(code gofakes3.ErrorCode, msg string) error {
	return &mpError{string(code), http.StatusBadRequest, msg}
}

// serve routes one multipart request and writes its answer.
func (mp *multipart) serve(w http.ResponseWriter, r *http.Request, bucket, key string) {
	q := r.URL.Query()
	id := q.Get("uploadId")
	var err error
	switch {
	case q.Has("uploads") && r.Method == http.MethodGet && key == "":
		err = mp.listUploads(w, r, bucket)
	case q.Has("uploads") && r.Method == http.MethodPost && key != "":
		err = mp.create(w, r, bucket, key)
	case id != "" && key != "" && r.Method == http.MethodPut:
		err = mp.uploadPart(w, r, bucket, key, id)
	case id != "" && key != "" && r.Method == http.MethodPost:
		err = mp.complete(w, r, bucket, key, id)
	case id != "" && key != "" && r.Method == http.MethodDelete:
		err = mp.abort(w, r, bucket, key, id)
	case id != "" && key != "" && r.Method == http.MethodGet:
		err = mp.listParts(w, r, bucket, key, id)
	default:
		err = &mpError{string(gofakes3.ErrMethodNotAllowed), http.StatusMethodNotAllowed, "The specified method is not allowed against this resource."}
	}
	if err == nil {
		return
	}
	var me *mpError
	var ge gofakes3.Error
	switch {
	case errors.As(err, &me):
		writeError(w, r, me.code, me.status, me.msg, r.URL.Path)
	case errors.As(err, &ge):
		writeError(w, r, string(ge.ErrorCode()), ge.ErrorCode().Status(), ge.Error(), r.URL.Path)
	default:
		mp.log.Warn("s3 multipart call failed", "path", r.URL.Path, "err", err)
		writeError(w, r, string(gofakes3.ErrSlowDown), http.StatusServiceUnavailable, "rehome could not serve this now, try again: "+oneLine(err.Error()), r.URL.Path)
	}
}

// encodeXML writes v as the XML document element name.
func encodeXML(w http.ResponseWriter, name string, v any) error {
	w.Header().Set("Content-Type", "application/xml")
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return nil // the client went away
	}
	_ = xml.NewEncoder(w).EncodeElement(v, xml.StartElement{Name: xml.Name{Space: s3NS, Local: name}})
	return nil
}

// requestMeta returns the object attributes a request sets (what S3 keeps
// and gives back): Content-Type, the other representation headers, the
// storage class and x-amz-meta-*.
func requestMeta(h http.Header) (map[string]string, error) {
	meta := map[string]string{}
	size := 0
	for k, vs := range h {
		k = http.CanonicalHeaderKey(k)
		if len(vs) == 0 {
			continue
		}
		switch {
		case k == "Cache-Control", k == "Content-Disposition", k == "Content-Language", k == "Content-Type",
			k == "Expires", k == "X-Amz-Storage-Class", k == "X-Amz-Website-Redirect-Location",
			strings.HasPrefix(k, "X-Amz-Meta-"):
			meta[k] = vs[0]
		case k == "Content-Encoding":
			if v := strings.TrimSpace(strings.ReplaceAll(vs[0], "aws-chunked", "")); strings.Trim(v, ", ") != "" {
				meta[k] = strings.Trim(v, ", ")
			}
		default:
			continue
		}
		size += len(k) + len(vs[0])
	}
	if size > gofakes3.DefaultMetadataSizeLimit {
		return nil, badRequest(gofakes3.ErrMetadataTooLarge, "Your metadata headers exceed the maximum allowed metadata size.")
	}
	return meta, nil
}

func (mp *multipart) create(w http.ResponseWriter, r *http.Request, bucket, key string) error {
	if len(key) > gofakes3.KeySizeLimit {
		return badRequest(gofakes3.ErrKeyTooLong, "Your key is too long")
	}
	meta, err := requestMeta(r.Header)
	if err != nil {
		return err
	}
	l, err := mp.b.layoutFor(r.Context(), bucket, meta)
	if err != nil {
		return err
	}
	opts := putOptions(meta, l)
	rec := uploadRecord{V: model.Version, ID: uuid.NewString(), Bucket: bucket, Key: key, Layout: l,
		ContentType: opts.ContentType, Meta: opts.Meta, Initiated: mp.now().UTC()}
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := mp.kv.Create(r.Context(), uploadKeyPrefix+rec.ID, body); err != nil {
		return fmt.Errorf("record upload: %w", err)
	}
	return encodeXML(w, "InitiateMultipartUploadResult", gofakes3.InitiateMultipartUpload{Bucket: bucket, Key: key, UploadID: gofakes3.UploadID(rec.ID)})
}

// upload returns upload id's record, checking it belongs to bucket/key.
func (mp *multipart) upload(ctx context.Context, bucket, key, id string) (uploadRecord, error) {
	var rec uploadRecord
	if _, err := uuid.Parse(id); err != nil {
		return rec, noSuchUpload(id) // not one of ours (and not a safe KV key)
	}
	e, err := mp.kv.Get(ctx, uploadKeyPrefix+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, noSuchUpload(id)
	}
	if err != nil {
		return rec, fmt.Errorf("read upload %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, fmt.Errorf("upload record %s is corrupt: %w", id, err)
	}
	if rec.Bucket != bucket || rec.Key != key {
		return rec, noSuchUpload(id)
	}
	return rec, nil
}

// bodySize returns the payload length of a PUT: the decoded length of an
// aws-chunked body, else Content-Length.
func bodySize(r *http.Request) (int64, error) {
	v := r.Header.Get("X-Amz-Decoded-Content-Length")
	if v == "" {
		if r.ContentLength < 0 {
			return 0, &mpError{string(gofakes3.ErrMissingContentLength), http.StatusLengthRequired, "You must provide the Content-Length HTTP header."}
		}
		return r.ContentLength, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest(gofakes3.ErrInvalidArgument, "X-Amz-Decoded-Content-Length is not a length")
	}
	return n, nil
}

// digests returns what the request says its payload hashes to (hex MD5 from
// Content-MD5, hex SHA-256 from a signed x-amz-content-sha256).
func digests(h http.Header) (md5hex, shahex string, err error) {
	if v, ok := h["Content-Md5"]; ok {
		raw, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(v[0]))
		if derr != nil || len(raw) != md5.Size {
			return "", "", badRequest(gofakes3.ErrInvalidDigest, "The Content-MD5 you specified was invalid.")
		}
		md5hex = hex.EncodeToString(raw)
	}
	if v := h.Get("X-Amz-Content-Sha256"); len(v) == 64 {
		if _, derr := hex.DecodeString(v); derr == nil {
			shahex = strings.ToLower(v)
		}
	}
	return md5hex, shahex, nil
}

func (mp *multipart) uploadPart(w http.ResponseWriter, r *http.Request, bucket, key, id string) error {
	n, err := strconv.Atoi(r.URL.Query().Get("partNumber"))
	if err != nil || n < 1 || n > gofakes3.MaxUploadPartNumber {
		return badRequest(gofakes3.ErrInvalidArgument, "Part number must be an integer between 1 and 10000, inclusive")
	}
	rec, err := mp.upload(r.Context(), bucket, key, id)
	if err != nil {
		return err
	}
	if src := r.Header.Get("X-Amz-Copy-Source"); src != "" {
		return mp.uploadPartCopy(w, r, rec, n, src)
	}
	size, err := bodySize(r)
	if err != nil {
		return err
	}
	md, sha, err := digests(r.Header)
	if err != nil {
		return err
	}
	var body io.Reader = r.Body
	if isAWSChunked(r.Header.Get("X-Amz-Content-Sha256")) {
		body = newAWSChunked(r.Body)
	}
	opts := objects.PutOptions{Layout: rec.Layout, Overwrite: true, ExpectMD5: md, ExpectSHA256: sha}
	m, err := mp.b.store.Put(r.Context(), partKey(id, n), io.LimitReader(body, size), size, opts)
	if err != nil {
		return mp.putError(err)
	}
	w.Header().Set("ETag", quote(m.ETag))
	w.WriteHeader(http.StatusOK)
	return nil
}

// putError maps a failed part write onto S3's answer.
func (mp *multipart) putError(err error) error {
	switch {
	case errors.Is(err, objects.ErrDigest):
		return badRequest(gofakes3.ErrBadDigest, "The Content-MD5 or checksum you specified did not match what we received.")
	case errors.Is(err, errChunkFraming):
		return badRequest(gofakes3.ErrIncompleteBody, oneLine(err.Error()))
	}
	return mp.b.s3Error("UploadPart", "", err)
}

// parseCopyRange reads x-amz-copy-source-range ("bytes=FIRST-LAST", both
// inside an object of size bytes) into an offset and a length; none means
// the whole object.
func parseCopyRange(v string, size int64) (off, n int64, err error) {
	if v == "" {
		return 0, size, nil
	}
	var first, last int64
	if _, serr := fmt.Sscanf(v, "bytes=%d-%d", &first, &last); serr != nil || first < 0 || last < first || last >= size {
		return 0, 0, &mpError{string(gofakes3.ErrInvalidRange), http.StatusRequestedRangeNotSatisfiable, "The requested range is not satisfiable"}
	}
	return first, last - first + 1, nil
}

func (mp *multipart) uploadPartCopy(w http.ResponseWriter, r *http.Request, rec uploadRecord, n int, src string) error {
	src, err := url.PathUnescape(strings.TrimPrefix(src, "/"))
	if err != nil {
		return badRequest(gofakes3.ErrInvalidArgument, "x-amz-copy-source is not a valid path")
	}
	srcBucket, srcKey, ok := strings.Cut(src, "/")
	if !ok || srcKey == "" {
		return badRequest(gofakes3.ErrInvalidArgument, "x-amz-copy-source must name a bucket and a key")
	}
	if strings.Contains(srcKey, "?versionId=") {
		return &mpError{string(gofakes3.ErrNotImplemented), http.StatusNotImplemented, "versions are not implemented by rehome's S3 gateway"}
	}
	sm, err := mp.b.store.Manifest(r.Context(), objectKey(srcBucket, srcKey))
	if err != nil {
		return mp.b.s3Error("UploadPartCopy", srcKey, err)
	}
	off, size, err := parseCopyRange(r.Header.Get("X-Amz-Copy-Source-Range"), sm.Size)
	if err != nil {
		return err
	}
	rd := mp.b.store.Open(r.Context(), sm, off, size)
	defer rd.Close()
	m, err := mp.b.store.Put(r.Context(), partKey(rec.ID, n), rd, size, objects.PutOptions{Layout: rec.Layout, Overwrite: true})
	if err != nil {
		return mp.putError(err)
	}
	return encodeXML(w, "CopyPartResult", struct {
		LastModified gofakes3.ContentTime `xml:"LastModified"`
		ETag         string               `xml:"ETag"`
	}{gofakes3.NewContentTime(m.Created), quote(m.ETag)})
}

// parts returns every part of upload id, by number.
func (mp *multipart) parts(ctx context.Context, id string) ([]listing.Entry, error) {
	var out []listing.Entry
	q := listing.Query{Prefix: partsPrefix(id), MaxKeys: 1000}
	for {
		res, err := mp.b.index.List(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("list parts of %s: %w", id, err)
		}
		out = append(out, res.Entries...)
		if !res.Truncated {
			return out, nil
		}
		q.After = res.Next
	}
}

// partNumber reads the number out of a part object's key.
func partNumber(id, key string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(key, partsPrefix(id)))
	if err != nil {
		return 0
	}
	return n
}

func (mp *multipart) complete(w http.ResponseWriter, r *http.Request, bucket, key, id string) error {
	ctx := r.Context()
	rec, err := mp.upload(ctx, bucket, key, id)
	if err != nil {
		// A retried Complete whose first answer was lost succeeds again.
		if m, merr := mp.b.store.Manifest(ctx, objectKey(bucket, key)); merr == nil && m.ID == id {
			return mp.completed(w, bucket, key, m)
		}
		return err
	}
	var req gofakes3.CompleteMultipartUploadRequest
	if err := xml.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil || len(req.Parts) == 0 {
		return badRequest(gofakes3.ErrMalformedXML, "The XML you provided was not well-formed or did not validate against our published schema.")
	}
	have, err := mp.parts(ctx, id)
	if err != nil {
		return err
	}
	byNum := make(map[int]listing.Entry, len(have))
	for _, e := range have {
		byNum[partNumber(id, e.Key)] = e
	}
	sum := md5.New()
	keys := make([]string, len(req.Parts))
	used := map[string]bool{}
	for i, p := range req.Parts { // S3 checks the order before any part
		if i > 0 && p.PartNumber <= req.Parts[i-1].PartNumber {
			return badRequest(gofakes3.ErrInvalidPartOrder, "The list of parts was not in ascending order. The parts list must be specified in order by part number.")
		}
	}
	for i, p := range req.Parts {
		e, ok := byNum[p.PartNumber]
		if !ok || strings.Trim(p.ETag, `"`) != e.ETag {
			// The index may lag a part committed a moment ago (its wait is
			// bounded): the part's manifest is the authority.
			if m, err := mp.b.store.Manifest(ctx, partKey(id, p.PartNumber)); err == nil {
				e, ok = listing.Entry{Key: m.Key, Size: m.Size, ETag: m.ETag, Modified: m.Created}, true
			}
		}
		if !ok || strings.Trim(p.ETag, `"`) != e.ETag {
			return badRequest(gofakes3.ErrInvalidPart, fmt.Sprintf("One or more of the specified parts could not be found (part %d). The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.", p.PartNumber))
		}
		if e.Size < minPartSize && i < len(req.Parts)-1 {
			return &mpError{"EntityTooSmall", http.StatusBadRequest, fmt.Sprintf("Your proposed upload is smaller than the minimum allowed object size (part %d is %d bytes).", p.PartNumber, e.Size)}
		}
		raw, _ := hex.DecodeString(e.ETag)
		sum.Write(raw)
		keys[i] = e.Key
		used[e.Key] = true
	}
	etag := fmt.Sprintf("%s-%d", hex.EncodeToString(sum.Sum(nil)), len(req.Parts))
	m, err := mp.b.store.Compose(ctx, control.ComposeRequest{
		Manifest: model.Manifest{V: model.Version, Key: objectKey(bucket, key), ID: id, Layout: rec.Layout,
			ETag: etag, ContentType: rec.ContentType, Meta: rec.Meta, Created: mp.now().UTC()},
		Parts:     keys,
		Overwrite: true,
	})
	if err != nil {
		if errors.Is(err, objects.ErrNotFound) {
			return badRequest(gofakes3.ErrInvalidPart, "One or more of the specified parts could not be found: "+oneLine(err.Error()))
		}
		return mp.b.s3Error("CompleteMultipartUpload", key, err)
	}
	for _, e := range have {
		if !used[e.Key] {
			mp.dropPart(ctx, e.Key)
		}
	}
	if err := mp.kv.Delete(ctx, uploadKeyPrefix+id); err != nil {
		mp.log.Warn("completed upload record left behind (collected after the grace)", "upload", id, "err", err)
	}
	return mp.completed(w, bucket, key, m)
}

func (mp *multipart) completed(w http.ResponseWriter, bucket, key string, m model.Manifest) error {
	return encodeXML(w, "CompleteMultipartUploadResult", gofakes3.CompleteMultipartUploadResult{
		Location: "/" + bucket + "/" + key, Bucket: bucket, Key: key, ETag: quote(m.ETag),
	})
}

// dropPart deletes one part object and its shards (best effort: what is
// left is collected with the upload, or by the orphan sweep).
func (mp *multipart) dropPart(ctx context.Context, key string) {
	if err := mp.b.store.Delete(ctx, key); err != nil && !errors.Is(err, objects.ErrNotFound) {
		mp.log.Warn("part left behind", "part", key, "err", err)
	}
}

// drop deletes an upload's parts, then its record.
func (mp *multipart) drop(ctx context.Context, id string) error {
	parts, err := mp.parts(ctx, id)
	if err != nil {
		return err
	}
	for _, e := range parts {
		mp.dropPart(ctx, e.Key)
	}
	if err := mp.kv.Delete(ctx, uploadKeyPrefix+id); err != nil {
		return fmt.Errorf("delete upload %s: %w", id, err)
	}
	return nil
}

func (mp *multipart) abort(w http.ResponseWriter, r *http.Request, bucket, key, id string) error {
	if _, err := mp.upload(r.Context(), bucket, key, id); err != nil {
		return err
	}
	if err := mp.drop(r.Context(), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// clampedInt reads an integer query parameter in [lo, hi], def when absent.
func clampedInt(q url.Values, name string, def, lo, hi int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo {
		return 0, badRequest(gofakes3.ErrInvalidArgument, name+" must be an integer of at least "+strconv.Itoa(lo))
	}
	return min(n, hi), nil
}

func (mp *multipart) listParts(w http.ResponseWriter, r *http.Request, bucket, key, id string) error {
	q := r.URL.Query()
	marker, err := clampedInt(q, "part-number-marker", 0, 0, gofakes3.MaxUploadPartNumber)
	if err != nil {
		return err
	}
	maxParts, err := clampedInt(q, "max-parts", gofakes3.DefaultMaxUploadParts, 0, gofakes3.MaxUploadPartsLimit)
	if err != nil {
		return err
	}
	if _, err := mp.upload(r.Context(), bucket, key, id); err != nil {
		return err
	}
	lq := listing.Query{Prefix: partsPrefix(id), MaxKeys: max(maxParts, 1)}
	if marker > 0 {
		lq.After = partKey(id, marker)
	}
	res, err := mp.b.index.List(r.Context(), lq)
	if err != nil {
		return err
	}
	out := gofakes3.ListMultipartUploadPartsResult{Bucket: bucket, Key: key, UploadID: gofakes3.UploadID(id),
		StorageClass: gofakes3.StorageStandard, PartNumberMarker: marker, MaxParts: int64(maxParts)}
	if maxParts > 0 {
		for _, e := range res.Entries {
			n := partNumber(id, e.Key)
			out.Parts = append(out.Parts, gofakes3.ListMultipartUploadPartItem{PartNumber: n,
				LastModified: gofakes3.NewContentTime(e.Modified), ETag: quote(e.ETag), Size: e.Size})
			out.NextPartNumberMarker = n
		}
		out.IsTruncated = res.Truncated
	}
	return encodeXML(w, "ListPartsResult", out)
}

// uploads returns every upload record (any bucket).
func (mp *multipart) uploads(ctx context.Context) ([]uploadRecord, error) {
	lister, err := mp.kv.ListKeysFiltered(ctx, uploadKeyPrefix+"*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("list uploads: %w", err)
	}
	var out []uploadRecord
	for k := range lister.Keys() {
		e, err := mp.kv.Get(ctx, k)
		if err != nil {
			continue // completed or aborted meanwhile
		}
		var rec uploadRecord
		if json.Unmarshal(e.Value(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

func (mp *multipart) listUploads(w http.ResponseWriter, r *http.Request, bucket string) error {
	q := r.URL.Query()
	maxUploads, err := clampedInt(q, "max-uploads", gofakes3.DefaultMaxUploads, 0, gofakes3.MaxUploadsLimit)
	if err != nil {
		return err
	}
	if ok, err := mp.b.BucketExists(r.Context(), bucket); err != nil {
		return err
	} else if !ok {
		return gofakes3.BucketNotFound(bucket)
	}
	all, err := mp.uploads(r.Context())
	if err != nil {
		return err
	}
	prefix, delim := q.Get("prefix"), q.Get("delimiter")
	keyMarker, idMarker := q.Get("key-marker"), q.Get("upload-id-marker")
	var recs []uploadRecord
	for _, u := range all {
		if u.Bucket == bucket && strings.HasPrefix(u.Key, prefix) {
			recs = append(recs, u)
		}
	}
	sort.Slice(recs, func(i, j int) bool {
		if recs[i].Key != recs[j].Key {
			return recs[i].Key < recs[j].Key
		}
		return recs[i].Initiated.Before(recs[j].Initiated) || recs[i].Initiated.Equal(recs[j].Initiated) && recs[i].ID < recs[j].ID
	})
	out := gofakes3.ListMultipartUploadsResult{Bucket: bucket, KeyMarker: keyMarker, UploadIDMarker: gofakes3.UploadID(idMarker),
		MaxUploads: int64(maxUploads), Delimiter: delim, Prefix: prefix}
	seenPrefix := map[string]bool{}
	past := keyMarker == ""
	for i, u := range recs {
		if !past {
			if u.Key < keyMarker || (u.Key == keyMarker && (idMarker == "" || u.ID <= idMarker)) {
				if u.Key == keyMarker && idMarker != "" && u.ID == idMarker {
					past = true
				}
				continue
			}
			past = true
		}
		if delim != "" {
			if j := strings.Index(u.Key[len(prefix):], delim); j >= 0 {
				cp := u.Key[:len(prefix)+j+len(delim)]
				if !seenPrefix[cp] {
					if len(out.Uploads)+len(out.CommonPrefixes) >= maxUploads {
						out.IsTruncated = true
						break
					}
					seenPrefix[cp] = true
					out.CommonPrefixes = append(out.CommonPrefixes, gofakes3.CommonPrefix{Prefix: cp})
				}
				continue
			}
		}
		if len(out.Uploads)+len(out.CommonPrefixes) >= maxUploads {
			out.IsTruncated = i < len(recs)
			break
		}
		out.Uploads = append(out.Uploads, gofakes3.ListMultipartUploadItem{Key: u.Key, UploadID: gofakes3.UploadID(u.ID),
			StorageClass: gofakes3.StorageStandard, Initiated: gofakes3.NewContentTime(u.Initiated)})
		out.NextKeyMarker, out.NextUploadIDMarker = u.Key, gofakes3.UploadID(u.ID)
	}
	return encodeXML(w, "ListMultipartUploadsResult", out)
}

// collect aborts the uploads whose last activity (start or newest part) is
// older than the grace, every interval until ctx ends. Several gateways may
// collect at once: dropping an upload twice is harmless.
func (mp *multipart) collect(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := mp.collectOnce(ctx); err != nil {
			mp.log.Warn("collecting abandoned uploads", "err", err)
		} else if n > 0 {
			mp.log.Info("abandoned uploads collected", "uploads", n, "grace", mp.grace)
		}
	}
}

// collectOnce is one pass of collect; it returns the uploads it dropped.
func (mp *multipart) collectOnce(ctx context.Context) (int, error) {
	all, err := mp.uploads(ctx)
	if err != nil {
		return 0, err
	}
	cutoff, n := mp.now().Add(-mp.grace), 0
	for _, u := range all {
		if u.Initiated.After(cutoff) {
			continue
		}
		parts, err := mp.parts(ctx, u.ID)
		if err != nil {
			return n, err
		}
		active := false
		for _, p := range parts {
			active = active || p.Modified.After(cutoff)
		}
		if active {
			continue
		}
		if err := mp.drop(ctx, u.ID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
