//go:build cgo

package keystore

import (
	"bytes"
	"cmp"
	"crypto"
	"crypto/cipher"
	"crypto/elliptic"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// The token store's objects. Identity keys carry the identity label and an
// id naming their generation; the current key is the oldest generation on
// the token and the next key the one after it, so that Promote is a single
// destroy of the oldest key: a crash leaves either the old state or the new
// one, never a token without an identity.
const (
	identityLabel    = "iotransit-identity"
	identityIDPrefix = "iotransit-identity-"
	wrapLabel        = "iotransit-wrap"
	wrapID           = "iotransit-wrap-1"
	tokenSessions    = 4
)

// tokenStore keeps the keys inside a PKCS#11 token through crypto11: an
// ECDSA P-256 identity generated in the token, sensitive and never
// extractable, that signs there; and an AES-256 wrapping key, likewise,
// whose GCM runs in the token.
type tokenStore struct {
	ctx   *crypto11.Context
	token string // the token's label, for errors

	mu        sync.Mutex
	aead      cipher.AEAD // the wrapping key's GCM, found on first use
	closeOnce sync.Once
}

// tokenKey is an identity key on the token and its generation.
type tokenKey struct {
	gen    uint64
	signer crypto11.Signer
}

// OpenPKCS11 logs into the token cfg names with the PIN in cfg.PINFile.
// Keys are made on first use.
func OpenPKCS11(cfg PKCS11Config) (Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pin, err := readPIN(cfg.PINFile)
	if err != nil {
		return nil, err
	}
	ctx, err := crypto11.Configure(&crypto11.Config{
		Path:        cfg.Module,
		TokenLabel:  cfg.TokenLabel,
		Pin:         pin,
		MaxSessions: tokenSessions,
		GCMIVLength: nonceSize,
	})
	if err != nil {
		return nil, configureError(cfg, err)
	}
	return &tokenStore{ctx: ctx, token: cfg.TokenLabel}, nil
}

// configureError says why the token could not be opened, naming the token
// and the module, never the PIN.
func configureError(cfg PKCS11Config, err error) error {
	var code pkcs11.Error
	if errors.As(err, &code) {
		switch code {
		case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
			return fmt.Errorf("%w: token %q, PIN from %s", ErrWrongPIN, cfg.TokenLabel, cfg.PINFile)
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("keystore: the PIN of PKCS#11 token %q is locked", cfg.TokenLabel)
		}
	}
	// crypto11 reports a missing token with an unexported error of this text.
	if strings.Contains(err.Error(), "could not find PKCS#11 token") {
		return fmt.Errorf("%w: %q in module %s", ErrTokenNotFound, cfg.TokenLabel, cfg.Module)
	}
	return fmt.Errorf("keystore: open PKCS#11 token %q with module %s: %w", cfg.TokenLabel, cfg.Module, err)
}

// Identity returns the identity key, generating it in the token on first
// use.
func (s *tokenStore) Identity() (crypto.Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, err := s.identities()
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return s.generate(1)
	}
	return keys[0].signer, nil
}

// Next returns the next identity key, or an error wrapping ErrNoKey.
func (s *tokenStore) Next() (crypto.Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, err := s.identities()
	if err != nil {
		return nil, err
	}
	if len(keys) < 2 {
		return nil, fmt.Errorf("%w: no next identity key on token %q", ErrNoKey, s.token)
	}
	return keys[1].signer, nil
}

// CreateNext returns the next identity key, generating it when there is
// none.
func (s *tokenStore) CreateNext() (crypto.Signer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, err := s.identities()
	if err != nil {
		return nil, err
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("%w: no identity key on token %q to renew", ErrNoKey, s.token)
	case 1:
		return s.generate(keys[0].gen + 1)
	default:
		return keys[1].signer, nil
	}
}

// Promote destroys the current identity key, which makes the next one
// current.
func (s *tokenStore) Promote() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, err := s.identities()
	if err != nil {
		return err
	}
	if len(keys) < 2 {
		return fmt.Errorf("%w: no next identity key on token %q to promote", ErrNoKey, s.token)
	}
	if err := keys[0].signer.Delete(); err != nil {
		return fmt.Errorf("keystore: destroy the old identity key on token %q: %w", s.token, err)
	}
	return nil
}

// DiscardNext destroys the next identity key, if there is one.
func (s *tokenStore) DiscardNext() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, err := s.identities()
	if err != nil || len(keys) < 2 {
		return err
	}
	if err := keys[1].signer.Delete(); err != nil {
		return fmt.Errorf("keystore: destroy the next identity key on token %q: %w", s.token, err)
	}
	return nil
}

// identities returns the identity keys on the token, oldest generation
// first; each must have been generated there and be unexportable.
func (s *tokenStore) identities() ([]tokenKey, error) {
	signers, err := s.ctx.FindKeyPairs(nil, []byte(identityLabel))
	if err != nil {
		return nil, fmt.Errorf("keystore: find the identity keys on token %q: %w", s.token, err)
	}
	keys := make([]tokenKey, 0, len(signers))
	for _, sg := range signers {
		id, err := s.ctx.GetAttribute(sg, crypto11.CkaId)
		if err != nil {
			return nil, fmt.Errorf("keystore: identity key on token %q: %w", s.token, err)
		}
		gen, ok := parseIdentityID(id.Value)
		if !ok {
			return nil, fmt.Errorf("keystore: token %q holds an identity key with the foreign id %q: refused", s.token, id.Value)
		}
		if err := s.checkKept("identity key", sg); err != nil {
			return nil, err
		}
		if err := checkIdentityKey(sg.Public()); err != nil {
			return nil, fmt.Errorf("%w (token %q)", err, s.token)
		}
		keys = append(keys, tokenKey{gen: gen, signer: sg})
	}
	if len(keys) > 2 {
		return nil, fmt.Errorf("keystore: token %q holds %d identity keys, at most 2 (current and next) expected", s.token, len(keys))
	}
	slices.SortFunc(keys, func(a, b tokenKey) int { return cmp.Compare(a.gen, b.gen) })
	return keys, nil
}

// identityID is the id of the identity key of generation gen.
func identityID(gen uint64) []byte {
	return fmt.Appendf(nil, "%s%016x", identityIDPrefix, gen)
}

// parseIdentityID returns the generation an identity key's id names.
func parseIdentityID(id []byte) (uint64, bool) {
	hex, ok := strings.CutPrefix(string(id), identityIDPrefix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	gen, err := strconv.ParseUint(hex, 16, 64)
	return gen, err == nil
}

// generate makes the identity key of generation gen in the token: private,
// sensitive and not extractable, which the token then reports back.
func (s *tokenStore) generate(gen uint64) (crypto.Signer, error) {
	public, err := crypto11.NewAttributeSetWithIDAndLabel(identityID(gen), []byte(identityLabel))
	if err != nil {
		return nil, err
	}
	private := public.Copy()
	for t, v := range map[crypto11.AttributeType]bool{
		crypto11.CkaPrivate: true, crypto11.CkaSensitive: true, crypto11.CkaExtractable: false,
		crypto11.CkaSign: true, crypto11.CkaDerive: false,
	} {
		if err := private.Set(t, v); err != nil {
			return nil, err
		}
	}
	sg, err := s.ctx.GenerateECDSAKeyPairWithAttributes(public, private, elliptic.P256())
	if err != nil {
		return nil, fmt.Errorf("keystore: generate the identity key in token %q: %w", s.token, err)
	}
	if err := s.checkKept("identity key", sg); err != nil {
		return nil, errors.Join(err, sg.Delete())
	}
	return sg, nil
}

// kept lists the attributes that make a key one that was generated in the
// token and can never leave it, with the value each must have.
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

// checkKept refuses a key that could be, or ever could have been, read out
// of the token: one imported, made extractable, or not sensitive.
func (s *tokenStore) checkKept(what string, key any) error {
	types := make([]crypto11.AttributeType, len(kept))
	for i, k := range kept {
		types[i] = k.attr
	}
	attrs, err := s.ctx.GetAttributes(key, types)
	if err != nil {
		return fmt.Errorf("keystore: read the attributes of the %s on token %q: %w", what, s.token, err)
	}
	for _, k := range kept {
		a := attrs[k.attr]
		if a == nil || len(a.Value) != 1 || (a.Value[0] != 0) != k.want {
			return fmt.Errorf("keystore: the %s on token %q does not have %s=%t: a key that was imported or could be exported is refused", what, s.token, k.name, k.want)
		}
	}
	return nil
}

// wrapping returns the GCM of the wrapping key, generating the key in the
// token on first use.
func (s *tokenStore) wrapping() (cipher.AEAD, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead != nil {
		return s.aead, nil
	}
	keys, err := s.ctx.FindKeys(nil, []byte(wrapLabel))
	if err != nil {
		return nil, fmt.Errorf("keystore: find the wrapping key on token %q: %w", s.token, err)
	}
	var key *crypto11.SecretKey
	switch len(keys) {
	case 0:
		if key, err = s.generateWrapping(); err != nil {
			return nil, err
		}
	case 1:
		key = keys[0]
	default:
		return nil, fmt.Errorf("keystore: token %q holds %d wrapping keys, 1 expected", s.token, len(keys))
	}
	if err := s.checkKept("wrapping key", key); err != nil {
		return nil, err
	}
	if key.Cipher != crypto11.CipherAES {
		return nil, fmt.Errorf("keystore: the wrapping key on token %q is not an AES key", s.token)
	}
	aead, err := key.NewGCM()
	if err != nil {
		return nil, fmt.Errorf("keystore: AES-GCM with token %q: %w", s.token, err)
	}
	s.aead = aead
	return aead, nil
}

// generateWrapping makes the AES-256 wrapping key in the token: private,
// sensitive, not extractable, for encryption only (it wraps no other key).
func (s *tokenStore) generateWrapping() (*crypto11.SecretKey, error) {
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel([]byte(wrapID), []byte(wrapLabel))
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
	key, err := s.ctx.GenerateSecretKeyWithAttributes(tmpl, 8*wrapKeySize, crypto11.CipherAES)
	if err != nil {
		return nil, fmt.Errorf("keystore: generate the wrapping key in token %q: %w", s.token, err)
	}
	return key, nil
}

// Seal seals plaintext with the token's wrapping key, bound to aad.
func (s *tokenStore) Seal(plaintext, aad []byte) (sealed []byte, err error) {
	aead, err := s.wrapping()
	if err != nil {
		return nil, err
	}
	// crypto11's Seal, bound by cipher.AEAD to return no error, panics
	// with the token's error.
	defer func() {
		if r := recover(); r != nil {
			perr, ok := r.(error)
			if !ok {
				panic(r)
			}
			sealed, err = nil, fmt.Errorf("keystore: seal with token %q: %w", s.token, perr)
		}
	}()
	return seal(aead, plaintext, aad)
}

// Open opens what Seal sealed with the same aad, in the token.
func (s *tokenStore) Open(sealed, aad []byte) ([]byte, error) {
	plaintext, err := s.open(sealed, aad)
	if err == nil || errors.Is(err, ErrNotAuthentic) {
		return plaintext, err
	}
	if !s.works() {
		return nil, fmt.Errorf("keystore: open with token %q: %w", s.token, err)
	}
	return nil, ErrNotAuthentic
}

// open opens sealed in the token; a refusal of the token comes as its
// error.
func (s *tokenStore) open(sealed, aad []byte) ([]byte, error) {
	aead, err := s.wrapping()
	if err != nil {
		return nil, err
	}
	return openSealed(aead, sealed, aad)
}

// probe is what works seals and opens.
var probe = []byte("iotransit keystore probe")

// works reports whether the token seals and opens a probe. A token refuses
// a sealed secret that does not authenticate with an error code of its own
// choosing (SoftHSM2: CKR_GENERAL_ERROR), the code a failing token gives
// too: after a refusal, a working token means the secret is at fault, so
// that a caller never takes a token failure for changed data, nor the
// reverse.
func (s *tokenStore) works() bool {
	sealed, err := s.Seal(probe, probe)
	if err != nil {
		return false
	}
	got, err := s.open(sealed, probe)
	return err == nil && bytes.Equal(got, probe)
}

// Close logs out of the token and unloads the module when no other store
// uses it.
func (s *tokenStore) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.ctx.Close() })
	return err
}
