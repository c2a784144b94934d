package api_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

type enrolled struct {
	Certificate, CA, Serial, Tenant string
}

func token(t *testing.T, w *world, tenant, serial string) string {
	t.Helper()
	r := w.api.Do("POST", "/v1/tenants/"+tenant+"/enrollment-tokens", w.api.Key(), map[string]string{"serial": serial})
	if r.Status != 201 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	var tok struct{ Token string }
	r.Decode(t, &tok)
	return tok.Token
}

func csrFor(t *testing.T, cn string) (csrPEM string, key *tls.Certificate) {
	t.Helper()
	b, kp := tu.CSR(t, cn)
	return string(b), kp
}

// enroll spends a new enrollment token of the gateway on a CSR made here
// and returns the answer and the key.
func enroll(t *testing.T, w *world, tenant, serial string) (enrolled, *tls.Certificate) {
	t.Helper()
	csr, kp := csrFor(t, serial)
	r := w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": token(t, w, tenant, serial), "csr": csr})
	if r.Status != 200 {
		t.Fatalf("enroll: %d %s", r.Status, r.Body)
	}
	var e enrolled
	r.Decode(t, &e)
	return e, kp
}

// TestAPIEnrollThenConnect is the factory flow: register, token, enroll
// with a CSR (no Authorization header), connect over MQTT with the chain.
func TestAPIEnrollThenConnect(t *testing.T) {
	w := newWorld(t)
	serial := w.gateway("acme")
	e, kp := enroll(t, w, "acme", serial)
	if e.Serial != serial || e.Tenant != "acme" || !strings.Contains(e.CA, "BEGIN CERTIFICATE") {
		t.Fatalf("answer %+v", e)
	}
	chain, err := pki.ParseCertsPEM([]byte(e.Certificate))
	if err != nil || len(chain) != 2 {
		t.Fatalf("chain: %d certs, %v", len(chain), err)
	}
	if chain[0].Subject.CommonName != serial {
		t.Errorf("CN %q", chain[0].Subject.CommonName)
	}
	for _, c := range chain {
		kp.Certificate = append(kp.Certificate, c.Raw)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(e.CA))
	up, err := gateway.Dial(context.Background(), gateway.UplinkConfig{
		Addr: w.n.MQTTAddr(), Serial: serial,
		TLS: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{*kp}},
	})
	if err != nil {
		t.Fatalf("connect with the enrolled certificate: %v", err)
	}
	defer up.Close()
	if res, err := up.Publish(context.Background(), []byte(tu.Thingsee("TSEN01ABC12345678", 1700000000, 20)), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish: %v %x", err, res.ReasonCode)
	}
	// The gateway's certificate list shows it, with its expiry.
	var certs struct {
		Items []struct {
			Serial, Status string
			NotAfter       time.Time
		}
	}
	w.api.Do("GET", "/v1/tenants/acme/gateways/"+serial+"/certificates", w.api.Key(), nil).Decode(t, &certs)
	if len(certs.Items) != 1 || certs.Items[0].Status != "valid" || certs.Items[0].Serial != pki.SerialHex(chain[0]) {
		t.Errorf("certificates %+v", certs.Items)
	}

	t.Run("reenroll over mutual TLS", func(t *testing.T) {
		csr2, _ := csrFor(t, serial)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{*kp}}}}
		body, _ := json.Marshal(map[string]string{"csr": csr2})
		resp, err := c.Post(w.api.Base()+"/v1/reenroll", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("reenroll: %d", resp.StatusCode)
		}
		// Without a client certificate: refused.
		if r := w.api.Do("POST", "/v1/reenroll", "", map[string]string{"csr": csr2}); r.Status != 401 {
			t.Errorf("reenroll without certificate: %d", r.Status)
		}
	})
}

// TestAPIEnrollRefusals checks each way enrollment is refused, with its code.
func TestAPIEnrollRefusals(t *testing.T) {
	w := newWorld(t)
	serial := w.gateway("acme")
	other := w.gateway("acme")
	enroll := func(tok, csr string) tu.Response {
		return w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": tok, "csr": csr})
	}
	// A reused token.
	used := token(t, w, "acme", serial)
	csr, _ := csrFor(t, serial)
	if r := enroll(used, csr); r.Status != 200 {
		t.Fatalf("first use: %d %s", r.Status, r.Body)
	}
	// An expired token: rewrite its expiry in the store, as time would.
	expired := token(t, w, "acme", serial)
	expireToken(t, w, expired)

	weak := weakCSR(t, serial)
	fresh := func() string { return token(t, w, "acme", serial) }
	cases := []struct {
		name, token, csr, code string
		status                 int
	}{
		{"reused token", used, csr, "registry.token_used", 401},
		{"expired token", expired, csr, "registry.token_expired", 401},
		{"unknown token", "iet_0123456789abcdef_" + strings.Repeat("A", 43), csr, "registry.token_invalid", 401},
		{"malformed token", "hello", csr, "registry.token_invalid", 401},
		{"token for another serial", fresh(), mustCSR(t, other), "registry.token_serial_mismatch", 403},
		{"CSR with a different CN", fresh(), mustCSR(t, "not-a-serial"), "pki.csr_cn_mismatch", 400},
		{"CSR with a weak key", fresh(), weak, "pki.csr_weak_key", 400},
		{"not a CSR", fresh(), "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "pki.csr_invalid", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := enroll(tc.token, tc.csr)
			code, rid := r.Problem()
			if r.Status != tc.status || code != tc.code || rid == "" {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
			checkNoLeak(t, r)
		})
	}
	// A CSR problem does not spend the token.
	tok := fresh()
	if r := enroll(tok, weak); r.Status != 400 {
		t.Fatalf("weak: %d", r.Status)
	}
	if r := enroll(tok, csr); r.Status != 200 {
		t.Fatalf("the token was spent by a refused CSR: %d %s", r.Status, r.Body)
	}
	// A token for an isolated gateway does not work.
	iso := w.gateway("acme")
	isoTok := token(t, w, "acme", iso)
	w.api.Do("POST", "/v1/tenants/acme/gateways/"+iso+"/isolate", w.api.Key(), nil)
	if r := enroll(isoTok, mustCSR(t, iso)); r.Status != 403 {
		t.Errorf("isolated gateway enrolled: %d %s", r.Status, r.Body)
	}
}

func mustCSR(t *testing.T, cn string) string {
	t.Helper()
	c, _ := csrFor(t, cn)
	return c
}

func weakCSR(t *testing.T, cn string) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func expireToken(t *testing.T, w *world, tok string) {
	t.Helper()
	ctx := context.Background()
	kv, err := w.n.JetStream().KeyValue(ctx, names.EnrollmentBucket)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.Split(strings.TrimPrefix(tok, "iet_"), "_")[0]
	e, err := kv.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	rec["expiresAt"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, id, b); err != nil {
		t.Fatal(err)
	}
}

// TestAPIRevokeDropsLiveSession revokes through the API: the live MQTT
// session ends within one second and the reconnect is refused.
func TestAPIRevokeDropsLiveSession(t *testing.T) {
	w := newWorld(t)
	serial := w.gateway("acme")
	cert := nodetest.Enroll(t, w.n, "acme", serial, time.Hour)
	up, err := nodetest.Dial(t, w.n, cert, serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Connected bool }
	tu.Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
		w.api.Do("GET", "/v1/tenants/acme/gateways/"+serial, w.api.Key(), nil).Decode(t, &g)
		if !g.Connected {
			return errNotYet
		}
		return nil
	})
	start := time.Now()
	r := w.api.Do("POST", "/v1/tenants/acme/gateways/"+serial+"/revoke", w.api.Key(), nil)
	var rv struct{ State string }
	r.Decode(t, &rv)
	if r.Status != 200 || rv.State != "revoked" {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	select {
	case <-up.Done():
		if d := time.Since(start); d > time.Second {
			t.Errorf("dropped after %s", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("live session of a revoked gateway still open")
	}
	if _, err := nodetest.Dial(t, w.n, cert, serial, nil); err == nil {
		t.Fatal("revoked gateway reconnected")
	}
	// The audit log has the revocation and the refused reconnect.
	tu.Eventually(t, 2*time.Second, 20*time.Millisecond, func() error {
		var a struct {
			Items []struct{ Action, Outcome string }
		}
		w.api.Do("GET", "/v1/tenants/acme/audit?order=newest&limit=20", w.api.Key(), nil).Decode(t, &a)
		var revoked, refused bool
		for _, e := range a.Items {
			revoked = revoked || e.Action == "registry.gateway.revoke" && e.Outcome == "ok"
			refused = refused || e.Action == "ingest.connection.refused" && e.Outcome == "revoked"
		}
		if !revoked || !refused {
			return errNotYet
		}
		return nil
	})
}

var errNotYet = errString("not yet")

type errString string

func (e errString) Error() string { return string(e) }
