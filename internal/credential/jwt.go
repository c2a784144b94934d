package credential

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the claims of an access token.
type Claims struct {
	Tenant string `json:"tenant"`
	Scope  string `json:"scope"` // space-separated, RFC 8693 §4.2 / RFC 9068
	jwt.RegisteredClaims
}

// Scopes returns the token's scopes.
func (c Claims) Scopes() []string { return strings.Fields(c.Scope) }

// Issuer signs and verifies access tokens (EdDSA, Ed25519). Its keys can
// be rotated (SetKeys): tokens carry the id of the key that signed them
// (JWS "kid"), and a retired key verifies the tokens it signed until they
// expire.
type Issuer struct {
	keys atomic.Pointer[jwtKeys]
	// unknown, when set, is called before a token naming an unknown key
	// id is refused (OnUnknownKey).
	unknown atomic.Pointer[func()]
	issuer  string
	ttl     time.Duration
	now     func() time.Time
}

// VerifyKey is a public key an Issuer accepts tokens of.
type VerifyKey struct {
	// ID is the key id tokens name in their "kid" header.
	ID     string
	Public ed25519.PublicKey
	// RetiredAt is when a newer key replaced it (zero: the current key).
	// A retired key verifies tokens only while a token it signed can still
	// be unexpired: until RetiredAt plus the issuer's ttl (and a minute).
	RetiredAt time.Time
	// NoKID makes the key verify tokens without a "kid" header too (those
	// issued before tokens carried one, all signed by the first key).
	NoKID bool
}

type jwtKeys struct {
	id     string
	signer ed25519.PrivateKey
	byID   map[string]VerifyKey
	noKID  *VerifyKey
}

// NewIssuer returns an issuer of tokens living ttl (default 15 minutes),
// signed by key; until SetKeys names it, the key has no id and its tokens
// carry none.
func NewIssuer(key ed25519.PrivateKey, issuer string, ttl time.Duration) *Issuer {
	if ttl == 0 {
		ttl = 15 * time.Minute
	}
	i := &Issuer{issuer: issuer, ttl: ttl, now: time.Now}
	i.SetKeys("", key, VerifyKey{Public: key.Public().(ed25519.PublicKey), NoKID: true})
	return i
}

// SetKeys makes key, with id, the key new tokens are signed with, and
// known (which should hold key's own entry too) the keys tokens are
// verified with. A token naming a key id outside them is refused.
func (i *Issuer) SetKeys(id string, key ed25519.PrivateKey, known ...VerifyKey) {
	ks := &jwtKeys{id: id, signer: key, byID: map[string]VerifyKey{}}
	for _, k := range known {
		if k.ID != "" {
			ks.byID[k.ID] = k
		}
		if k.NoKID {
			ks.noKID = &k
		}
	}
	if _, ok := ks.byID[id]; !ok && id != "" {
		ks.byID[id] = VerifyKey{ID: id, Public: key.Public().(ed25519.PublicKey)}
	}
	i.keys.Store(ks)
}

// OnUnknownKey makes the issuer call fn before it refuses a token that
// names a key id it does not know: fn may read key versions made elsewhere
// meanwhile and hand them over (SetKeys), and the token is checked again.
// fn runs for unauthenticated tokens: it must bound its own rate.
func (i *Issuer) OnUnknownKey(fn func()) { i.unknown.Store(&fn) }

// TTL returns the lifetime of issued tokens.
func (i *Issuer) TTL() time.Duration { return i.ttl }

// Issue signs a token for the client with its scopes. It expires after
// the issuer's ttl, or when the client does if that is sooner.
func (i *Issuer) Issue(c Client) (string, error) {
	now := i.now()
	exp := now.Add(i.ttl)
	if c.ExpiresAt != nil && c.ExpiresAt.Before(exp) {
		exp = *c.ExpiresAt
	}
	jti, err := randomHex(12)
	if err != nil {
		return "", err
	}
	claims := Claims{
		Tenant: c.Tenant,
		Scope:  strings.Join(c.Scopes, " "),
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.issuer,
			Subject:   c.ID,
			Audience:  jwt.ClaimStrings{i.issuer},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        jti,
		},
	}
	ks := i.keys.Load()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	if ks.id != "" {
		tok.Header["kid"] = ks.id
	}
	return tok.SignedString(ks.signer)
}

// IsJWT reports whether a bearer token has the JWT form.
func IsJWT(token string) bool {
	return strings.Count(token, ".") == 2 && strings.HasPrefix(token, "eyJ")
}

// retiredGrace is how much longer than the token lifetime a retired key
// verifies: other nodes sign with it until they read the rotation (within a
// second), and clocks differ.
const retiredGrace = time.Minute

// errUnknownKey and errRetiredKey are why a token's key is refused.
const (
	unknownKeyText = "the token names an unknown signing key"
	retiredKeyText = "the token's signing key was retired"
)

var (
	errUnknownKey = errors.New(unknownKeyText)
	errRetiredKey = errors.New(retiredKeyText)
)

// verifyKey returns the public key that must have signed tok: the one its
// "kid" names, or the first key for a token without one.
func (i *Issuer) verifyKey(tok *jwt.Token) (any, error) {
	ks := i.keys.Load()
	var k VerifyKey
	switch kid, present := tok.Header["kid"]; {
	case !present:
		if ks.noKID == nil {
			return nil, errUnknownKey
		}
		k = *ks.noKID
	default:
		s, _ := kid.(string)
		if s == "" {
			return nil, errUnknownKey
		}
		var ok bool
		if k, ok = ks.byID[s]; !ok {
			if fn := i.unknown.Load(); fn != nil {
				(*fn)() // a version made on another node, not read yet
				k, ok = i.keys.Load().byID[s]
			}
			if !ok {
				return nil, errUnknownKey
			}
		}
	}
	if !k.RetiredAt.IsZero() && !i.now().Before(k.RetiredAt.Add(i.ttl+retiredGrace)) {
		return nil, errRetiredKey
	}
	return k.Public, nil
}

// Verify checks a token's signature (EdDSA only, by the key its "kid"
// names), issuer, audience and times, and returns its claims.
func (i *Issuer) Verify(token string) (Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, i.verifyKey,
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(i.issuer),
		jwt.WithAudience(i.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(i.now),
	)
	if err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			return Claims{}, ErrInvalid.WithDetail("the token has expired")
		case errors.Is(err, errUnknownKey):
			return Claims{}, ErrInvalid.WithDetail(unknownKeyText)
		case errors.Is(err, errRetiredKey):
			return Claims{}, ErrInvalid.WithDetail(retiredKeyText)
		}
		return Claims{}, ErrInvalid.Wrap(err)
	}
	if c.Tenant == "" || c.Subject == "" {
		return Claims{}, ErrInvalid.New()
	}
	return c, nil
}
