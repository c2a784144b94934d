package keystore

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/securefile"
)

// The file store's files, in its directory.
const (
	identityFile = "identity.key"
	nextFile     = "identity-next.key"
	wrapFile     = "wrap.key"
	wrapKeySize  = 32
)

// FileStore keeps the keys as files 0600 in one directory: the identity and
// next keys as PKCS#8 PEM, the wrapping secret as 32 random bytes used with
// AES-256-GCM. A key file that group or others may read is refused. It
// protects what it seals from a copy of the sealed files alone (a queue
// file, a backup), not from a reader of the whole directory: that is what
// the token store is for.
type FileStore struct {
	dir string

	mu   sync.Mutex
	aead cipher.AEAD // loaded on first use
}

var _ Store = (*FileStore)(nil)

// OpenFile opens the file store in dir, making the directory (0700) if it
// does not exist. Keys are made on first use.
func OpenFile(dir string) (*FileStore, error) {
	if dir == "" {
		return nil, errors.New("keystore: a directory for the key files is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	return &FileStore{dir: dir}, nil
}

// Identity returns the identity key, making it on first use.
func (s *FileStore) Identity() (crypto.Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key(identityFile, true)
}

// Next returns the next identity key, or an error wrapping ErrNoKey.
func (s *FileStore) Next() (crypto.Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key(nextFile, false)
}

// CreateNext returns the next identity key, making it when there is none.
func (s *FileStore) CreateNext() (crypto.Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.key(identityFile, false); err != nil {
		return nil, err
	}
	return s.key(nextFile, true)
}

// Promote makes the next key the identity: one rename, which replaces (and
// so deletes) the old key.
func (s *FileStore) Promote() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.key(nextFile, false); err != nil {
		return err
	}
	if err := os.Rename(s.path(nextFile), s.path(identityFile)); err != nil {
		return fmt.Errorf("keystore: promote the next key: %w", err)
	}
	return syncDir(s.dir)
}

// DiscardNext deletes the next key, if there is one.
func (s *FileStore) DiscardNext() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(s.path(nextFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keystore: discard the next key: %w", err)
	}
	return syncDir(s.dir)
}

// Seal seals plaintext under the wrapping secret, bound to aad.
func (s *FileStore) Seal(plaintext, aad []byte) ([]byte, error) {
	aead, err := s.wrapping()
	if err != nil {
		return nil, err
	}
	return seal(aead, plaintext, aad)
}

// Open opens what Seal sealed with the same aad.
func (s *FileStore) Open(sealed, aad []byte) ([]byte, error) {
	aead, err := s.wrapping()
	if err != nil {
		return nil, err
	}
	plaintext, err := openSealed(aead, sealed, aad)
	if err != nil && !errors.Is(err, ErrNotAuthentic) {
		return nil, ErrNotAuthentic
	}
	return plaintext, err
}

// Close does nothing: the file store holds no resource.
func (s *FileStore) Close() error { return nil }

func (s *FileStore) path(name string) string { return filepath.Join(s.dir, name) }

// key loads the identity key in file name, making it when create is set and
// the file does not exist (an error wrapping ErrNoKey otherwise).
func (s *FileStore) key(name string, create bool) (crypto.Signer, error) {
	path := s.path(name)
	fresh := func() ([]byte, error) { return nil, fmt.Errorf("%w: %s", ErrNoKey, path) }
	if create {
		fresh = newKeyPEM
	}
	b, err := securefile.LoadOrCreate(path, fresh)
	if errors.Is(err, ErrNoKey) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: identity key: %w", err)
	}
	k, err := pki.ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", path, err)
	}
	if err := checkIdentityKey(k.Public()); err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return k, nil
}

// newKeyPEM makes an identity key as PKCS#8 PEM.
func newKeyPEM() ([]byte, error) {
	k, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	return pki.EncodeKeyPEM(k)
}

// wrapping returns the AES-256-GCM of the wrapping secret, making the
// secret on first use.
func (s *FileStore) wrapping() (cipher.AEAD, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead != nil {
		return s.aead, nil
	}
	path := s.path(wrapFile)
	b, err := securefile.LoadOrCreate(path, func() ([]byte, error) {
		k := make([]byte, wrapKeySize)
		_, err := rand.Read(k)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("keystore: wrapping secret: %w", err)
	}
	if len(b) != wrapKeySize {
		return nil, fmt.Errorf("keystore: wrapping secret %s holds %d bytes, not %d", path, len(b), wrapKeySize)
	}
	block, err := aes.NewCipher(b)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s.aead = aead
	return aead, nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keystore: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keystore: sync %s: %w", dir, err)
	}
	return nil
}
