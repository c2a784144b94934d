package credential

import (
	"crypto/ed25519"
	"errors"
	"strings"
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

// Issuer signs and verifies access tokens (EdDSA, Ed25519).
type Issuer struct {
	key    ed25519.PrivateKey
	issuer string
	ttl    time.Duration
	now    func() time.Time
}

// NewIssuer returns an issuer of tokens living ttl (default 15 minutes).
func NewIssuer(key ed25519.PrivateKey, issuer string, ttl time.Duration) *Issuer {
	if ttl == 0 {
		ttl = 15 * time.Minute
	}
	return &Issuer{key: key, issuer: issuer, ttl: ttl, now: time.Now}
}

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
	return jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(i.key)
}

// IsJWT reports whether a bearer token has the JWT form.
func IsJWT(token string) bool {
	return strings.Count(token, ".") == 2 && strings.HasPrefix(token, "eyJ")
}

// Verify checks a token's signature (EdDSA only), issuer, audience and
// times, and returns its claims.
func (i *Issuer) Verify(token string) (Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) {
		return i.key.Public(), nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(i.issuer),
		jwt.WithAudience(i.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(i.now),
	)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Claims{}, ErrInvalid.WithDetail("the token has expired")
		}
		return Claims{}, ErrInvalid.Wrap(err)
	}
	if c.Tenant == "" || c.Subject == "" {
		return Claims{}, ErrInvalid.New()
	}
	return c, nil
}
