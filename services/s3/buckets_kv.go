package s3

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rclone/gofakes3"

	"github.com/rehome/rehome/shared/model"
)

// bucketRecord is one S3 bucket (KV bus.BucketS3, key "bucket.<name>").
type bucketRecord struct {
	V       int          `json:"v"`
	Name    string       `json:"name"`
	Created time.Time    `json:"created"`
	Layout  model.Layout `json:"layout,omitzero"`
}

const (
	bucketKeyPrefix = "bucket."
	uploadKeyPrefix = "upload."
)

// buckets keeps bucket records in the gateway state bucket. Safe for
// concurrent use; every call is one or a few KV operations.
type buckets struct {
	kv jetstream.KeyValue
}

var errBucketExists = errors.New("bucket exists")

func (b buckets) create(ctx context.Context, rec bucketRecord) error {
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = b.kv.Create(ctx, bucketKeyPrefix+rec.Name, body)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return errBucketExists
	}
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", rec.Name, err)
	}
	return nil
}

// get returns the bucket's record, or ok false when there is none.
func (b buckets) get(ctx context.Context, name string) (bucketRecord, bool, error) {
	var rec bucketRecord
	if gofakes3.ValidateBucketName(name) != nil {
		return rec, false, nil // no such bucket can exist (nor is it a safe KV key)
	}
	e, err := b.kv.Get(ctx, bucketKeyPrefix+name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("read bucket %s: %w", name, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, false, fmt.Errorf("bucket record %s is corrupt: %w", name, err)
	}
	return rec, true, nil
}

func (b buckets) delete(ctx context.Context, name string) error {
	if err := b.kv.Delete(ctx, bucketKeyPrefix+name); err != nil {
		return fmt.Errorf("delete bucket %s: %w", name, err)
	}
	return nil
}

// list returns every bucket, by name.
func (b buckets) list(ctx context.Context) ([]bucketRecord, error) {
	lister, err := b.kv.ListKeysFiltered(ctx, bucketKeyPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("list buckets: %w", err)
	}
	var out []bucketRecord
	for k := range lister.Keys() {
		rec, ok, err := b.get(ctx, strings.TrimPrefix(k, bucketKeyPrefix))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
