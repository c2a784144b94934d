package node

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// TestNodeRootKeyRefusesKeysUnderAnotherRoot: during a change of root
// without downtime, a node still running with the old root alone makes a
// tenant's key under it after the other nodes re-wrapped everything (the
// root check included). A node started afterwards with the new root alone
// must stop, naming the old root, rather than start with a key it cannot
// open (and let the old root be deleted with that key still under it);
// started with the --previous-* flags, it moves that key too.
func TestNodeRootKeyRefusesKeysUnderAnotherRoot(t *testing.T) {
	ctx := context.Background()
	bb, _ := storetest.Backbone(t)
	store, err := bb.KMSStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	oldFile, newFile := filepath.Join(dir, "old.key"), filepath.Join(dir, "new.key")
	oldRoot, err := kms.OpenFileRoot(oldFile, true)
	if err != nil {
		t.Fatal(err)
	}
	old := kms.NewKeyring(store, oldRoot) // the node still on the old root
	if err := old.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	both := KMSConfig{RootKeyFile: newFile, Previous: &KMSConfig{RootKeyFile: oldFile}}
	_, closeFn, moved, err := openKeyring(ctx, both, dir, store)
	if err != nil || moved != 2 {
		t.Fatalf("start with both roots: moved %d, %v", moved, err)
	}
	closeFn()
	if err := old.EnsureTenant(ctx, "late"); err != nil { // under the old root
		t.Fatal(err)
	}
	_, closeFn, _, err = openKeyring(ctx, KMSConfig{RootKeyFile: newFile}, dir, store)
	if err == nil {
		closeFn()
		t.Fatal("a node with the new root alone started while the bucket holds a key under the old one")
	}
	if !errors.Is(err, kms.ErrWrongRoot) || !strings.Contains(err.Error(), oldRoot.ID()) {
		t.Fatalf("start with the new root alone: %v; want ErrWrongRoot naming %s", err, oldRoot.ID())
	}
	keys, closeFn, moved, err := openKeyring(ctx, both, dir, store)
	if err != nil || moved != 1 {
		t.Fatalf("start with both roots again: moved %d, %v", moved, err)
	}
	closeFn()
	if _, err := keys.Seal(ctx, "late", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
}
