package api_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/iotransit/iotransit/internal/pki"
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
	certificates := func() int {
		t.Helper()
		var p struct{ Items []map[string]any }
		r := w.api.Do("GET", "/v1/tenants/acme/gateways/"+serial+"/certificates", w.api.Key(), nil)
		if r.Status != 200 {
			t.Fatalf("certificates: %d %s", r.Status, r.Body)
		}
		r.Decode(t, &p)
		return len(p.Items)
	}
	renew := func() (int, string) {
		t.Helper()
		csr, _ := csrFor(t, serial)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{*kp}}}}
		defer c.CloseIdleConnections()
		body, _ := json.Marshal(map[string]string{"csr": csr})
		resp, err := c.Post(w.api.Base()+"/v1/reenroll", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var p struct{ Code string }
		_ = json.Unmarshal(b, &p)
		return resp.StatusCode, p.Code
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
