package api_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestAPIReenrollFailsClosedWhenAuditCannotBeWritten: a certificate
// renewal is a change of the tenant the certificate names; while that
// tenant's audit log refuses writes it answers 503 audit.unavailable and
// no certificate is issued; once the log takes writes it renews.
func TestAPIReenrollFailsClosedWhenAuditCannotBeWritten(t *testing.T) {
	w := newWorld(t)
	serial := w.gateway("acme")
	e, kp := enroll(t, w, "acme", serial)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(e.CA))
	chain, err := pki.ParseCertsPEM([]byte(e.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chain {
		kp.Certificate = append(kp.Certificate, c.Raw)
	}
	kp.Leaf = chain[0]
	certificates := func() int { return certificateCount(t, w, "acme", serial) }
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{*kp}}}}
	t.Cleanup(hc.CloseIdleConnections)
	renew := func() (int, string) {
		t.Helper()
		csr, _ := csrFor(t, serial)
		body, _ := json.Marshal(map[string]string{"csr": csr})
		req, _ := http.NewRequest("POST", w.api.Base()+"/v1/reenroll", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		r := tu.Send(t, hc, req)
		code, _ := r.Problem()
		return r.Status, code
	}
	before := certificates()
	restore := refuseAuditWrites(t, w, "acme")
	if status, code := renew(); status != 503 || code != "audit.unavailable" {
		t.Fatalf("reenroll while the audit log refuses writes: %d %s, want 503 audit.unavailable", status, code)
	}
	restore()
	if n := certificates(); n != before {
		t.Fatalf("a renewal refused for its audit issued a certificate: %d certificates, %d before", n, before)
	}
	if status, code := renew(); status != 200 {
		t.Fatalf("reenroll once the log is healthy: %d %s", status, code)
	}
	verified(t, w, "acme")
}

// TestAPIEnrollFailsClosedWhenAuditCannotBeWritten: an enrollment is
// written ahead to the tenant's audit log once its token names the tenant;
// when that cannot be written, it is refused with 503 audit.unavailable,
// no certificate is issued and the token is not spent, so the same token
// enrolls once the log is healthy again.
func TestAPIEnrollFailsClosedWhenAuditCannotBeWritten(t *testing.T) {
	w := newWorld(t)
	serial := w.gateway("acme")
	tok := token(t, w, "acme", serial)
	certificates := func() int { return certificateCount(t, w, "acme", serial) }
	csr, _ := csrFor(t, serial)
	restore := refuseAuditWrites(t, w, "acme")
	r := w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": tok, "csr": csr})
	if code, _ := r.Problem(); r.Status != 503 || code != "audit.unavailable" {
		t.Fatalf("enroll while the audit log refuses writes: %d %s, want 503 audit.unavailable", r.Status, r.Body)
	}
	restore()
	if n := certificates(); n != 0 {
		t.Fatalf("an enrollment refused for its audit issued %d certificates", n)
	}
	r = w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": tok, "csr": csr})
	if r.Status != 200 {
		t.Fatalf("enroll with the same token once the log is healthy: %d %s", r.Status, r.Body)
	}
	if n := certificates(); n != 1 {
		t.Fatalf("%d certificates after the enrollment, want 1", n)
	}
	// Refusals that name no tenant (an unknown token) are not written ahead
	// and are refused as before.
	r = w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": "iet_0000000000000000_" + strings.Repeat("A", 43), "csr": csr})
	if code, _ := r.Problem(); r.Status != 401 && r.Status != 400 || code == "audit.unavailable" {
		t.Fatalf("unknown token: %d %s", r.Status, r.Body)
	}
	verified(t, w, "acme")
}

// certificateCount returns how many certificates the API lists for the
// tenant's gateway.
func certificateCount(t *testing.T, w *world, tenant, serial string) int {
	t.Helper()
	var p struct{ Items []map[string]any }
	r := w.api.Do("GET", "/v1/tenants/"+tenant+"/gateways/"+serial+"/certificates", w.api.Key(), nil)
	if r.Status != 200 {
		t.Fatalf("certificates: %d %s", r.Status, r.Body)
	}
	r.Decode(t, &p)
	return len(p.Items)
}
