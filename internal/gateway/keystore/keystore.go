// Package keystore keeps the gateway agent's private keys: its TLS identity
// (an ECDSA P-256 key that never leaves the gateway, used for mTLS and to
// sign its certificate requests, with a next key for renewal) and a
// wrapping secret that seals the agent's small secrets at rest (the
// store-and-forward queue's data key, the mesh key-delivery key).
//
// Two stores sit behind one interface: files 0600 in the agent's data
// directory (the default), or a PKCS#11 token in which both keys are
// generated and from which neither can be exported (SoftHSM2 in tests, a
// TPM or secure element in the field). The token store needs cgo; a build
// without it refuses PKCS#11 with ErrNeedsCgo.
package keystore

import (
	"crypto"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/iotransit/iotransit/internal/pkcs11tok"
)

// Sealer seals small secrets at rest under the store's wrapping secret, with
// AES-256-GCM. What it seals opens only with the same store and the same
// associated data (aad), which says what the secret is for.
type Sealer interface {
	// Seal returns plaintext sealed under the wrapping secret, bound to aad.
	Seal(plaintext, aad []byte) ([]byte, error)
	// Open returns the plaintext of sealed, or an error wrapping
	// ErrNotAuthentic when it was changed, sealed with another aad or by
	// another store.
	Open(sealed, aad []byte) ([]byte, error)
}

// Store holds the gateway's identity keys and its wrapping secret.
//
// Renewal: CreateNext makes the next key (it survives restarts), the agent
// asks a certificate for it and stores that certificate, then Promote makes
// it the identity and deletes the old key; DiscardNext abandons a renewal.
// Signers returned before a Promote may stop working after it (a token
// destroys the old key): take the identity again.
type Store interface {
	Sealer
	// Identity returns the identity key, making it on first use.
	Identity() (crypto.Signer, error)
	// Next returns the next identity key, or an error wrapping ErrNoKey
	// when no renewal is under way.
	Next() (crypto.Signer, error)
	// CreateNext returns the next identity key, making it when there is
	// none. There must be an identity key already.
	CreateNext() (crypto.Signer, error)
	// Promote makes the next key the identity and deletes the old one; an
	// error wrapping ErrNoKey when there is no next key.
	Promote() error
	// DiscardNext deletes the next key, if there is one.
	DiscardNext() error
	// Close releases the store (the token session).
	Close() error
}

// Errors the agent can tell apart.
var (
	// ErrNoKey reports that the key asked for does not exist.
	ErrNoKey = errors.New("keystore: no such key")
	// ErrNotAuthentic reports a sealed secret that does not open: changed,
	// sealed with other associated data or by another store's key.
	ErrNotAuthentic = errors.New("keystore: sealed secret does not authenticate (changed, sealed for another purpose or by another key)")
	// ErrWrongPIN reports that the token refused the PIN.
	ErrWrongPIN = errors.New("keystore: the PKCS#11 token refused the PIN")
	// ErrTokenNotFound reports that the module has no token with the label.
	ErrTokenNotFound = errors.New("keystore: no PKCS#11 token with this label")
	// ErrNeedsCgo reports a PKCS#11 store asked of a build without cgo.
	ErrNeedsCgo = errors.New("keystore: PKCS#11 support needs a build with cgo")
)

// Config selects the store.
type Config struct {
	// Dir is the directory of the file store's keys (inside the agent's
	// data directory). Unused with PKCS11.
	Dir string
	// PKCS11 selects a token instead of files when non-nil.
	PKCS11 *PKCS11Config
}

// PKCS11Config is how the agent reaches its token.
type PKCS11Config struct {
	// Module is the path of the PKCS#11 library (--pkcs11-module).
	Module string
	// TokenLabel is the label of the token (--pkcs11-token).
	TokenLabel string
	// PINFile is the path of a file holding the user PIN
	// (--pkcs11-pin-file); it must not be readable by group or others.
	PINFile string
}

// pkcs11Errors are the errors a token that will not open gives, in the
// keystore's terms.
var pkcs11Errors = pkcs11tok.Errors{Prefix: "keystore", WrongPIN: ErrWrongPIN, TokenNotFound: ErrTokenNotFound}

// token is c as pkcs11tok takes it.
func (c *PKCS11Config) token() pkcs11tok.Config {
	return pkcs11tok.Config{Module: c.Module, Token: c.TokenLabel, PINFile: c.PINFile}
}

// Validate reports every missing setting at once.
func (c *PKCS11Config) Validate() error { return c.token().Validate(pkcs11Errors) }

// Open opens the store cfg selects: the token when cfg.PKCS11 is set, the
// files in cfg.Dir otherwise.
func Open(cfg Config) (Store, error) {
	if cfg.PKCS11 != nil {
		return OpenPKCS11(*cfg.PKCS11)
	}
	s, err := OpenFile(cfg.Dir)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// checkIdentityKey refuses a public key that is not ECDSA P-256, the one
// kind of identity key iotransit issues certificates for.
func checkIdentityKey(pub crypto.PublicKey) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return fmt.Errorf("keystore: identity key is %T, not ECDSA P-256", pub)
	}
	return nil
}

// The sealed format: a version byte, the 12-byte nonce, then the GCM
// ciphertext and its 16-byte tag. The version byte is authenticated with
// the caller's aad.
const (
	sealedV1  = 1
	nonceSize = 12
	tagSize   = 16
	// MaxSecret is the largest plaintext Seal takes: the store seals keys
	// and small state, never messages.
	MaxSecret = 64 << 10
)

// seal seals plaintext with aead under a random nonce. A 96-bit random
// nonce is safe for far more seals than the few secrets an agent keeps
// (SP 800-38D §8.3 bounds it at 2^32 per key).
func seal(aead cipher.AEAD, plaintext, aad []byte) ([]byte, error) {
	if len(plaintext) > MaxSecret {
		return nil, fmt.Errorf("keystore: a secret of %d bytes is more than the %d the store seals", len(plaintext), MaxSecret)
	}
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+tagSize)
	out[0] = sealedV1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return aead.Seal(out, out[1:], plaintext, sealedAAD(aad)), nil
}

// openSealed checks the frame of sealed and opens it with aead: an error
// wrapping ErrNotAuthentic for a frame that is not one, the AEAD's own
// error when it refuses the ciphertext.
func openSealed(aead cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < 1+nonceSize+tagSize {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrNotAuthentic, len(sealed))
	}
	if sealed[0] != sealedV1 {
		return nil, fmt.Errorf("%w: unknown format %d", ErrNotAuthentic, sealed[0])
	}
	return aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], sealedAAD(aad))
}

// sealedAAD is the GCM associated data: the format version, then aad.
func sealedAAD(aad []byte) []byte {
	return append([]byte{sealedV1}, aad...)
}
