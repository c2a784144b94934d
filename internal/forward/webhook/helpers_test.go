package webhook_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/forward/webhook"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// thingsee are three uplinks as gateways send them (shared/testdata/thingsee).
var thingsee = []string{
	`{"tsmId":12100,"tsmEv":10,"airp":101364.599,"lght":6,"temp":21.3,"humd":21.7,"tsmTs":1520416221,"tsmTuid":"TSEN01ABC12345678","tsmGw":"TSGW06ABC12345678","deploymentGroupId":"prfi00samplegroup"}`,
	`{"tsmId":13100,"tsmEv":10,"moveCount":12,"tsmTs":1520416221,"tsmTuid":"TSPR04ABC12345678","tsmGw":"TSGW06ABC12345678","deploymentGroupId":"prfi00samplegroup"}`,
	`{"tsmId":1111,"tsmEv":10,"accx":-1024,"accy":64,"accz":-192,"tsmTs":1520416221,"tsmTuid":"XXXX03X2Z80562557","tsmGw":"XXXX00EFS80560445"}`,
}

func newBatch(id string, bodies ...string) *forward.Batch {
	b := &forward.Batch{ID: id, Tenant: "acme", Integration: "hook", Attempt: 1}
	for i, body := range bodies {
		b.Messages = append(b.Messages, forward.Message{Seq: uint64(i + 1), ID: fmt.Sprintf("m%d", i+1), Body: []byte(body)})
	}
	return b
}

func newCA(t testing.TB, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// serverCert issues a loopback server certificate from ca.
func serverCert(t testing.TB, ca *pki.CA) tls.Certificate {
	t.Helper()
	return *tu.ServerCert(t, ca, "127.0.0.1", "localhost", "::1")
}

// clientCert issues a client certificate from ca, as PEM.
func clientCert(t testing.TB, ca *pki.CA) (certPEM, keyPEM string) {
	t.Helper()
	return tu.ClientCertPEM(t, ca, "iotransit-forwarder")
}

func newSecret(t testing.TB) string {
	t.Helper()
	s, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// delivery is one request a receiver got.
type delivery struct {
	Body   []byte
	Header http.Header
	// Verified is whether one of the receiver's secrets verified it with
	// the Standard Webhooks reference library.
	Verified bool
}

// respondFunc answers request n (from 0); it returns false to let the
// receiver answer (200 when verified, else 401).
type respondFunc func(w http.ResponseWriter, r *http.Request, n int) bool

type receiverOpts struct {
	// Secrets the receiver verifies with (any one must match).
	Secrets []string
	// ClientCA, when set, requires a client certificate from it.
	ClientCA *pki.CA
	// Discard skips verification and recording (benchmarks).
	Discard bool
	// HTTP1 turns HTTP/2 off.
	HTTP1 bool
}

// receiver is a customer's webhook endpoint: real HTTPS on loopback.
type receiver struct {
	srv   *httptest.Server
	URL   string
	conns atomic.Int64

	mu      sync.Mutex
	secrets []string
	got     []delivery
	respond respondFunc
}

func newReceiver(t testing.TB, ca *pki.CA, o receiverOpts) *receiver {
	t.Helper()
	rc := &receiver{secrets: o.Secrets}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.Discard {
			_, _ = io.Copy(io.Discard, r.Body)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		d := delivery{Body: body, Header: r.Header.Clone()}
		for _, s := range rc.secrets {
			wh, err := standardwebhooks.NewWebhook(s)
			if err == nil && wh.Verify(body, r.Header) == nil {
				d.Verified = true
			}
		}
		n := len(rc.got)
		rc.got = append(rc.got, d)
		respond := rc.respond
		rc.mu.Unlock()
		if respond != nil && respond(w, r, n) {
			return
		}
		if !d.Verified {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	cfg := &tls.Config{Certificates: []tls.Certificate{serverCert(t, ca)}, MinVersion: tls.VersionTLS12}
	if o.ClientCA != nil {
		pool := x509.NewCertPool()
		pool.AddCert(o.ClientCA.Cert)
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	rc.srv.TLS = cfg
	rc.srv.EnableHTTP2 = !o.HTTP1
	rc.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	rc.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rc.conns.Add(1)
		}
	}
	rc.srv.StartTLS()
	t.Cleanup(rc.srv.Close)
	rc.URL = rc.srv.URL + "/hooks/iotransit"
	return rc
}

func (rc *receiver) setRespond(f respondFunc) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.respond = f
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// config is a target of rc's URL that trusts ca, on loopback.
func config(url string, ca *pki.CA, secrets ...string) webhook.Config {
	c := webhook.Config{
		URL:    url,
		TLS:    egress.TLSOptions{CAPEM: string(ca.CertPEM)},
		Policy: egress.Policy{AllowPrivate: true},
	}
	for _, s := range secrets {
		c.Secrets = append(c.Secrets, webhook.Secret{Value: s})
	}
	return c
}

func newTarget(t testing.TB, c webhook.Config) *webhook.Target {
	t.Helper()
	tg, err := webhook.New(context.Background(), c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg
}

// summary returns the public summary of a delivery error, failing the test
// when err is not a *forward.DeliveryError.
func summary(t testing.TB, err error) string {
	t.Helper()
	var de *forward.DeliveryError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a DeliveryError", err, err)
	}
	return de.Summary
}

// codes lists the fault codes in err (errors.Join included).
func codes(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, codes(e)...)
		}
		return out
	}
	if fe, ok := fault.As(err); ok {
		return []string{fe.Code()}
	}
	return []string{"not a fault: " + err.Error()}
}

// tokenServer is an OAuth2 authorization server's token endpoint for the
// client credentials grant (RFC 6749 §4.4), client authentication by HTTP
// Basic (§2.3.1). Its tokens expire after Lifetime seconds.
type tokenServer struct {
	srv      *httptest.Server
	URL      string
	requests atomic.Int64
	lifetime int

	mu       sync.Mutex
	id, sec  string
	scopes   []string
	expiry   map[string]time.Time
	revoked  map[string]bool
	failNext bool
}

// grace is how long past its announced expiry a token is still honoured
// (the client measures expiry from when it received the token).
const grace = time.Second

func newTokenServer(t testing.TB, ca *pki.CA, clientID, clientSecret string, lifetime int) *tokenServer {
	t.Helper()
	ts := &tokenServer{id: clientID, sec: clientSecret, lifetime: lifetime, expiry: map[string]time.Time{}, revoked: map[string]bool{}}
	ts.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost || r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"unsupported_grant_type"}`)
			return
		}
		id, sec, ok := r.BasicAuth()
		id, _ = url.QueryUnescape(id)
		sec, _ = url.QueryUnescape(sec)
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if !ok || id != ts.id || sec != ts.sec || ts.failNext {
			ts.failNext = false
			w.WriteHeader(http.StatusUnauthorized)
			// A careless server echoes what it got; it must not reach errors.
			_, _ = fmt.Fprintf(w, `{"error":"invalid_client","error_description":"bad secret %s"}`, sec)
			return
		}
		ts.scopes = strings.Fields(r.PostForm.Get("scope"))
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		tok := hex.EncodeToString(b)
		ts.expiry[tok] = time.Now().Add(time.Duration(ts.lifetime)*time.Second + grace)
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "bearer", "expires_in": ts.lifetime})
	}))
	ts.srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert(t, ca)}}
	ts.srv.EnableHTTP2 = true
	ts.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.srv.StartTLS()
	t.Cleanup(ts.srv.Close)
	ts.URL = ts.srv.URL + "/oauth2/token"
	return ts
}

// valid reports whether an Authorization header carries a live token.
func (ts *tokenServer) valid(authz string) bool {
	tok, ok := strings.CutPrefix(authz, "Bearer ")
	if !ok {
		return false
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	exp, ok := ts.expiry[tok]
	return ok && !ts.revoked[tok] && time.Now().Before(exp)
}

func (ts *tokenServer) revokeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for tok := range ts.expiry {
		ts.revoked[tok] = true
	}
}

// requireToken answers 401 to requests without a live token.
func (ts *tokenServer) requireToken(w http.ResponseWriter, r *http.Request, _ int) bool {
	if !ts.valid(r.Header.Get("Authorization")) {
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
	return false
}
