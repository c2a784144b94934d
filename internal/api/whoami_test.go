package api_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/credential"
)

// whoAmI is the answer of GET /v1/whoami.
type whoAmI struct {
	Kind      string     `json:"kind"`
	ID        string     `json:"id"`
	Tenant    *string    `json:"tenant"`
	Scopes    *[]string  `json:"scopes"`
	ExpiresAt *time.Time `json:"expiresAt"`
}

// TestAPIWhoAmI asks GET /v1/whoami with each kind of bearer credential:
// each learns its kind, id, tenant, scopes and expiry (the operator no
// tenant and no scopes: all), and never a secret.
func TestAPIWhoAmI(t *testing.T) {
	w := newWorld(t)
	type created struct {
		Key, ID   string
		ExpiresAt *time.Time
	}
	mint := func(body map[string]any) created {
		t.Helper()
		r := w.api.Do("POST", "/v1/tenants/acme/api-keys", w.api.Key(), body)
		if r.Status != 201 {
			t.Fatalf("create key: %d %s", r.Status, r.Body)
		}
		var k created
		r.Decode(t, &k)
		return k
	}
	forever := mint(map[string]any{"scopes": []string{credential.ScopeGatewaysRead, credential.ScopeAuditRead}})
	expiring := mint(map[string]any{"scopes": []string{credential.ScopeMeshRead}, "ttl": "2h"})
	cid, secret := clientWithSecret(t, w, "beta", []string{credential.ScopeAuditRead, credential.ScopeMessagesRead})
	tok := accessToken(t, w, cid, secret)
	secrets := []string{w.api.Key(), forever.Key, expiring.Key, secret, tok}
	for _, k := range []string{forever.Key, expiring.Key} {
		_, s, _ := credential.ParseAPIKeyToken(k)
		secrets = append(secrets, s)
	}

	tests := []struct {
		name, bearer string
		want         whoAmI
		// expires is when the credential should stop working (zero: never),
		// give or take a minute.
		expires time.Time
	}{
		{name: "operator key", bearer: w.api.Key(), want: whoAmI{Kind: "operator", ID: "operator"}},
		{name: "API key", bearer: forever.Key,
			want: whoAmI{Kind: "apikey", ID: forever.ID, Tenant: ptr("acme"), Scopes: ptr([]string{credential.ScopeGatewaysRead, credential.ScopeAuditRead})}},
		{name: "expiring API key", bearer: expiring.Key, expires: *expiring.ExpiresAt,
			want: whoAmI{Kind: "apikey", ID: expiring.ID, Tenant: ptr("acme"), Scopes: ptr([]string{credential.ScopeMeshRead})}},
		// An access token stops working when it expires (15 minutes).
		{name: "OAuth2 access token", bearer: tok, expires: time.Now().Add(15 * time.Minute),
			want: whoAmI{Kind: "oauth2", ID: cid, Tenant: ptr("beta"), Scopes: ptr([]string{credential.ScopeAuditRead, credential.ScopeMessagesRead})}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := w.api.Do("GET", "/v1/whoami", tc.bearer, nil)
			if r.Status != 200 {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			for _, s := range secrets {
				if strings.Contains(string(r.Body), s) {
					t.Fatalf("the answer holds a secret: %s", r.Body)
				}
			}
			var got whoAmI
			r.Decode(t, &got)
			if got.Kind != tc.want.Kind || got.ID != tc.want.ID || !same(got.Tenant, tc.want.Tenant) {
				t.Errorf("got kind %q id %q tenant %v, want %q %q %v: %s", got.Kind, got.ID, got.Tenant, tc.want.Kind, tc.want.ID, tc.want.Tenant, r.Body)
			}
			if (got.Scopes == nil) != (tc.want.Scopes == nil) || got.Scopes != nil && !slices.Equal(slices.Sorted(slices.Values(*got.Scopes)), slices.Sorted(slices.Values(*tc.want.Scopes))) {
				t.Errorf("scopes: %s, want %v", r.Body, tc.want.Scopes)
			}
			switch {
			case tc.expires.IsZero() && got.ExpiresAt != nil:
				t.Errorf("a credential that does not expire has expiresAt: %s", r.Body)
			case !tc.expires.IsZero() && (got.ExpiresAt == nil || got.ExpiresAt.Sub(tc.expires).Abs() > time.Minute):
				t.Errorf("expiresAt %v, want about %v", got.ExpiresAt, tc.expires)
			}
		})
	}
}

// TestAPIWhoAmIExpiredToken: an access token past its expiry gets 401 from
// GET /v1/whoami (an API server whose issuer the test holds, so that it
// can issue a token of a client that has expired; API keys and clients
// live at least a minute).
func TestAPIWhoAmIExpiredToken(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := credential.NewIssuer(key, "iotransit", 0)
	s, err := api.New(api.Config{Addr: "127.0.0.1:0", OperatorKey: strings.Repeat("k", 32)},
		&tls.Config{MinVersion: tls.VersionTLS12}, api.Deps{Tokens: iss}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { _ = s.Close() })
	past := time.Now().Add(-time.Second)
	var c credential.Client
	c.ID, c.Tenant, c.Scopes = "itc_0123456789abcdef", "acme", []string{credential.ScopeAuditRead}
	live, err := iss.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	c.ExpiresAt = &past
	expired, err := iss.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Verify(live); err != nil {
		t.Fatalf("the issuer refuses its own live token: %v", err)
	}
	req := httptest.NewRequest("GET", "/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+expired)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "api.unauthenticated") {
		t.Fatalf("an expired token: %d %s", rec.Code, rec.Body)
	}
}

func ptr[T any](v T) *T { return &v }

func same(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }
