// Package kms is iotransit's envelope encryption. A root key (a local file,
// 0600, made at first start) wraps one data key per tenant (AES-256-GCM);
// the data keys encrypt CA keys, integration secrets and stored message
// payloads. Destroying a tenant's data keys makes its data unreadable
// (crypto-shredding). Wrapped data keys live in a KeyStore (JetStream KV).
package kms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// RootKeySize is the size of the root key in bytes (AES-256).
const RootKeySize = 32

// ErrNoKey is returned when a tenant has no data key (never created, or shredded).
var ErrNoKey = errors.New("kms: no data key")

// ErrOpen is returned when a sealed value cannot be opened: wrong key,
// wrong associated data, or tampered ciphertext.
var ErrOpen = errors.New("kms: cannot open sealed value")

// KeyStore keeps wrapped data keys. Create must fail if the key exists.
type KeyStore interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Create(ctx context.Context, key string, value []byte) error
}

// ErrKeyExists is what a KeyStore returns from Create when the key exists.
var ErrKeyExists = errors.New("kms: key exists")

// ErrKeyNotFound is what a KeyStore returns from Get when the key is absent.
var ErrKeyNotFound = errors.New("kms: key not found")

// LoadOrCreateRootKey reads the root key file at path, creating it (0600,
// random) if it does not exist. A file readable by group or others is
// refused: the root key protects every tenant's data.
func LoadOrCreateRootKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, RootKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("kms: generate root key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("kms: create key dir: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("kms: create root key: %w", err)
		}
		if _, err := f.Write(key); err != nil {
			f.Close()
			return nil, fmt.Errorf("kms: write root key: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("kms: sync root key: %w", err)
		}
		return key, f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("kms: read root key: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("kms: stat root key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("kms: root key %s has mode %v; it must be 0600", path, st.Mode().Perm())
	}
	if len(b) != RootKeySize {
		return nil, fmt.Errorf("kms: root key %s has %d bytes, want %d", path, len(b), RootKeySize)
	}
	return b, nil
}

// Keyring seals and opens values under per-tenant data keys.
type Keyring struct {
	root  cipher.AEAD
	store KeyStore

	mu   sync.RWMutex
	deks map[string]cipher.AEAD // tenant -> current data key (version 1)
}

// New returns a keyring under the given root key.
func New(rootKey []byte, store KeyStore) (*Keyring, error) {
	aead, err := newGCM(rootKey)
	if err != nil {
		return nil, err
	}
	return &Keyring{root: aead, store: store, deks: map[string]cipher.AEAD{}}, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("kms: key has %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	return cipher.NewGCM(block)
}

const (
	sealMagic  = 'K'
	dekVersion = 1
	headerLen  = 1 + 4 // magic, key version
)

func dekName(tenant string, version uint32) string {
	return tenant + ".v" + strconv.FormatUint(uint64(version), 10)
}

func dekAAD(tenant string, version uint32) []byte {
	return []byte("iotransit/dek/" + dekName(tenant, version))
}

// EnsureTenant creates the tenant's data key if it has none. It is idempotent
// and safe to call from several nodes at once.
func (k *Keyring) EnsureTenant(ctx context.Context, tenant string) error {
	_, err := k.dek(ctx, tenant, true)
	return err
}

func (k *Keyring) dek(ctx context.Context, tenant string, create bool) (cipher.AEAD, error) {
	k.mu.RLock()
	a, ok := k.deks[tenant]
	k.mu.RUnlock()
	if ok {
		return a, nil
	}
	name := dekName(tenant, dekVersion)
	wrapped, err := k.store.Get(ctx, name)
	if errors.Is(err, ErrKeyNotFound) && create {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, fmt.Errorf("kms: generate data key: %w", err)
		}
		wrapped = k.wrap(raw, dekAAD(tenant, dekVersion))
		err = k.store.Create(ctx, name, wrapped)
		if errors.Is(err, ErrKeyExists) { // another node won the race
			wrapped, err = k.store.Get(ctx, name)
		}
	}
	if errors.Is(err, ErrKeyNotFound) {
		return nil, fmt.Errorf("%w for tenant %s", ErrNoKey, tenant)
	}
	if err != nil {
		return nil, fmt.Errorf("kms: data key of %s: %w", tenant, err)
	}
	raw, err := k.unwrap(wrapped, dekAAD(tenant, dekVersion))
	if err != nil {
		return nil, fmt.Errorf("kms: unwrap data key of %s: %w", tenant, err)
	}
	a, err = newGCM(raw)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.deks[tenant] = a
	k.mu.Unlock()
	return a, nil
}

func (k *Keyring) wrap(plain, aad []byte) []byte {
	nonce := make([]byte, k.root.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("kms: crypto/rand failed: " + err.Error())
	}
	return k.root.Seal(nonce, nonce, plain, aad)
}

func (k *Keyring) unwrap(wrapped, aad []byte) ([]byte, error) {
	n := k.root.NonceSize()
	if len(wrapped) < n {
		return nil, ErrOpen
	}
	out, err := k.root.Open(nil, wrapped[:n], wrapped[n:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

// Seal encrypts plaintext under the tenant's data key, bound to the tenant
// and to aad (which must be given again to Open).
func (k *Keyring) Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error) {
	a, err := k.dek(ctx, tenant, false)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerLen, headerLen+a.NonceSize()+len(plaintext)+a.Overhead())
	out[0] = sealMagic
	binary.BigEndian.PutUint32(out[1:], dekVersion)
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("kms: nonce: %w", err)
	}
	out = append(out, nonce...)
	return a.Seal(out, nonce, plaintext, bindAAD(tenant, aad)), nil
}

// Open decrypts a value made by Seal for the same tenant and aad.
func (k *Keyring) Open(ctx context.Context, tenant string, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < headerLen || sealed[0] != sealMagic {
		return nil, ErrOpen
	}
	if v := binary.BigEndian.Uint32(sealed[1:]); v != dekVersion {
		return nil, fmt.Errorf("%w: unknown key version %d", ErrOpen, v)
	}
	a, err := k.dek(ctx, tenant, false)
	if err != nil {
		return nil, err
	}
	body := sealed[headerLen:]
	if len(body) < a.NonceSize()+a.Overhead() {
		return nil, ErrOpen
	}
	out, err := a.Open(nil, body[:a.NonceSize()], body[a.NonceSize():], bindAAD(tenant, aad))
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

func bindAAD(tenant string, aad []byte) []byte {
	b := make([]byte, 0, len(tenant)+1+len(aad))
	b = append(b, tenant...)
	b = append(b, 0)
	return append(b, aad...)
}
