package planner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rehome/rehome/shared/control"
	"github.com/rehome/rehome/shared/erasure"
	"github.com/rehome/rehome/shared/model"
)

// maxComposeParts bounds the parts of one compose (S3 allows 10,000).
const maxComposeParts = 10000

// ctlCompose answers event.CtlCompose: it joins the committed part objects
// of a multipart upload into one object. The parts' shards stay where they
// are and keep their map entries (their object id and stripe numbers too, so
// the repair loop sees the same stripes before and after); the entries are
// re-keyed to the new object for lost-shard reports, the new manifest lists
// the shards in part order (stripes renumbered in the manifest only) and the
// part manifests are removed without their shards being unmapped. Retrying
// a compose whose manifest is already written answers that manifest.
func (s *Service) ctlCompose(ctx context.Context, data []byte) (any, error) {
	var req control.ComposeRequest
	if err := decodeRequest(data, &req); err != nil {
		return nil, err
	}
	m := req.Manifest
	if err := model.ValidateKey(m.Key); err != nil {
		return nil, err
	}
	if m.ID == "" || len(m.ID) > model.MaxShardIDLen {
		return nil, fmt.Errorf("%w compose %q: object id must be 1-%d bytes", model.ErrInvalid, m.Key, model.MaxShardIDLen)
	}
	if n := len(req.Parts); n == 0 || n > maxComposeParts {
		return nil, fmt.Errorf("%w compose %q: %d parts, want 1-%d", model.ErrInvalid, m.Key, n, maxComposeParts)
	}
	for _, p := range req.Parts {
		if !strings.HasPrefix(p, model.UploadPrefix) {
			return nil, fmt.Errorf("%w compose %q: part %q is not an upload part", model.ErrInvalid, m.Key, p)
		}
	}
	kvKey := model.ObjectKVKey(m.Key)
	old, oldRev, err := s.getManifest(ctx, kvKey)
	exists := err == nil
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("read manifest %q: %w", m.Key, err)
	}
	if exists && old.ID == m.ID {
		s.forgetParts(ctx, req.Parts)
		s.awaitWrites(ctx)
		return old, nil // a retry: already composed
	}
	if exists && !req.Overwrite {
		return nil, refuse(control.ErrConflict, "object %s exists", m.Key)
	}
	parts := make([]model.Manifest, len(req.Parts))
	for i, key := range req.Parts {
		p, _, err := s.getManifest(ctx, model.ObjectKVKey(key))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, refuse(control.ErrNotFound, "part %s not found", key)
		}
		if err != nil {
			return nil, fmt.Errorf("read part %q: %w", key, err)
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("part %q: %w", key, err)
		}
		parts[i] = p
	}
	if err := joinParts(&m, parts); err != nil {
		return nil, err
	}
	if err := s.rekey(ctx, m); err != nil {
		return nil, err
	}
	if err := s.putManifest(ctx, m, oldRev, exists); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, refuse(control.ErrConflict, "object %s was written concurrently", m.Key)
		}
		return nil, fmt.Errorf("write manifest %q: %w", m.Key, err)
	}
	s.log.Info("object composed", "key", m.Key, "id", m.ID, "parts", len(parts), "shards", len(m.Shards), "bytes", m.Size, "overwrite", exists)
	if exists {
		s.dropReplaced(ctx, old, m)
	}
	s.forgetParts(ctx, req.Parts)
	s.awaitWrites(ctx)
	return m, nil
}

// joinParts fills m's shards, size, chunk size and stripe lengths from the
// parts, in order. Every part must have m's layout.
func joinParts(m *model.Manifest, parts []model.Manifest) error {
	m.V, m.Size, m.SHA256, m.Shards, m.StripeBytes = model.Version, 0, "", nil, nil
	if m.Layout == (model.Layout{}) {
		m.Layout = parts[0].Layout
	}
	m.ChunkSize = parts[0].ChunkSize
	for _, p := range parts {
		if p.Layout != m.Layout {
			return fmt.Errorf("%w compose %q: part %q has layout %s, want %s", model.ErrInvalid, m.Key, p.Key, p.Layout, m.Layout)
		}
		base := len(m.StripeBytes)
		lengths := p.StripeBytes
		if !p.Layout.Erasure() {
			lengths = nil
			for _, sh := range p.Shards {
				lengths = append(lengths, sh.Size)
			}
		} else if len(lengths) == 0 {
			codec, err := erasure.New(p.Layout.K, p.Layout.M)
			if err != nil {
				return fmt.Errorf("%w compose %q: %w", model.ErrInvalid, m.Key, err)
			}
			for _, n := range codec.Stripes(p.Size, int(p.ChunkSize)) {
				lengths = append(lengths, int64(n))
			}
		}
		for _, sh := range p.Shards {
			if sh.Stripe >= len(lengths) {
				return fmt.Errorf("%w compose %q: part %q names stripe %d of %d", model.ErrInvalid, m.Key, p.Key, sh.Stripe, len(lengths))
			}
			sh.Stripe += base
			m.Shards = append(m.Shards, sh)
		}
		m.StripeBytes = append(m.StripeBytes, lengths...)
		m.Size += p.Size
	}
	if !m.Layout.Erasure() {
		m.StripeBytes = nil // a replicated manifest's shard sizes say it all
	}
	return m.Validate()
}

// rekey points the map entries of m's shards at m's key. An entry that
// vanished (the part was deleted meanwhile) fails the compose.
func (s *Service) rekey(ctx context.Context, m model.Manifest) error {
	return parallel(m.Shards, func(sh model.ShardRef) error {
		for try := 0; ; try++ {
			p, rev, err := s.getPlacement(ctx, sh.ID)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return refuse(control.ErrNotFound, "shard %s of %s is not mapped (part deleted?)", sh.ID, m.Key)
			}
			if err != nil {
				return fmt.Errorf("read placement %s: %w", sh.ID, err)
			}
			if p.Key == m.Key {
				return nil
			}
			p.Key = m.Key
			body, err := json.Marshal(p)
			if err != nil {
				return fmt.Errorf("encode placement: %w", err)
			}
			wctx, cancel := context.WithTimeout(ctx, opTimeout)
			_, err = s.places.Update(wctx, sh.ID, body, rev)
			cancel()
			if err == nil {
				return nil
			}
			if !(errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)) || try >= 10 {
				return fmt.Errorf("re-key placement %s: %w", sh.ID, err)
			}
		}
	})
}

// forgetParts removes the part manifests of a composed object, leaving
// their shards mapped (the object owns them now). Best effort: a part left
// behind is collected with its upload.
func (s *Service) forgetParts(ctx context.Context, parts []string) {
	_ = parallel(parts, func(key string) error {
		dctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		if err := s.kvObjects.Delete(dctx, model.ObjectKVKey(key)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.log.Warn("composed part left behind", "part", key, "err", err)
		}
		return nil
	})
}
