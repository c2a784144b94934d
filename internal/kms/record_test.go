package kms_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
)

// TestKMSRecordCreatedOnceByRacingNodes: keyrings under one root key that
// ask for the same record at once all get the one that was stored first,
// and a later call reads it back without making another.
func TestKMSRecordCreatedOnceByRacingNodes(t *testing.T) {
	keys := newMemStore()
	records := newMemStore()
	root := rootKey(t)
	rec := kms.Record{Store: records, Name: "signing-key", Owner: "_system", AAD: []byte("test/signing-key")}
	const nodes = 8
	got := make([][]byte, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		k := newKeyring(t, root, keys)
		wg.Go(func() {
			_, secret, err := k.GetOrCreate(context.Background(), rec, func() ([]byte, []byte, error) {
				return nil, []byte{byte(i), 1, 2, 3}, nil
			})
			if err != nil {
				t.Errorf("node %d: %v", i, err)
			}
			got[i] = secret
		})
	}
	wg.Wait()
	for i := range got {
		if !bytes.Equal(got[i], got[0]) {
			t.Fatalf("node %d got %x, node 0 %x", i, got[i], got[0])
		}
	}
	if records.creates != 1 {
		t.Fatalf("%d records stored, want 1", records.creates)
	}
	_, again, err := newKeyring(t, root, keys).GetOrCreate(context.Background(), rec, func() ([]byte, []byte, error) {
		t.Error("fresh called for an existing record")
		return nil, []byte("other"), nil
	})
	if err != nil || !bytes.Equal(again, got[0]) {
		t.Fatalf("read back %x, %v; want %x", again, err, got[0])
	}
	// The stored value is sealed: the secret does not appear in it.
	if stored := records.snapshot()["signing-key"]; bytes.Contains(stored, got[0]) {
		t.Error("the secret is stored in the clear")
	}
}

// TestKMSRecordKeepsPublicPartBesideSealedSecret: a record with a layout
// stores its public part as given and its secret sealed, and refuses to
// open under other associated data.
func TestKMSRecordKeepsPublicPartBesideSealedSecret(t *testing.T) {
	type layout struct {
		Cert string `json:"cert"`
		Key  []byte `json:"key"`
	}
	records := newMemStore()
	k := newKeyring(t, rootKey(t), newMemStore())
	rec := kms.Record{
		Store: records, Name: "ca", Owner: "_system", AAD: []byte("test/ca"),
		Encode: func(public, sealed []byte) ([]byte, error) {
			return json.Marshal(layout{Cert: string(public), Key: sealed})
		},
		Decode: func(stored []byte) ([]byte, []byte, error) {
			var l layout
			err := json.Unmarshal(stored, &l)
			return []byte(l.Cert), l.Key, err
		},
	}
	ctx := context.Background()
	fresh := func() ([]byte, []byte, error) { return []byte("CERT"), []byte("KEY"), nil }
	for range 2 {
		public, secret, err := k.GetOrCreate(ctx, rec, fresh)
		if err != nil || string(public) != "CERT" || string(secret) != "KEY" {
			t.Fatalf("got %q %q %v", public, secret, err)
		}
	}
	var l layout
	if err := json.Unmarshal(records.snapshot()["ca"], &l); err != nil || l.Cert != "CERT" || bytes.Contains(l.Key, []byte("KEY")) {
		t.Fatalf("stored %+v, %v", l, err)
	}
	rec.AAD = []byte("test/other")
	if _, _, err := k.GetOrCreate(ctx, rec, fresh); !errors.Is(err, kms.ErrOpen) {
		t.Fatalf("opened under other associated data: %v", err)
	}
}

// TestKMSRecordReportsFreshFailure: when the record cannot be made, nothing
// is stored and the error says which record.
func TestKMSRecordReportsFreshFailure(t *testing.T) {
	records := newMemStore()
	k := newKeyring(t, rootKey(t), newMemStore())
	boom := errors.New("no entropy")
	_, _, err := k.GetOrCreate(context.Background(), kms.Record{Store: records, Name: "x", Owner: "_system"},
		func() ([]byte, []byte, error) { return nil, nil, boom })
	if !errors.Is(err, boom) || records.creates != 0 {
		t.Fatalf("err %v, %d stored", err, records.creates)
	}
}
