// Where integrations and their delivery state are kept: the one place the
// registry and the engine read them from.

package forward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
)

// record is the stored form: the integration and its sealed secrets.
type record struct {
	Integration
	Sealed []byte `json:"sealedSecrets,omitempty"`
}

// records reads the tenants' integrations buckets (one record per
// integration id, plus the registry's name claims) and delivery state
// buckets, and opens sealed secrets (secrets.go): what the registry and
// the engine share. The registry writes records; the engine writes state.
type records struct {
	kvs  KVProvider
	keys Keys
}

func newRecords(d Deps) records { return records{kvs: d.KV, keys: d.Keys} }

func (s records) bucket(ctx context.Context, tenant string) (jetstream.KeyValue, error) {
	return s.kvs.KV(ctx, names.IntegrationsBucket(tenant), 1)
}

func (s records) stateBucket(ctx context.Context, tenant string) (jetstream.KeyValue, error) {
	return s.kvs.KV(ctx, names.IntegrationStateBucket(tenant), 1)
}

// load reads an integration's record and its revision
// (ErrIntegrationNotFound if there is none).
func (s records) load(ctx context.Context, tenant, id string) (record, uint64, error) {
	if !validID(id) {
		return record{}, 0, ErrIntegrationNotFound.New()
	}
	kv, err := s.bucket(ctx, tenant)
	if err != nil {
		return record{}, 0, err
	}
	ent, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, 0, ErrIntegrationNotFound.New()
	}
	if err != nil {
		return record{}, 0, fmt.Errorf("forward: read integration: %w", err)
	}
	var r record
	if err := json.Unmarshal(ent.Value(), &r); err != nil {
		return record{}, 0, fmt.Errorf("forward: decode integration: %w", err)
	}
	return r, ent.Revision(), nil
}

// loadState reads an integration's delivery state (zero if none yet).
func (s records) loadState(ctx context.Context, tenant, id string) (State, error) {
	kv, err := s.stateBucket(ctx, tenant)
	if err != nil {
		return State{}, err
	}
	ent, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, nil
	}
	if err != nil {
		return State{}, err
	}
	var st State
	return st, json.Unmarshal(ent.Value(), &st)
}

// saveState stores an integration's delivery state (the engine's).
func (s records) saveState(ctx context.Context, tenant, id string, st State) error {
	kv, err := s.stateBucket(ctx, tenant)
	if err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, id, b)
	return err
}
