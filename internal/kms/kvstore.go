package kms

import (
	"context"
	"errors"
	"fmt"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/nats-io/nats.go/jetstream"
)

// ManagedKeyStore is a KeyStore that also lists, replaces and destroys
// keys: Rewrap, Shred and the root check of an old store need it.
type ManagedKeyStore interface {
	KeyStore
	// Entries returns every key in the store with its value and revision.
	Entries(ctx context.Context) ([]Entry, error)
	// GetEntry returns a key's value and revision.
	GetEntry(ctx context.Context, key string) ([]byte, uint64, error)
	// Update replaces a key's value if its revision is still revision;
	// otherwise (changed or gone) it fails with ErrKeyExists.
	Update(ctx context.Context, key string, value []byte, revision uint64) error
	// Destroy removes a key and every earlier value of it.
	Destroy(ctx context.Context, key string) error
}

// Entry is one key of a ManagedKeyStore.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// KVStore keeps wrapped keys in a JetStream KV bucket, as nodes did before
// StreamStore: the bucket denies deletes, so a destroyed or replaced value
// stays in its block files until JetStream compacts them. Nodes read it
// once, to copy its keys into a StreamStore (CopyKeys).
type KVStore struct{ KV jetstream.KeyValue }

var _ ManagedKeyStore = KVStore{}

// Get returns a stored key.
func (s KVStore) Get(ctx context.Context, key string) ([]byte, error) {
	v, _, err := s.GetEntry(ctx, key)
	return v, err
}

// GetEntry returns a stored key and its revision.
func (s KVStore) GetEntry(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := s.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrKeyNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// Create stores a key that must not exist yet.
func (s KVStore) Create(ctx context.Context, key string, value []byte) error {
	_, err := s.KV.Create(ctx, key, value)
	if kverr.Conflict(err) {
		return ErrKeyExists
	}
	return err
}

// Update replaces a key at the given revision.
func (s KVStore) Update(ctx context.Context, key string, value []byte, revision uint64) error {
	_, err := s.KV.Update(ctx, key, value, revision)
	if kverr.Conflict(err) {
		return ErrKeyExists
	}
	return err
}

// Entries returns every key in the bucket.
func (s KVStore) Entries(ctx context.Context) ([]Entry, error) {
	lister, err := s.KV.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer lister.Stop()
	var out []Entry
	for key := range lister.Keys() {
		v, rev, err := s.GetEntry(ctx, key)
		if errors.Is(err, ErrKeyNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		out = append(out, Entry{Key: key, Value: v, Revision: rev})
	}
	// The listing ends early, with no error of its own, when ctx ends: a
	// short list must not pass for the whole bucket.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return out, nil
}

// Destroy purges a key: the bucket keeps a marker and no earlier value
// (but its files keep the bytes until compaction).
func (s KVStore) Destroy(ctx context.Context, key string) error {
	return s.KV.Purge(ctx, key)
}
