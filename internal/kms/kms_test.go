package kms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/iotransit/iotransit/internal/kms"
)

// memStore is an in-memory kms.KeyStore with the contract of the JetStream
// one: Create fails with kms.ErrKeyExists when the key is present, Get with
// kms.ErrKeyNotFound when it is absent.
type memStore struct {
	mu      sync.Mutex
	m       map[string][]byte
	rev     map[string]uint64
	last    uint64
	creates int // successful Create calls
}

var _ kms.ManagedKeyStore = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{m: map[string][]byte{}, rev: map[string]uint64{}} }

func (s *memStore) GetEntry(_ context.Context, key string) ([]byte, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, 0, kms.ErrKeyNotFound
	}
	return bytes.Clone(v), s.rev[key], nil
}

func (s *memStore) Update(_ context.Context, key string, value []byte, revision uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok || s.rev[key] != revision {
		return kms.ErrKeyExists
	}
	s.last++
	s.m[key], s.rev[key] = bytes.Clone(value), s.last
	return nil
}

func (s *memStore) Entries(_ context.Context) ([]kms.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []kms.Entry
	for k, v := range s.m {
		out = append(out, kms.Entry{Key: k, Value: bytes.Clone(v), Revision: s.rev[k]})
	}
	return out, nil
}

func (s *memStore) Destroy(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	delete(s.rev, key)
	return nil
}

func (s *memStore) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, kms.ErrKeyNotFound
	}
	return bytes.Clone(v), nil
}

func (s *memStore) Create(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; ok {
		return kms.ErrKeyExists
	}
	s.last++
	s.m[key], s.rev[key] = bytes.Clone(value), s.last
	s.creates++
	return nil
}

func (s *memStore) snapshot() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]byte, len(s.m))
	for k, v := range s.m {
		out[k] = bytes.Clone(v)
	}
	return out
}

func rootKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, kms.RootKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func newKeyring(t testing.TB, root []byte, store kms.KeyStore, tenants ...string) *kms.Keyring {
	t.Helper()
	k, err := kms.New(root, store)
	if err != nil {
		t.Fatalf("new keyring: %v", err)
	}
	for _, tenant := range tenants {
		if err := k.EnsureTenant(context.Background(), tenant); err != nil {
			t.Fatalf("ensure tenant %s: %v", tenant, err)
		}
	}
	return k
}

func TestKMSRootKeyCreatedPrivateAndReloaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "root.key")
	k1, err := kms.LoadOrCreateRootKey(path)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if len(k1) != kms.RootKeySize {
		t.Fatalf("key has %d bytes, want %d", len(k1), kms.RootKeySize)
	}
	if bytes.Equal(k1, make([]byte, kms.RootKeySize)) {
		t.Fatal("key is all zeros")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != kms.RootKeySize {
		t.Fatalf("file mode %v size %d, want 0600 and %d", st.Mode().Perm(), st.Size(), kms.RootKeySize)
	}
	dir, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if dir.Mode().Perm()&0o077 != 0 {
		t.Errorf("created key directory has mode %v", dir.Mode().Perm())
	}
	k2, err := kms.LoadOrCreateRootKey(path)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !bytes.Equal(k1, k2) {
		t.Fatal("reloading returned a different key")
	}
}

func TestKMSRootKeyRefusesUnsafeFiles(t *testing.T) {
	tests := []struct {
		name string
		mode os.FileMode
		size int
	}{
		{name: "group readable", mode: 0o640, size: kms.RootKeySize},
		{name: "world readable", mode: 0o604, size: kms.RootKeySize},
		{name: "group writable", mode: 0o620, size: kms.RootKeySize},
		{name: "too short", mode: 0o600, size: kms.RootKeySize - 1},
		{name: "too long", mode: 0o600, size: kms.RootKeySize + 1},
		{name: "empty", mode: 0o600, size: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "root.key")
			content := bytes.Repeat([]byte{7}, tc.size)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // beyond the umask
				t.Fatal(err)
			}
			k, err := kms.LoadOrCreateRootKey(path)
			if err == nil || k != nil {
				t.Fatalf("LoadOrCreateRootKey accepted a %v file of %d bytes", tc.mode, tc.size)
			}
			// The file was refused, not replaced.
			got, rerr := os.ReadFile(path)
			if rerr != nil || !bytes.Equal(got, content) {
				t.Fatalf("the refused file was changed: %v", rerr)
			}
		})
	}
}

func TestKMSNewRefusesWrongRootKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := kms.New(make([]byte, n), newMemStore()); err == nil {
			t.Errorf("New accepted a %d-byte root key", n)
		}
	}
}

func TestKMSSealOpenRoundTrip(t *testing.T) {
	ctx := context.Background()
	k := newKeyring(t, rootKey(t), newMemStore(), "acme")
	tests := []struct {
		name      string
		plaintext []byte
		aad       []byte
	}{
		{name: "empty", plaintext: []byte{}, aad: nil},
		{name: "short", plaintext: []byte("hello"), aad: []byte("msg-1")},
		{name: "binary", plaintext: []byte{0, 1, 2, 255}, aad: []byte{0}},
		{name: "large", plaintext: bytes.Repeat([]byte("x"), 1<<20), aad: []byte("big")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sealed, err := k.Seal(ctx, "acme", tc.plaintext, tc.aad)
			if err != nil {
				t.Fatalf("seal: %v", err)
			}
			if len(tc.plaintext) > 4 && bytes.Contains(sealed, tc.plaintext) {
				t.Fatal("sealed value contains the plaintext")
			}
			got, err := k.Open(ctx, "acme", sealed, tc.aad)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if !bytes.Equal(got, tc.plaintext) {
				t.Fatal("opened value differs from the plaintext")
			}
		})
	}
}

func TestKMSSealUsesFreshNonce(t *testing.T) {
	ctx := context.Background()
	k := newKeyring(t, rootKey(t), newMemStore(), "acme")
	seen := map[string]bool{}
	for range 100 {
		s, err := k.Seal(ctx, "acme", []byte("same plaintext"), []byte("same aad"))
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(s)] {
			t.Fatal("Seal returned the same output twice")
		}
		seen[string(s)] = true
	}
}

func TestKMSOpenRefusesTampering(t *testing.T) {
	ctx := context.Background()
	k := newKeyring(t, rootKey(t), newMemStore(), "acme", "other")
	sealed, err := k.Seal(ctx, "acme", []byte("the CA key"), []byte("ca"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	withVersion := func(v byte) []byte {
		b := bytes.Clone(sealed)
		b[4] = v
		return b
	}
	tests := []struct {
		name    string
		tenant  string
		sealed  []byte
		aad     []byte
		wantErr error
	}{
		{name: "wrong tenant", tenant: "other", sealed: sealed, aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "tenant without key", tenant: "nobody", sealed: sealed, aad: []byte("ca"), wantErr: kms.ErrNoKey},
		{name: "wrong aad", tenant: "acme", sealed: sealed, aad: []byte("cb"), wantErr: kms.ErrOpen},
		{name: "missing aad", tenant: "acme", sealed: sealed, aad: nil, wantErr: kms.ErrOpen},
		{name: "aad moved into tenant", tenant: "acme\x00ca", sealed: sealed, aad: nil, wantErr: kms.ErrNoKey},
		{name: "flipped magic", tenant: "acme", sealed: flip(0), aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "flipped subkey id byte", tenant: "acme", sealed: flip(6), aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "flipped nonce byte", tenant: "acme", sealed: flip(5 + 16 + 1), aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "flipped ciphertext byte", tenant: "acme", sealed: flip(5 + 16 + 12 + 1), aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "flipped tag byte", tenant: "acme", sealed: flip(len(sealed) - 1), aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "unknown version", tenant: "acme", sealed: withVersion(2), aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "version zero", tenant: "acme", sealed: withVersion(0), aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "empty", tenant: "acme", sealed: nil, aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "magic only", tenant: "acme", sealed: sealed[:1], aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "header only", tenant: "acme", sealed: sealed[:5+16], aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "header and nonce", tenant: "acme", sealed: sealed[:5+16+12], aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "truncated tag", tenant: "acme", sealed: sealed[:len(sealed)-1], aad: []byte("ca"), wantErr: kms.ErrOpen},
		{name: "extra byte", tenant: "acme", sealed: append(bytes.Clone(sealed), 0), aad: []byte("ca"), wantErr: kms.ErrOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := k.Open(ctx, tc.tenant, tc.sealed, tc.aad)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Open error = %v, want %v", err, tc.wantErr)
			}
			if got != nil {
				t.Fatal("Open returned plaintext along with an error")
			}
		})
	}
	// The untouched value still opens: the table did not test a broken fixture.
	if _, err := k.Open(ctx, "acme", sealed, []byte("ca")); err != nil {
		t.Fatalf("untouched value: %v", err)
	}
}

func TestKMSSealNeedsTenantKey(t *testing.T) {
	k := newKeyring(t, rootKey(t), newMemStore())
	if _, err := k.Seal(context.Background(), "acme", []byte("x"), nil); !errors.Is(err, kms.ErrNoKey) {
		t.Fatalf("Seal without EnsureTenant: %v, want ErrNoKey", err)
	}
}

func TestKMSSecondKeyringWithSameRootOpens(t *testing.T) {
	ctx := context.Background()
	root, store := rootKey(t), newMemStore()
	k1 := newKeyring(t, root, store, "acme")
	sealed, err := k1.Seal(ctx, "acme", []byte("secret"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	// k2 shares nothing in memory with k1: it reads and unwraps the stored key.
	k2 := newKeyring(t, bytes.Clone(root), store)
	got, err := k2.Open(ctx, "acme", sealed, []byte("aad"))
	if err != nil || string(got) != "secret" {
		t.Fatalf("second keyring: %q, %v", got, err)
	}
	// And the other way round.
	sealed2, err := k2.Seal(ctx, "acme", []byte("back"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k1.Open(ctx, "acme", sealed2, nil); err != nil || string(got) != "back" {
		t.Fatalf("first keyring: %q, %v", got, err)
	}
}

func TestKMSDifferentRootCannotUnwrap(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	k1 := newKeyring(t, rootKey(t), store, "acme")
	sealed, err := k1.Seal(ctx, "acme", []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	k2 := newKeyring(t, rootKey(t), store)
	if _, err := k2.Open(ctx, "acme", sealed, nil); !errors.Is(err, kms.ErrOpen) {
		t.Fatalf("Open under another root: %v, want ErrOpen (the data key must not unwrap)", err)
	}
	if _, err := k2.Seal(ctx, "acme", []byte("x"), nil); !errors.Is(err, kms.ErrOpen) {
		t.Fatalf("Seal under another root: %v, want ErrOpen", err)
	}
	// EnsureTenant must not paper over it with a new key either.
	if err := k2.EnsureTenant(ctx, "acme"); !errors.Is(err, kms.ErrOpen) {
		t.Fatalf("EnsureTenant under another root: %v, want ErrOpen", err)
	}
}

func TestKMSWrappedKeyBoundToTenant(t *testing.T) {
	ctx := context.Background()
	root, store := rootKey(t), newMemStore()
	newKeyring(t, root, store, "acme")
	// Copy acme's wrapped data key under another tenant's name.
	wrapped, err := store.Get(ctx, "acme.v1")
	if err != nil {
		t.Fatalf("stored key name changed? %v (have %v)", err, keys(store.snapshot()))
	}
	if err := store.Create(ctx, "evil.v1", wrapped); err != nil {
		t.Fatal(err)
	}
	k := newKeyring(t, root, store)
	if _, err := k.Seal(ctx, "evil", []byte("x"), nil); !errors.Is(err, kms.ErrOpen) {
		t.Fatalf("a data key wrapped for acme unwrapped for evil: %v", err)
	}
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestKMSEnsureTenantIdempotent(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	k := newKeyring(t, rootKey(t), store, "acme")
	before := store.snapshot()
	sealed, err := k.Seal(ctx, "acme", []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := k.EnsureTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
	}
	if after := store.snapshot(); len(after) != 1 || !bytes.Equal(after["acme.v1"], before["acme.v1"]) {
		t.Fatalf("EnsureTenant changed the stored key: %v", keys(after))
	}
	if _, err := k.Open(ctx, "acme", sealed, nil); err != nil {
		t.Fatalf("open after repeated EnsureTenant: %v", err)
	}
}

func TestKMSEnsureTenantRaceEndsWithOneKey(t *testing.T) {
	ctx := context.Background()
	root, store := rootKey(t), newMemStore()
	const n = 8
	rings := make([]*kms.Keyring, n)
	for i := range rings {
		rings[i] = newKeyring(t, root, store)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i, k := range rings {
		wg.Go(func() {
			<-start
			errs[i] = k.EnsureTenant(ctx, "acme")
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("keyring %d: %v", i, err)
		}
	}
	if got := store.snapshot(); len(got) != 1 || store.creates != 1 {
		t.Fatalf("store holds %v after %d creates, want one data key", keys(got), store.creates)
	}
	// Every keyring uses the one stored key: what any seals, all open.
	for i, k := range rings {
		sealed, err := k.Seal(ctx, "acme", []byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for j, other := range rings {
			if _, err := other.Open(ctx, "acme", sealed, nil); err != nil {
				t.Fatalf("keyring %d cannot open what %d sealed: %v", j, i, err)
			}
		}
	}
}

func TestKMSConcurrentUseOfOneKeyring(t *testing.T) {
	ctx := context.Background()
	k := newKeyring(t, rootKey(t), newMemStore())
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Go(func() {
			tenant := []string{"a1", "b2"}[i%2]
			if err := k.EnsureTenant(ctx, tenant); err != nil {
				errs <- err
				return
			}
			s, err := k.Seal(ctx, tenant, []byte("v"), nil)
			if err != nil {
				errs <- err
				return
			}
			if _, err := k.Open(ctx, tenant, s, nil); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkSeal(b *testing.B) {
	ctx := context.Background()
	k := newKeyring(b, rootKey(b), newMemStore(), "acme")
	payload := bytes.Repeat([]byte("t"), 200)
	aad := []byte("msg-0123456789")
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal(ctx, "acme", payload, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen is what the forwarder spends to open one stored message.
func BenchmarkOpen(b *testing.B) {
	ctx := context.Background()
	k := newKeyring(b, rootKey(b), newMemStore(), "acme")
	payload := bytes.Repeat([]byte("t"), 200)
	aad := []byte("0123456789abcdef0123456789abcdef")
	sealed, err := k.Seal(ctx, "acme", payload, aad)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open(ctx, "acme", sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKMSSealOpenAllocations bounds the heap allocations of Seal and Open of
// a message-sized value with a content-id-sized aad (issue 11): counts, not
// timings, so a regression fails deterministically.
func TestKMSSealOpenAllocations(t *testing.T) {
	ctx := context.Background()
	k := newKeyring(t, rootKey(t), newMemStore(), "acme")
	payload := bytes.Repeat([]byte("t"), 200)
	aad := []byte("0123456789abcdef0123456789abcdef")
	sealed, err := k.Seal(ctx, "acme", payload, aad)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		max  float64
		f    func() error
	}{
		{name: "seal", max: 1, f: func() error { _, err := k.Seal(ctx, "acme", payload, aad); return err }},
		{name: "open", max: 1, f: func() error { _, err := k.Open(ctx, "acme", sealed, aad); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			got := testing.AllocsPerRun(100, func() { err = tc.f() })
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %v allocs per call", tc.name, got)
			if got > tc.max {
				t.Errorf("%s: %v allocs per call, at most %v allowed", tc.name, got, tc.max)
			}
		})
	}
}

// TestKMSAppendSeal: AppendSeal appends to dst a value that Open opens
// with the same aad (as bytes), leaves dst's bytes as they were, and
// allocates nothing when dst has room (the store reuses one buffer).
func TestKMSAppendSeal(t *testing.T) {
	ctx := context.Background()
	k := newKeyring(t, rootKey(t), newMemStore(), "acme")
	plaintext := []byte(`{"tsmId":12100,"temp":21.3}`)
	const aad = "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name string
		dst  []byte
	}{
		{name: "nil", dst: nil},
		{name: "after other bytes", dst: []byte("prefix")},
		{name: "room to spare", dst: make([]byte, 2, 1024)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := string(tc.dst)
			got, err := k.AppendSeal(ctx, tc.dst, "acme", plaintext, aad)
			if err != nil {
				t.Fatal(err)
			}
			if string(got[:len(before)]) != before {
				t.Fatalf("dst's bytes changed: %q, want %q", got[:len(before)], before)
			}
			opened, err := k.Open(ctx, "acme", got[len(before):], []byte(aad))
			if err != nil || string(opened) != string(plaintext) {
				t.Fatalf("Open = %q, %v; want %q", opened, err, plaintext)
			}
			if _, err := k.Open(ctx, "acme", got[len(before):], []byte("another id")); err == nil {
				t.Error("opened with another aad")
			}
		})
	}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() {
		buf, _ = k.AppendSeal(ctx, buf[:0], "acme", plaintext, aad)
	}); n != 0 {
		t.Errorf("AppendSeal into a buffer with room: %v allocations, want 0", n)
	}
}
