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
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/iotransit/iotransit/internal/securefile"
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
	b, err := securefile.LoadOrCreate(path, func() ([]byte, error) {
		key := make([]byte, RootKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("generate: %w", err)
		}
		return key, nil
	})
	if err != nil {
		return nil, fmt.Errorf("kms: root key: %w", err)
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

	mu      sync.RWMutex
	deks    map[string][]byte      // tenant -> data key (version 1)
	sealing map[string]*subkey     // tenant -> current sealing subkey
	opening map[string]cipher.AEAD // tenant + subkey id -> subkey
}

// New returns a keyring under the given root key.
func New(rootKey []byte, store KeyStore) (*Keyring, error) {
	aead, err := newGCM(rootKey)
	if err != nil {
		return nil, err
	}
	return &Keyring{root: aead, store: store, deks: map[string][]byte{}, sealing: map[string]*subkey{}, opening: map[string]cipher.AEAD{}}, nil
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

func (k *Keyring) dek(ctx context.Context, tenant string, create bool) ([]byte, error) {
	k.mu.RLock()
	d, ok := k.deks[tenant]
	k.mu.RUnlock()
	if ok {
		return d, nil
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
	if len(raw) != 32 {
		return nil, fmt.Errorf("kms: data key of %s has %d bytes", tenant, len(raw))
	}
	k.mu.Lock()
	k.deks[tenant] = raw
	k.mu.Unlock()
	return raw, nil
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

// Sealed values are
//
//	'K' | data key version (4) | subkey id (16) | nonce (12) | AES-256-GCM ciphertext and tag
//
// The subkey is HKDF-SHA256(data key, salt = subkey id), so no single AES key
// sees more than maxSubkeyUses random 96-bit nonces (NIST SP 800-38D bounds
// random nonces to 2^32 per key; a tenant storing 30k messages/s would pass
// that in 40 hours under one key). The header is authenticated with the
// ciphertext, together with the tenant and the caller's aad.
const (
	subkeyIDLen   = 16
	nonceLen      = 12
	sealHeaderLen = headerLen + subkeyIDLen

	maxOpenCache = 4096
)

// maxSubkeyUses is how many values one subkey seals (a variable for tests).
var maxSubkeyUses int64 = 1 << 28

// subkey is one derived AES-GCM key.
type subkey struct {
	id   [subkeyIDLen]byte
	aead cipher.AEAD
	uses atomic.Int64
}

func deriveSubkey(dek []byte, tenant string, id []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, dek, id, "iotransit/kms/subkey/"+tenant, 32)
	if err != nil {
		return nil, fmt.Errorf("kms: derive subkey: %w", err)
	}
	return newGCM(key)
}

// sealKey returns the tenant's current sealing subkey, making a new one when
// the current one has been used maxSubkeyUses times.
func (k *Keyring) sealKey(ctx context.Context, tenant string) (*subkey, error) {
	k.mu.RLock()
	sk := k.sealing[tenant]
	k.mu.RUnlock()
	if sk != nil && sk.uses.Add(1) <= maxSubkeyUses {
		return sk, nil
	}
	dek, err := k.dek(ctx, tenant, false)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur := k.sealing[tenant]; cur != nil && cur != sk && cur.uses.Add(1) <= maxSubkeyUses {
		return cur, nil // another goroutine rotated first
	}
	n := &subkey{}
	if _, err := rand.Read(n.id[:]); err != nil {
		return nil, fmt.Errorf("kms: subkey id: %w", err)
	}
	if n.aead, err = deriveSubkey(dek, tenant, n.id[:]); err != nil {
		return nil, err
	}
	n.uses.Store(1)
	k.sealing[tenant] = n
	return n, nil
}

// openKey returns the subkey with the given id, deriving and caching it.
func (k *Keyring) openKey(ctx context.Context, tenant string, id []byte) (cipher.AEAD, error) {
	// The cache key is built on the stack; the lookup does not copy it.
	var kb [64]byte
	ck := append(append(append(kb[:0], tenant...), 0), id...)
	k.mu.RLock()
	a, ok := k.opening[string(ck)]
	k.mu.RUnlock()
	if ok {
		return a, nil
	}
	dek, err := k.dek(ctx, tenant, false)
	if err != nil {
		return nil, err
	}
	if a, err = deriveSubkey(dek, tenant, id); err != nil {
		return nil, err
	}
	k.mu.Lock()
	if len(k.opening) >= maxOpenCache {
		clear(k.opening)
	}
	k.opening[string(ck)] = a
	k.mu.Unlock()
	return a, nil
}

// Seal encrypts plaintext under the tenant's data key, bound to the tenant
// and to aad (which must be given again to Open).
func (k *Keyring) Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error) {
	v, err := seal(ctx, k, nil, tenant, plaintext, aad)
	return v[:len(v):len(v)], err
}

// AppendSeal is Seal with the sealed value appended to dst, and aad given
// as a string (the store's content id): it allocates nothing when dst has
// room for the value and, past it, for the bound associated data, so that
// a caller may seal many values into one buffer it reuses.
func (k *Keyring) AppendSeal(ctx context.Context, dst []byte, tenant string, plaintext []byte, aad string) ([]byte, error) {
	return seal(ctx, k, dst, tenant, plaintext, aad)
}

// seal appends to dst the value that Seal makes.
func seal[A string | []byte](ctx context.Context, k *Keyring, dst []byte, tenant string, plaintext []byte, aad A) ([]byte, error) {
	sk, err := k.sealKey(ctx, tenant)
	if err != nil {
		return dst, err
	}
	// One buffer holds the sealed value and, past its capacity, the bound
	// associated data (the AEAD interface would move a stack buffer to
	// the heap). Seal writes only within out's capacity, so the two do not
	// overlap.
	at := len(dst)
	n := sealHeaderLen + nonceLen + len(plaintext) + sk.aead.Overhead()
	buf := dst
	if need := n + boundLen(tenant, len(aad)); cap(buf)-at < need {
		// As slices.Grow, but one allocation under the race detector too.
		buf = make([]byte, at, at+need)
		copy(buf, dst)
	}
	buf = buf[:at+n]
	out := buf[at : at+sealHeaderLen+nonceLen : at+n]
	out[0] = sealMagic
	binary.BigEndian.PutUint32(out[1:], dekVersion)
	copy(out[headerLen:], sk.id[:])
	nonce := out[sealHeaderLen:]
	if _, err := rand.Read(nonce); err != nil {
		return dst, fmt.Errorf("kms: nonce: %w", err)
	}
	sk.aead.Seal(out, nonce, plaintext, bindAAD(buf[at+n:at+n], out[:sealHeaderLen], tenant, aad))
	return buf, nil
}

// Open decrypts a value made by Seal for the same tenant and aad.
func (k *Keyring) Open(ctx context.Context, tenant string, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < sealHeaderLen+nonceLen || sealed[0] != sealMagic {
		return nil, ErrOpen
	}
	if v := binary.BigEndian.Uint32(sealed[1:]); v != dekVersion {
		return nil, fmt.Errorf("%w: unknown key version %d", ErrOpen, v)
	}
	a, err := k.openKey(ctx, tenant, sealed[headerLen:sealHeaderLen])
	if err != nil {
		return nil, err
	}
	body := sealed[sealHeaderLen:]
	if len(body) < nonceLen+a.Overhead() {
		return nil, ErrOpen
	}
	// As in Seal, one allocation holds the plaintext and, past its
	// capacity, the bound associated data.
	n := len(body) - nonceLen - a.Overhead()
	buf := make([]byte, n, n+boundLen(tenant, len(aad)))
	out, err := a.Open(buf[:0:n], body[:nonceLen], body[nonceLen:], bindAAD(buf[n:n], sealed[:sealHeaderLen], tenant, aad))
	if err != nil {
		return nil, ErrOpen
	}
	if len(out) == 0 {
		return nil, nil // as Open(nil, …) gives it
	}
	return out, nil
}

// boundLen is the length of the associated data bindAAD makes.
func boundLen(tenant string, aad int) int { return sealHeaderLen + len(tenant) + 1 + aad }

// bindAAD appends to b the associated data of a sealed value: its header,
// the tenant and aad.
func bindAAD[A string | []byte](b, header []byte, tenant string, aad A) []byte {
	b = append(b, header...)
	b = append(b, tenant...)
	b = append(b, 0)
	return append(b, aad...)
}
