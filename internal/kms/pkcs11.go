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
	"strings"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
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
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pin, err := readPIN(cfg.PINFile)
	if err != nil {
		return nil, err
	}
	ctx, err := crypto11.Configure(&crypto11.Config{
		Path: cfg.Module, TokenLabel: cfg.Token, Pin: pin, MaxSessions: 4, GCMIVLength: 12,
	})
	if err != nil {
		return nil, pkcs11Error(cfg, err)
	}
	r := &PKCS11Root{ctx: ctx, token: cfg.Token}
	if err := r.find(cfg.keyLabel(), create); err != nil {
		return nil, errors.Join(err, ctx.Close())
	}
	return r, nil
}

// pkcs11Error says why the token could not be opened, naming the token and
// the module, never the PIN.
func pkcs11Error(cfg PKCS11Config, err error) error {
	var code pkcs11.Error
	if errors.As(err, &code) {
		switch code {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
			return fmt.Errorf("%w: token %q, PIN from %s", ErrWrongPIN, cfg.Token, cfg.PINFile)
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("kms: the PIN of PKCS#11 token %q is locked", cfg.Token)
		}
	}
	// crypto11 reports a missing token with an unexported error of this text.
	if strings.Contains(err.Error(), "could not find PKCS#11 token") {
		return fmt.Errorf("%w: %q in module %s", ErrTokenNotFound, cfg.Token, cfg.Module)
	}
	return fmt.Errorf("kms: open PKCS#11 token %q with module %s: %w", cfg.Token, cfg.Module, err)
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
	if err := r.checkKept(label, key); err != nil {
		return err
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
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(label))
	if err != nil {
		return nil, err
	}
	for t, v := range map[crypto11.AttributeType]bool{
		crypto11.CkaPrivate: true, crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
		crypto11.CkaWrap: false, crypto11.CkaUnwrap: false,
	} {
		if err := tmpl.Set(t, v); err != nil {
			return nil, err
		}
	}
	key, err := r.ctx.GenerateSecretKeyWithAttributes(tmpl, 8*RootKeySize, crypto11.CipherAES)
	if err != nil {
		return nil, fmt.Errorf("kms: generate root key %q in token %q: %w", label, r.token, err)
	}
	return key, nil
}

// checkKept refuses a key that could be, or ever could have been, read out
// of the token, or used without the PIN (not private: a session that never
// logged in may use it, and SoftHSM2 keeps it unencrypted).
func (r *PKCS11Root) checkKept(label string, key *crypto11.SecretKey) error {
	want := map[crypto11.AttributeType]bool{
		crypto11.CkaPrivate:   true,
		crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
		crypto11.CkaAlwaysSensitive: true, crypto11.CkaNeverExtractable: true,
	}
	types := make([]crypto11.AttributeType, 0, len(want))
	for t := range want {
		types = append(types, t)
	}
	attrs, err := r.ctx.GetAttributes(key, types)
	if err != nil {
		return fmt.Errorf("kms: read the attributes of key %q on token %q: %w", label, r.token, err)
	}
	for t, w := range want {
		a := attrs[t]
		if a == nil || len(a.Value) != 1 || (a.Value[0] != 0) != w {
			return fmt.Errorf("kms: the key %q on token %q was imported, can be exported or is usable without the PIN (attribute %#x is not %t): refused", label, r.token, t, w)
		}
	}
	return nil
}

// ID returns "pkcs11:" and the hex of the key's CKA_ID.
func (r *PKCS11Root) ID() string { return r.id }

// Wrap seals plain in the token.
func (r *PKCS11Root) Wrap(_ context.Context, plain, aad []byte) (out []byte, err error) {
	nonce := make([]byte, r.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("kms: nonce: %w", err)
	}
	// crypto11's Seal, bound by cipher.AEAD to return no error, panics
	// with the token's error.
	defer func() {
		if p := recover(); p != nil {
			perr, ok := p.(error)
			if !ok {
				panic(p)
			}
			out, err = nil, fmt.Errorf("kms: wrap with token %q: %w", r.token, perr)
		}
	}()
	return r.aead.Seal(nonce, nonce, plain, aad), nil
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
