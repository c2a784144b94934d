// Package storetest starts what the store's and the ingest's tests stand
// on: an embedded NATS JetStream, a key ring and a message store.
package storetest

import (
	"bytes"
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// Backbone starts an embedded NATS JetStream in a temporary directory,
// closed when the test ends, and a key ring over it (a fixed test root
// key) holding the data keys of tenants.
func Backbone(tb testing.TB, tenants ...string) (*backbone.Backbone, *kms.Keyring) {
	tb.Helper()
	return BackboneWith(tb, backbone.Config{DataDir: tb.TempDir(), Replicas: 1}, tenants...)
}

// BackboneWith is Backbone with the backbone configuration cfg (for one,
// SyncAlways, or a data directory that outlives a restart).
func BackboneWith(tb testing.TB, cfg backbone.Config, tenants ...string) (*backbone.Backbone, *kms.Keyring) {
	tb.Helper()
	ctx := context.Background()
	bb, err := backbone.Start(ctx, cfg, tu.Logger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(bb.Close)
	kv, err := bb.KV(ctx, names.KMSBucket, 1)
	if err != nil {
		tb.Fatal(err)
	}
	keys, err := kms.New(bytes.Repeat([]byte{7}, 32), backbone.KeyStore{KV: kv})
	if err != nil {
		tb.Fatal(err)
	}
	for _, t := range tenants {
		if err := keys.EnsureTenant(ctx, t); err != nil {
			tb.Fatal(err)
		}
	}
	return bb, keys
}

// Store is Backbone with a message store (default configuration) holding
// the streams of tenants.
func Store(tb testing.TB, tenants ...string) (*store.Store, *backbone.Backbone, *kms.Keyring) {
	tb.Helper()
	bb, keys := Backbone(tb, tenants...)
	return StoreOn(tb, bb, keys, store.Config{}, tenants...), bb, keys
}

// StoreOn returns a message store with configuration cfg over bb and keys,
// holding the streams of tenants.
func StoreOn(tb testing.TB, bb *backbone.Backbone, keys *kms.Keyring, cfg store.Config, tenants ...string) *store.Store {
	tb.Helper()
	st := store.New(cfg, bb, bb.JS, keys)
	for _, t := range tenants {
		if err := st.EnsureTenant(context.Background(), t); err != nil {
			tb.Fatal(err)
		}
	}
	return st
}

// Stored is a message of a tenant's message stream as JetStream holds it
// (Raw: its subject and headers) and as the store reads it back (Msg).
type Stored struct {
	Raw *jetstream.RawStreamMsg
	Msg store.Message
}

// Messages reads back every message of the tenant's message stream in
// order, each opened by st; a message it cannot read fails the test.
func Messages(tb testing.TB, bb *backbone.Backbone, st *store.Store, tenant string) []Stored {
	tb.Helper()
	ctx := context.Background()
	s, err := bb.JS.Stream(ctx, names.MessageStream(tenant))
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var out []Stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			tb.Fatalf("message %d: %v", seq, err)
		}
		m, err := st.Decode(ctx, tenant, raw.Sequence, raw.Time, raw.Header, raw.Data)
		if err != nil {
			tb.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, Stored{Raw: raw, Msg: m})
	}
	return out
}
