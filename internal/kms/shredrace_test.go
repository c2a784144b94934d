package kms_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/testutil"
)

// shredBeforeCreate is a store whose Create of one key first lets another
// keyring shred the tenant: the shred runs after the creating keyring
// checked the tenant's mark and before its key is stored.
type shredBeforeCreate struct {
	*memStore
	key   string
	shred func() error
	err   error
}

func (s *shredBeforeCreate) Create(ctx context.Context, key string, value []byte) error {
	if key == s.key && s.shred != nil {
		s.err, s.shred = s.shred(), nil
	}
	return s.memStore.Create(ctx, key, value)
}

// TestKMSShredLeavesNoKeyMadeMeanwhile: a data key version made while
// another node shreds the tenant (a rotation, or the tenant's first key)
// does not survive the shred: the bucket holds no key of the tenant
// afterwards, and the maker gets ErrNoKey.
func TestKMSShredLeavesNoKeyMadeMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
		make func(ctx context.Context, k *kms.Keyring) error
	}{
		{name: "rotation", key: "acme.v2", make: func(ctx context.Context, k *kms.Keyring) error {
			if err := k.EnsureTenant(ctx, "acme"); err != nil {
				return err
			}
			_, err := k.Rotate(ctx, "acme")
			return err
		}},
		{name: "first key", key: "acme.v1", make: func(ctx context.Context, k *kms.Keyring) error {
			return k.EnsureTenant(ctx, "acme")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			mem := newMemStore()
			root := fileRoot(t)
			shredder := kms.NewKeyring(mem, root)
			store := &shredBeforeCreate{memStore: mem, key: tc.key, shred: func() error { return shredder.Shred(ctx, "acme") }}
			maker := kms.NewKeyring(store, root)
			err := tc.make(ctx, maker)
			if store.err != nil {
				t.Fatalf("shred: %v", store.err)
			}
			entries, lerr := mem.Entries(ctx)
			if lerr != nil {
				t.Fatal(lerr)
			}
			for _, e := range entries {
				if strings.HasPrefix(e.Key, "acme.v") {
					t.Errorf("%s survived the shred", e.Key)
				}
			}
			if !errors.Is(err, kms.ErrNoKey) {
				t.Errorf("making %s during the shred: %v, want ErrNoKey", tc.key, err)
			}
		})
	}
}

// TestKMSShredStopsSealingOnOtherKeyrings: a keyring that cached the
// tenant's key before another one shredded it stops sealing within its
// refresh: it does not go on writing data under a destroyed key.
func TestKMSShredStopsSealingOnOtherKeyrings(t *testing.T) {
	defer kms.SetRefresh(0)()
	ctx := context.Background()
	store := newMemStore()
	a := kms.NewKeyring(store, fileRoot(t))
	b := kms.NewKeyring(store, a.Root())
	if err := a.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Seal(ctx, "acme", []byte("before"), nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Shred(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
		if _, err := b.Seal(ctx, "acme", []byte("after"), nil); !errors.Is(err, kms.ErrNoKey) {
			return fmt.Errorf("the other keyring seals after the shred: %v", err)
		}
		return nil
	})
}

// TestKMSShredStopsOpeningOnOtherKeyrings: a keyring that cached the
// tenant's key and subkeys before another one shredded it stops opening
// the tenant's values within its refresh, without waiting for an Evict.
func TestKMSShredStopsOpeningOnOtherKeyrings(t *testing.T) {
	defer kms.SetRefresh(50 * time.Millisecond)()
	ctx := context.Background()
	store := newMemStore()
	a := kms.NewKeyring(store, fileRoot(t))
	b := kms.NewKeyring(store, a.Root())
	if _, err := a.Seal(ctx, "acme", []byte("x"), nil); err == nil {
		t.Fatal("sealed for a tenant without a key")
	}
	if err := a.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	sealed, err := a.Seal(ctx, "acme", []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Open(ctx, "acme", sealed, nil); err != nil || string(got) != "x" {
		t.Fatalf("open before the shred: %q, %v", got, err)
	}
	if err := a.Shred(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
		if got, err := b.Open(ctx, "acme", sealed, nil); !errors.Is(err, kms.ErrNoKey) {
			return fmt.Errorf("the other keyring opens after the shred: %q, %v", got, err)
		}
		return nil
	})
}
