package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"github.com/iotransit/iotransit/receiver"
)

// exchange is one request the recorder saw and its answer.
type exchange struct {
	method, path string
	status       int
	body         []byte
}

// recorder is a transport that keeps every exchange, so a test can check
// which routes the client called and that what it decoded marshals back to
// what the server sent.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []exchange
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	ex := exchange{method: req.Method, path: req.URL.Path, status: resp.StatusCode}
	if resp.StatusCode != http.StatusSwitchingProtocols { // a WebSocket's body is the connection
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		ex.body = b
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, ex)
	return resp, nil
}

// last returns the last exchange.
func (r *recorder) last(t *testing.T) exchange {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		t.Fatal("no request recorded")
	}
	return r.seen[len(r.seen)-1]
}

// env is a running node and clients of it.
type env struct {
	n   *node.Node
	rec *recorder
	// op is the operator's client, through the recorder.
	op *client.Client
	// called lists the routes called by clients that bypass the recorder.
	called []string
}

const (
	tenant  = "acme"
	serial  = "TSGW06ACM00000001"
	serial2 = "TSGW06ACM00000002"
)

func newEnv(t *testing.T) *env {
	t.Helper()
	n := nodetest.Start(t, nodetest.NoLimits)
	rec := &recorder{next: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil), ForceAttemptHTTP2: true}}
	op, err := client.New(client.Config{Server: n.APIAddr(), Credential: n.OperatorKey(), HTTPClient: &http.Client{Transport: rec}, UserAgent: "client-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)
	return &env{n: n, rec: rec, op: op}
}

// ctx bounds each step of a test.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second*tu.Slowdown())
	t.Cleanup(cancel)
	return c
}

// must fails the test on err.
func must[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// sameAsSent checks that v, what the client decoded of the last answer,
// marshals to exactly the JSON the server sent: what -o json prints.
func (e *env) sameAsSent(t *testing.T, v any) {
	t.Helper()
	ex := e.rec.last(t)
	got, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, ex.body); err != nil {
		t.Fatalf("%s %s answered no JSON: %v", ex.method, ex.path, err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("%s %s: the decoded answer marshals to\n%s\nthe server sent\n%s", ex.method, ex.path, got, want.Bytes())
	}
}

// wantProblem checks that err is a *client.Problem of status and code with
// a request id, the same in the X-Request-Id header.
func wantProblem(t *testing.T, err error, status int, code string) *client.Problem {
	t.Helper()
	var p *client.Problem
	if !errors.As(err, &p) {
		t.Fatalf("error %v (%T) is not a *client.Problem", err, err)
	}
	if p.Status != status || p.Code != code || client.ErrorCode(err) != code {
		t.Fatalf("problem %d %q (%v), want %d %q", p.Status, p.Code, err, status, code)
	}
	if !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(p.RequestID) || !strings.Contains(err.Error(), "(request "+p.RequestID+")") {
		t.Fatalf("problem without a request id: %v", err)
	}
	return p
}

// enrollKey makes a key and CSR for serial.
func enrollKey(t *testing.T, serial string) (keyPEM, csrPEM []byte) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.MakeCSR(key, serial)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = pki.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return keyPEM, csr
}

// TestClientAgainstANode calls every route of a real node through its
// method, checks what each answers, a refusal of several, and finally that
// no route of the server was left out.
func TestClientAgainstANode(t *testing.T) {
	e := newEnv(t)
	var gwCert *tls.Certificate
	t.Run("health", e.health)
	t.Run("tenants", e.tenants)
	t.Run("policy", e.policy)
	t.Run("gateways", e.gateways)
	t.Run("factory", e.factory)
	t.Run("enrollment", func(t *testing.T) { gwCert = e.enrollment(t) })
	t.Run("credentials", e.credentials)
	t.Run("whoami", e.whoami)
	t.Run("oauth2", e.oauth2)
	t.Run("messages and stream", func(t *testing.T) { e.messages(t, gwCert) })
	t.Run("integrations", func(t *testing.T) { e.integrations(t, gwCert) })
	t.Run("audit", e.audit)
	t.Run("mesh", e.mesh)
	t.Run("firmware", func(t *testing.T) { e.firmware(t, gwCert) })
	t.Run("kms", e.kms)
	t.Run("key rotation", e.keyRotation)
	t.Run("erase", e.erase)
	t.Run("operators", e.operators) // last: it retires the bootstrap key
	t.Run("every route", e.everyRoute)
}

func (e *env) health(t *testing.T) {
	h := must[*client.Health](t)(e.op.Healthz(ctx(t)))
	e.sameAsSent(t, h)
	if h.Status != "ok" {
		t.Errorf("healthz %q", h.Status)
	}
	if r := must[*client.Health](t)(e.op.Readyz(ctx(t))); r.Status != "ready" {
		t.Errorf("readyz %q", r.Status)
	}
	if doc := must[[]byte](t)(e.op.OpenAPI(ctx(t))); !bytes.HasPrefix(doc, []byte("openapi: 3.1")) {
		t.Errorf("the OpenAPI document starts %q", doc[:min(len(doc), 20)])
	}
	if m := must[[]byte](t)(e.op.Metrics(ctx(t))); !bytes.Contains(m, []byte("# HELP")) {
		t.Errorf("metrics: %.80s", m)
	}
	// Public routes send no credential, even a wrong one.
	anon := e.op.WithCredential("itk_wrong")
	if _, err := anon.Healthz(ctx(t)); err != nil {
		t.Errorf("healthz with a wrong credential: %v", err)
	}
	_, err := anon.Metrics(ctx(t))
	wantProblem(t, err, 401, "api.unauthenticated")
}

func (e *env) tenants(t *testing.T) {
	tn := must[*client.Tenant](t)(e.op.CreateTenant(ctx(t), tenant))
	e.sameAsSent(t, tn)
	if tn.ID != tenant || !strings.Contains(tn.CACert, "BEGIN CERTIFICATE") || tn.CreatedAt.IsZero() {
		t.Errorf("created %+v", tn)
	}
	got := must[*client.Tenant](t)(e.op.GetTenant(ctx(t), tenant))
	e.sameAsSent(t, got)
	if got.ID != tenant || got.CACert != tn.CACert {
		t.Errorf("got %+v", got)
	}
	all := must[[]client.Tenant](t)(e.op.ListTenants(ctx(t)))
	e.sameAsSent(t, client.List[client.Tenant]{Items: all})
	if !slices.ContainsFunc(all, func(x client.Tenant) bool { return x.ID == tenant }) {
		t.Errorf("%s is not in the list: %+v", tenant, all)
	}

	_, err := e.op.GetTenant(ctx(t), "nobody")
	p := wantProblem(t, err, 404, "registry.tenant_not_found")
	if p.Title != "no such tenant" || p.Type != "https://iotransit.dev/problems/registry.tenant_not_found" {
		t.Errorf("problem %+v", p)
	}
	_, err = e.op.CreateTenant(ctx(t), "Not A Tenant!")
	wantProblem(t, err, 400, "registry.tenant_invalid")
	_, err = e.op.CreateTenant(ctx(t), tenant)
	wantProblem(t, err, 409, "registry.tenant_exists")

	// Deletion: confirmed, tombstoned, the id reserved.
	must[*client.Tenant](t)(e.op.CreateTenant(ctx(t), "gone"))
	_, err = e.op.DeleteTenant(ctx(t), "gone", tenant)
	wantProblem(t, err, 400, "api.tenant_delete_unconfirmed")
	tomb := must[*client.Tenant](t)(e.op.DeleteTenant(ctx(t), "gone", "gone"))
	e.sameAsSent(t, tomb)
	if tomb.ID != "gone" || tomb.State != client.TenantDeleted || tomb.DeletedBy != "operator" || tomb.DeletedAt == nil {
		t.Errorf("tombstone %+v", tomb)
	}
	deleted := must[[]client.Tenant](t)(e.op.ListDeletedTenants(ctx(t)))
	e.sameAsSent(t, client.List[client.Tenant]{Items: deleted})
	if len(deleted) != 1 || deleted[0].ID != "gone" {
		t.Errorf("deleted tenants %+v", deleted)
	}
	_, err = e.op.CreateTenant(ctx(t), "gone")
	wantProblem(t, err, 409, "registry.tenant_deleted")
}

func (e *env) gateways(t *testing.T) {
	labels := map[string]string{"site": "hq"}
	g := must[*client.Gateway](t)(e.op.RegisterGateway(ctx(t), tenant, client.RegisterGatewayRequest{Serial: serial, Labels: labels}))
	e.sameAsSent(t, g)
	if g.Serial != serial || g.State != client.GatewayActive || g.Labels["site"] != "hq" || g.Certificates == nil {
		t.Errorf("registered %+v", g)
	}
	must[*client.Gateway](t)(e.op.RegisterGateway(ctx(t), tenant, client.RegisterGatewayRequest{Serial: serial2}))

	page := must[*client.Page[client.Gateway]](t)(e.op.ListGateways(ctx(t), tenant, client.GatewayQuery{Limit: 1}))
	e.sameAsSent(t, page)
	if len(page.Items) != 1 || page.Items[0].Serial != serial || page.Next != serial {
		t.Errorf("first page %+v", page)
	}
	var walked []string
	for g, err := range e.op.AllGateways(ctx(t), tenant, client.GatewayQuery{Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		walked = append(walked, g.Serial)
	}
	if !slices.Equal(walked, []string{serial, serial2}) {
		t.Errorf("AllGateways walked %v", walked)
	}

	group := "prfi00acme"
	newLabels := map[string]string{"site": "lab", "floor": "2"}
	up := must[*client.Gateway](t)(e.op.UpdateGateway(ctx(t), tenant, serial2, client.UpdateGatewayRequest{Labels: &newLabels, DeploymentGroupID: &group}))
	e.sameAsSent(t, up)
	if up.DeploymentGroupID != group || up.Labels["floor"] != "2" {
		t.Errorf("updated %+v", up)
	}
	if got := must[*client.Gateway](t)(e.op.GetGateway(ctx(t), tenant, serial2)); got.DeploymentGroupID != group {
		t.Errorf("got %+v", got)
	}
	for _, step := range []struct {
		do   func(context.Context, string, string) (*client.Gateway, error)
		want string
	}{
		{e.op.IsolateGateway, client.GatewayIsolated},
		{e.op.ActivateGateway, client.GatewayActive},
		{e.op.RevokeGateway, client.GatewayRevoked},
	} {
		g := must[*client.Gateway](t)(step.do(ctx(t), tenant, serial2))
		e.sameAsSent(t, g)
		if g.State != step.want {
			t.Errorf("state %s, want %s", g.State, step.want)
		}
	}
	revoked := must[*client.Page[client.Gateway]](t)(e.op.ListGateways(ctx(t), tenant, client.GatewayQuery{State: client.GatewayRevoked}))
	if len(revoked.Items) != 1 || revoked.Items[0].Serial != serial2 || revoked.Next != "" {
		t.Errorf("revoked gateways %+v", revoked)
	}
	if err := e.op.DeleteGateway(ctx(t), tenant, serial2); err != nil {
		t.Fatal(err)
	}

	_, err := e.op.GetGateway(ctx(t), tenant, serial2)
	wantProblem(t, err, 404, "registry.gateway_not_found")
	_, err = e.op.ListGateways(ctx(t), tenant, client.GatewayQuery{State: "asleep"})
	p := wantProblem(t, err, 400, "api.bad_parameter")
	if p.Detail == "" {
		t.Errorf("a bad parameter without detail: %v", err)
	}
	_, err = e.op.RegisterGateway(ctx(t), tenant, client.RegisterGatewayRequest{Serial: "short"})
	wantProblem(t, err, 400, "registry.serial_invalid")
	// A body the server cannot decode.
	_, err = e.op.Do(ctx(t), http.MethodPost, "/v1/tenants/acme/gateways", nil, map[string]any{"serial": serial, "colour": "red"})
	if p := wantProblem(t, err, 400, "api.json_invalid"); !strings.Contains(p.Detail, `"colour"`) {
		t.Errorf("detail %q does not name the unknown field", p.Detail)
	}
}

func (e *env) enrollment(t *testing.T) *tls.Certificate {
	tok := must[*client.EnrollmentToken](t)(e.op.CreateEnrollmentToken(ctx(t), tenant, client.CreateEnrollmentTokenRequest{Serial: serial, TTL: (time.Hour).String()}))
	e.sameAsSent(t, tok)
	if !strings.HasPrefix(tok.Token, "iet_") || tok.Serial != serial || time.Until(tok.ExpiresAt) > time.Hour {
		t.Errorf("token %+v", tok)
	}
	toks := must[[]client.EnrollmentToken](t)(e.op.ListEnrollmentTokens(ctx(t), tenant))
	e.sameAsSent(t, client.List[client.EnrollmentToken]{Items: toks})
	if len(toks) != 1 || toks[0].ID != tok.ID || toks[0].Token != "" || toks[0].State != client.TokenValid {
		t.Errorf("tokens %+v", toks)
	}
	// A revoked token enrolls nothing.
	spare := must[*client.EnrollmentToken](t)(e.op.CreateEnrollmentToken(ctx(t), tenant, client.CreateEnrollmentTokenRequest{Serial: serial}))
	rv := must[*client.EnrollmentToken](t)(e.op.RevokeEnrollmentToken(ctx(t), tenant, spare.ID))
	e.sameAsSent(t, rv)
	if rv.ID != spare.ID || rv.State != client.TokenRevoked || rv.RevokedAt == nil || rv.Token != "" {
		t.Errorf("revoked token %+v", rv)
	}
	_, err := e.op.RevokeEnrollmentToken(ctx(t), tenant, "0123456789abcdef")
	wantProblem(t, err, 404, "registry.token_not_found")

	// Enroll sends no credential: the token is one.
	anon := e.op.WithCredential("")
	keyPEM, csr := enrollKey(t, serial)
	_, err = anon.Enroll(ctx(t), "iet_0000000000000000_"+strings.Repeat("A", 43), csr)
	wantProblem(t, err, 401, "registry.token_invalid")
	_, err = anon.Enroll(ctx(t), spare.Token, csr)
	wantProblem(t, err, 401, "registry.token_revoked")
	en := must[*client.Enrollment](t)(anon.Enroll(ctx(t), tok.Token, csr))
	e.sameAsSent(t, en)
	if en.Serial != serial || en.Tenant != tenant || en.UpTopic != "v1/gw/"+serial+"/up" || !strings.Contains(en.CA, "BEGIN CERTIFICATE") {
		t.Errorf("enrollment %+v", en)
	}
	cert, err := tls.X509KeyPair([]byte(en.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certs := must[[]client.Certificate](t)(e.op.ListCertificates(ctx(t), tenant, serial))
	e.sameAsSent(t, client.List[client.Certificate]{Items: certs})
	if len(certs) != 1 || certs[0].Serial != en.CertificateSerial || certs[0].Status != client.CertificateValid {
		t.Errorf("certificates %+v", certs)
	}

	// Reenroll over mutual TLS with the enrolled certificate, the client
	// making its own TLS configuration from Config.
	gw, err := client.New(client.Config{Server: e.n.APIAddr(), CAPEM: []byte(en.CA), Certificate: &cert})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	_, csr2 := enrollKey(t, serial)
	re, err := gw.Reenroll(ctx(t), csr2)
	if err != nil {
		t.Fatal(err)
	}
	e.called = append(e.called, "POST /v1/reenroll")
	if re.Serial != serial || re.CertificateSerial == en.CertificateSerial || !re.NotAfter.After(time.Now()) {
		t.Errorf("renewal %+v after %+v", re, en)
	}
	// Without a client certificate the gateway is not known.
	nocert, err := client.New(client.Config{Server: e.n.APIAddr(), CAPEM: []byte(en.CA)})
	if err != nil {
		t.Fatal(err)
	}
	defer nocert.Close()
	_, err = nocert.Reenroll(ctx(t), csr2)
	wantProblem(t, err, 401, "api.client_certificate_required")
	return &cert
}

func (e *env) credentials(t *testing.T) {
	k := must[*client.APIKey](t)(e.op.CreateAPIKey(ctx(t), tenant, client.CreateAPIKeyRequest{Name: "reader", Scopes: []string{client.ScopeGatewaysRead}, TTL: "720h"}))
	e.sameAsSent(t, k)
	if !strings.HasPrefix(k.Key, "itk_") || k.ExpiresAt == nil || !slices.Equal(k.Scopes, []string{client.ScopeGatewaysRead}) {
		t.Errorf("key %+v", k)
	}
	got := must[*client.APIKey](t)(e.op.GetAPIKey(ctx(t), tenant, k.ID))
	e.sameAsSent(t, got)
	if got.ID != k.ID || got.Key != "" {
		t.Errorf("got %+v", got)
	}
	keys := must[[]client.APIKey](t)(e.op.ListAPIKeys(ctx(t), tenant))
	e.sameAsSent(t, client.List[client.APIKey]{Items: keys})
	if len(keys) != 1 || keys[0].ID != k.ID {
		t.Errorf("keys %+v", keys)
	}

	reader := e.op.WithCredential(k.Key)
	if _, err := reader.GetTenant(ctx(t), tenant); err != nil {
		t.Errorf("the reader cannot read its tenant: %v", err)
	}
	_, err := reader.ListAPIKeys(ctx(t), tenant)
	if p := wantProblem(t, err, 403, "api.scope_missing"); !strings.Contains(p.Detail, client.ScopeKeysRead) {
		t.Errorf("detail %q does not name the scope", p.Detail)
	}
	_, err = reader.GetTenant(ctx(t), "other")
	wantProblem(t, err, 404, "registry.tenant_not_found")

	rv := must[*client.APIKey](t)(e.op.RevokeAPIKey(ctx(t), tenant, k.ID))
	e.sameAsSent(t, rv)
	if rv.RevokedAt == nil {
		t.Errorf("revoked %+v", rv)
	}
	_, err = reader.GetTenant(ctx(t), tenant)
	wantProblem(t, err, 401, "api.unauthenticated")
	_, err = e.op.GetAPIKey(ctx(t), tenant, "0000000000000000")
	wantProblem(t, err, 404, "credential.not_found")
}

func (e *env) oauth2(t *testing.T) {
	c := must[*client.OAuth2Client](t)(e.op.CreateOAuth2Client(ctx(t), tenant, client.CreateOAuth2ClientRequest{
		Name: "ingest", Scopes: []string{client.ScopeGatewaysRead, client.ScopeAuditRead}, TTL: "720h",
	}))
	e.sameAsSent(t, c)
	if !strings.HasPrefix(c.ID, "itc_") || !strings.HasPrefix(c.ClientSecret, "its_") || c.ExpiresAt == nil || time.Until(*c.ExpiresAt) > 720*time.Hour {
		t.Errorf("client %+v", c)
	}
	_, err := e.op.CreateOAuth2Client(ctx(t), tenant, client.CreateOAuth2ClientRequest{Scopes: []string{client.ScopeGatewaysRead}, TTL: "1s"})
	wantProblem(t, err, 400, "credential.ttl_invalid")
	if got := must[*client.OAuth2Client](t)(e.op.GetOAuth2Client(ctx(t), tenant, c.ID)); got.ID != c.ID || got.ClientSecret != "" {
		t.Errorf("got %+v", got)
	}
	clients := must[[]client.OAuth2Client](t)(e.op.ListOAuth2Clients(ctx(t), tenant))
	e.sameAsSent(t, client.List[client.OAuth2Client]{Items: clients})
	if len(clients) != 1 || clients[0].ID != c.ID {
		t.Errorf("clients %+v", clients)
	}

	anon := e.op.WithCredential("")
	tok := must[*client.Token](t)(anon.Token(ctx(t), c.ID, c.ClientSecret, client.ScopeGatewaysRead))
	e.sameAsSent(t, tok)
	if tok.TokenType != "Bearer" || tok.Scope != client.ScopeGatewaysRead || tok.ExpiresIn <= 0 {
		t.Errorf("token %+v", tok)
	}
	bearer := e.op.WithCredential(tok.AccessToken)
	if _, err := bearer.GetGateway(ctx(t), tenant, serial); err != nil {
		t.Errorf("the access token cannot read a gateway: %v", err)
	}
	_, err = bearer.VerifyAudit(ctx(t), tenant) // narrowed away
	wantProblem(t, err, 403, "api.scope_missing")

	tests := []struct {
		name, id, secret string
		scopes           []string
		status           int
		code             string
	}{
		{name: "wrong secret", id: c.ID, secret: "its_" + strings.Repeat("x", 43), status: 401, code: "invalid_client"},
		{name: "unknown client", id: "itc_0000000000000000", secret: c.ClientSecret, status: 401, code: "invalid_client"},
		{name: "scope not held", id: c.ID, secret: c.ClientSecret, scopes: []string{client.ScopeKeysWrite}, status: 400, code: "invalid_scope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := anon.Token(ctx(t), tc.id, tc.secret, tc.scopes...)
			var oe *client.OAuthError
			if !errors.As(err, &oe) || oe.Status != tc.status || oe.Code != tc.code || client.ErrorCode(err) != tc.code || oe.RequestID == "" {
				t.Fatalf("Token = %v (%T), want an *OAuthError %d %s with a request id", err, err, tc.status, tc.code)
			}
		})
	}

	must[*client.OAuth2Client](t)(e.op.RevokeOAuth2Client(ctx(t), tenant, c.ID))
	_, err = bearer.GetGateway(ctx(t), tenant, serial)
	wantProblem(t, err, 401, "api.unauthenticated")
}

func (e *env) messages(t *testing.T, cert *tls.Certificate) {
	if cert == nil {
		t.Skip("no gateway certificate (enrollment failed)")
	}
	up, err := nodetest.Dial(t, e.n, cert, serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	const tuid = "TSEN01ACM00000001"
	base := time.Now().Unix()
	publish := func(i int) {
		t.Helper()
		if _, err := up.Publish(ctx(t), []byte(tu.Thingsee(tuid, base+int64(i), 20+float64(i))), 1); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		publish(i)
	}
	if _, err := up.Publish(ctx(t), []byte(`{"tsmId":12100,"tsmTuid":"bad"}`), 1); err != nil {
		t.Fatal(err)
	}
	want := make([]string, 4)
	for i := range want {
		want[i] = tuid + ":12100:" + strconv.FormatInt(base+int64(i), 10)
	}

	// Stored before the PUBACK: listed at once, oldest first, a page at a time.
	page := must[*client.Page[client.Message]](t)(e.op.ListMessages(ctx(t), tenant, client.MessageQuery{Limit: 2, Oldest: true, TsmTuid: tuid}))
	e.sameAsSent(t, page)
	if len(page.Items) != 2 || page.Next == "" || page.Items[0].Gateway != serial {
		t.Fatalf("first page %+v", page)
	}
	first := page.Items[0].Seq

	// The stream from the first message on gives them one by one, in
	// order, then a message published while it is open.
	stream, err := e.op.OpenStream(ctx(t), tenant, client.StreamOptions{After: strconv.FormatUint(first-1, 10)})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	next := func(s *client.Stream) string {
		t.Helper()
		raw, err := s.Next(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		var m receiver.Message
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m.Key()
	}
	var keys []string
	for range 3 {
		keys = append(keys, next(stream))
	}
	publish(3)
	keys = append(keys, next(stream))
	if !slices.Equal(keys, want) {
		t.Errorf("streamed %v, want %v", keys, want)
	}

	// Resuming after a message by its Thingsee key gives the next one.
	after, err := e.op.OpenStream(ctx(t), tenant, client.StreamOptions{After: keys[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if k := next(after); k != keys[1] {
		t.Errorf("resumed after %s with %s, want %s", keys[0], k, keys[1])
	}
	// Resuming after a seq gives the frames as sent.
	bySeq, err := e.op.OpenStream(ctx(t), tenant, client.StreamOptions{After: strconv.FormatUint(page.Items[1].Seq, 10)})
	if err != nil {
		t.Fatal(err)
	}
	defer bySeq.Close()
	frame, sealed, err := bySeq.ReadFrame(ctx(t))
	if err != nil || sealed || !bytes.Contains(frame, []byte(`"tsmTs":`+strconv.FormatInt(base+2, 10))) {
		t.Errorf("resumed after seq %d with %s (sealed %t), %v", page.Items[1].Seq, frame, sealed, err)
	}
	_, err = e.op.OpenStream(ctx(t), tenant, client.StreamOptions{After: "TSEN01ACM00000001:12100:1000000000"})
	wantProblem(t, err, 404, "api.after_unknown")

	var all []uint64
	for m, err := range e.op.AllMessages(ctx(t), tenant, client.MessageQuery{Limit: 1, Oldest: true}) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, m.Seq)
	}
	if len(all) != 4 || all[0] != first || !slices.IsSorted(all) {
		t.Errorf("AllMessages walked seqs %v", all)
	}

	var rejected *client.Page[client.Rejected]
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		var err error
		rejected, err = e.op.ListRejected(ctx(t), tenant, client.RejectedQuery{Gateway: serial})
		if err == nil && len(rejected.Items) == 0 {
			err = errors.New("no rejected message yet")
		}
		return err
	})
	e.sameAsSent(t, rejected)
	if r := rejected.Items[0]; r.Code == "" || r.Message == nil || r.Gateway != serial {
		t.Errorf("rejected %+v", r)
	}
	n := 0
	for _, err := range e.op.AllRejected(ctx(t), tenant, client.RejectedQuery{Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(rejected.Items) {
		t.Errorf("AllRejected walked %d, the list has %d", n, len(rejected.Items))
	}
	_, err = e.op.ListMessages(ctx(t), tenant, client.MessageQuery{TsmID: 7})
	wantProblem(t, err, 400, "api.bad_parameter")
}

func (e *env) integrations(t *testing.T, cert *tls.Certificate) {
	recv := tu.NewReceiver(t)
	in := client.Integration{Name: "hook", Type: client.IntegrationWebhook, Webhook: &client.WebhookConfig{URL: recv.URL + "/in", CAPEM: recv.CAPEM}}
	created := must[*client.Integration](t)(e.op.CreateIntegration(ctx(t), tenant, in))
	e.sameAsSent(t, created)
	if created.ID == "" || created.Webhook == nil || !strings.HasPrefix(created.Webhook.Secret, "whsec_") {
		t.Fatalf("created %+v", created)
	}
	id := created.ID
	list := must[[]client.IntegrationView](t)(e.op.ListIntegrations(ctx(t), tenant))
	e.sameAsSent(t, client.List[client.IntegrationView]{Items: list})
	if len(list) != 1 || list[0].Webhook.Secret != "" || !slices.Contains(list[0].SecretsSet, "webhook.secret") {
		t.Errorf("list %+v", list)
	}
	view := must[*client.IntegrationView](t)(e.op.GetIntegration(ctx(t), tenant, id))
	e.sameAsSent(t, view)
	if view.ID != id || view.Batch.MaxMessages == 0 {
		t.Errorf("view %+v", view)
	}

	name := "hook-renamed"
	wait := client.Duration(50 * time.Millisecond)
	upd := must[*client.Integration](t)(e.op.UpdateIntegration(ctx(t), tenant, id, client.IntegrationPatch{
		Name: &name, Batch: &client.Batching{MaxMessages: 5, MaxWait: wait},
	}))
	e.sameAsSent(t, upd)
	if upd.Name != name || upd.Batch.MaxMessages != 5 || upd.Webhook.URL != in.Webhook.URL {
		t.Errorf("updated %+v", upd)
	}
	if p := must[*client.Integration](t)(e.op.PauseIntegration(ctx(t), tenant, id)); !p.Paused {
		t.Errorf("paused %+v", p)
	}
	if r := must[*client.Integration](t)(e.op.ResumeIntegration(ctx(t), tenant, id)); r.Paused {
		t.Errorf("resumed %+v", r)
	}
	if r := must[*client.Integration](t)(e.op.RetryIntegrationNow(ctx(t), tenant, id)); r.ID != id {
		t.Errorf("retry now %+v", r)
	}
	res := must[*client.TestResult](t)(e.op.TestIntegration(ctx(t), tenant, id))
	e.sameAsSent(t, res)
	if !res.OK || !strings.HasPrefix(res.BatchID, "msg_") {
		t.Errorf("test %+v", res)
	}
	rot := must[*client.Integration](t)(e.op.RotateSecret(ctx(t), tenant, id, client.RotateSecretRequest{Overlap: "1h"}))
	e.sameAsSent(t, rot)
	if rot.Webhook.Secret == "" || rot.Webhook.Secret == created.Webhook.Secret || rot.PreviousSecretUntil == nil {
		t.Errorf("rotated %+v", rot)
	}

	// Encryption set, then removed ("encryption": null).
	privPEM, pubPEM, err := receiver.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	enc := must[*client.Integration](t)(e.op.UpdateIntegration(ctx(t), tenant, id, client.IntegrationPatch{Encryption: &client.Encryption{PublicKeyPEM: string(pubPEM)}}))
	if enc.Encryption == nil || enc.Encryption.KeyID == "" {
		t.Errorf("encryption not set: %+v", enc.Encryption)
	}
	if dec := must[*client.Integration](t)(e.op.UpdateIntegration(ctx(t), tenant, id, client.IntegrationPatch{RemoveEncryption: true})); dec.Encryption != nil || dec.Name != name {
		t.Errorf("encryption not removed: %+v", dec)
	}

	// A websocket integration with a key seals the stream's frames.
	ws := must[*client.Integration](t)(e.op.CreateIntegration(ctx(t), tenant, client.Integration{
		Name: "live", Type: client.IntegrationWebsocket, Encryption: &client.Encryption{PublicKeyPEM: string(pubPEM)},
	}))
	opener, err := receiver.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	oldest := must[*client.Page[client.Message]](t)(e.op.ListMessages(ctx(t), tenant, client.MessageQuery{Limit: 1, Oldest: true}))
	if len(oldest.Items) == 1 {
		from := strconv.FormatUint(oldest.Items[0].Seq-1, 10)
		sealed, err := e.op.OpenStream(ctx(t), tenant, client.StreamOptions{After: from, Integration: ws.ID, Open: opener.Open})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := sealed.Next(ctx(t)); err != nil || !bytes.Contains(m, []byte(`"tsmId":12100`)) {
			t.Errorf("a sealed frame opened into %s, %v", m, err)
		}
		sealed.Close()
		closedStream, err := e.op.OpenStream(ctx(t), tenant, client.StreamOptions{After: from, Integration: ws.ID})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := closedStream.Next(ctx(t)); !errors.Is(err, client.ErrSealedFrame) {
			t.Errorf("a sealed frame without Open: %v", err)
		}
		closedStream.Close()
	}
	if err := e.op.DeleteIntegration(ctx(t), tenant, ws.ID); err != nil {
		t.Fatal(err)
	}

	// Dead letters: an endpoint that refuses everything, a max age of 1s.
	recv.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	maxAge := client.Duration(time.Second)
	must[*client.Integration](t)(e.op.UpdateIntegration(ctx(t), tenant, id, client.IntegrationPatch{MaxAge: &maxAge}))
	if cert != nil {
		up, err := nodetest.Dial(t, e.n, cert, serial, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Publish(ctx(t), []byte(tu.Thingsee("TSEN01ACM00000002", time.Now().Unix(), 19)), 1); err != nil {
			t.Fatal(err)
		}
		var dl *client.Page[client.DeadLetter]
		tu.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
			var err error
			dl, err = e.op.ListDeadLetters(ctx(t), tenant, id, client.DeadLetterQuery{Limit: 10})
			if err == nil && len(dl.Items) == 0 {
				err = errors.New("no dead letter yet")
			}
			return err
		})
		e.sameAsSent(t, dl)
		if d := dl.Items[0]; d.Gateway != serial || !bytes.Contains(d.Message, []byte("TSEN01ACM00000002")) {
			t.Errorf("dead letter %+v", d)
		}
		n := 0
		for _, err := range e.op.AllDeadLetters(ctx(t), tenant, id, client.DeadLetterQuery{Limit: 1}) {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if n != len(dl.Items) {
			t.Errorf("AllDeadLetters walked %d, the page has %d", n, len(dl.Items))
		}
		rd := must[*client.RedriveResult](t)(e.op.Redrive(ctx(t), tenant, id, dl.Items[0].Seq))
		e.sameAsSent(t, rd)
		if rd.Redriven != 1 {
			t.Errorf("redrive %+v", rd)
		}
	}

	_, err = e.op.CreateIntegration(ctx(t), tenant, client.Integration{Name: "x", Type: "carrier-pigeon"})
	if p := wantProblem(t, err, 400, "forward.integration_invalid"); !strings.Contains(p.Detail, "type must be one of") {
		t.Errorf("detail %q", p.Detail)
	}
	if err := e.op.DeleteIntegration(ctx(t), tenant, id); err != nil {
		t.Fatal(err)
	}
	_, err = e.op.GetIntegration(ctx(t), tenant, id)
	wantProblem(t, err, 404, "forward.integration_not_found")
}

func (e *env) audit(t *testing.T) {
	page := must[*client.Page[client.AuditEntry]](t)(e.op.ListAudit(ctx(t), tenant, client.AuditQuery{Limit: 5, Oldest: true}))
	e.sameAsSent(t, page)
	if len(page.Items) != 5 || page.Items[0].Seq != 1 || page.Next == "" {
		t.Fatalf("first page %+v", page)
	}
	var seqs []uint64
	for en, err := range e.op.AllAudit(ctx(t), tenant, client.AuditQuery{Action: "registry.gateway.register", Oldest: true}) {
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, en.Seq)
	}
	if len(seqs) < 2 {
		t.Errorf("registrations in the audit: %v", seqs)
	}
	rep := must[*client.AuditReport](t)(e.op.VerifyAudit(ctx(t), tenant))
	e.sameAsSent(t, rep)
	if !rep.OK || rep.Tenant != tenant || rep.Entries < uint64(len(seqs)) {
		t.Errorf("report %+v", rep)
	}
	_, err := e.op.ListAudit(ctx(t), tenant, client.AuditQuery{Cursor: "zero"})
	wantProblem(t, err, 400, "api.bad_parameter")

	// The operator reads the platform's log, _system.
	const system = "_system"
	sys := must[*client.Page[client.AuditEntry]](t)(e.op.ListAudit(ctx(t), system, client.AuditQuery{Action: "registry.tenant.create"}))
	e.sameAsSent(t, sys)
	if len(sys.Items) == 0 || sys.Items[0].Tenant != system {
		t.Errorf("_system page %+v", sys)
	}
	if r := must[*client.AuditReport](t)(e.op.VerifyAudit(ctx(t), system)); !r.OK || r.Tenant != system {
		t.Errorf("_system report %+v", r)
	}
}

func (e *env) mesh(t *testing.T) {
	_, err := e.op.MeshKeys(ctx(t), tenant)
	wantProblem(t, err, 404, "meshnet.network_not_found")
	created := must[*client.MeshKeys](t)(e.op.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{}))
	e.sameAsSent(t, created)
	if !created.Created || created.NetworkID == 0 || len(created.Epochs) != 1 || created.Epochs[0].Epoch != 1 {
		t.Errorf("created %+v", created)
	}
	grace := int64(60)
	rotated := must[*client.MeshKeys](t)(e.op.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{GraceSeconds: &grace}))
	e.sameAsSent(t, rotated)
	if rotated.Created || rotated.NetworkID != created.NetworkID || len(rotated.Epochs) != 2 || rotated.Epochs[0].NotAfter == nil || rotated.Epochs[1].NotAfter != nil {
		t.Errorf("rotated %+v", rotated)
	}
	grace = -1
	_, err = e.op.RotateMeshKey(ctx(t), tenant, client.MeshKeyRequest{GraceSeconds: &grace})
	wantProblem(t, err, 400, "meshnet.grace_invalid")
	got := must[*client.MeshKeys](t)(e.op.MeshKeys(ctx(t), tenant))
	e.sameAsSent(t, got)
	if got.Version != 2 || len(got.Epochs) != 2 {
		t.Errorf("keys %+v", got)
	}
	file := must[[]byte](t)(e.op.ExportMeshKeys(ctx(t), tenant))
	var kf struct {
		NetworkID uint32 `json:"networkId"`
		Keys      []struct {
			Epoch uint32 `json:"epoch"`
			Key   []byte `json:"key"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(file, &kf); err != nil || kf.NetworkID != created.NetworkID || len(kf.Keys) != 2 || len(kf.Keys[1].Key) != 16 {
		t.Errorf("key file %v: %s", err, file)
	}
	node := must[*client.MeshNode](t)(e.op.PutMeshNode(ctx(t), tenant, 42))
	e.sameAsSent(t, node)
	added := must[*client.AddMeshNodesResult](t)(e.op.AddMeshNodes(ctx(t), tenant, []uint32{42, 7}))
	e.sameAsSent(t, added)
	if !slices.Equal(added.Added, []uint32{7}) || added.Version != 2 {
		t.Errorf("added %+v", added)
	}
	e.sameAsSent(t, must[*client.MeshNode](t)(e.op.GetMeshNode(ctx(t), tenant, 7)))
	list := must[*client.MeshNodes](t)(e.op.MeshNodes(ctx(t), tenant))
	e.sameAsSent(t, list)
	if !slices.Equal(list.Nodes, []uint32{7, 42}) {
		t.Errorf("nodes %+v", list)
	}
	if err := e.op.DeleteMeshNode(ctx(t), tenant, 7); err != nil {
		t.Fatal(err)
	}
	_, err = e.op.GetMeshNode(ctx(t), tenant, 7)
	wantProblem(t, err, 404, "meshnet.node_not_found")
	err = e.op.DeleteMeshNode(ctx(t), tenant, 7)
	wantProblem(t, err, 404, "meshnet.node_not_found")
}

// everyRoute checks that the tests called every route of the server.
func (e *env) everyRoute(t *testing.T) {
	mux := http.NewServeMux()
	routes := map[string]bool{}
	for _, rt := range e.n.Routes() {
		p := rt.Method + " " + rt.Pattern
		routes[p] = false
		mux.Handle(p, http.NotFoundHandler())
	}
	e.rec.mu.Lock()
	for _, ex := range e.rec.seen {
		r := httptest.NewRequest(ex.method, ex.path, nil)
		if _, p := mux.Handler(r); p != "" {
			routes[p] = true
		}
	}
	e.rec.mu.Unlock()
	for _, p := range e.called {
		routes[p] = true
	}
	for p, called := range routes {
		if !called {
			t.Errorf("no test called %s", p)
		}
	}
}

// TestClientProblemError renders problems as the CLI prints them and finds
// them through wrapping.
func TestClientProblemError(t *testing.T) {
	tests := []struct {
		name string
		p    client.Problem
		want string
	}{
		{name: "full", p: client.Problem{Code: "registry.gateway_not_found", Title: "no such gateway", Detail: "TSGW06", Status: 404, RequestID: "abc"},
			want: "registry.gateway_not_found: no such gateway: TSGW06 (request abc)"},
		{name: "no detail", p: client.Problem{Code: "api.unauthenticated", Title: "a valid bearer credential is required", Status: 401, RequestID: "r1"},
			want: "api.unauthenticated: a valid bearer credential is required (request r1)"},
		{name: "no code", p: client.Problem{Title: "the server answered 502 Bad Gateway", Status: 502}, want: "http_502: the server answered 502 Bad Gateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := fmt.Errorf("listing: %w", &tc.p)
			if got := tc.p.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			var p *client.Problem
			if !errors.As(err, &p) || p.Status != tc.p.Status || client.ErrorCode(err) != tc.p.Code {
				t.Errorf("errors.As through a wrap: %v", err)
			}
		})
	}
	if client.ErrorCode(errors.New("plain")) != "" {
		t.Error("a plain error has a code")
	}
}

// TestClientServerURL accepts https and host:port, and refuses plain http
// and what would carry more than an address.
func TestClientServerURL(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{name: "host and port", in: "localhost:8443", want: "https://localhost:8443"},
		{name: "https with a prefix", in: "https://api.example.com/iot/", want: "https://api.example.com/iot"},
		{name: "http refused", in: "http://localhost:8443", err: "only https"},
		{name: "empty", in: " ", err: "server is required"},
		{name: "user info", in: "https://me:pw@localhost", err: "give only scheme"},
		{name: "query", in: "https://localhost/?a=1", err: "give only scheme"},
		{name: "not a URL", in: "https://", err: "is not a URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(client.Config{Server: tc.in})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "server") {
					t.Fatalf("New(%q) = %v, want an error starting with server and saying %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || c.Server() != tc.want {
				t.Fatalf("New(%q): %v, server %v", tc.in, err, c)
			}
		})
	}
	if _, err := client.New(client.Config{Server: "localhost:1", CAPEM: []byte("no PEM")}); err == nil {
		t.Error("a CA without a certificate was taken")
	}
}

// tlsServer starts an HTTPS test server on loopback and returns it with
// the PEM of its certificate (its own CA).
func tlsServer(t *testing.T, h http.Handler) (*httptest.Server, []byte) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes refused on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, pemOf(srv.Certificate().Raw)
}

func pemOf(der []byte) []byte {
	return pki.EncodeCertPEM(der)
}

// TestClientTransportErrors explains each way of not reaching the server
// with its kind and a sentence that names the server and no CLI option.
func TestClientTransportErrors(t *testing.T) {
	hung := make(chan struct{})
	t.Cleanup(func() { close(hung) })
	never, neverCA := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
		case <-r.Context().Done():
		}
	}))
	ok, okCA := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	ssh := rawServer(t, "SSH-2.0-OpenSSH_9.6\r\n")
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(ok.URL, "https://"))

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		server  string
		ca      []byte
		timeout time.Duration
		ctx     context.Context
		kind    client.TransportKind
		says    string
	}{
		{name: "unknown CA", server: ok.URL, kind: client.TransportUnknownCA, says: "not signed by a trusted CA"},
		{name: "wrong host name", server: "localhost:" + port, ca: okCA, kind: client.TransportHostname, says: "not valid for that name"},
		{name: "plain HTTP", server: strings.TrimPrefix(plain.URL, "http://"), kind: client.TransportNotTLS, says: "did not answer with TLS"},
		{name: "plain TCP", server: ssh, kind: client.TransportNotTLS, says: "did not answer with TLS"},
		{name: "connection refused", server: refused, kind: client.TransportConnect, says: "cannot connect to the server at " + refused},
		{name: "never answers", server: never.URL, ca: neverCA, timeout: 300 * time.Millisecond, kind: client.TransportTimeout, says: "no answer from"},
		{name: "canceled", server: ok.URL, ca: okCA, ctx: canceled, kind: client.TransportCanceled, says: "canceled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(client.Config{Server: tc.server, CAPEM: tc.ca, Timeout: tc.timeout, Credential: "secret-key"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rctx := tc.ctx
			if rctx == nil {
				rctx = context.Background()
			}
			_, err = c.GetTenant(rctx, "acme")
			var te *client.TransportError
			if !errors.As(err, &te) || te.Kind != tc.kind {
				t.Fatalf("GetTenant = %v (%T), want a *TransportError of kind %v", err, err, tc.kind)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.says) || !strings.Contains(msg, te.Server) || strings.Contains(msg, "--") || strings.Contains(msg, "secret-key") {
				t.Errorf("message %q: want it to say %q, name the server %s and no option or credential", msg, tc.says, te.Server)
			}
			if tc.kind == client.TransportTimeout && te.Timeout != tc.timeout {
				t.Errorf("timeout %s, want %s", te.Timeout, tc.timeout)
			}
		})
	}
}

// rawServer accepts TCP connections on loopback and writes greeting to
// each, the way a server of another protocol does; it returns its address.
func rawServer(t *testing.T, greeting string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(greeting))
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestClientRefusesOversizedAnswer stops reading at MaxAnswer.
func TestClientRefusesOversizedAnswer(t *testing.T) {
	srv, ca := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		chunk := bytes.Repeat([]byte(" "), 1<<20)
		for written := 0; written <= client.MaxAnswer; written += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	c, err := client.New(client.Config{Server: srv.URL, CAPEM: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Healthz(ctx(t))
	if !errors.Is(err, client.ErrAnswerTooLarge) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("Healthz = %v, want ErrAnswerTooLarge", err)
	}
}

// TestClientNeverFollowsRedirects answers a redirect as a refusal and never
// takes the credential to where it points.
func TestClientNeverFollowsRedirects(t *testing.T) {
	var mu sync.Mutex
	var elsewhere []string
	target, _ := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		elsewhere = append(elsewhere, r.Header.Get("Authorization"))
	}))
	srv, ca := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusFound)
	}))
	c, err := client.New(client.Config{Server: srv.URL, CAPEM: ca, Credential: "itk_secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ListTenants(ctx(t))
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusFound || !strings.HasPrefix(err.Error(), "http_302: the server answered 302 Found") {
		t.Fatalf("ListTenants = %v, want a 302 refusal", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(elsewhere) != 0 {
		t.Fatalf("the redirect was followed: %q", elsewhere)
	}
}

// TestClientIntegrationPatchJSON sends only the members given, null for
// an encryption removed, and a filter given whole: an empty list is [],
// which empties it on the server, not a member left out, which keeps it.
func TestClientIntegrationPatchJSON(t *testing.T) {
	name := "renamed"
	age := client.Duration(time.Hour)
	tests := []struct {
		name  string
		patch client.IntegrationPatch
		want  string
	}{
		{name: "empty", patch: client.IntegrationPatch{}, want: `{}`},
		{name: "name and max age", patch: client.IntegrationPatch{Name: &name, MaxAge: &age}, want: `{"name":"renamed","maxAge":"1h0m0s"}`},
		{name: "remove encryption", patch: client.IntegrationPatch{RemoveEncryption: true}, want: `{"encryption":null}`},
		{name: "remove encryption and rename", patch: client.IntegrationPatch{Name: &name, RemoveEncryption: true}, want: `{"encryption":null,"name":"renamed"}`},
		{name: "new encryption wins", patch: client.IntegrationPatch{Encryption: &client.Encryption{PublicKeyPEM: "k"}, RemoveEncryption: true}, want: `{"encryption":{"publicKeyPem":"k"}}`},
		{name: "clear secrets", patch: client.IntegrationPatch{ClearSecrets: []string{"mqtt.password"}}, want: `{"clearSecrets":["mqtt.password"]}`},
		{name: "filter whole", patch: client.IntegrationPatch{Filter: &client.Filter{TsmIDs: []int{12100}}}, want: `{"filter":{"tsmIds":[12100],"devices":[],"gateways":[]}}`},
		{name: "filter emptied", patch: client.IntegrationPatch{Filter: &client.Filter{}, RemoveEncryption: true}, want: `{"encryption":null,"filter":{"tsmIds":[],"devices":[],"gateways":[]}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.patch)
			if err != nil || string(b) != tc.want {
				t.Fatalf("Marshal = %s, %v; want %s", b, err, tc.want)
			}
		})
	}
}
