package s3

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/rclone/gofakes3"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/listing"
	"github.com/rehome/rehome/shared/model"
	"github.com/rehome/rehome/shared/objects"
)

// objectStore is what the backend needs of the object client
// (objects.Client).
type objectStore interface {
	Put(ctx context.Context, key string, r io.Reader, size int64, opts objects.PutOptions) (model.Manifest, error)
	Manifest(ctx context.Context, key string) (model.Manifest, error)
	Open(ctx context.Context, m model.Manifest, off, n int64) io.ReadCloser
	Delete(ctx context.Context, key string) error
	Compose(ctx context.Context, req control.ComposeRequest) (model.Manifest, error)
}

// keyLister is what the backend needs of the listing index (listing.Reader).
type keyLister interface {
	List(ctx context.Context, q listing.Query) (listing.Result, error)
	Empty(ctx context.Context, prefix string) (bool, error)
}

// backend is gofakes3's Backend over rehome: an S3 object (bucket, key) is
// the rehome object "bucket/key"; buckets are records in the gateway state
// bucket; listings come from the listing index. It holds no state.
type backend struct {
	store   objectStore
	index   keyLister
	buckets buckets
	layout  model.Layout // default for buckets created without one
	log     *slog.Logger
}

var _ gofakes3.Backend = (*backend)(nil)

// objectKey is the rehome key of S3 object (bucket, key).
func objectKey(bucket, key string) string { return bucket + "/" + key }

// s3Error maps a rehome error onto S3's: a missing object is NoSuchKey,
// invalid input InvalidArgument, a short body IncompleteBody, anything else
// (a planner or storage node not answering) SlowDown, a 503 clients retry.
// It never answers InternalError.
func (b *backend) s3Error(op, resource string, err error) error {
	var s3e gofakes3.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &s3e):
		return err
	case errors.Is(err, objects.ErrNotFound), errors.Is(err, control.ErrNotFound):
		return gofakes3.KeyNotFound(resource)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return gofakes3.ErrorMessage(gofakes3.ErrIncompleteBody, "the body ended before Content-Length bytes")
	case errors.Is(err, model.ErrInvalid):
		return gofakes3.ErrorMessage(gofakes3.ErrInvalidArgument, oneLine(err.Error()))
	case errors.Is(err, context.Canceled):
		return gofakes3.ErrorMessage(gofakes3.ErrSlowDown, "request canceled")
	}
	b.log.Warn("s3 request failed", "op", op, "resource", resource, "err", err)
	return gofakes3.ErrorMessage(gofakes3.ErrSlowDown, "rehome could not serve this now, try again: "+oneLine(err.Error()))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (b *backend) ListBuckets(ctx context.Context) ([]gofakes3.BucketInfo, error) {
	recs, err := b.buckets.list(ctx)
	if err != nil {
		return nil, b.s3Error("ListBuckets", "", err)
	}
	out := make([]gofakes3.BucketInfo, len(recs))
	for i, r := range recs {
		out[i] = gofakes3.BucketInfo{Name: r.Name, CreationDate: gofakes3.NewContentTime(r.Created)}
	}
	return out, nil
}

// CreateBucket records a bucket. The request header X-Rehome-Layout
// ("rf=3", "ec=4+2") sets the layout of the objects written into it.
func (b *backend) CreateBucket(ctx context.Context, name string) error {
	rec := bucketRecord{V: model.Version, Name: name, Created: time.Now().UTC(), Layout: b.layout}
	if r := requestOf(ctx); r != nil {
		if v := r.Header.Get(headerLayout); v != "" {
			l, err := model.ParseLayout(v)
			if err != nil {
				return gofakes3.ErrorInvalidArgument(headerLayout, v, oneLine(err.Error()))
			}
			rec.Layout = l
		}
	}
	err := b.buckets.create(ctx, rec)
	if errors.Is(err, errBucketExists) {
		return gofakes3.ResourceError(gofakes3.ErrBucketAlreadyExists, name)
	}
	return b.s3Error("CreateBucket", name, err)
}

func (b *backend) BucketExists(ctx context.Context, name string) (bool, error) {
	_, ok, err := b.buckets.get(ctx, name)
	return ok, b.s3Error("HeadBucket", name, err)
}

func (b *backend) DeleteBucket(ctx context.Context, name string) error {
	empty, err := b.index.Empty(ctx, objectKey(name, ""))
	if err != nil {
		return b.s3Error("DeleteBucket", name, err)
	}
	if !empty {
		return gofakes3.ResourceError(gofakes3.ErrBucketNotEmpty, name)
	}
	return b.s3Error("DeleteBucket", name, b.buckets.delete(ctx, name))
}

// ListBucket answers one page from the listing index: it never scans the
// bucket, it seeks (the index skips whole common prefixes too).
func (b *backend) ListBucket(ctx context.Context, name string, prefix *gofakes3.Prefix, page gofakes3.ListBucketPage) (*gofakes3.ObjectList, error) {
	if prefix == nil {
		prefix = &gofakes3.Prefix{}
	}
	base := objectKey(name, "")
	q := listing.Query{Prefix: base + prefix.Prefix, MaxKeys: int(page.MaxKeys)}
	if prefix.HasDelimiter {
		q.Delimiter = prefix.Delimiter
	}
	if page.HasMarker {
		q.After = base + page.Marker
	}
	if q.MaxKeys <= 0 {
		q.MaxKeys = gofakes3.DefaultMaxBucketKeys
	}
	res, err := b.index.List(ctx, q)
	if err != nil {
		return nil, b.s3Error("ListObjects", name, err)
	}
	out := gofakes3.NewObjectList()
	for _, e := range res.Entries {
		out.Add(&gofakes3.Content{
			Key:          strings.TrimPrefix(e.Key, base),
			LastModified: gofakes3.NewContentTime(e.Modified),
			ETag:         quote(e.ETag),
			Size:         e.Size,
			StorageClass: gofakes3.StorageStandard,
		})
	}
	for _, p := range res.CommonPrefixes {
		out.AddPrefix(strings.TrimPrefix(p, base))
	}
	out.IsTruncated = res.Truncated
	if res.Truncated {
		out.NextMarker = strings.TrimPrefix(res.Next, base)
	}
	return out, nil
}

func quote(etag string) string { return `"` + etag + `"` }

// object renders a manifest as gofakes3 wants it; contents may be nil (HEAD).
func (b *backend) object(ctx context.Context, key string, m model.Manifest, rng *gofakes3.ObjectRange, contents io.ReadCloser) *gofakes3.Object {
	meta := make(map[string]string, len(m.Meta)+2)
	for k, v := range m.Meta {
		meta[k] = v
	}
	if m.ContentType != "" {
		meta["Content-Type"] = m.ContentType
	}
	meta["Last-Modified"] = m.Created.UTC().Format(http.TimeFormat)
	hash, _ := hex.DecodeString(strings.SplitN(m.ETag, "-", 2)[0])
	if fix := etagFixOf(ctx); fix != nil {
		fix.set(m.ETag)
	}
	if contents == nil {
		contents = io.NopCloser(strings.NewReader(""))
	}
	return &gofakes3.Object{Name: key, Metadata: meta, Size: m.Size, Contents: contents, Hash: hash, Range: rng}
}

func (b *backend) GetObject(ctx context.Context, bucket, key string, rr *gofakes3.ObjectRangeRequest) (*gofakes3.Object, error) {
	m, err := b.store.Manifest(ctx, objectKey(bucket, key))
	if err != nil {
		return nil, b.s3Error("GetObject", key, err)
	}
	rng, err := rr.Range(m.Size)
	if err != nil {
		return nil, err
	}
	off, n := int64(0), m.Size
	if rng != nil {
		off, n = rng.Start, rng.Length
	}
	return b.object(ctx, key, m, rng, b.store.Open(ctx, m, off, n)), nil
}

func (b *backend) HeadObject(ctx context.Context, bucket, key string) (*gofakes3.Object, error) {
	m, err := b.store.Manifest(ctx, objectKey(bucket, key))
	if err != nil {
		return nil, b.s3Error("HeadObject", key, err)
	}
	return b.object(ctx, key, m, nil, nil), nil
}

func (b *backend) DeleteObject(ctx context.Context, bucket, key string) (gofakes3.ObjectDeleteResult, error) {
	err := b.store.Delete(ctx, objectKey(bucket, key))
	if errors.Is(err, objects.ErrNotFound) {
		err = nil // S3 answers 204 for a key that is not there
	}
	return gofakes3.ObjectDeleteResult{}, b.s3Error("DeleteObject", key, err)
}

func (b *backend) DeleteMulti(ctx context.Context, bucket string, keys ...string) (gofakes3.MultiDeleteResult, error) {
	var res gofakes3.MultiDeleteResult
	for _, k := range keys {
		if _, err := b.DeleteObject(ctx, bucket, k); err != nil {
			res.Error = append(res.Error, gofakes3.ErrorResultFromError(err))
			res.Error[len(res.Error)-1].Key = k
			continue
		}
		res.Deleted = append(res.Deleted, gofakes3.ObjectID{Key: k})
	}
	return res, nil
}

// layoutFor picks the layout of a new object: the request's storage class
// (STANDARD_IA asks for erasure coding 4+2), else the bucket's.
func (b *backend) layoutFor(ctx context.Context, bucket string, meta map[string]string) (model.Layout, error) {
	if meta[storageClassMeta] == "STANDARD_IA" {
		return model.Layout{K: 4, M: 2}, nil
	}
	rec, ok, err := b.buckets.get(ctx, bucket)
	if err != nil {
		return model.Layout{}, err
	}
	if !ok {
		return model.Layout{}, gofakes3.BucketNotFound(bucket)
	}
	if rec.Layout == (model.Layout{}) {
		return b.layout, nil
	}
	return rec.Layout, nil
}

const storageClassMeta = "X-Amz-Storage-Class"

// putOptions turns gofakes3's metadata into the manifest's attributes.
func putOptions(meta map[string]string, l model.Layout) objects.PutOptions {
	opts := objects.PutOptions{Layout: l, Overwrite: true, Meta: map[string]string{}}
	for k, v := range meta {
		switch k {
		case "Content-Type":
			opts.ContentType = v
		case "Last-Modified":
		default:
			opts.Meta[k] = v
		}
	}
	if len(opts.Meta) == 0 {
		opts.Meta = nil
	}
	return opts
}

func (b *backend) PutObject(ctx context.Context, bucket, key string, meta map[string]string, input io.Reader, size int64) (gofakes3.PutObjectResult, error) {
	if size < 0 {
		return gofakes3.PutObjectResult{}, gofakes3.ErrMissingContentLength
	}
	l, err := b.layoutFor(ctx, bucket, meta)
	if err != nil {
		return gofakes3.PutObjectResult{}, b.s3Error("PutObject", key, err)
	}
	opts := putOptions(meta, l)
	if r := requestOf(ctx); r != nil {
		if opts.ExpectMD5, opts.ExpectSHA256, err = digests(r.Header); err != nil {
			return gofakes3.PutObjectResult{}, gofakes3.ErrInvalidDigest
		}
	}
	m, err := b.store.Put(ctx, objectKey(bucket, key), input, size, opts)
	if errors.Is(err, objects.ErrDigest) {
		return gofakes3.PutObjectResult{}, gofakes3.ErrorMessage(gofakes3.ErrBadDigest, "The Content-MD5 or checksum you specified did not match what we received.")
	}
	if err != nil {
		return gofakes3.PutObjectResult{}, b.s3Error("PutObject", key, err)
	}
	return gofakes3.PutObjectResult{ETag: quote(m.ETag)}, nil
}

// CopyObject streams the source into a new object (shards are never shared
// between objects: deleting one must not take the other's bytes).
func (b *backend) CopyObject(ctx context.Context, srcBucket, srcKey, dstBucket, dstKey string, meta map[string]string) (gofakes3.CopyObjectResult, error) {
	src, err := b.store.Manifest(ctx, objectKey(srcBucket, srcKey))
	if err != nil {
		return gofakes3.CopyObjectResult{}, b.s3Error("CopyObject", srcKey, err)
	}
	l, err := b.layoutFor(ctx, dstBucket, meta)
	if err != nil {
		return gofakes3.CopyObjectResult{}, b.s3Error("CopyObject", dstKey, err)
	}
	rd := b.store.Open(ctx, src, 0, src.Size)
	defer rd.Close()
	m, err := b.store.Put(ctx, objectKey(dstBucket, dstKey), rd, src.Size, putOptions(meta, l))
	if err != nil {
		return gofakes3.CopyObjectResult{}, b.s3Error("CopyObject", dstKey, err)
	}
	return gofakes3.CopyObjectResult{ETag: quote(m.ETag), LastModified: gofakes3.NewContentTime(m.Created)}, nil
}
