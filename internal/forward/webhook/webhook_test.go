package webhook_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/webhook"
)

func TestWebhookDeliversBatchSignedPerStandardWebhooks(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	tg := newTarget(t, config(rc.URL, ca, secret))

	b := newBatch("batch_01JABCDEF", thingsee...)
	if err := tg.Deliver(context.Background(), b); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	got := rc.deliveries()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	d := got[0]
	want := []byte("[" + strings.Join(thingsee, ",") + "]")
	if !bytes.Equal(d.Body, want) {
		t.Errorf("body\n got %s\nwant %s", d.Body, want)
	}
	if !d.Verified {
		t.Error("the reference library did not verify the signature")
	}
	for h, v := range map[string]string{
		"webhook-id":   "batch_01JABCDEF",
		"Content-Type": "application/json",
		"User-Agent":   "iotransit/1",
	} {
		if got := d.Header.Get(h); got != v {
			t.Errorf("%s = %q, want %q", h, got, v)
		}
	}
	if d.Header.Get("iotransit-encryption") != "" {
		t.Error("a plain body is marked as encrypted")
	}
	ts, err := strconv.ParseInt(d.Header.Get("webhook-timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Errorf("webhook-timestamp %q is not the current Unix time", d.Header.Get("webhook-timestamp"))
	}

	// What a receiver does with a body changed on the way: refuse it.
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(d.Body, d.Header); err != nil {
		t.Fatalf("untouched request does not verify: %v", err)
	}
	tampered := bytes.Replace(d.Body, []byte(`"temp":21.3`), []byte(`"temp":99.9`), 1)
	if bytes.Equal(tampered, d.Body) {
		t.Fatal("tampering changed nothing")
	}
	if err := wh.Verify(tampered, d.Header); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("tampered body: Verify = %v, want no matching signature", err)
	}
	replayed := d.Header.Clone()
	replayed.Set("webhook-id", "batch_other")
	if err := wh.Verify(d.Body, replayed); err == nil {
		t.Error("a signature verified under another webhook-id")
	}
	other, _ := standardwebhooks.NewWebhook(newSecret(t))
	if err := other.Verify(d.Body, d.Header); err == nil {
		t.Error("another secret verified the request")
	}
}

func TestWebhookSignMatchesSpecTestVector(t *testing.T) {
	// The Standard Webhooks specification's published example.
	key, err := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := webhook.Sign([][]byte{key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
	// Two keys: two signatures, in order, separated by one space.
	other := bytes.Repeat([]byte{7}, 32)
	two := webhook.Sign([][]byte{key, other}, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	parts := strings.Split(two, " ")
	if len(parts) != 2 || parts[0] != got || !strings.HasPrefix(parts[1], "v1,") || parts[1] == got {
		t.Errorf("Sign with two keys = %q", two)
	}
}

func TestWebhookSecretsParse(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, n)) }
	tests := []struct {
		name   string
		secret string
		ok     bool
	}{
		{"spec example, 24 bytes", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", true},
		{"32 bytes", "whsec_" + b64(32), true},
		{"64 bytes", "whsec_" + b64(64), true},
		{"no prefix", b64(32), false},
		{"other prefix", "whsk_" + b64(32), false},
		{"not base64", "whsec_not*base64*at*all!!", false},
		{"url-safe base64", "whsec_" + strings.ReplaceAll(b64(33), "p", "-"), false},
		{"too short", "whsec_" + b64(16), false},
		{"too long", "whsec_" + b64(65), false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, err := webhook.ParseSecret(tc.secret)
			if tc.ok != (err == nil) {
				t.Fatalf("ParseSecret = %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				if !webhook.ErrSecretInvalid.Is(err) {
					t.Errorf("error %v is not webhook.secret_invalid", err)
				}
				if tc.secret != "" && strings.Contains(err.Error(), strings.TrimPrefix(tc.secret, "whsec_")) {
					t.Errorf("error %q holds the secret", err)
				}
				return
			}
			if len(key) < 24 {
				t.Errorf("key of %d bytes", len(key))
			}
		})
	}

	s1, s2 := newSecret(t), newSecret(t)
	if s1 == s2 {
		t.Fatal("GenerateSecret repeated itself")
	}
	key, err := webhook.ParseSecret(s1)
	if err != nil || len(key) != 32 {
		t.Fatalf("generated secret %q: %d bytes, %v", s1, len(key), err)
	}
	if _, err := standardwebhooks.NewWebhook(s1); err != nil {
		t.Errorf("the reference library refuses a generated secret: %v", err)
	}
}

func TestWebhookRotationSignsWithBothSecretsUntilNotAfter(t *testing.T) {
	ca := newCA(t, "test CA")
	oldS, newS := newSecret(t), newSecret(t)
	// Rotated out now; the clock steps to just before and just after (the
	// reference library accepts timestamps within 5 minutes of real time).
	notAfter := time.Now()
	var clock atomic.Int64
	clock.Store(notAfter.Add(-time.Minute).UnixNano())
	c := webhook.Config{
		Secrets: []webhook.Secret{{Value: newS}, {Value: oldS, NotAfter: notAfter}},
		TLS:     egress.TLSOptions{CAPEM: string(ca.CertPEM)},
		Policy:  egress.Policy{AllowPrivate: true},
		Now:     func() time.Time { return time.Unix(0, clock.Load()) },
	}
	oldOnly := newReceiver(t, ca, receiverOpts{Secrets: []string{oldS}})
	newOnly := newReceiver(t, ca, receiverOpts{Secrets: []string{newS}})
	c.URL = oldOnly.URL
	toOld := newTarget(t, c)
	c.URL = newOnly.URL
	toNew := newTarget(t, c)
	b := newBatch("batch_rotation", thingsee[0])

	for name, tc := range map[string]struct {
		tg *webhook.Target
		rc *receiver
	}{"old secret only": {toOld, oldOnly}, "new secret only": {toNew, newOnly}} {
		if err := tc.tg.Deliver(context.Background(), b); err != nil {
			t.Fatalf("before notAfter, receiver with the %s: %v", name, err)
		}
		d := tc.rc.deliveries()[0]
		if n := len(strings.Fields(d.Header.Get("webhook-signature"))); n != 2 {
			t.Errorf("before notAfter: %d signatures, want 2", n)
		}
	}

	clock.Store(notAfter.Add(time.Minute).UnixNano())
	err := toOld.Deliver(context.Background(), b)
	if s := summary(t, err); s != "HTTP 401" {
		t.Errorf("after notAfter, receiver with only the old secret: %q, want HTTP 401", s)
	}
	if got := oldOnly.deliveries(); got[len(got)-1].Verified {
		t.Error("after notAfter the old secret still verifies")
	}
	if err := toNew.Deliver(context.Background(), b); err != nil {
		t.Fatalf("after notAfter, receiver with the new secret: %v", err)
	}
	got := newOnly.deliveries()
	if n := len(strings.Fields(got[len(got)-1].Header.Get("webhook-signature"))); n != 1 {
		t.Errorf("after notAfter: %d signatures, want 1", n)
	}
}

func TestWebhookRetryKeepsWebhookIDAndSignsAnew(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	rc.setRespond(func(w http.ResponseWriter, _ *http.Request, n int) bool {
		if n == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("database on fire"))
			return true
		}
		return false
	})
	start := time.Now()
	var calls atomic.Int64
	c := config(rc.URL, ca, secret)
	c.Now = func() time.Time { return start.Add(time.Duration(calls.Add(1)) * 3 * time.Second) }
	tg := newTarget(t, c)

	b := newBatch("batch_retry", thingsee...)
	err := tg.Deliver(context.Background(), b)
	if s := summary(t, err); s != "HTTP 500" {
		t.Errorf("first delivery: %q, want HTTP 500", s)
	}
	if forward.RetryAfter(err) != 0 {
		t.Error("a 500 asks to wait")
	}
	if strings.Contains(err.Error(), "database on fire") {
		t.Errorf("error %q holds the response body", err)
	}
	b.Attempt++
	if err := tg.Deliver(context.Background(), b); err != nil {
		t.Fatalf("retry: %v", err)
	}
	got := rc.deliveries()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	if got[0].Header.Get("webhook-id") != "batch_retry" || got[1].Header.Get("webhook-id") != "batch_retry" {
		t.Errorf("webhook-ids %q, %q, want batch_retry both", got[0].Header.Get("webhook-id"), got[1].Header.Get("webhook-id"))
	}
	if got[0].Header.Get("webhook-timestamp") == got[1].Header.Get("webhook-timestamp") {
		t.Error("the retry kept the first attempt's timestamp")
	}
	if got[0].Header.Get("webhook-signature") == got[1].Header.Get("webhook-signature") {
		t.Error("the retry kept the first attempt's signature")
	}
	if !got[0].Verified || !got[1].Verified {
		t.Errorf("verified: %v, %v", got[0].Verified, got[1].Verified)
	}
	if !bytes.Equal(got[0].Body, got[1].Body) {
		t.Error("the retry sent another body")
	}
}

func TestWebhookHonoursRetryAfter(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	now := time.Now()
	c := config(rc.URL, ca, secret)
	c.Now = func() time.Time { return now }
	tg := newTarget(t, c)

	tests := []struct {
		name       string
		status     int
		retryAfter string
		min, max   time.Duration // 0, 0: no RetryAfterError
	}{
		{"429 delta-seconds", 429, "7", 7 * time.Second, 7 * time.Second},
		{"429 HTTP-date", 429, now.Add(7 * time.Second).UTC().Format(http.TimeFormat), 6 * time.Second, 7 * time.Second},
		{"503 delta-seconds", 503, "120", 2 * time.Minute, 2 * time.Minute},
		{"503 without Retry-After", 503, "", 0, 0},
		{"429 capped at an hour", 429, "86400", time.Hour, time.Hour},
		{"429 huge", 429, "99999999999999999999999", time.Hour, time.Hour},
		{"429 date in the past", 429, now.Add(-time.Minute).UTC().Format(http.TimeFormat), 0, 0},
		{"429 garbage", 429, "soon", 0, 0},
		{"500 ignores Retry-After", 500, "7", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc.setRespond(func(w http.ResponseWriter, _ *http.Request, _ int) bool {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				return true
			})
			err := tg.Deliver(context.Background(), newBatch("batch_ra", thingsee[0]))
			if s, want := summary(t, err), "HTTP "+strconv.Itoa(tc.status); s != want {
				t.Errorf("summary %q, want %q", s, want)
			}
			var ra *forward.RetryAfterError
			if tc.max == 0 {
				if errors.As(err, &ra) {
					t.Errorf("RetryAfterError %v, want a plain DeliveryError", err)
				}
				return
			}
			if !errors.As(err, &ra) {
				t.Fatalf("%v is not a RetryAfterError", err)
			}
			if ra.After < tc.min || ra.After > tc.max {
				t.Errorf("After = %s, want %s..%s", ra.After, tc.min, tc.max)
			}
		})
	}
}

func TestWebhookMutualTLS(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	for _, http1 := range []bool{false, true} {
		t.Run("http1="+strconv.FormatBool(http1), func(t *testing.T) {
			rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}, ClientCA: ca, HTTP1: http1})
			certPEM, keyPEM := clientCert(t, ca)

			c := config(rc.URL, ca, secret)
			c.Auth = webhook.Auth{Kind: webhook.AuthMTLS}
			c.TLS.CertPEM, c.TLS.KeyPEM = certPEM, keyPEM
			if err := newTarget(t, c).Deliver(context.Background(), newBatch("batch_mtls", thingsee[0])); err != nil {
				t.Fatalf("with a client certificate: %v", err)
			}

			err := newTarget(t, config(rc.URL, ca, secret)).Deliver(context.Background(), newBatch("batch_mtls", thingsee[0]))
			// TLS 1.3 refuses a client certificate after the client's side
			// of the handshake, so the reason reaches us only sometimes.
			if s := summary(t, err); s != "TLS: handshake failed" && s != "connection failed" && s != "connection reset" && s != "connection closed" {
				t.Errorf("without a client certificate: %q (%v), want a TLS or connection failure", s, err)
			}
			if n := len(rc.deliveries()); n != 1 {
				t.Errorf("receiver handled %d requests, want only the authenticated one", n)
			}
		})
	}

	// A client certificate from a CA the receiver does not trust.
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}, ClientCA: ca})
	foreign := newCA(t, "foreign CA")
	c := config(rc.URL, ca, secret)
	c.Auth = webhook.Auth{Kind: webhook.AuthMTLS}
	c.TLS.CertPEM, c.TLS.KeyPEM = clientCert(t, foreign)
	err := newTarget(t, c).Deliver(context.Background(), newBatch("batch_mtls", thingsee[0]))
	if s := summary(t, err); s != "TLS: handshake failed" && s != "connection failed" && s != "connection reset" && s != "connection closed" {
		t.Errorf("with a foreign client certificate: %q, want a TLS or connection failure", s)
	}
	if err == nil {
		t.Error("a foreign client certificate was accepted")
	}
}

func TestWebhookPinnedCARefusesOtherCA(t *testing.T) {
	pinned, other := newCA(t, "pinned CA"), newCA(t, "other CA")
	secret := newSecret(t)
	rc := newReceiver(t, other, receiverOpts{Secrets: []string{secret}})

	err := newTarget(t, config(rc.URL, pinned, secret)).Deliver(context.Background(), newBatch("batch_pin", thingsee[0]))
	if s := summary(t, err); s != "TLS: certificate not trusted" {
		t.Errorf("summary %q (%v), want TLS: certificate not trusted", s, err)
	}
	if n := len(rc.deliveries()); n != 0 {
		t.Errorf("receiver got %d requests over an untrusted connection", n)
	}
	// Without a pin the system roots apply, which do not hold the test CA either.
	c := config(rc.URL, pinned, secret)
	c.TLS.CAPEM = ""
	if s := summary(t, newTarget(t, c).Deliver(context.Background(), newBatch("batch_pin", thingsee[0]))); s != "TLS: certificate not trusted" {
		t.Errorf("system roots: %q, want TLS: certificate not trusted", s)
	}
	// The name verified is the dialled host unless overridden.
	c = config(rc.URL, other, secret)
	c.TLS.ServerName = "elsewhere.example"
	if s := summary(t, newTarget(t, c).Deliver(context.Background(), newBatch("batch_pin", thingsee[0]))); s != "TLS: certificate not trusted" {
		t.Errorf("wrong server name: %q, want TLS: certificate not trusted", s)
	}
	c.TLS.ServerName = "localhost"
	if err := newTarget(t, c).Deliver(context.Background(), newBatch("batch_pin", thingsee[0])); err != nil {
		t.Errorf("server name localhost: %v", err)
	}
}

func TestWebhookSendsAPIKeyHeader(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	tests := []struct {
		name, header, value, wantHeader string
	}{
		{"default header", "", "k3y-0123456789", "X-Api-Key"},
		{"bearer in Authorization", "Authorization", "Bearer abc.def.ghi", "Authorization"},
		{"custom header", "Ocp-Apim-Subscription-Key", "0123abcd", "Ocp-Apim-Subscription-Key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
			rc.setRespond(func(w http.ResponseWriter, r *http.Request, _ int) bool {
				if r.Header.Get(tc.wantHeader) != tc.value {
					w.WriteHeader(http.StatusForbidden)
					return true
				}
				return false
			})
			c := config(rc.URL, ca, secret)
			c.Auth = webhook.Auth{Kind: webhook.AuthAPIKey, HeaderName: tc.header, HeaderValue: tc.value}
			if err := newTarget(t, c).Deliver(context.Background(), newBatch("batch_key", thingsee[0])); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			if v := rc.deliveries()[0].Header.Values(tc.wantHeader); len(v) != 1 || v[0] != tc.value {
				t.Errorf("%s = %q, want [%q]", tc.wantHeader, v, tc.value)
			}
		})
	}
}

func TestWebhookRefusesInternalTargets(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	strict := egress.Policy{AllowPrivate: false}

	for _, u := range []string{
		"https://127.0.0.1/hooks",
		"https://localhost/hooks",
		"https://localhost:8443/hooks",
		"https://[::1]/hooks",
		"https://10.1.2.3/hooks",
		"https://169.254.169.254/latest/meta-data",
		"https://[::ffff:127.0.0.1]/hooks",
	} {
		t.Run(u, func(t *testing.T) {
			c := config(u, ca, secret)
			c.Policy = strict
			err := c.Validate(context.Background())
			if !egress.ErrPrivateTarget.Is(err) {
				t.Errorf("Validate = %v, want forward.target_private", err)
			}
		})
	}
	// The token URL is a target too.
	c := config("https://93.184.215.14/hooks", ca, secret)
	c.Policy = strict
	if err := c.Validate(context.Background()); err != nil {
		t.Fatalf("a public target: %v", err)
	}
	c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2, TokenURL: "https://127.0.0.1/token", ClientID: "id", ClientSecret: "s"}
	if err := c.Validate(context.Background()); !egress.ErrPrivateTarget.Is(err) {
		t.Errorf("private token URL: Validate = %v, want forward.target_private", err)
	}

	// Deliver checks the address it connects to, whatever was validated.
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	localhost := strings.Replace(rc.URL, "127.0.0.1", "localhost", 1)
	for _, u := range []string{rc.URL, localhost} {
		c := config(u, ca, secret)
		c.Policy = strict
		err := newTarget(t, c).Deliver(context.Background(), newBatch("batch_ssrf", thingsee[0]))
		if s := summary(t, err); s != "target address refused" {
			t.Errorf("%s: %q (%v), want target address refused", u, s, err)
		}
	}
	if n := rc.conns.Load(); n != 0 {
		t.Errorf("%d connections reached the receiver", n)
	}
	// OAuth2: the token request is refused before any request is made.
	ts := newTokenServer(t, ca, "id", "s", 60)
	c = config(rc.URL, ca, secret)
	c.Policy = strict
	c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2, TokenURL: ts.URL, ClientID: "id", ClientSecret: "s"}
	err := newTarget(t, c).Deliver(context.Background(), newBatch("batch_ssrf", thingsee[0]))
	if s := summary(t, err); s != "OAuth2 token request failed" || !strings.Contains(err.Error(), "target address refused") {
		t.Errorf("private token URL: %q (%v)", s, err)
	}
	if ts.requests.Load() != 0 || rc.conns.Load() != 0 {
		t.Errorf("token server got %d requests, receiver %d connections", ts.requests.Load(), rc.conns.Load())
	}

	// An operator that allows private targets (--dev) reaches it.
	c = config(rc.URL, ca, secret)
	if err := c.Validate(context.Background()); err != nil {
		t.Fatalf("AllowPrivate: Validate = %v", err)
	}
	if err := newTarget(t, c).Deliver(context.Background(), newBatch("batch_ssrf", thingsee[0])); err != nil {
		t.Fatalf("AllowPrivate: Deliver = %v", err)
	}
	if n := rc.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestWebhookDoesNotFollowRedirects(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	elsewhere := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	for _, status := range []int{301, 302, 307, 308} {
		rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
		rc.setRespond(func(w http.ResponseWriter, r *http.Request, _ int) bool {
			http.Redirect(w, r, elsewhere.URL, status)
			return true
		})
		err := newTarget(t, config(rc.URL, ca, secret)).Deliver(context.Background(), newBatch("batch_redirect", thingsee[0]))
		if s, want := summary(t, err), "HTTP "+strconv.Itoa(status)+" redirect not followed"; s != want {
			t.Errorf("summary %q, want %q", s, want)
		}
	}
	if n := elsewhere.conns.Load(); n != 0 {
		t.Errorf("the redirect target got %d connections", n)
	}
}

// sealer stands in for HPKE: what it returns is what must be sent.
type sealer struct{ fail bool }

func (s sealer) Seal(p []byte) ([]byte, error) {
	if s.fail {
		return nil, errors.New("no key")
	}
	out := append([]byte("SEALED\x00\x01"), p...)
	slices.Reverse(out[8:])
	return out, nil
}

func TestWebhookSendsSealedBody(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	c := config(rc.URL, ca, secret)
	c.Sealer = sealer{}
	b := newBatch("batch_sealed", thingsee...)
	if err := newTarget(t, c).Deliver(context.Background(), b); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	d := rc.deliveries()[0]
	want, _ := sealer{}.Seal(b.JSON())
	if !bytes.Equal(d.Body, want) {
		t.Errorf("body %q, want the sealer's output %q", d.Body, want)
	}
	if ct := d.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if e := d.Header.Get("iotransit-encryption"); e != "hpke" {
		t.Errorf("iotransit-encryption %q, want hpke", e)
	}
	if !d.Verified {
		t.Error("the signature does not cover the sealed body")
	}

	c.Sealer = sealer{fail: true}
	err := newTarget(t, c).Deliver(context.Background(), b)
	if s := summary(t, err); s != "encryption failed" {
		t.Errorf("failing sealer: %q", s)
	}
	if n := len(rc.deliveries()); n != 1 {
		t.Errorf("a batch that could not be sealed was sent (%d requests)", n)
	}
}

func TestWebhookValidateReportsEveryProblem(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	certPEM, keyPEM := clientCert(t, ca)
	valid := func() webhook.Config {
		c := config("https://93.184.215.14/hooks?code=abc", ca, secret)
		c.Policy = egress.Policy{}
		return c
	}
	if err := valid().Validate(context.Background()); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name  string
		mod   func(*webhook.Config)
		codes []string
	}{
		{"http", func(c *webhook.Config) { c.URL = "http://93.184.215.14/hooks" }, []string{"forward.target_invalid"}},
		{"no host", func(c *webhook.Config) { c.URL = "https:///hooks" }, []string{"forward.target_invalid"}},
		{"not a URL", func(c *webhook.Config) { c.URL = "https://93.184.215.14:99999999/%zz" }, []string{"forward.target_invalid"}},
		{"relative", func(c *webhook.Config) { c.URL = "/hooks" }, []string{"forward.target_invalid"}},
		{"user info", func(c *webhook.Config) { c.URL = "https://user:pw@93.184.215.14/hooks" }, []string{"forward.target_invalid"}},
		{"port 0", func(c *webhook.Config) { c.URL = "https://93.184.215.14:0/hooks" }, []string{"forward.target_invalid"}},
		{"no secret", func(c *webhook.Config) { c.Secrets = nil }, []string{"webhook.secret_missing"}},
		{"bad secret", func(c *webhook.Config) { c.Secrets = append(c.Secrets, webhook.Secret{Value: "hunter2"}) }, []string{"webhook.secret_invalid"}},
		{"only expired secrets", func(c *webhook.Config) { c.Secrets[0].NotAfter = time.Now().Add(-time.Second) }, []string{"webhook.secret_missing"}},
		{"bad CA", func(c *webhook.Config) { c.TLS.CAPEM = "not pem" }, []string{"forward.tls_invalid"}},
		{"cert without key", func(c *webhook.Config) { c.TLS.CertPEM = certPEM }, []string{"forward.tls_invalid"}},
		{"negative timeout", func(c *webhook.Config) { c.Timeout = -time.Second }, []string{"webhook.timeout_invalid"}},
		{"huge timeout", func(c *webhook.Config) { c.Timeout = time.Hour }, []string{"webhook.timeout_invalid"}},
		{"unknown auth", func(c *webhook.Config) { c.Auth.Kind = "basic" }, []string{"webhook.auth_invalid"}},
		{"apikey without value", func(c *webhook.Config) { c.Auth = webhook.Auth{Kind: webhook.AuthAPIKey} }, []string{"webhook.auth_invalid"}},
		{"apikey bad name", func(c *webhook.Config) {
			c.Auth = webhook.Auth{Kind: webhook.AuthAPIKey, HeaderName: "X Key", HeaderValue: "k"}
		}, []string{"webhook.auth_invalid"}},
		{"apikey over a signature header", func(c *webhook.Config) {
			c.Auth = webhook.Auth{Kind: webhook.AuthAPIKey, HeaderName: "webhook-signature", HeaderValue: "k"}
		}, []string{"webhook.auth_invalid"}},
		{"apikey with a newline", func(c *webhook.Config) {
			c.Auth = webhook.Auth{Kind: webhook.AuthAPIKey, HeaderValue: "k\r\nX-Evil: 1"}
		}, []string{"webhook.auth_invalid"}},
		{"oauth2 without anything", func(c *webhook.Config) { c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2} },
			[]string{"webhook.auth_invalid", "webhook.auth_invalid", "webhook.auth_invalid"}},
		{"oauth2 http token URL", func(c *webhook.Config) {
			c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2, TokenURL: "http://93.184.215.15/token", ClientID: "i", ClientSecret: "s"}
		}, []string{"forward.target_invalid"}},
		{"mtls without cert", func(c *webhook.Config) { c.Auth = webhook.Auth{Kind: webhook.AuthMTLS} }, []string{"webhook.auth_invalid"}},
		{"everything at once", func(c *webhook.Config) {
			c.URL = "http://93.184.215.14/"
			c.Secrets = []webhook.Secret{{Value: "whsec_short"}}
			c.TLS.CAPEM = "junk"
			c.Auth = webhook.Auth{Kind: webhook.AuthAPIKey}
		}, []string{"forward.target_invalid", "webhook.secret_invalid", "forward.tls_invalid", "webhook.auth_invalid"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mod(&c)
			err := c.Validate(context.Background())
			if got := codes(err); !slices.Equal(got, tc.codes) {
				t.Errorf("codes %q, want %q (%v)", got, tc.codes, err)
			}
			if _, nerr := webhook.New(context.Background(), c); nerr == nil {
				t.Error("New accepted what Validate refuses")
			}
		})
	}
	// mtls with its material is fine.
	c := valid()
	c.Auth = webhook.Auth{Kind: webhook.AuthMTLS}
	c.TLS.CertPEM, c.TLS.KeyPEM = certPEM, keyPEM
	if err := c.Validate(context.Background()); err != nil {
		t.Errorf("mtls: %v", err)
	}
}

func TestWebhookNetworkFailuresHaveSummaries(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)

	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		err = newTarget(t, config("https://"+addr+"/hooks", ca, secret)).Deliver(context.Background(), newBatch("b", thingsee[0]))
		if s := summary(t, err); s != "connection refused" {
			t.Errorf("%q (%v)", s, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
		release := make(chan struct{})
		defer close(release)
		rc.setRespond(func(w http.ResponseWriter, r *http.Request, _ int) bool {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return true
		})
		c := config(rc.URL, ca, secret)
		c.Timeout = 200 * time.Millisecond
		start := time.Now()
		err := newTarget(t, c).Deliver(context.Background(), newBatch("b", thingsee[0]))
		if s := summary(t, err); s != "timeout" {
			t.Errorf("%q (%v)", s, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s", d)
		}
	})
	t.Run("DNS host not found", func(t *testing.T) {
		c := config("https://no-such-host.invalid/hooks", ca, secret)
		c.Policy = egress.Policy{Resolver: nxdomainResolver(t)}
		err := newTarget(t, c).Deliver(context.Background(), newBatch("b", thingsee[0]))
		if s := summary(t, err); s != "DNS: host not found" {
			t.Errorf("%q (%v)", s, err)
		}
	})
	t.Run("not TLS", func(t *testing.T) {
		srv := http.Server{Handler: http.NotFoundHandler()}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		err = newTarget(t, config("https://"+l.Addr().String()+"/hooks", ca, secret)).Deliver(context.Background(), newBatch("b", thingsee[0]))
		if s := summary(t, err); s != "TLS: handshake failed" {
			t.Errorf("%q (%v)", s, err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := newTarget(t, config(rc.URL, ca, secret)).Deliver(ctx, newBatch("b", thingsee[0]))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%v does not wrap context.Canceled", err)
		}
	})
}

// nxdomainResolver answers every DNS query with NXDOMAIN from a UDP
// server on loopback, so "host not found" needs no network.
func nxdomainResolver(t *testing.T) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if n < 12 {
				continue
			}
			// Keep the header and the question, drop any additional
			// records (EDNS), answer NXDOMAIN.
			end := 12
			for end < n && q[end] != 0 {
				end += int(q[end]) + 1
			}
			end += 5
			if end > n {
				continue
			}
			resp := append([]byte(nil), q[:end]...)
			resp[2] = 0x80 | q[2]&0x01 // QR, RD copied
			resp[3] = 0x80 | 3         // RA, RCODE NXDOMAIN
			copy(resp[6:12], []byte{0, 0, 0, 0, 0, 0})
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

func TestWebhookReusesConnections(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	for _, http1 := range []bool{false, true} {
		rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}, HTTP1: http1})
		tg := newTarget(t, config(rc.URL, ca, secret))
		for i := range 5 {
			if err := tg.Deliver(context.Background(), newBatch("b"+strconv.Itoa(i), thingsee...)); err != nil {
				t.Fatal(err)
			}
		}
		if n := rc.conns.Load(); n != 1 {
			t.Errorf("http1=%v: %d connections for 5 sequential deliveries, want 1", http1, n)
		}
	}
}

func TestWebhookRefusesAfterClose(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	tg := newTarget(t, config(rc.URL, ca, secret))
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	if s := summary(t, tg.Deliver(context.Background(), newBatch("b", thingsee[0]))); s != "target closed" {
		t.Errorf("%q", s)
	}
	if s := summary(t, newTarget(t, config(rc.URL, ca, secret)).Deliver(context.Background(), &forward.Batch{})); s != "invalid batch" {
		t.Errorf("batch without an id: %q", s)
	}
	if len(rc.deliveries()) != 0 {
		t.Error("a request was sent")
	}
}

func TestWebhookErrorsHoldNoSecrets(t *testing.T) {
	ca := newCA(t, "test CA")
	secret := newSecret(t)
	const (
		apiKey       = "APIKEY-7f3c9a1e"
		clientSecret = "CLIENTSECRET-b41d"
		queryKey     = "QUERYKEY-91aa"
	)
	secretB64 := strings.TrimPrefix(secret, "whsec_")
	rc := newReceiver(t, ca, receiverOpts{Secrets: []string{secret}})
	rc.setRespond(func(w http.ResponseWriter, r *http.Request, _ int) bool {
		// A receiver that echoes everything it got.
		w.WriteHeader(http.StatusBadRequest)
		for k, v := range r.Header {
			_, _ = w.Write([]byte(k + ": " + strings.Join(v, ",") + "\n"))
		}
		return true
	})
	var errs []error
	c := config(rc.URL+"?code="+queryKey, ca, secret)
	c.Auth = webhook.Auth{Kind: webhook.AuthAPIKey, HeaderValue: apiKey}
	errs = append(errs, newTarget(t, c).Deliver(context.Background(), newBatch("b", thingsee[0])))

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	_ = l.Close()
	c.URL = "https://" + addr + "/hooks?code=" + queryKey
	errs = append(errs, newTarget(t, c).Deliver(context.Background(), newBatch("b", thingsee[0])))

	ts := newTokenServer(t, ca, "client", "the-right-one", 60)
	c = config(rc.URL, ca, secret)
	c.Auth = webhook.Auth{Kind: webhook.AuthOAuth2, TokenURL: ts.URL + "?tenant=" + queryKey, ClientID: "client", ClientSecret: clientSecret}
	errs = append(errs, newTarget(t, c).Deliver(context.Background(), newBatch("b", thingsee[0])))
	c.Auth.TokenURL = "https://" + addr + "/token?tenant=" + queryKey
	errs = append(errs, newTarget(t, c).Deliver(context.Background(), newBatch("b", thingsee[0])))

	bad := config("https://user:"+apiKey+"@93.184.215.14/hooks?code="+queryKey+"%zz", ca, "whsec_"+secretB64+"!")
	bad.Auth = webhook.Auth{Kind: webhook.AuthAPIKey, HeaderValue: apiKey + "\n"}
	errs = append(errs, bad.Validate(context.Background()))
	bad.URL = "https://user:" + apiKey + "@93.184.215.14/hooks"
	errs = append(errs, bad.Validate(context.Background()))

	for i, err := range errs {
		if err == nil {
			t.Fatalf("case %d did not fail", i)
		}
		for _, s := range []string{secretB64, apiKey, clientSecret, queryKey} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("case %d: error %q holds %q", i, err, s)
			}
		}
	}
	if s := summary(t, errs[2]); s != "OAuth2 token request failed" {
		t.Errorf("wrong client secret: %q", s)
	}
}
