// Package testutil holds the shared test peers of iotransit: a running node
// on loopback ports with a temporary data directory, gateway certificates
// minted at run time (valid, expired, foreign, self-signed), gateway
// clients, an HTTPS API client, and polling helpers. It is imported only by
// tests.
package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
)

// Slowdown scales test deadlines (IOTRANSIT_TEST_SLOWDOWN, default 1), for
// slow CI machines.
func Slowdown() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("IOTRANSIT_TEST_SLOWDOWN")); err == nil && v > 0 {
		return time.Duration(v)
	}
	return 1
}

// Eventually polls fn every step until it returns nil or total (scaled by
// Slowdown) has passed, then fails the test with fn's last error.
func Eventually(t testing.TB, total, step time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total * Slowdown())
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", total*Slowdown(), err)
		}
		time.Sleep(step)
	}
}

// RequirePeer returns the path of a peer binary, skipping the test if it is
// missing, unless IOTRANSIT_REQUIRE_PEERS=1 (set by CI), which fails it.
func RequirePeer(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("IOTRANSIT_REQUIRE_PEERS") == "1" {
		t.Fatalf("peer %s is required (IOTRANSIT_REQUIRE_PEERS=1) but not found: %v", name, err)
	}
	t.Skipf("peer %s not installed", name)
	return ""
}

// Logger returns a logger that writes to the test log at level warn, or
// debug with IOTRANSIT_TEST_LOG=debug.
func Logger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("IOTRANSIT_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// StartNode starts a dev node on loopback with free ports and a temporary
// data directory; mod may adjust the configuration. It is closed at cleanup.
func StartNode(t testing.TB, mod func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.Config{
		DataDir:  t.TempDir(),
		MQTTAddr: "127.0.0.1:0",
		APIAddr:  "127.0.0.1:0",
		Dev:      true,
		Logger:   Logger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(n.Close)
	return n
}

// ServerPool returns a pool with the node's server CA.
func ServerPool(t testing.TB, n *node.Node) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(n.ServerCAPEM()) {
		t.Fatal("no server CA")
	}
	return pool
}

// ClientTLS returns a client configuration presenting cert (may be nil) and
// trusting the node's server CA.
func ClientTLS(t testing.TB, n *node.Node, cert *tls.Certificate) *tls.Config {
	t.Helper()
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ServerPool(t, n), ServerName: "127.0.0.1"}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// Gateway registers serial with tenant (created if missing), enrolls a key
// through a CSR and returns its client certificate.
func Gateway(t testing.TB, n *node.Node, tenant, serial string) *tls.Certificate {
	t.Helper()
	ctx := context.Background()
	if _, ok := n.Registry().Tenant(tenant); !ok {
		if _, err := n.CreateTenant(ctx, tenant); err != nil {
			t.Fatalf("create tenant %s: %v", tenant, err)
		}
	}
	if _, ok := n.Registry().Gateway(tenant, serial); !ok {
		if _, err := n.Registry().RegisterGateway(ctx, tenant, serial); err != nil {
			t.Fatalf("register %s: %v", serial, err)
		}
	}
	return Enroll(t, n, tenant, serial, 24*time.Hour)
}

// Enroll issues a certificate of the given validity to a registered gateway.
func Enroll(t testing.TB, n *node.Node, tenant, serial string, validity time.Duration) *tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.MakeCSR(key, serial)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := n.Registry().IssueCertificate(context.Background(), tenant, serial, csr, validity)
	if err != nil {
		t.Fatalf("issue certificate for %s: %v", serial, err)
	}
	return keyPair(t, certPEM, key)
}

func keyPair(t testing.TB, certPEM []byte, key any) *tls.Certificate {
	t.Helper()
	c, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

// SignWith signs a client certificate for commonName with ca, valid from
// notBefore for validity, without recording it anywhere: the way to mint
// expired, foreign or unregistered certificates.
func SignWith(t testing.TB, ca *pki.CA, commonName string, now time.Time, validity time.Duration) *tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := pki.MakeCSR(key, commonName)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, certPEM, err := ca.SignClient(csr, commonName, validity, now)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair(t, certPEM, key)
}

// SelfSigned returns a self-signed client certificate for commonName.
func SelfSigned(t testing.TB, commonName string) *tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair(t, pki.EncodeCertPEM(der), key)
}

// Dial connects a gateway over MQTT 5 with cert.
func Dial(t testing.TB, n *node.Node, cert *tls.Certificate, serial string, mod func(*gateway.UplinkConfig)) (*gateway.Uplink, error) {
	t.Helper()
	cfg := gateway.UplinkConfig{Addr: n.MQTTAddr(), Serial: serial, TLS: ClientTLS(t, n, cert)}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second*Slowdown())
	defer cancel()
	u, err := gateway.Dial(ctx, cfg)
	if err == nil {
		t.Cleanup(func() { _ = u.Close() })
	}
	return u, err
}

// API is an HTTPS client of a node's API.
type API struct {
	t    testing.TB
	base string
	key  string
	c    *http.Client
}

// NewAPI returns a client of n's API using the operator key.
func NewAPI(t testing.TB, n *node.Node) *API {
	return &API{t: t, base: "https://" + n.APIAddr(), key: n.OperatorKey(), c: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: ClientTLS(t, n, nil)},
	}}
}

// Get fetches path and decodes a JSON answer into out (when non-nil); it
// returns the status code.
func (a *API) Get(path string, out any) int {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.base+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("GET %s: decode %s: %v", path, b, err)
		}
	}
	return resp.StatusCode
}

// Message is a stored message as the API lists it.
type Message struct {
	ID         string          `json:"id"`
	Seq        uint64          `json:"seq"`
	ReceivedAt time.Time       `json:"receivedAt"`
	Gateway    string          `json:"gateway"`
	Message    json.RawMessage `json:"message"`
}

// Rejected is a rejected message as the API lists it.
type Rejected struct {
	Gateway string          `json:"gateway"`
	Index   int             `json:"index"`
	Code    string          `json:"code"`
	Field   string          `json:"field"`
	Reason  string          `json:"reason"`
	Message json.RawMessage `json:"message"`
	Payload string          `json:"payload"`
}

// Messages lists the tenant's newest messages through the API.
func (a *API) Messages(tenant string, limit int) []Message {
	a.t.Helper()
	var out struct{ Items []Message }
	if code := a.Get(fmt.Sprintf("/v1/tenants/%s/messages?limit=%d", tenant, limit), &out); code != http.StatusOK {
		a.t.Fatalf("list messages: status %d", code)
	}
	return out.Items
}

// Rejected lists the tenant's newest rejected messages through the API.
func (a *API) Rejected(tenant string, limit int) []Rejected {
	a.t.Helper()
	var out struct{ Items []Rejected }
	if code := a.Get(fmt.Sprintf("/v1/tenants/%s/rejected?limit=%d", tenant, limit), &out); code != http.StatusOK {
		a.t.Fatalf("list rejected: status %d", code)
	}
	return out.Items
}

// Thingsee returns a valid weather message of sensor tuid at ts.
func Thingsee(tuid string, ts int64, temp float64) string {
	return fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"%s","temp":%g,"humd":41.5}`, ts, tuid, temp)
}

// Counter returns the value of a counter from g with exactly these labels
// (0 when absent).
func Counter(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// Response is an API answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Problem decodes a problem+json answer.
func (r Response) Problem() (code, requestID string) {
	var p struct{ Code, RequestID string }
	_ = json.Unmarshal(r.Body, &p)
	return p.Code, p.RequestID
}

// Decode decodes a JSON answer into out.
func (r Response) Decode(t testing.TB, out any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, out); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request with bearer credential key ("" for none) and body
// (nil for none; a []byte is sent as is, anything else as JSON).
func (a *API) Do(method, path, key string, body any) Response {
	a.t.Helper()
	var rd io.Reader
	var ct string
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Key returns the operator key of the API client.
func (a *API) Key() string { return a.key }

// Base returns the API's base URL.
func (a *API) Base() string { return a.base }

// NoLimits lifts the API's rate limits (for tests that send many requests).
func NoLimits(c *node.Config) {
	c.APILimits = api.Limits{PerCredential: 1e6, CredentialBurst: 1e6, PerIP: 1e6, IPBurst: 1e6, AuthFailures: 1e6}
}
