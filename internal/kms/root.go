package kms

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/iotransit/iotransit/internal/securefile"
)

// RootKey is the root of trust: it wraps and unwraps the data keys and
// never gives its own key material out. A file holds it by default
// (FileRoot); a PKCS#11 token can hold it instead (OpenPKCS11Root), and
// then wrapping happens inside the token.
type RootKey interface {
	// ID names the root key without revealing it: "file:<16 hex>" or
	// "pkcs11:<16 hex>". Wrapped keys record it, so that a keyring knows
	// which root opens which key.
	ID() string
	// Wrap seals plain (a data key) bound to aad.
	Wrap(ctx context.Context, plain, aad []byte) ([]byte, error)
	// Unwrap opens what Wrap sealed with the same aad; a value that does
	// not authenticate gives ErrOpen.
	Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error)
}

// ErrNoRootKey is returned when the root key does not exist (a missing
// file, a token without the key) and may not be made.
var ErrNoRootKey = errors.New("kms: no root key")

// fileRoot is a root key held in memory, read from a file.
type fileRoot struct {
	id   string
	aead cipher.AEAD
}

// FileRoot returns the root key made of key (RootKeySize bytes).
func FileRoot(key []byte) (RootKey, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("iotransit/kms/root-id\x00"), key...))
	return &fileRoot{id: "file:" + hex.EncodeToString(sum[:8]), aead: aead}, nil
}

// OpenFileRoot reads the root key file at path. A missing file is created
// (0600, random) when create is true and is ErrNoRootKey otherwise; a file
// readable by group or others is refused.
func OpenFileRoot(path string, create bool) (RootKey, error) {
	if !create {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: root key file %s does not exist", ErrNoRootKey, path)
		}
	}
	key, err := LoadOrCreateRootKey(path)
	if err != nil {
		return nil, err
	}
	return FileRoot(key)
}

func (r *fileRoot) ID() string { return r.id }

func (r *fileRoot) Wrap(_ context.Context, plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, r.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("kms: nonce: %w", err)
	}
	return r.aead.Seal(nonce, nonce, plain, aad), nil
}

func (r *fileRoot) Unwrap(_ context.Context, wrapped, aad []byte) ([]byte, error) {
	return openNonced(r.aead, wrapped, aad)
}

// openNonced opens nonce | ciphertext, as the root keys wrap.
func openNonced(aead cipher.AEAD, wrapped, aad []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(wrapped) < n+aead.Overhead() {
		return nil, ErrOpen
	}
	out, err := aead.Open(nil, wrapped[:n], wrapped[n:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

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
