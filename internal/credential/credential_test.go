package credential

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/iotransit/iotransit/internal/backbone"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	bb, err := backbone.Start(context.Background(), backbone.Config{DataDir: t.TempDir(), Replicas: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bb.Close)
	s, err := Open(context.Background(), bb)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCredentialAPIKeyLifecycle(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	k, token, err := s.CreateAPIKey(ctx, "acme", "ci", []string{ScopeMessagesRead, ScopeMessagesRead, ScopeAuditRead}, nil, time.Hour, "operator")
	if err != nil {
		t.Fatal(err)
	}
	if k.Hash != nil || len(k.Scopes) != 2 || k.ExpiresAt == nil {
		t.Fatalf("created %+v", k)
	}
	got, err := s.VerifyAPIKey(ctx, token)
	if err != nil || got.ID != k.ID || got.Tenant != "acme" {
		t.Fatalf("verify: %+v %v", got, err)
	}
	// The stored record holds a hash, never the secret.
	kv, _ := s.bucket(ctx, "acme")
	e, _ := kv.Get(ctx, "apikey."+k.ID)
	_, secret, _ := ParseAPIKeyToken(token)
	if strings.Contains(string(e.Value()), secret) {
		t.Fatal("the secret is stored")
	}
	for name, bad := range map[string]string{
		"wrong secret":  token[:len(token)-1] + "x",
		"unknown id":    "itk_ffffffffffffffff_" + secret,
		"malformed":     "itk_nope",
		"other prefix":  "itop_" + secret,
		"truncated":     token[:len(token)-5],
		"empty":         "",
		"id only":       "itk_" + k.ID + "_",
		"tenant prefix": "acme_" + token,
	} {
		if _, err := s.VerifyAPIKey(ctx, bad); !ErrInvalid.Is(err) {
			t.Errorf("%s: %v, want credential.invalid", name, err)
		}
	}
	if _, err := s.RevokeAPIKey(ctx, "acme", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAPIKey(ctx, token); !ErrInvalid.Is(err) {
		t.Fatalf("revoked key: %v", err)
	}
	// Expiry.
	_, tok2, err := s.CreateAPIKey(ctx, "acme", "", []string{ScopeMessagesRead}, nil, time.Minute, "operator")
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if _, err := s.VerifyAPIKey(ctx, tok2); !ErrInvalid.Is(err) {
		t.Fatalf("expired key: %v", err)
	}
	// Another tenant's store view does not see the key.
	if _, err := s.APIKey(ctx, "beta", k.ID); !ErrNotFound.Is(err) {
		t.Fatalf("beta sees acme's key: %v", err)
	}
}

func TestCredentialScopeRules(t *testing.T) {
	cases := []struct {
		name            string
		requested, held []string
		want            error
	}{
		{"operator grants any", []string{ScopeAuditRead}, nil, nil},
		{"subset", []string{ScopeMessagesRead}, []string{ScopeMessagesRead, ScopeKeysWrite}, nil},
		{"escalation", []string{ScopeGatewaysWrite}, []string{ScopeKeysWrite}, ErrScopeExceeds.New()},
		{"unknown", []string{"admin"}, nil, ErrScopeInvalid.New()},
		{"none", nil, nil, ErrNoScopes.New()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckScopes(tc.requested, tc.held)
			if tc.want == nil && err != nil || tc.want != nil && !strings.Contains(errString(err), tc.want.Error()) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestCredentialClientAndTokens(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	c, secret, err := s.CreateClient(ctx, "acme", "svc", []string{ScopeMessagesRead}, nil, "operator")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyClient(ctx, c.ID, secret+"x"); !ErrInvalid.Is(err) {
		t.Fatalf("wrong secret: %v", err)
	}
	got, err := s.VerifyClient(ctx, c.ID, secret)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	iss := NewIssuer(key, "iotransit", time.Minute)
	tok, err := iss.Issue(got)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := iss.Verify(tok)
	if err != nil || claims.Tenant != "acme" || claims.Subject != c.ID || claims.Scope != ScopeMessagesRead {
		t.Fatalf("claims %+v %v", claims, err)
	}
	// Expired.
	iss.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if _, err := iss.Verify(tok); !ErrInvalid.Is(err) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	iss.now = time.Now
	// Signed by another key, with alg none, with HS256 keyed by the public
	// key (algorithm confusion), with another issuer: all refused.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	forged, _ := NewIssuer(other, "iotransit", time.Minute).Issue(got)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key.Public().(ed25519.PublicKey)))
	wrongIss, _ := NewIssuer(key, "someone-else", time.Minute).Issue(got)
	for name, bad := range map[string]string{"other key": forged, "alg none": none, "HS256 confusion": hs, "other issuer": wrongIss, "garbage": "eyJ.x.y"} {
		if _, err := iss.Verify(bad); !ErrInvalid.Is(err) {
			t.Errorf("%s accepted: %v", name, err)
		}
	}
	if _, err := s.RevokeClient(ctx, "acme", c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ActiveClient(ctx, "acme", c.ID); !ErrInvalid.Is(err) {
		t.Fatalf("revoked client active: %v", err)
	}
	if _, err := s.VerifyClient(ctx, c.ID, secret); !ErrInvalid.Is(err) {
		t.Fatalf("revoked client authenticates: %v", err)
	}
}
