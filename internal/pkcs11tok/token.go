//go:build cgo

package pkcs11tok

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// sessions is how many sessions a caller keeps open with its token.
const sessions = 4

// Open checks cfg, reads the PIN file and logs into the token, whose
// AES-GCM uses nonces of gcmNonce bytes. An error says why, in e's terms,
// naming the token and the module, never the PIN.
func Open(cfg Config, e Errors, gcmNonce int) (*crypto11.Context, error) {
	if err := cfg.Validate(e); err != nil {
		return nil, err
	}
	pin, err := ReadPIN(e, cfg.PINFile)
	if err != nil {
		return nil, err
	}
	ctx, err := crypto11.Configure(&crypto11.Config{
		Path: cfg.Module, TokenLabel: cfg.Token, Pin: pin, MaxSessions: sessions, GCMIVLength: gcmNonce,
	})
	if err != nil {
		return nil, openError(cfg, e, err)
	}
	return ctx, nil
}

// openError says why the token could not be opened.
func openError(cfg Config, e Errors, err error) error {
	var code pkcs11.Error
	if errors.As(err, &code) {
		switch code {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
			return fmt.Errorf("%w: token %q, PIN from %s", e.WrongPIN, cfg.Token, cfg.PINFile)
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("%s: the PIN of PKCS#11 token %q is locked", e.Prefix, cfg.Token)
		}
	}
	// crypto11 reports a missing token with an unexported error of this text.
	if strings.Contains(err.Error(), "could not find PKCS#11 token") {
		return fmt.Errorf("%w: %q in module %s", e.TokenNotFound, cfg.Token, cfg.Module)
	}
	return fmt.Errorf("%s: open PKCS#11 token %q with module %s: %w", e.Prefix, cfg.Token, cfg.Module, err)
}

// SetKept makes tmpl the template of a key kept in the token: private,
// sensitive and not extractable, with the uses in use set as given.
func SetKept(tmpl crypto11.AttributeSet, use map[crypto11.AttributeType]bool) error {
	for t, v := range map[crypto11.AttributeType]bool{
		crypto11.CkaPrivate: true, crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
	} {
		if err := tmpl.Set(t, v); err != nil {
			return err
		}
	}
	for t, v := range use {
		if err := tmpl.Set(t, v); err != nil {
			return err
		}
	}
	return nil
}

// AESTemplate is the template of an AES key kept in the token for
// encryption only: it wraps and unwraps no other key.
func AESTemplate(id, label []byte) (crypto11.AttributeSet, error) {
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, label)
	if err != nil {
		return nil, err
	}
	if err := SetKept(tmpl, map[crypto11.AttributeType]bool{crypto11.CkaWrap: false, crypto11.CkaUnwrap: false}); err != nil {
		return nil, err
	}
	return tmpl, nil
}

// kept lists the attributes that make a key one that was generated in the
// token, can never leave it and needs the PIN, with the value each must
// have.
var kept = []struct {
	attr crypto11.AttributeType
	name string
	want bool
}{
	{crypto11.CkaPrivate, "CKA_PRIVATE", true},
	{crypto11.CkaSensitive, "CKA_SENSITIVE", true},
	{crypto11.CkaExtractable, "CKA_EXTRACTABLE", false},
	{crypto11.CkaAlwaysSensitive, "CKA_ALWAYS_SENSITIVE", true},
	{crypto11.CkaNeverExtractable, "CKA_NEVER_EXTRACTABLE", true},
}

// CheckKept refuses, with an error wrapping ErrNotKept that names the
// attribute, a key that could be, or ever could have been, read out of the
// token (imported, made extractable, not sensitive) or used without the
// PIN (not private: a session that never logged in may use it, and
// SoftHSM2 keeps it unencrypted). key is a crypto11 key or signer of ctx.
func CheckKept(ctx *crypto11.Context, key any) error {
	types := make([]crypto11.AttributeType, len(kept))
	for i, k := range kept {
		types[i] = k.attr
	}
	attrs, err := ctx.GetAttributes(key, types)
	if err != nil {
		return fmt.Errorf("read its attributes: %w", err)
	}
	for _, k := range kept {
		a := attrs[k.attr]
		if a == nil || len(a.Value) != 1 || (a.Value[0] != 0) != k.want {
			return fmt.Errorf("it does not have %s=%t: %w", k.name, k.want, ErrNotKept)
		}
	}
	return nil
}
