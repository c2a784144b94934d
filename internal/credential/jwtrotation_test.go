package credential

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/iotransit/iotransit/client"
)

func newTestKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// tokenKID returns the "kid" header of a token ("" when absent).
func tokenKID(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	kid, _ := h["kid"].(string)
	return kid
}

// TestJWTKeyRotation issues tokens under key 1, rotates to key 2, and
// checks which tokens verify: old tokens until they could have expired,
// new ones carrying the new kid, none naming an unknown kid.
func TestJWTKeyRotation(t *testing.T) {
	now := time.Now().UTC()
	k1, k2, forger := newTestKey(t), newTestKey(t), newTestKey(t)
	iss := NewIssuer(k1, "iotransit", 15*time.Minute)
	iss.now = func() time.Time { return now }
	pub := func(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }
	cl := Client{OAuth2Client: client.OAuth2Client{ID: "c1", Tenant: "acme", Scopes: []string{ScopeMessagesRead}}}

	noKID, err := iss.Issue(cl) // before key ids existed
	if err != nil {
		t.Fatal(err)
	}
	iss.SetKeys("k1", k1, VerifyKey{ID: "k1", Public: pub(k1), NoKID: true})
	old, err := iss.Issue(cl)
	if err != nil || tokenKID(t, old) != "k1" {
		t.Fatalf("token before rotation: kid %q, %v", tokenKID(t, old), err)
	}
	iss.SetKeys("k2", k2, VerifyKey{ID: "k1", Public: pub(k1), NoKID: true, RetiredAt: now}, VerifyKey{ID: "k2", Public: pub(k2)})
	fresh, err := iss.Issue(cl)
	if err != nil || tokenKID(t, fresh) != "k2" {
		t.Fatalf("token after rotation: kid %q, %v", tokenKID(t, fresh), err)
	}
	forge := func(kid string, key ed25519.PrivateKey, at time.Time) string {
		claims := Claims{Tenant: "acme", Scope: ScopeMessagesRead, RegisteredClaims: jwt.RegisteredClaims{
			Issuer: "iotransit", Subject: "c1", Audience: jwt.ClaimStrings{"iotransit"},
			IssuedAt: jwt.NewNumericDate(at), ExpiresAt: jwt.NewNumericDate(at.Add(10 * time.Minute)),
		}}
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	cases := []struct {
		name  string
		token string
		at    time.Time
		ok    bool
	}{
		{name: "a token of the old key before its expiry", token: old, at: now.Add(14 * time.Minute), ok: true},
		{name: "a token of the old key once expired", token: old, at: now.Add(16 * time.Minute), ok: false},
		{name: "a token without kid from before rotation", token: noKID, at: now.Add(time.Minute), ok: true},
		{name: "a token of the new key", token: fresh, at: now.Add(14 * time.Minute), ok: true},
		{name: "an unknown kid", token: forge("f00d", forger, now), at: now, ok: false},
		{name: "a known kid on a token the key did not sign", token: forge("k2", forger, now), at: now, ok: false},
		{name: "no kid, signed by another key", token: forge("", forger, now), at: now, ok: false},
		{name: "the old key's token in its window", token: forge("k1", k1, now.Add(10*time.Minute)), at: now.Add(15 * time.Minute), ok: true},
		{name: "the old key's token past its window", token: forge("k1", k1, now.Add(10*time.Minute)), at: now.Add(16 * time.Minute), ok: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			iss.now = func() time.Time { return tc.at }
			_, err := iss.Verify(tc.token)
			if (err == nil) != tc.ok {
				t.Fatalf("verify: %v, want ok %v", err, tc.ok)
			}
			if err != nil && !ErrInvalid.Is(err) {
				t.Fatalf("error %v is not %s", err, ErrInvalid.Code())
			}
		})
	}
}
