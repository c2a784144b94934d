package kms_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// storedKeys returns, for every key of store whose name starts with
// prefix, the bytes that must not outlive it: the value as stored, the
// wrapped key inside it and that in base64 (as the stored JSON has it).
func storedKeys(t *testing.T, s kms.ManagedKeyStore, prefix string) map[string][]byte {
	t.Helper()
	entries, err := s.Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Key, prefix) {
			continue
		}
		var w struct {
			Key []byte `json:"key"`
		}
		if err := json.Unmarshal(e.Value, &w); err != nil || len(w.Key) < 16 {
			t.Fatalf("%s: %q is not a wrapped key (%v)", e.Key, e.Value, err)
		}
		out[e.Key+" as stored"] = e.Value
		out[e.Key+" wrapped"] = w.Key
		out[e.Key+" wrapped, base64"] = []byte(base64.StdEncoding.EncodeToString(w.Key))
	}
	if len(out) == 0 {
		t.Fatalf("no key %s* in the store", prefix)
	}
	return out
}

// asStored returns the values of needles as the store holds them.
func asStored(needles map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for name, b := range needles {
		if strings.HasSuffix(name, " as stored") {
			out[name] = b
		}
	}
	return out
}

// filesHolding returns the needles found in a file under dir, each with
// the file.
func filesHolding(t *testing.T, dir string, needles map[string][]byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for name, n := range needles {
			if bytes.Contains(b, n) {
				found = append(found, name+" in "+strings.TrimPrefix(path, dir))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

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
	wrapped := storedKeys(t, ks, "acme.v")
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
	if stored := asStored(wrapped); len(filesHolding(t, dir, stored)) < len(stored) {
		t.Fatalf("before the shred the files hold only %v of the tenant's keys: the search does not find what is there", filesHolding(t, dir, stored))
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
	for _, f := range filesHolding(t, dir, gone) {
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
	before := storedKeys(t, ks, "")
	bb.Close()
	if stored := asStored(before); len(filesHolding(t, dir, stored)) < len(stored) {
		t.Fatalf("before the rewrap the files hold only %v: the search does not find what is there", filesHolding(t, dir, stored))
	}

	ks, bb = streamStoreIn(t, dir)
	moved, err := kms.NewKeyring(ks, fileRoot(t), old).Rewrap(ctx)
	if err != nil || moved != 5 {
		t.Fatalf("rewrap: %d, %v; want 5 moved", moved, err)
	}
	bb.Close()
	for _, f := range filesHolding(t, dir, before) {
		t.Errorf("after the rewrap, the old wrapping: %s", f)
	}
}
