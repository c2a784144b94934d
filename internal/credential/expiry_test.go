package credential

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"
)

// A key made by a creator that expires never outlives it.
func TestCredentialAPIKeyWithinCreatorExpiry(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	now := time.Now().UTC()
	s.now = func() time.Time { return now }
	notAfter := now.Add(time.Hour)
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want time.Time
	}{
		{"no ttl", 0, notAfter},
		{"longer ttl", 48 * time.Hour, notAfter},
		{"shorter ttl", 10 * time.Minute, now.Add(10 * time.Minute)},
	} {
		k, _, err := s.CreateAPIKeyWithin(ctx, "acme", tc.name, []string{ScopeMessagesRead}, nil, tc.ttl, notAfter, "apikey:x")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if k.ExpiresAt == nil || !k.ExpiresAt.Equal(tc.want) {
			t.Errorf("%s: expires %v, want %v", tc.name, k.ExpiresAt, tc.want)
		}
	}
	// No bound: as CreateAPIKey.
	if k, _, err := s.CreateAPIKeyWithin(ctx, "acme", "", []string{ScopeMessagesRead}, nil, 0, time.Time{}, "operator"); err != nil || k.ExpiresAt != nil {
		t.Errorf("unbounded: %+v %v", k, err)
	}
	// A creator already expired makes nothing; ttl is still validated.
	if _, _, err := s.CreateAPIKeyWithin(ctx, "acme", "", []string{ScopeMessagesRead}, nil, 0, now, "apikey:x"); !ErrCreatorExpired.Is(err) {
		t.Errorf("expired creator: %v", err)
	}
	if _, _, err := s.CreateAPIKeyWithin(ctx, "acme", "", []string{ScopeMessagesRead}, nil, time.Second, notAfter, "apikey:x"); !ErrTTLInvalid.Is(err) {
		t.Errorf("bad ttl: %v", err)
	}
}

// A client made by a creator that expires expires with it: it then gets no
// tokens, its tokens stop, and the tokens it gets end no later.
func TestCredentialClientWithinCreatorExpiry(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	now := time.Now().UTC()
	s.now = func() time.Time { return now }
	notAfter := now.Add(5 * time.Minute)
	c, secret, err := s.CreateClientWithin(ctx, "acme", "svc", []string{ScopeMessagesRead}, nil, 0, notAfter, "apikey:x")
	if err != nil {
		t.Fatal(err)
	}
	if c.ExpiresAt == nil || !c.ExpiresAt.Equal(notAfter) {
		t.Fatalf("client expires %v, want %v", c.ExpiresAt, notAfter)
	}
	got, err := s.VerifyClient(ctx, c.ID, secret)
	if err != nil || got.ExpiresAt == nil {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if _, err := s.ActiveClient(ctx, "acme", c.ID); err != nil {
		t.Fatalf("active: %v", err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	iss := NewIssuer(key, "iotransit", 15*time.Minute)
	iss.now = func() time.Time { return now }
	tok, err := iss.Issue(got)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := iss.Verify(tok)
	if err != nil || claims.ExpiresAt == nil || claims.ExpiresAt.After(notAfter) {
		t.Fatalf("token exp %v, client expires %v: %v", claims.ExpiresAt, notAfter, err)
	}

	s.now = func() time.Time { return notAfter }
	if _, err := s.VerifyClient(ctx, c.ID, secret); !ErrInvalid.Is(err) {
		t.Errorf("expired client authenticates: %v", err)
	}
	if _, err := s.ActiveClient(ctx, "acme", c.ID); !ErrInvalid.Is(err) {
		t.Errorf("expired client active: %v", err)
	}
	// Unbounded clients do not expire.
	s.now = func() time.Time { return now }
	u, _, err := s.CreateClient(ctx, "acme", "", []string{ScopeMessagesRead}, nil, "operator")
	if err != nil || u.ExpiresAt != nil {
		t.Fatalf("unbounded client: %+v %v", u, err)
	}
	if _, _, err := s.CreateClientWithin(ctx, "acme", "", []string{ScopeMessagesRead}, nil, 0, now, "apikey:x"); !ErrCreatorExpired.Is(err) {
		t.Errorf("expired creator: %v", err)
	}
}
