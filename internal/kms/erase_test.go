package kms_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/kms/kmstest"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// TestKMSShredLeavesNoKeyOnDisk: after a tenant's data was written (two
// data key versions, a stored message) and JetStream wrote it to its files
// (a restart), and the tenant's keys were shredded, no file of the data
// directory (the JetStream store included) holds any of its wrapped keys,
// as stored or inside, nor its raw data keys: ciphertext copied aside
// before the shred opens with nothing left. The tenant keeps its shred
// mark, which holds none of them, and gets no new key. Before the shred
// the files hold the wrapped keys, so the search finds what is there.
func TestKMSShredLeavesNoKeyOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ks, bb := streamStoreIn(t, dir)
	root := fileRoot(t)
	k := kms.NewKeyring(ks, root)
	if err := k.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	st := storetest.StoreOn(t, bb, k, store.Config{}, "acme", "other")
	for _, tenant := range []string{"acme", "other"} {
		if err := k.EnsureTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		body := testutil.Thingsee("TSPR04ERA00000001", time.Now().Add(-time.Minute).Unix(), 21.5)
		rec := store.Record{ID: "id-" + tenant, Gateway: "TSGW06ERA00000001", Tuid: "TSPR04ERA00000001", TsmID: 12100, ReceivedAt: time.Now(), Body: []byte(body)}
		if _, err := st.Append(ctx, tenant, []store.Record{rec}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.Rotate(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Seal(ctx, "acme", []byte("under version 2"), nil); err != nil {
		t.Fatal(err)
	}
	wrapped := kmstest.WrappedKeys(t, ks, "acme.v")
	gone := maps.Clone(wrapped)
	for v := uint32(1); v <= 2; v++ {
		raw, err := k.DataKey(ctx, "acme", v)
		if err != nil {
			t.Fatal(err)
		}
		gone[fmt.Sprintf("raw data key v%d", v)] = raw
		gone[fmt.Sprintf("raw data key v%d, base64", v)] = []byte(base64.StdEncoding.EncodeToString(raw))
	}
	st.Close()
	bb.Close() // JetStream writes out everything it holds
	if stored := kmstest.Only(wrapped, kmstest.AsStored); len(kmstest.FilesHolding(t, dir, stored)) < len(stored) {
		t.Fatalf("before the shred the files hold only %v of the tenant's keys: the search does not find what is there", kmstest.FilesHolding(t, dir, stored))
	}

	ks, bb = streamStoreIn(t, dir)
	k = kms.NewKeyring(ks, root)
	if err := k.Shred(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	mark, err := ks.Get(ctx, "acme.shredded")
	if err != nil {
		t.Fatalf("the shred mark: %v", err)
	}
	for name, b := range gone {
		if bytes.Contains(mark, b) {
			t.Errorf("the shred mark holds %s", name)
		}
	}
	if err := kms.NewKeyring(ks, root).EnsureTenant(ctx, "acme"); !errors.Is(err, kms.ErrNoKey) {
		t.Errorf("a new key for the shredded tenant: %v, want ErrNoKey", err)
	}
	if _, err := kms.NewKeyring(ks, root).Seal(ctx, "other", []byte("x"), nil); err != nil {
		t.Errorf("the other tenant after the shred: %v", err)
	}
	bb.Close()
	for _, f := range kmstest.FilesHolding(t, dir, gone) {
		t.Errorf("after the shred: %s", f)
	}
}

// TestKMSRewrapLeavesNoOldWrappingOnDisk: after a rewrap to another root
// of keys JetStream wrote to its files (a restart), no file of the data
// directory holds a key as the old root wrapped it (the replaced messages
// are erased): a copy of the old root key opens nothing that is left.
func TestKMSRewrapLeavesNoOldWrappingOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ks, bb := streamStoreIn(t, dir)
	old := fileRoot(t)
	k := kms.NewKeyring(ks, old)
	if err := k.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"acme", "_system"} {
		if err := k.EnsureTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Rotate(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	before := kmstest.WrappedKeys(t, ks, "")
	bb.Close()
	if stored := kmstest.Only(before, kmstest.AsStored); len(kmstest.FilesHolding(t, dir, stored)) < len(stored) {
		t.Fatalf("before the rewrap the files hold only %v: the search does not find what is there", kmstest.FilesHolding(t, dir, stored))
	}

	ks, bb = streamStoreIn(t, dir)
	moved, err := kms.NewKeyring(ks, fileRoot(t), old).Rewrap(ctx)
	if err != nil || moved != 5 {
		t.Fatalf("rewrap: %d, %v; want 5 moved", moved, err)
	}
	bb.Close()
	for _, f := range kmstest.FilesHolding(t, dir, before) {
		t.Errorf("after the rewrap, the old wrapping: %s", f)
	}
}
