//go:build cgo

package kms

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"

	"github.com/iotransit/iotransit/internal/pkcs11tok"
)

// PKCS11Root is a root key generated in a PKCS#11 token (AES-256,
// sensitive, never extractable): wrapping and unwrapping run in the token
// (CKM_AES_GCM), and the key never leaves it.
type PKCS11Root struct {
	ctx   *crypto11.Context
	aead  cipher.AEAD
	id    string
	token string
}

var _ RootKey = (*PKCS11Root)(nil)

// pkcs11IDLen is the length of the random CKA_ID given to a root key made
// in a token; the root key's ID is "pkcs11:" and its hex.
const pkcs11IDLen = 8

// OpenPKCS11Root logs into the token cfg names and finds its root key by
// label. When the token has none, the key is generated there if create is
// true; otherwise the result is ErrNoRootKey.
func OpenPKCS11Root(cfg PKCS11Config, create bool) (*PKCS11Root, error) {
	ctx, err := pkcs11tok.Open(cfg.token(), pkcs11Errors, 12)
	if err != nil {
		return nil, err
	}
	r := &PKCS11Root{ctx: ctx, token: cfg.Token}
	if err := r.find(cfg.keyLabel(), create); err != nil {
		return nil, errors.Join(err, ctx.Close())
	}
	return r, nil
}

// find sets r's key to the one labelled label, generating it if allowed.
func (r *PKCS11Root) find(label string, create bool) error {
	keys, err := r.ctx.FindKeys(nil, []byte(label))
	if err != nil {
		return fmt.Errorf("kms: find root key %q on token %q: %w", label, r.token, err)
	}
	var key *crypto11.SecretKey
	switch {
	case len(keys) == 1:
		key = keys[0]
	case len(keys) > 1:
		return fmt.Errorf("kms: token %q holds %d keys labelled %q, 1 expected", r.token, len(keys), label)
	case !create:
		return fmt.Errorf("%w: token %q holds no key labelled %q", ErrNoRootKey, r.token, label)
	default:
		if key, err = r.generate(label); err != nil {
			return err
		}
	}
	if key.Cipher != crypto11.CipherAES {
		return fmt.Errorf("kms: the key %q on token %q is not an AES key", label, r.token)
	}
	if n, err := r.ctx.GetAttribute(key, crypto11.CkaValueLen); err != nil || n == nil || bytesToUint(n.Value) != RootKeySize {
		return fmt.Errorf("kms: the key %q on token %q is not an AES-256 key: refused", label, r.token)
	}
	if err := pkcs11tok.CheckKept(r.ctx, key); err != nil {
		return fmt.Errorf("kms: the key %q on token %q: %w", label, r.token, err)
	}
	id, err := r.ctx.GetAttribute(key, crypto11.CkaId)
	if err != nil || len(id.Value) == 0 {
		return fmt.Errorf("kms: the key %q on token %q has no CKA_ID: %v", label, r.token, err)
	}
	r.id = "pkcs11:" + hex.EncodeToString(id.Value)
	if r.aead, err = key.NewGCM(); err != nil {
		return fmt.Errorf("kms: AES-GCM with token %q: %w", r.token, err)
	}
	return nil
}

// generate makes the AES-256 root key in the token: private, sensitive,
// not extractable, for encryption only, with a random CKA_ID.
func (r *PKCS11Root) generate(label string) (*crypto11.SecretKey, error) {
	id := make([]byte, pkcs11IDLen)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	tmpl, err := pkcs11tok.AESTemplate(id, []byte(label))
	if err != nil {
		return nil, err
	}
	key, err := r.ctx.GenerateSecretKeyWithAttributes(tmpl, 8*RootKeySize, crypto11.CipherAES)
	if err != nil {
		return nil, fmt.Errorf("kms: generate root key %q in token %q: %w", label, r.token, err)
	}
	return key, nil
}

// ID returns "pkcs11:" and the hex of the key's CKA_ID.
func (r *PKCS11Root) ID() string { return r.id }

// Wrap seals plain in the token.
func (r *PKCS11Root) Wrap(_ context.Context, plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, r.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("kms: nonce: %w", err)
	}
	return pkcs11tok.Seal(fmt.Sprintf("kms: wrap with token %q", r.token), func() ([]byte, error) {
		return r.aead.Seal(nonce, nonce, plain, aad), nil
	})
}

// Unwrap opens in the token what Wrap sealed.
func (r *PKCS11Root) Unwrap(_ context.Context, wrapped, aad []byte) ([]byte, error) {
	return openNonced(r.aead, wrapped, aad)
}

// Close logs out of the token.
func (r *PKCS11Root) Close() error { return r.ctx.Close() }

// bytesToUint reads a CK_ULONG attribute value (native byte order, as the
// module wrote it).
func bytesToUint(b []byte) uint64 {
	var v uint64
	switch len(b) {
	case 4:
		v = uint64(binary.NativeEndian.Uint32(b))
	case 8:
		v = binary.NativeEndian.Uint64(b)
	}
	return v
}
