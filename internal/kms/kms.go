// Package kms is iotransit's envelope encryption. A root key (RootKey: a
// local file, 0600, by default, or an AES key inside a PKCS#11 token) wraps
// per-tenant data keys (AES-256-GCM), which have versions: new values are
// sealed under the newest, and a value opens under the version recorded in
// it. The data keys encrypt CA keys, integration secrets and stored message
// payloads. Destroying a tenant's data keys (Shred) makes its data
// unreadable (crypto-shredding). Wrapped data keys live in a KeyStore (a
// JetStream stream, StreamStore, which erases a replaced or destroyed key
// from its files; KVStore is the KV bucket of older nodes, whose keys
// CopyKeys moves), each naming the root key that wrapped it, so that
// Rewrap can move them to another root.
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
	"time"
)

// RootKeySize is the size of the root key in bytes (AES-256).
const RootKeySize = 32

// ErrNoKey is returned when a tenant has no data key (never created, or shredded).
var ErrNoKey = errors.New("kms: no data key")

// ErrOpen is returned when a sealed value cannot be opened: wrong key,
// wrong associated data, or tampered ciphertext.
var ErrOpen = errors.New("kms: cannot open sealed value")

// ErrWrongRoot is returned when a wrapped key names a root key this keyring
// does not have (another key file, another token key).
var ErrWrongRoot = errors.New("kms: wrapped under another root key")

// KeyStore keeps wrapped data keys. Create must fail if the key exists.
type KeyStore interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Create(ctx context.Context, key string, value []byte) error
}

// ErrKeyExists is what a KeyStore returns from Create when the key exists.
var ErrKeyExists = errors.New("kms: key exists")

// ErrKeyNotFound is what a KeyStore returns from Get when the key is absent.
var ErrKeyNotFound = errors.New("kms: key not found")

// refresh is how long a keyring seals under the newest data key version it
// knows before it checks the store for a newer one (a variable for tests).
var refresh = time.Second

// Keyring seals and opens values under per-tenant data keys.
type Keyring struct {
	root  RootKey
	prev  []RootKey // accepted for unwrapping only (a change of root)
	store KeyStore

	mu      sync.RWMutex
	tenants map[string]*tenantKeys
	sealing map[string]*subkey     // tenant -> current sealing subkey
	opening map[string]cipher.AEAD // tenant, version and subkey id -> subkey
}

// tenantKeys are the data keys of one tenant that a keyring has unwrapped.
type tenantKeys struct {
	deks    map[uint32][]byte
	newest  uint32    // the newest version the store had when checked
	checked time.Time // when newest was checked
	// kept is when the store last showed no shred of the tenant's keys.
	kept time.Time
}

// New returns a keyring under the root key held in rootKey (the file
// provider's key material).
func New(rootKey []byte, store KeyStore) (*Keyring, error) {
	root, err := FileRoot(rootKey)
	if err != nil {
		return nil, err
	}
	return NewKeyring(store, root), nil
}

// NewKeyring returns a keyring that wraps new data keys under root and
// unwraps keys wrapped under root or any of previous (during a change of
// root key, until Rewrap moved every key).
func NewKeyring(store KeyStore, root RootKey, previous ...RootKey) *Keyring {
	return &Keyring{
		root: root, prev: previous, store: store,
		tenants: map[string]*tenantKeys{}, sealing: map[string]*subkey{}, opening: map[string]cipher.AEAD{},
	}
}

// Root returns the root key that wraps new data keys.
func (k *Keyring) Root() RootKey { return k.root }

// Store returns the store of wrapped keys.
func (k *Keyring) Store() KeyStore { return k.store }

// RootID returns the ID of the root key that wraps new data keys.
func (k *Keyring) RootID() string { return k.root.ID() }

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
	sealMagic = 'K'
	headerLen = 1 + 4 // magic, key version
)

func dekName(tenant string, version uint32) string {
	return tenant + ".v" + strconv.FormatUint(uint64(version), 10)
}

func dekAAD(tenant string, version uint32) []byte {
	return []byte("iotransit/dek/" + dekName(tenant, version))
}

// EnsureTenant creates the tenant's data key if it has none. It is idempotent
// and safe to call from several nodes at once. A shredded tenant gets no new
// key: the result is ErrNoKey.
func (k *Keyring) EnsureTenant(ctx context.Context, tenant string) error {
	_, _, err := k.newest(ctx, tenant, true)
	return err
}

// cached returns the tenant's cached data key of version v.
func (k *Keyring) cached(tenant string, v uint32) ([]byte, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if tk := k.tenants[tenant]; tk != nil {
		d, ok := tk.deks[v]
		return d, ok
	}
	return nil, false
}

// keep caches the tenant's data key of version v; newest, when not zero,
// is the newest version the store had just now.
func (k *Keyring) keep(tenant string, v uint32, dek []byte, newest uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	tk := k.tenants[tenant]
	if tk == nil {
		tk = &tenantKeys{deks: map[uint32][]byte{}}
		k.tenants[tenant] = tk
	}
	if dek != nil {
		tk.deks[v] = dek
	}
	if newest != 0 {
		tk.newest = max(tk.newest, newest)
		tk.checked = time.Now()
	}
}

// dek returns the tenant's data key of version v, unwrapping it on first use.
func (k *Keyring) dek(ctx context.Context, tenant string, v uint32) ([]byte, error) {
	if d, ok := k.cached(tenant, v); ok {
		return d, nil
	}
	name := dekName(tenant, v)
	stored, err := k.store.Get(ctx, name)
	if errors.Is(err, ErrKeyNotFound) {
		return nil, fmt.Errorf("%w for tenant %s (version %d)", ErrNoKey, tenant, v)
	}
	if err != nil {
		return nil, fmt.Errorf("kms: data key %s: %w", name, err)
	}
	raw, _, err := k.unwrapKey(ctx, name, stored, dekAAD(tenant, v))
	if err != nil {
		return nil, err
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("kms: data key %s has %d bytes", name, len(raw))
	}
	k.keep(tenant, v, raw, 0)
	return raw, nil
}

// newest returns the tenant's newest data key version and its key. The
// store is asked again once the answer is older than refresh, so that a
// rotation on another node is followed within that time. With create, a
// tenant without a key gets version 1.
func (k *Keyring) newest(ctx context.Context, tenant string, create bool) (uint32, []byte, error) {
	k.mu.RLock()
	var v uint32
	fresh := false
	if tk := k.tenants[tenant]; tk != nil {
		v, fresh = tk.newest, tk.newest != 0 && time.Since(tk.checked) < refresh
	}
	k.mu.RUnlock()
	if !fresh {
		known := v
		if known != 0 {
			// The keys may have been shredded on another node meanwhile:
			// seal no more under the cached key. (checkKept reads the
			// store at most once a refresh for seals and opens together.)
			if err := k.checkKept(ctx, tenant); err != nil {
				return 0, nil, err
			}
		}
		var err error
		if v, err = k.probe(ctx, tenant, v); err != nil {
			if known == 0 {
				return 0, nil, err
			}
			// The store did not answer: seal on under the version known,
			// and ask again a refresh later rather than at every seal.
			v = known
		}
		if v == 0 && create {
			if v, err = k.createVersion(ctx, tenant, 1); err != nil {
				return 0, nil, err
			}
		}
		if v == 0 {
			return 0, nil, fmt.Errorf("%w for tenant %s", ErrNoKey, tenant)
		}
		k.keep(tenant, v, nil, v)
	}
	d, err := k.dek(ctx, tenant, v)
	return v, d, err
}

// probe returns the newest version in the store, at least from, asking for
// each version after from until one is missing (versions are made in order,
// each by a Create of the one after the newest).
func (k *Keyring) probe(ctx context.Context, tenant string, from uint32) (uint32, error) {
	v := from
	for {
		_, err := k.store.Get(ctx, dekName(tenant, v+1))
		if errors.Is(err, ErrKeyNotFound) {
			return v, nil
		}
		if err != nil {
			return 0, fmt.Errorf("kms: data key %s: %w", dekName(tenant, v+1), err)
		}
		v++
	}
}

// createVersion makes version v of the tenant's data key, unless another
// node made it first. It returns the newest version then in the store.
func (k *Keyring) createVersion(ctx context.Context, tenant string, v uint32) (uint32, error) {
	if err := k.shredded(ctx, tenant); err != nil {
		return 0, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return 0, fmt.Errorf("kms: generate data key: %w", err)
	}
	stored, err := k.wrapKey(ctx, raw, dekAAD(tenant, v), time.Now())
	if err != nil {
		return 0, err
	}
	switch err := k.store.Create(ctx, dekName(tenant, v), stored); {
	case err == nil:
		// A Shred that marked the tenant after the check above listed
		// the keys before this one was stored: destroy it here, as the
		// Shred would have (the mark is set before the Shred lists).
		if err := k.shredded(ctx, tenant); err != nil {
			if ms, ok := k.store.(ManagedKeyStore); ok {
				if derr := ms.Destroy(ctx, dekName(tenant, v)); derr != nil {
					return 0, fmt.Errorf("kms: destroy %s, made during its tenant's shred: %w", dekName(tenant, v), derr)
				}
			}
			return 0, err
		}
		k.keep(tenant, v, raw, v)
	case errors.Is(err, ErrKeyExists): // another node won the race
	default:
		return 0, fmt.Errorf("kms: store data key %s: %w", dekName(tenant, v), err)
	}
	return k.probe(ctx, tenant, v-1)
}

// shredded returns ErrNoKey, and forgets the tenant's cached keys, when
// the tenant's keys were shredded (on any node). A store that does not
// answer is not taken for a shred.
func (k *Keyring) shredded(ctx context.Context, tenant string) error {
	if _, err := k.store.Get(ctx, shreddedName(tenant)); err != nil {
		return nil
	}
	k.Evict(tenant)
	return fmt.Errorf("%w for tenant %s: its keys were shredded", ErrNoKey, tenant)
}

// checkKept returns ErrNoKey once the tenant's keys were shredded on any
// node, asking the store at most once a refresh: a keyring stops opening
// with the keys and subkeys it cached as it stops sealing with them.
func (k *Keyring) checkKept(ctx context.Context, tenant string) error {
	k.mu.RLock()
	tk := k.tenants[tenant]
	fresh := tk != nil && time.Since(tk.kept) < refresh
	k.mu.RUnlock()
	if fresh {
		return nil
	}
	if err := k.shredded(ctx, tenant); err != nil {
		return err
	}
	k.mu.Lock()
	if tk := k.tenants[tenant]; tk != nil {
		tk.kept = time.Now()
	}
	k.mu.Unlock()
	return nil
}

// Rotate makes a new version of the tenant's data key: from then on this
// keyring seals under it, and every other keyring on the same store within
// a second. Older versions stay for opening. When two nodes rotate at once,
// one new version is made. It returns the new version.
func (k *Keyring) Rotate(ctx context.Context, tenant string) (uint32, error) {
	cur, err := k.probe(ctx, tenant, 0)
	if err != nil {
		return 0, err
	}
	if cur == 0 {
		return 0, fmt.Errorf("%w for tenant %s", ErrNoKey, tenant)
	}
	v, err := k.createVersion(ctx, tenant, cur+1)
	if err != nil {
		return 0, err
	}
	k.keep(tenant, v, nil, v)
	k.mu.Lock()
	delete(k.sealing, tenant) // the next seal takes the new version
	k.mu.Unlock()
	return v, nil
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
	version uint32 // of the data key it derives from
	id      [subkeyIDLen]byte
	aead    cipher.AEAD
	uses    atomic.Int64
	recheck atomic.Int64 // unix nanoseconds: check for a newer version from then on
}

func deriveSubkey(dek []byte, tenant string, id []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, dek, id, "iotransit/kms/subkey/"+tenant, 32)
	if err != nil {
		return nil, fmt.Errorf("kms: derive subkey: %w", err)
	}
	return newGCM(key)
}

// sealKey returns the tenant's current sealing subkey, making a new one when
// the current one has been used maxSubkeyUses times or the data key has a
// newer version.
func (k *Keyring) sealKey(ctx context.Context, tenant string) (*subkey, error) {
	now := time.Now().UnixNano()
	k.mu.RLock()
	sk := k.sealing[tenant]
	k.mu.RUnlock()
	if sk != nil && now < sk.recheck.Load() && sk.uses.Add(1) <= maxSubkeyUses {
		return sk, nil
	}
	v, dek, err := k.newest(ctx, tenant, false)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur := k.sealing[tenant]; cur != nil && cur.version == v && cur.uses.Add(1) <= maxSubkeyUses {
		cur.recheck.Store(now + int64(refresh))
		return cur, nil // still current, or another goroutine made it first
	}
	n := &subkey{version: v}
	if _, err := rand.Read(n.id[:]); err != nil {
		return nil, fmt.Errorf("kms: subkey id: %w", err)
	}
	if n.aead, err = deriveSubkey(dek, tenant, n.id[:]); err != nil {
		return nil, err
	}
	n.uses.Store(1)
	n.recheck.Store(now + int64(refresh))
	k.sealing[tenant] = n
	return n, nil
}

// openKey returns the subkey with the given id of data key version v,
// deriving and caching it.
func (k *Keyring) openKey(ctx context.Context, tenant string, v uint32, id []byte) (cipher.AEAD, error) {
	// The cache key is built on the stack; the lookup does not copy it.
	var kb [64]byte
	ck := append(binary.BigEndian.AppendUint32(append(append(kb[:0], tenant...), 0), v), id...)
	k.mu.RLock()
	a, ok := k.opening[string(ck)]
	k.mu.RUnlock()
	if ok {
		return a, nil
	}
	dek, err := k.dek(ctx, tenant, v)
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
	binary.BigEndian.PutUint32(out[1:], sk.version)
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
	v := binary.BigEndian.Uint32(sealed[1:])
	if v == 0 {
		return nil, fmt.Errorf("%w: key version 0", ErrOpen)
	}
	a, err := k.openKey(ctx, tenant, v, sealed[headerLen:sealHeaderLen])
	if errors.Is(err, ErrNoKey) {
		if _, _, nerr := k.newest(ctx, tenant, false); nerr == nil {
			// The tenant has keys, not this version: the header was changed.
			return nil, fmt.Errorf("%w: unknown key version %d", ErrOpen, v)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := k.checkKept(ctx, tenant); err != nil {
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
