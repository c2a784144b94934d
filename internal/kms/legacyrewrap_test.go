package kms_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
)

// TestKMSLegacyCheckStaysUnderTheRootOfTheKeys: a store made before root
// checks and root ids were kept (raw wrapped keys under the file root),
// first started with a new root and the old one as previous (the upgrade
// to a token), gets its root check under the root that opens its keys,
// not the new one: if the rewrap that follows is cut short, a start with
// the new root alone still stops at the check instead of starting with
// keys it cannot open.
func TestKMSLegacyCheckStaysUnderTheRootOfTheKeys(t *testing.T) {
	ctx := context.Background()
	old := fileRoot(t)
	store := newMemStore()
	wrapped, err := old.Wrap(ctx, bytes.Repeat([]byte{9}, 32), []byte("iotransit/dek/acme.v1"))
	if err != nil {
		t.Fatal(err)
	}
	store.m["acme.v1"] = wrapped
	next := fileRoot(t)
	if err := kms.NewKeyring(store, next, old).CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	// The rewrap did not run (cut short before it began).
	if err := kms.NewKeyring(store, next).CheckRoot(ctx); !errors.Is(err, kms.ErrWrongRoot) {
		t.Fatalf("the new root alone, with the keys still under the old one: %v, want ErrWrongRoot", err)
	}
	if moved, err := kms.NewKeyring(store, next, old).Rewrap(ctx); err != nil || moved != 2 {
		t.Fatalf("rewrap: %d, %v; want 2 (the key and the check)", moved, err)
	}
	if err := kms.NewKeyring(store, next).CheckRoot(ctx); err != nil {
		t.Fatalf("the new root alone after the rewrap: %v", err)
	}
}
