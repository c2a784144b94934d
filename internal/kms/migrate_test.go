package kms_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
)

// failingCreates is a store whose Create fails after n successful ones:
// a node stopped in the middle of a copy.
type failingCreates struct {
	kms.ManagedKeyStore
	n int
}

func (s *failingCreates) Create(ctx context.Context, key string, value []byte) error {
	if s.n == 0 {
		return errors.New("node stopped")
	}
	s.n--
	return s.ManagedKeyStore.Create(ctx, key, value)
}

// oldKeys fills a KV store as a node before the kms stream did: a root
// check, data keys of two tenants, a shredded tenant. It returns the
// keyring and values sealed for each live tenant.
func oldKeys(t *testing.T) (kms.KVStore, kms.RootKey, map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	old := kms.KVStore{KV: kvBucket(t)}
	root := fileRoot(t)
	k := kms.NewKeyring(old, root)
	if err := k.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	sealed := map[string][]byte{}
	for _, tenant := range []string{"acme", "beta", "gone"} {
		if err := k.EnsureTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		if _, err := k.Rotate(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		s, err := k.Seal(ctx, tenant, []byte("secret of "+tenant), nil)
		if err != nil {
			t.Fatal(err)
		}
		sealed[tenant] = s
	}
	if err := k.Shred(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	delete(sealed, "gone")
	return old, root, sealed
}

// TestKMSCopyKeysMovesEveryKey: the keys of the old KV store move to the
// stream store, by one node, after an interruption, or by two nodes at
// once; a second copy moves nothing. Afterwards a keyring on the stream
// store alone passes the root check and opens every value, and the
// shredded tenant stays shredded.
func TestKMSCopyKeysMovesEveryKey(t *testing.T) {
	const keys = 1 + 2*2 + 1 // root check, acme and beta v1 and v2, gone's mark
	for _, tc := range []struct {
		name string
		copy func(ctx context.Context, from kms.KVStore, to kms.StreamStore) (int, error)
	}{
		{name: "one node", copy: func(ctx context.Context, from kms.KVStore, to kms.StreamStore) (int, error) {
			return kms.CopyKeys(ctx, from, to)
		}},
		{name: "interrupted and run again", copy: func(ctx context.Context, from kms.KVStore, to kms.StreamStore) (int, error) {
			first, err := kms.CopyKeys(ctx, from, &failingCreates{ManagedKeyStore: to, n: 2})
			if err == nil || first != 2 {
				return 0, errors.New("the interrupted copy did not stop")
			}
			n, err := kms.CopyKeys(ctx, from, to)
			return first + n, err
		}},
		{name: "two nodes at once", copy: func(ctx context.Context, from kms.KVStore, to kms.StreamStore) (int, error) {
			var wg sync.WaitGroup
			n := make([]int, 2)
			errs := make([]error, 2)
			for i := range n {
				wg.Go(func() { n[i], errs[i] = kms.CopyKeys(ctx, from, to) })
			}
			wg.Wait()
			return n[0] + n[1], errors.Join(errs...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			old, root, sealed := oldKeys(t)
			to := streamStore(t)
			n, err := tc.copy(ctx, old, to)
			if err != nil || n != keys {
				t.Fatalf("copy: %d keys, %v; want %d", n, err, keys)
			}
			if n, err := kms.CopyKeys(ctx, old, to); err != nil || n != 0 {
				t.Fatalf("second copy: %d keys, %v; want 0", n, err)
			}
			k := kms.NewKeyring(to, root)
			if err := k.CheckRoot(ctx); err != nil {
				t.Fatal(err)
			}
			for tenant, s := range sealed {
				if got, err := k.Open(ctx, tenant, s, nil); err != nil || string(got) != "secret of "+tenant {
					t.Errorf("%s: %q, %v", tenant, got, err)
				}
			}
			if err := k.EnsureTenant(ctx, "gone"); !errors.Is(err, kms.ErrNoKey) {
				t.Errorf("the shredded tenant after the copy: %v, want ErrNoKey", err)
			}
		})
	}
}

// TestKMSCopyKeysKeepsAShredOfTheNewStore: a tenant shredded on the stream
// store (by a node that finished the copy) while another node still copies
// from the old store gets none of its keys back.
func TestKMSCopyKeysKeepsAShredOfTheNewStore(t *testing.T) {
	ctx := context.Background()
	old, root, _ := oldKeys(t)
	to := streamStore(t)
	if _, err := kms.CopyKeys(ctx, old, to); err != nil {
		t.Fatal(err)
	}
	if err := kms.NewKeyring(to, root).Shred(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := kms.CopyKeys(ctx, old, to); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"acme.v1", "acme.v2"} {
		if _, err := to.Get(ctx, key); !errors.Is(err, kms.ErrKeyNotFound) {
			t.Errorf("%s after the shred and a copy: %v, want gone", key, err)
		}
	}
}
