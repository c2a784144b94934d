package kms_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// kvBucket returns the kms bucket of a fresh embedded JetStream.
func kvBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	bb, _ := storetest.Backbone(t)
	kv, err := bb.KV(context.Background(), names.KMSBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func fileRoot(t testing.TB) kms.RootKey {
	t.Helper()
	r, err := kms.FileRoot(rootKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sealedVersion(sealed []byte) uint32 { return binary.BigEndian.Uint32(sealed[1:5]) }

// TestKMSRotateSealsUnderNewVersion: after a rotation new values carry the
// new version, and values sealed before and after it all open.
func TestKMSRotateSealsUnderNewVersion(t *testing.T) {
	ctx := context.Background()
	k := kms.NewKeyring(newMemStore(), fileRoot(t))
	if err := k.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	var sealed [][]byte
	for round := uint32(1); round <= 3; round++ {
		s, err := k.Seal(ctx, "acme", fmt.Appendf(nil, "value %d", round), []byte("aad"))
		if err != nil {
			t.Fatal(err)
		}
		if got := sealedVersion(s); got != round {
			t.Fatalf("sealed under version %d, want %d", got, round)
		}
		sealed = append(sealed, s)
		v, err := k.Rotate(ctx, "acme")
		if err != nil || v != round+1 {
			t.Fatalf("Rotate = %d, %v; want %d", v, err, round+1)
		}
	}
	fresh := kms.NewKeyring(k.Store(), k.Root()) // a cold keyring reads every version
	for i, s := range sealed {
		for _, ring := range []*kms.Keyring{k, fresh} {
			got, err := ring.Open(ctx, "acme", s, []byte("aad"))
			if err != nil || string(got) != fmt.Sprintf("value %d", i+1) {
				t.Fatalf("open value %d: %q, %v", i+1, got, err)
			}
		}
	}
	st, err := k.Status(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if st.Current != 4 || len(st.Versions) != 4 || st.RootKeyID != k.RootID() {
		t.Fatalf("status %+v, want current 4 of 4 versions under %s", st, k.RootID())
	}
	for _, v := range st.Versions {
		if v.Created.IsZero() || v.RootKeyID != k.RootID() {
			t.Errorf("version %+v: want a creation time and root %s", v, k.RootID())
		}
	}
	if _, err := k.Rotate(ctx, "nobody"); !errors.Is(err, kms.ErrNoKey) {
		t.Errorf("rotate a tenant without keys: %v, want ErrNoKey", err)
	}
}

// TestKMSRotateReachesOtherKeyringsWithinASecond: two keyrings on one
// JetStream bucket; after one rotates (both at once, too: one new version),
// the other seals under the new version within a second.
func TestKMSRotateReachesOtherKeyringsWithinASecond(t *testing.T) {
	ctx := context.Background()
	store := streamStore(t)
	root := fileRoot(t)
	a, b := kms.NewKeyring(store, root), kms.NewKeyring(store, root)
	for _, k := range []*kms.Keyring{a, b} {
		if err := k.EnsureTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if s, err := k.Seal(ctx, "acme", []byte("x"), nil); err != nil || sealedVersion(s) != 1 {
			t.Fatalf("seal before rotation: version %d, %v", sealedVersion(s), err)
		}
	}
	var wg sync.WaitGroup
	versions := make([]uint32, 2)
	errs := make([]error, 2)
	for i, k := range []*kms.Keyring{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			versions[i], errs[i] = k.Rotate(ctx, "acme")
		}()
	}
	wg.Wait()
	// Each rotation made a version or found the one the other made: no
	// error, no version lost or overwritten.
	st, err := a.Status(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for i := range versions {
		if errs[i] != nil || versions[i] < 2 || versions[i] > st.Current {
			t.Fatalf("racing rotations gave %v, %v; the store's newest is %d", versions, errs, st.Current)
		}
	}
	if st.Current != uint32(len(st.Versions)) || st.Current > 3 {
		t.Fatalf("after two racing rotations: %+v", st)
	}
	c := kms.NewKeyring(store, root)
	if err := c.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Seal(ctx, "acme", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	want := st.Current + 1
	v, err := a.Rotate(ctx, "acme")
	if err != nil || v != want {
		t.Fatalf("rotate: %d, %v; want %d", v, err, want)
	}
	testutil.Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
		s, err := c.Seal(ctx, "acme", []byte("x"), nil)
		if err != nil {
			return err
		}
		if got := sealedVersion(s); got != want {
			return fmt.Errorf("the other keyring seals under version %d", got)
		}
		return nil
	})
	if d := time.Since(start); d > time.Second+500*time.Millisecond*time.Duration(testutil.Slowdown()) {
		t.Errorf("the other keyring took %v to follow the rotation", d)
	}
}

// TestKMSShredDestroysEveryVersion: after Shred no version of the tenant's
// key is left in the stream (no message of it at all), Open, Seal and
// EnsureTenant fail with ErrNoKey, and another tenant is untouched.
func TestKMSShredDestroysEveryVersion(t *testing.T) {
	ctx := context.Background()
	store := streamStore(t)
	k := kms.NewKeyring(store, fileRoot(t))
	for _, tenant := range []string{"acme", "other"} {
		if err := k.EnsureTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	old, err := k.Seal(ctx, "acme", []byte("v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Rotate(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	cur, err := k.Seal(ctx, "acme", []byte("v2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	keep, err := k.Seal(ctx, "other", []byte("kept"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Shred(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"acme.v1", "acme.v2"} {
		if n := messagesOf(t, store, name); n != 0 {
			t.Errorf("%s: the stream still holds %d messages of it", name, n)
		}
	}
	for _, tc := range []struct {
		name string
		f    func() error
	}{
		{name: "open v1", f: func() error { _, err := k.Open(ctx, "acme", old, nil); return err }},
		{name: "open v2", f: func() error { _, err := k.Open(ctx, "acme", cur, nil); return err }},
		{name: "seal", f: func() error { _, err := k.Seal(ctx, "acme", []byte("x"), nil); return err }},
		{name: "ensure tenant", f: func() error { return k.EnsureTenant(ctx, "acme") }},
		{name: "cold keyring opens", f: func() error {
			_, err := kms.NewKeyring(store, k.Root()).Open(ctx, "acme", cur, nil)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.f(); !errors.Is(err, kms.ErrNoKey) {
				t.Fatalf("after Shred: %v, want ErrNoKey", err)
			}
		})
	}
	if got, err := k.Open(ctx, "other", keep, nil); err != nil || string(got) != "kept" {
		t.Fatalf("the other tenant: %q, %v", got, err)
	}
}

// TestKMSCheckRoot: the first check records the root; the same root passes
// again; another root fails naming both root key ids and changes nothing;
// a store of keys wrapped before checks were kept is checked against one
// of its keys.
func TestKMSCheckRoot(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	root := fileRoot(t)
	k := kms.NewKeyring(store, root)
	if err := k.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Seal(ctx, "acme", []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := kms.NewKeyring(store, root).CheckRoot(ctx); err != nil {
		t.Fatalf("same root: %v", err)
	}
	before := store.snapshot()
	wrong := fileRoot(t)
	err = kms.NewKeyring(store, wrong).CheckRoot(ctx)
	if !errors.Is(err, kms.ErrWrongRoot) || !strings.Contains(err.Error(), root.ID()) || !strings.Contains(err.Error(), wrong.ID()) {
		t.Fatalf("wrong root: %v; want ErrWrongRoot naming %s and %s", err, root.ID(), wrong.ID())
	}
	if after := store.snapshot(); !equalSnapshots(before, after) {
		t.Fatal("a failed check changed the store")
	}
	if got, err := kms.NewKeyring(store, root).Open(ctx, "acme", sealed, nil); err != nil || string(got) != "secret" {
		t.Fatalf("after the failed check: %q, %v", got, err)
	}

	// A store from before root checks: data keys only.
	oldStore := newMemStore()
	newKeyring(t, bytes.Repeat([]byte{3}, 32), oldStore, "acme")
	other, _ := kms.FileRoot(bytes.Repeat([]byte{4}, 32))
	if err := kms.NewKeyring(oldStore, other).CheckRoot(ctx); !errors.Is(err, kms.ErrWrongRoot) {
		t.Fatalf("old store, wrong root: %v", err)
	}
	if _, ok := oldStore.snapshot()["_root.check"]; ok {
		t.Fatal("a failed check recorded itself")
	}
	same, _ := kms.FileRoot(bytes.Repeat([]byte{3}, 32))
	if err := kms.NewKeyring(oldStore, same).CheckRoot(ctx); err != nil {
		t.Fatalf("old store, right root: %v", err)
	}
}

func equalSnapshots(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestKMSOpensKeysWrappedBeforeRootIDs: a data key stored as the first
// version of kms stored it (nonce | AES-GCM under the file root, no JSON)
// still opens, and Rewrap moves it to the current root.
func TestKMSOpensKeysWrappedBeforeRootIDs(t *testing.T) {
	ctx := context.Background()
	key := rootKey(t)
	root, _ := kms.FileRoot(key)
	store := newMemStore()
	dek := bytes.Repeat([]byte{9}, 32)
	wrapped, err := root.Wrap(ctx, dek, []byte("iotransit/dek/acme.v1"))
	if err != nil {
		t.Fatal(err)
	}
	store.m["acme.v1"] = wrapped
	k := kms.NewKeyring(store, root)
	if err := k.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Seal(ctx, "acme", []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	next := fileRoot(t)
	moved, err := kms.NewKeyring(store, next, root).Rewrap(ctx)
	if err != nil || moved != 2 {
		t.Fatalf("rewrap: %d, %v; want 2 (the key and the check)", moved, err)
	}
	if got, err := kms.NewKeyring(store, next).Open(ctx, "acme", sealed, nil); err != nil || string(got) != "x" {
		t.Fatalf("after rewrap: %q, %v", got, err)
	}
}

// TestKMSRewrapMovesEveryKey: Rewrap under a new root (file → file here;
// file → PKCS#11 in TestKMSPKCS11RewrapFromFile) moves every version of
// every tenant and the root check; afterwards the new root alone opens
// everything and passes the check, the old root alone fails it, and a
// second Rewrap moves nothing.
func TestKMSRewrapMovesEveryKey(t *testing.T) {
	testRewrap(t, fileRoot(t))
}

func testRewrap(t *testing.T, next kms.RootKey) {
	ctx := context.Background()
	store := streamStore(t)
	old := fileRoot(t)
	k := kms.NewKeyring(store, old)
	if err := k.CheckRoot(ctx); err != nil {
		t.Fatal(err)
	}
	sealed := map[string][][]byte{}
	for _, tenant := range []string{"acme", "beta", "_system"} {
		if err := k.EnsureTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			s, err := k.Seal(ctx, tenant, []byte("secret of "+tenant), []byte(tenant))
			if err != nil {
				t.Fatal(err)
			}
			sealed[tenant] = append(sealed[tenant], s)
			if _, err := k.Rotate(ctx, tenant); err != nil {
				t.Fatal(err)
			}
		}
	}
	moved, err := kms.NewKeyring(store, next, old).Rewrap(ctx)
	if err != nil || moved != 3*3+1 {
		t.Fatalf("rewrap: %d, %v; want %d", moved, err, 3*3+1)
	}
	if moved, err := kms.NewKeyring(store, next, old).Rewrap(ctx); err != nil || moved != 0 {
		t.Fatalf("second rewrap: %d, %v; want 0", moved, err)
	}
	alone := kms.NewKeyring(store, next)
	if err := alone.CheckRoot(ctx); err != nil {
		t.Fatalf("new root alone: %v", err)
	}
	for tenant, values := range sealed {
		for _, s := range values {
			if got, err := alone.Open(ctx, tenant, s, []byte(tenant)); err != nil || string(got) != "secret of "+tenant {
				t.Fatalf("%s after rewrap: %q, %v", tenant, got, err)
			}
		}
		st, err := alone.Status(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range st.Versions {
			if v.RootKeyID != next.ID() {
				t.Errorf("%s version %d is under %s, want %s", tenant, v.Version, v.RootKeyID, next.ID())
			}
		}
	}
	if err := kms.NewKeyring(store, old).CheckRoot(ctx); !errors.Is(err, kms.ErrWrongRoot) {
		t.Fatalf("old root after rewrap: %v, want ErrWrongRoot", err)
	}
}

// TestKMSOpenFileRootMissing: a missing root key file is made only when
// asked to.
func TestKMSOpenFileRootMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.key")
	if _, err := kms.OpenFileRoot(path, false); !errors.Is(err, kms.ErrNoRootKey) {
		t.Fatalf("missing file: %v, want ErrNoRootKey", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the file was made")
	}
	r1, err := kms.OpenFileRoot(path, true)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := kms.OpenFileRoot(path, false)
	if err != nil || r1.ID() != r2.ID() || !strings.HasPrefix(r1.ID(), "file:") {
		t.Fatalf("reopen: %v, ids %s %s", err, r1.ID(), r2.ID())
	}
}

// downStore is a store that stops answering reads when told to.
type downStore struct {
	*memStore
	down atomic.Bool
}

func (s *downStore) Get(ctx context.Context, key string) ([]byte, error) {
	if s.down.Load() {
		return nil, errors.New("store unavailable")
	}
	return s.memStore.Get(ctx, key)
}

// TestKMSSealsOnWhenTheStoreIsDown: a keyring that cannot ask the store for
// a newer version seals on under the one it knows; a cold keyring, which
// knows none, fails.
func TestKMSSealsOnWhenTheStoreIsDown(t *testing.T) {
	defer kms.SetRefresh(0)() // every seal asks the store
	ctx := context.Background()
	store := &downStore{memStore: newMemStore()}
	k := kms.NewKeyring(store, fileRoot(t))
	if err := k.EnsureTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	store.down.Store(true)
	s, err := k.Seal(ctx, "acme", []byte("x"), nil)
	if err != nil || sealedVersion(s) != 1 {
		t.Fatalf("seal with the store down: %v", err)
	}
	if got, err := k.Open(ctx, "acme", s, nil); err != nil || string(got) != "x" {
		t.Fatalf("open: %q, %v", got, err)
	}
	if _, err := kms.NewKeyring(store, k.Root()).Seal(ctx, "acme", []byte("x"), nil); err == nil {
		t.Fatal("a cold keyring sealed without its store")
	}
}
