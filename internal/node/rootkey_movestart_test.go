package node

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// TestNodeKMSMoveByNodesStartingAtOnce: two nodes of a cluster start at
// once on keys in the old kms bucket: both open their keyring over the kms
// stream, every value opens, and the bucket is gone. Before them, a node
// with another root key stops at its root check and leaves the bucket.
func TestNodeKMSMoveByNodesStartingAtOnce(t *testing.T) {
	ctx := context.Background()
	bb, _ := storetest.Backbone(t) // makes the bucket, with no key
	kv, err := bb.KV(ctx, names.KMSBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := KMSConfig{RootKeyFile: filepath.Join(dir, "root.key")}
	root, err := kms.OpenFileRoot(cfg.RootKeyFile, true)
	if err != nil {
		t.Fatal(err)
	}
	old := kms.NewKeyring(kms.KVStore{KV: kv}, root)
	if err := old.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	sealed := map[string][]byte{}
	for _, tenant := range []string{"acme", "beta", "_system"} {
		if err := old.EnsureTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		if sealed[tenant], err = old.Seal(ctx, tenant, []byte("secret of "+tenant), nil); err != nil {
			t.Fatal(err)
		}
	}

	other := KMSConfig{RootKeyFile: filepath.Join(dir, "other.key")}
	if _, err := kms.OpenFileRoot(other.RootKeyFile, true); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := openBackboneKeyring(ctx, bb, other, dir, testutil.Logger(t)); !errors.Is(err, kms.ErrWrongRoot) {
		t.Fatalf("start with another root: %v, want ErrWrongRoot", err)
	}
	if still, err := bb.LegacyKMS(ctx); err != nil || still == nil {
		t.Fatalf("the bucket after a start with another root: %v, %v; want it kept", still, err)
	}

	keyrings := make([]*kms.Keyring, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range keyrings {
		wg.Go(func() {
			var closeFn func()
			keyrings[i], closeFn, _, errs[i] = openBackboneKeyring(ctx, bb, cfg, dir, testutil.Logger(t))
			if errs[i] == nil {
				closeFn()
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	for i, k := range keyrings {
		for tenant, s := range sealed {
			if got, err := k.Open(ctx, tenant, s, nil); err != nil || string(got) != "secret of "+tenant {
				t.Errorf("node %d, %s: %q, %v", i, tenant, got, err)
			}
		}
	}
	if still, err := bb.LegacyKMS(ctx); err != nil || still != nil {
		t.Fatalf("the bucket after the move: %v, %v; want it gone", still, err)
	}
}
