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

	"github.com/iotransit/iotransit/internal/pkcs11tok"
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
	ctx, err := pkcs11tok.Open(cfg.token(), pkcs11Errors, nonceSize)
	if err != nil {
		return nil, err
	}
	return &tokenStore{ctx: ctx, token: cfg.TokenLabel}, nil
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
	if err := pkcs11tok.SetKept(private, map[crypto11.AttributeType]bool{crypto11.CkaSign: true, crypto11.CkaDerive: false}); err != nil {
		return nil, err
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

// checkKept refuses a key that could be, or ever could have been, read out
// of the token, or used without the PIN (pkcs11tok.CheckKept).
func (s *tokenStore) checkKept(what string, key any) error {
	if err := pkcs11tok.CheckKept(s.ctx, key); err != nil {
		return fmt.Errorf("keystore: the %s on token %q: %w", what, s.token, err)
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
	tmpl, err := pkcs11tok.AESTemplate([]byte(wrapID), []byte(wrapLabel))
	if err != nil {
		return nil, err
	}
	key, err := s.ctx.GenerateSecretKeyWithAttributes(tmpl, 8*wrapKeySize, crypto11.CipherAES)
	if err != nil {
		return nil, fmt.Errorf("keystore: generate the wrapping key in token %q: %w", s.token, err)
	}
	return key, nil
}

// Seal seals plaintext with the token's wrapping key, bound to aad.
func (s *tokenStore) Seal(plaintext, aad []byte) ([]byte, error) {
	aead, err := s.wrapping()
	if err != nil {
		return nil, err
	}
	return pkcs11tok.Seal(fmt.Sprintf("keystore: seal with token %q", s.token), func() ([]byte, error) {
		return seal(aead, plaintext, aad)
	})
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
