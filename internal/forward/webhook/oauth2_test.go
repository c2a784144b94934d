package webhook_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/forward/webhook"
)

func TestWebhookOAuth2CachesAndRefreshesToken(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	ts := newTokenServer(t, ca, "iotransit", "s3cr3t/+&=", 1)
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	var unauthorized atomic.Int64
	rc.setRespond(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if ts.requireToken(w, r, n) {
			unauthorized.Add(1)
			return true
		}
		return false
	})
	c := config(rc.URL, ca, secret)
	c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2, TokenURL: ts.URL, ClientID: "iotransit", ClientSecret: "s3cr3t/+&=", Scopes: []string{"ingest.write", "telemetry"}}
	tg := newTarget(t, c)

	for range 3 {
		if err := tg.Deliver(context.Background(), newBatch("batch_oauth", thingsee...)); err != nil {
			t.Fatalf("Deliver: %v", err)
		}
	}
	if n := ts.requests.Load(); n != 1 {
		t.Errorf("%d token requests for 3 deliveries within the token's life, want 1", n)
	}
	ts.mu.Lock()
	scopes := ts.scopes
	ts.mu.Unlock()
	if !slices.Equal(scopes, []string{"ingest.write", "telemetry"}) {
		t.Errorf("scopes %q", scopes)
	}

	// Deliver across the 1s expiry until a second token has been fetched.
	deadline := time.Now().Add(5 * time.Second)
	for ts.requests.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no new token after the first expired")
		}
		if err := tg.Deliver(context.Background(), newBatch("batch_oauth", thingsee...)); err != nil {
			t.Fatalf("Deliver: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := unauthorized.Load(); n != 0 {
		t.Errorf("%d requests went out with an expired token", n)
	}
	if n := ts.requests.Load(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
	for i, d := range rc.deliveries() {
		if !d.Verified {
			t.Errorf("request %d not verified", i)
		}
	}
}

func TestWebhookOAuth2RefetchesRevokedTokenAndRetriesOnce(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	ts := newTokenServer(t, ca, "iotransit", "pw", 3600)
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	rc.setRespond(ts.requireToken)
	c := config(rc.URL, ca, secret)
	c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2, TokenURL: ts.URL, ClientID: "iotransit", ClientSecret: "pw"}
	tg := newTarget(t, c)

	if err := tg.Deliver(context.Background(), newBatch("batch_revoke", thingsee[0])); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	ts.revokeAll()
	if err := tg.Deliver(context.Background(), newBatch("batch_revoke", thingsee[0])); err != nil {
		t.Fatalf("Deliver after revocation: %v", err)
	}
	if n := ts.requests.Load(); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
	got := rc.deliveries()
	if len(got) != 3 {
		t.Fatalf("%d requests, want 3 (ok, 401, retry)", len(got))
	}
	if got[1].Header.Get("Authorization") == got[2].Header.Get("Authorization") {
		t.Error("the retry reused the refused token")
	}
	if got[1].Header.Get("webhook-id") != got[2].Header.Get("webhook-id") || !got[2].Verified {
		t.Error("the retry is not the same, signed, webhook")
	}

	// A receiver that refuses every token: one retry, then HTTP 401.
	rc.setRespond(func(w http.ResponseWriter, _ *http.Request, _ int) bool {
		w.WriteHeader(http.StatusUnauthorized)
		return true
	})
	err := tg.Deliver(context.Background(), newBatch("batch_revoke", thingsee[0]))
	if s := summary(t, err); s != "HTTP 401" {
		t.Errorf("%q, want HTTP 401", s)
	}
	if n := ts.requests.Load(); n != 3 {
		t.Errorf("%d token requests, want 3", n)
	}
	if n := len(rc.deliveries()); n != 5 {
		t.Errorf("%d requests, want 5", n)
	}

	// The token endpoint failing: a delivery error, no request.
	ts.mu.Lock()
	ts.failNext = true
	ts.mu.Unlock()
	ts.revokeAll()
	rc.setRespond(ts.requireToken)
	err = tg.Deliver(context.Background(), newBatch("batch_revoke", thingsee[0]))
	if s := summary(t, err); s != "OAuth2 token request failed" {
		t.Errorf("%q (%v), want OAuth2 token request failed", s, err)
	}
}

func TestWebhookOAuth2SharesTokenAcrossConcurrentDeliveries(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	ts := newTokenServer(t, ca, "iotransit", "pw", 3600)
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	rc.setRespond(ts.requireToken)
	c := config(rc.URL, ca, secret)
	c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2, TokenURL: ts.URL, ClientID: "iotransit", ClientSecret: "pw"}
	tg := newTarget(t, c)

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 8 {
		wg.Go(func() {
			for range 5 {
				errs <- tg.Deliver(context.Background(), newBatch("batch_conc", thingsee...))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := ts.requests.Load(); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
	if n := len(rc.deliveries()); n != 40 {
		t.Errorf("%d requests, want 40", n)
	}
}

// TestWebhookOAuth2TokenEndpointHasItsOwnCA: a token server whose CA is not
// the receiver's is refused unless auth.tokenCaPem names its CA.
func TestWebhookOAuth2TokenEndpointHasItsOwnCA(t *testing.T) {
	receiverCA, idpCA := newCA(t, "receiver CA"), newCA(t, "identity provider CA")
	secret := newSecret(t)
	ts := newTokenServer(t, idpCA, "iotransit", "pw", 3600)
	rc := newReceiver(t, receiverCA, receiverOpts{Secrets: []string{secret}})
	rc.setRespond(ts.requireToken)
	c := config(rc.URL, receiverCA, secret)
	c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2, TokenURL: ts.URL, ClientID: "iotransit", ClientSecret: "pw"}
	if s := summary(t, newTarget(t, c).Deliver(context.Background(), newBatch("b1", thingsee...))); s != "OAuth2 token request failed" {
		t.Errorf("token server of an unknown CA: %q", s)
	}
	if n := ts.requests.Load(); n != 0 {
		t.Errorf("%d token requests reached a server whose certificate does not verify", n)
	}
	c.Auth.TokenCAPEM = string(idpCA.CertPEM)
	if err := newTarget(t, c).Deliver(context.Background(), newBatch("b2", thingsee...)); err != nil {
		t.Fatalf("with auth.tokenCaPem: %v", err)
	}
	if d := rc.deliveries(); len(d) != 1 || !d[0].Verified {
		t.Errorf("deliveries %+v", d)
	}
	// The token CA does not verify the receiver.
	c.TLS.CAPEM = string(idpCA.CertPEM)
	if err := newTarget(t, c).Deliver(context.Background(), newBatch("b3", thingsee...)); err == nil {
		t.Error("receiver verified with the token endpoint's CA")
	}
	c.Auth.TokenCAPEM = "not a certificate"
	if err := c.Validate(context.Background()); !slices.Contains(codes(err), "webhook.auth_invalid") {
		t.Errorf("tokenCaPem without a certificate: %v", err)
	}
}
