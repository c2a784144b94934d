package api_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// An enrollment token is bound to the gateway it was made for: deleting the
// gateway (revoked first or not) and registering its serial again leaves
// the old token refused exactly as an unknown one; a new token works.
func TestAPIEnrollTokenDiesWithItsGateway(t *testing.T) {
	w := newWorld(t)
	enroll := func(tok, serial string) tu.Response {
		return w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": tok, "csr": mustCSR(t, serial)})
	}
	del := func(serial string) {
		if r := w.api.Do("DELETE", "/v1/tenants/acme/gateways/"+serial, w.api.Key(), nil); r.Status != 204 {
			t.Fatalf("delete: %d %s", r.Status, r.Body)
		}
	}
	register := func(serial string) {
		if r := w.api.Do("POST", "/v1/tenants/acme/gateways", w.api.Key(), map[string]string{"serial": serial}); r.Status != 201 {
			t.Fatalf("re-register: %d %s", r.Status, r.Body)
		}
	}
	refusedAsUnknown := func(t *testing.T, r tu.Response) {
		t.Helper()
		if code, _ := r.Problem(); r.Status != 401 || code != "registry.token_invalid" {
			t.Fatalf("old token: %d %s, want 401 registry.token_invalid", r.Status, r.Body)
		}
		checkNoLeak(t, r)
	}

	t.Run("deleted and registered again", func(t *testing.T) {
		serial := w.gateway("acme")
		old := token(t, w, "acme", serial)
		del(serial)
		register(serial)
		refusedAsUnknown(t, enroll(old, serial))
		if r := enroll(token(t, w, "acme", serial), serial); r.Status != 200 {
			t.Fatalf("a token made for the new gateway: %d %s", r.Status, r.Body)
		}
	})
	t.Run("revoked, deleted and registered again", func(t *testing.T) {
		serial := w.gateway("acme")
		old, other := token(t, w, "acme", serial), token(t, w, "acme", serial)
		if r := w.api.Do("POST", "/v1/tenants/acme/gateways/"+serial+"/revoke", w.api.Key(), nil); r.Status != 200 {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		if r := enroll(other, serial); r.Status != 403 {
			t.Fatalf("a revoked gateway enrolled: %d %s", r.Status, r.Body)
		}
		del(serial)
		register(serial)
		refusedAsUnknown(t, enroll(old, serial))
	})
	t.Run("deleted", func(t *testing.T) {
		serial := w.gateway("acme")
		old := token(t, w, "acme", serial)
		del(serial)
		refusedAsUnknown(t, enroll(old, serial))
	})
	t.Run("isolated", func(t *testing.T) {
		serial := w.gateway("acme")
		tok := token(t, w, "acme", serial)
		w.api.Do("POST", "/v1/tenants/acme/gateways/"+serial+"/isolate", w.api.Key(), nil)
		if r := enroll(tok, serial); r.Status != 403 {
			t.Fatalf("an isolated gateway enrolled: %d %s", r.Status, r.Body)
		}
	})
	t.Run("token list hides the binding", func(t *testing.T) {
		r := w.api.Do("GET", "/v1/tenants/acme/enrollment-tokens", w.api.Key(), nil)
		if r.Status != 200 || bytes.Contains(r.Body, []byte("ncarnation")) {
			t.Fatalf("tokens: %d %.300s", r.Status, r.Body)
		}
	})
}

// Renewals over mutual TLS keep only the newest two certificates valid,
// are rate limited, keep the record small, and leave the gateway revocable.
func TestAPIReenrollKeepsTwoValidCertificates(t *testing.T) {
	w := newWorld(t)
	serial := w.gateway("acme")
	e, kp := enroll(t, w, "acme", serial)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(e.CA))
	withChain := func(kp *tls.Certificate, chainPEM string) *tls.Certificate {
		chain, err := pki.ParseCertsPEM([]byte(chainPEM))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chain {
			kp.Certificate = append(kp.Certificate, c.Raw)
		}
		kp.Leaf = chain[0]
		return kp
	}
	// renew renews with cur; it returns the answer and the new certificate.
	renew := func(cur *tls.Certificate) (*http.Response, *tls.Certificate) {
		t.Helper()
		csr, next := csrFor(t, serial)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{*cur}}}}
		defer c.CloseIdleConnections()
		body, _ := json.Marshal(map[string]string{"csr": csr})
		resp, err := c.Post(w.api.Base()+"/v1/reenroll", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return resp, nil
		}
		var e enrolled
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		return resp, withChain(next, e.Certificate)
	}
	certs := []*tls.Certificate{withChain(kp, e.Certificate)}
	for i := 0; i < 9; i++ { // with the enrollment, 10 certificates in a minute
		resp, next := renew(certs[len(certs)-1])
		if resp.StatusCode != 200 {
			t.Fatalf("renewal %d: %d", i+1, resp.StatusCode)
		}
		certs = append(certs, next)
	}
	// The first certificate, superseded, no longer renews.
	if resp, _ := renew(certs[0]); resp.StatusCode != 401 {
		t.Errorf("renewal with a superseded certificate: %d", resp.StatusCode)
	}
	// The newest is refused for now: too many renewals in a minute.
	if resp, _ := renew(certs[len(certs)-1]); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("renewal past the rate limit: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Over MQTT only the newest two certificates connect.
	for i := len(certs) - 3; i < len(certs); i++ {
		up, err := nodetest.Dial(t, w.n, certs[i], serial, nil)
		if want := i >= len(certs)-2; (err == nil) != want {
			t.Errorf("certificate %d of %d connects: %v, want %v", i+1, len(certs), err, want)
		}
		if up != nil {
			_ = up.Close()
		}
	}
	var list struct {
		Items []struct{ Serial, Status string }
	}
	w.api.Do("GET", "/v1/tenants/acme/gateways/"+serial+"/certificates", w.api.Key(), nil).Decode(t, &list)
	valid := 0
	for _, c := range list.Items {
		if c.Status == "valid" {
			valid++
		}
	}
	if valid != 2 || len(list.Items) > 12 {
		t.Errorf("%d certificates listed, %d valid; want at most 12, 2 valid", len(list.Items), valid)
	}
	if r := w.api.Do("POST", "/v1/tenants/acme/gateways/"+serial+"/revoke", w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if _, err := nodetest.Dial(t, w.n, certs[len(certs)-1], serial, nil); err == nil {
		t.Error("the newest certificate connects after the gateway was revoked")
	}
}
