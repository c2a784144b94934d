package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/firmware/firmwaretest"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
	"github.com/iotransit/iotransit/receiver"
)

// world is two tenants with a gateway, keys and clients each.
type world struct {
	t     *testing.T
	n     *node.Node
	api   *nodetest.API
	seq   atomic.Int64
	byTen map[string]*tenantFix
	rcv   *tu.Receiver
	fw    map[string]*firmwaretest.Repo // firmware_test.go
}

type tenantFix struct {
	id     string
	allKey string // API key holding every tenant scope
}

func newWorld(t *testing.T) *world {
	n := nodetest.Start(t, nodetest.NoLimits)
	w := &world{t: t, n: n, api: nodetest.NewAPI(t, n), byTen: map[string]*tenantFix{}}
	for _, id := range []string{"acme", "beta"} {
		if r := w.api.Do("POST", "/v1/tenants", w.api.Key(), map[string]string{"id": id}); r.Status != 201 {
			t.Fatalf("create tenant %s: %d %s", id, r.Status, r.Body)
		}
		w.byTen[id] = &tenantFix{id: id, allKey: w.key(id, credential.TenantScopes)}
	}
	return w
}

// key makes an API key of tenant with scopes (by the operator).
func (w *world) key(tenant string, scopes []string) string {
	w.t.Helper()
	return w.keyWithID(tenant, scopes).key
}

// serial returns a fresh serial registered in tenant.
func (w *world) gateway(tenant string) string {
	w.t.Helper()
	s := fmt.Sprintf("TSGW06%s%08d", strings.ToUpper(tenant[:3]), w.seq.Add(1))
	if r := w.api.Do("POST", "/v1/tenants/"+tenant+"/gateways", w.api.Key(), map[string]string{"serial": s}); r.Status != 201 {
		w.t.Fatalf("register %s: %d %s", s, r.Status, r.Body)
	}
	return s
}

func (w *world) keyID(tenant string) string {
	w.t.Helper()
	r := w.api.Do("POST", "/v1/tenants/"+tenant+"/api-keys", w.api.Key(), map[string]any{"scopes": []string{"messages:read"}})
	var k struct{ ID string }
	r.Decode(w.t, &k)
	return k.ID
}

// integration makes a webhook integration of tenant to the world's receiver.
func (w *world) integration(tenant string) string {
	w.t.Helper()
	if w.rcv == nil {
		w.rcv = tu.NewReceiver(w.t)
	}
	r := w.api.Do("POST", "/v1/tenants/"+tenant+"/integrations", w.api.Key(), map[string]any{
		"name": fmt.Sprintf("int%d", w.seq.Add(1)), "type": "webhook",
		"webhook": map[string]any{"url": w.rcv.URL, "caPem": w.rcv.CAPEM},
	})
	if r.Status != 201 {
		w.t.Fatalf("create integration: %d %s", r.Status, r.Body)
	}
	var out struct{ ID string }
	r.Decode(w.t, &out)
	return out.ID
}

// meshNode makes sure tenant has a mesh network and node id authorized.
func (w *world) meshNode(tenant string, id int) {
	w.t.Helper()
	base := "/v1/tenants/" + tenant + "/mesh"
	if r := w.api.Do("GET", base+"/keys", w.api.Key(), nil); r.Status == 404 {
		if r := w.api.Do("POST", base+"/keys", w.api.Key(), nil); r.Status != 201 {
			w.t.Fatalf("create mesh network: %d %s", r.Status, r.Body)
		}
	}
	if r := w.api.Do("PUT", fmt.Sprintf("%s/nodes/%d", base, id), w.api.Key(), nil); r.Status >= 300 {
		w.t.Fatalf("authorize node %d: %d %s", id, r.Status, r.Body)
	}
}

func (w *world) clientID(tenant string) string {
	w.t.Helper()
	r := w.api.Do("POST", "/v1/tenants/"+tenant+"/oauth2-clients", w.api.Key(), map[string]any{"scopes": []string{"messages:read"}})
	if r.Status != 201 {
		w.t.Fatalf("create client: %d %s", r.Status, r.Body)
	}
	var c struct{ ClientID string }
	r.Decode(w.t, &c)
	return c.ClientID
}

// request fills a route's path parameters with fresh resources of tenant
// and gives it a valid body.
func (w *world) request(rt api.Route, tenant string) (path string, body any) {
	if strings.Contains(rt.Pattern, "/firmware/") {
		return w.firmwareRequest(rt, tenant)
	}
	path = strings.ReplaceAll(rt.Pattern, "{tenant}", tenant)
	if strings.Contains(path, "{serial}") {
		path = strings.ReplaceAll(path, "{serial}", w.gateway(tenant))
	}
	if strings.Contains(path, "{id}") {
		var id string
		switch {
		case strings.Contains(path, "oauth2-clients"):
			id = w.clientID(tenant)
		case strings.Contains(path, "integrations"):
			id = w.integration(tenant)
		case strings.Contains(path, "enrollment-tokens"):
			id = tokenOf(w.t, w, tenant, w.gateway(tenant)).ID
		default:
			id = w.keyID(tenant)
		}
		path = strings.ReplaceAll(path, "{id}", id)
	}
	path = strings.ReplaceAll(path, "{tsmTuid}", "TSEN01ABC12345678")
	if strings.Contains(path, "/mesh/") {
		w.meshNode(tenant, 42)
		path = strings.ReplaceAll(path, "{nodeId}", "42")
	}
	switch {
	case rt.Method == "POST" && strings.HasSuffix(rt.Pattern, "/mesh/nodes"):
		body = map[string]any{"nodes": []uint32{43}}
	case rt.Method == "POST" && strings.HasSuffix(rt.Pattern, "/gateways"):
		body = map[string]string{"serial": fmt.Sprintf("TSGW06NEW%08d", w.seq.Add(1))}
	case rt.Method == "PATCH" && strings.Contains(rt.Pattern, "/integrations/"):
		body = map[string]any{"batch": map[string]any{"maxMessages": 50}}
	case rt.Method == "PATCH":
		body = map[string]any{"labels": map[string]string{"site": "hq"}}
	case strings.HasSuffix(rt.Pattern, "/gateways/claim"):
		serial, code := w.provisioned()
		body = map[string]string{"serial": serial, "claimCode": code}
	case strings.HasSuffix(rt.Pattern, "/enrollment-tokens") && rt.Method == "POST":
		body = map[string]string{"serial": w.gateway(tenant)}
	case strings.HasSuffix(rt.Pattern, "/api-keys") && rt.Method == "POST",
		strings.HasSuffix(rt.Pattern, "/oauth2-clients") && rt.Method == "POST":
		body = map[string]any{"scopes": []string{rt.Scope}} // a credential can grant only what it holds
	case strings.HasSuffix(rt.Pattern, "/integrations") && rt.Method == "POST":
		body = map[string]any{"name": fmt.Sprintf("ws%d", w.seq.Add(1)), "type": "websocket"}
	}
	return path, body
}

func tenantRoutes(n *node.Node) []api.Route {
	var out []api.Route
	for _, rt := range n.Routes() {
		if rt.Access == api.Tenant {
			out = append(out, rt)
		}
	}
	return out
}

var leaks = []string{"nats", "jetstream", ".go:", "goroutine", "runtime.", "panic", "kms:", "registry:", "store:"}

func checkNoLeak(t *testing.T, r tu.Response) {
	t.Helper()
	low := strings.ToLower(string(r.Body))
	for _, l := range leaks {
		if strings.Contains(low, l) {
			t.Errorf("answer leaks %q: %s", l, r.Body)
		}
	}
}

// TestAPITenantIsolation sends every tenant route, with tenant acme's
// credential holding every scope, at tenant beta's resources: each answers
// 404 tenant_not_found, exactly as for a tenant that does not exist, names
// nothing of beta, and changes nothing.
func TestAPITenantIsolation(t *testing.T) {
	w := newWorld(t)
	acme := w.byTen["acme"]
	before := w.api.Do("GET", "/v1/tenants/beta/gateways", w.api.Key(), nil)
	for _, rt := range tenantRoutes(w.n) {
		t.Run(rt.Method+" "+rt.Pattern, func(t *testing.T) {
			path, body := w.request(rt, "beta")
			r := w.api.Do(rt.Method, path, acme.allKey, body)
			ghost := w.api.Do(rt.Method, strings.Replace(path, "/beta", "/ghost", 1), acme.allKey, body)
			code, _ := r.Problem()
			if r.Status != http.StatusNotFound || code != "registry.tenant_not_found" {
				t.Fatalf("status %d code %q, want 404 registry.tenant_not_found: %s", r.Status, code, r.Body)
			}
			gcode, _ := ghost.Problem()
			if ghost.Status != r.Status || gcode != code {
				t.Errorf("a foreign tenant (%d %s) answers differently from a missing one (%d %s)", r.Status, code, ghost.Status, gcode)
			}
			if strings.Contains(string(r.Body), "beta") || strings.Contains(string(r.Body), "TSGW06BET") {
				t.Errorf("answer names beta's resources: %s", r.Body)
			}
			checkNoLeak(t, r)
		})
	}
	// The operator's view of beta's gateways is what it was, plus the ones
	// this test registered as the operator (no state changed by acme).
	after := w.api.Do("GET", "/v1/tenants/beta/gateways", w.api.Key(), nil)
	var b, a struct {
		Items []struct{ Serial, State string }
	}
	before.Decode(t, &b)
	after.Decode(t, &a)
	for _, g := range a.Items {
		if g.State != "active" {
			t.Errorf("beta's gateway %s is %s after acme's requests", g.Serial, g.State)
		}
	}
	// An OAuth2 token of acme is refused the same way.
	cid, secret := clientWithSecret(t, w, "acme", credential.TenantScopes)
	tok := accessToken(t, w, cid, secret)
	if r := w.api.Do("GET", "/v1/tenants/beta/messages", tok, nil); r.Status != 404 {
		t.Errorf("acme's OAuth2 token on beta: %d", r.Status)
	}
	if r := w.api.Do("GET", "/v1/tenants/acme/messages", tok, nil); r.Status != 200 {
		t.Errorf("acme's OAuth2 token on acme: %d %s", r.Status, r.Body)
	}
}

// TestAPIScopes sends every tenant route with a credential of the same
// tenant that holds every scope but the route's: 403 scope_missing. With
// only the route's scope (and its second scope, for a route that may send
// the tenant's messages somewhere: TestAPIIntegrationsWriteCannotReachMessages
// checks when it needs it), the route is not refused.
func TestAPIScopes(t *testing.T) {
	w := newWorld(t)
	keys := map[string]string{}
	only := map[string]string{}
	for _, s := range credential.TenantScopes {
		keys[s] = w.key("acme", slices.DeleteFunc(slices.Clone(credential.TenantScopes), func(x string) bool { return x == s }))
		only[s] = w.key("acme", []string{s})
	}
	for _, rt := range tenantRoutes(w.n) {
		t.Run(rt.Method+" "+rt.Pattern, func(t *testing.T) {
			if rt.Scope == "" {
				t.Fatal("tenant route without a scope")
			}
			path, body := w.request(rt, "acme")
			r := w.api.Do(rt.Method, path, keys[rt.Scope], body)
			if code, _ := r.Problem(); r.Status != 403 || code != "api.scope_missing" || !strings.Contains(string(r.Body), rt.Scope) {
				t.Fatalf("without %s: %d %s", rt.Scope, r.Status, r.Body)
			}
			path, body = w.request(rt, "acme")
			key := only[rt.Scope]
			if rt.Also != "" {
				key = w.key("acme", []string{rt.Scope, rt.Also})
			}
			r = w.api.Do(rt.Method, path, key, body)
			if strings.HasSuffix(rt.Pattern, "/stream") {
				// Authorised, then refused by the WebSocket layer: not a WebSocket request.
				if r.Status == 401 || r.Status == 403 || r.Status == 404 {
					t.Errorf("with only %s: %d %s", rt.Scope, r.Status, r.Body)
				}
				return
			}
			if r.Status >= 400 {
				t.Errorf("with only %s %s: %d %s", rt.Scope, rt.Also, r.Status, r.Body)
			}
		})
	}
	for _, rt := range w.n.Routes() {
		if rt.Access != api.Operator {
			continue
		}
		path := strings.ReplaceAll(rt.Pattern, "{tenant}", "acme")
		if r := w.api.Do(rt.Method, path, w.byTen["acme"].allKey, map[string]string{"id": "zeta"}); r.Status != 403 {
			t.Errorf("%s %s with a tenant key: %d, want 403", rt.Method, rt.Pattern, r.Status)
		}
	}
}

// TestAPICredentialRoutes sends every route that any bearer credential may
// call (api.Credential) each kind of credential, a key holding one scope
// that has nothing to do with it among them: each is answered. No
// credential, a gateway's client certificate alone, a revoked API key and
// the token of a revoked OAuth2 client get 401 api.unauthenticated.
func TestAPICredentialRoutes(t *testing.T) {
	w := newWorld(t)
	var routes []api.Route
	for _, rt := range w.n.Routes() {
		if rt.Access == api.Credential {
			routes = append(routes, rt)
		}
	}
	if len(routes) == 0 {
		t.Fatal("no route takes any credential (GET /v1/whoami should)")
	}
	revokedKey := w.key("acme", []string{credential.ScopeMessagesRead})
	id, _, _ := credential.ParseAPIKeyToken(revokedKey)
	if r := w.api.Do("POST", "/v1/tenants/acme/api-keys/"+id+"/revoke", w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("revoke key: %d %s", r.Status, r.Body)
	}
	cid, secret := clientWithSecret(t, w, "acme", []string{credential.ScopeAuditRead})
	tok := accessToken(t, w, cid, secret)
	rcid, rsecret := clientWithSecret(t, w, "beta", []string{credential.ScopeAuditRead})
	revokedTok := accessToken(t, w, rcid, rsecret)
	if r := w.api.Do("POST", "/v1/tenants/beta/oauth2-clients/"+rcid+"/revoke", w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("revoke client: %d %s", r.Status, r.Body)
	}
	gw := &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, w.n, nodetest.Gateway(t, w.n, "acme", w.gateway("acme")))}}
	tests := []struct {
		name, bearer string
		cert         bool // send the gateway's client certificate
		status       int
	}{
		{name: "operator key", bearer: w.api.Key(), status: 200},
		{name: "API key of one scope", bearer: w.key("beta", []string{credential.ScopeMeshRead}), status: 200},
		{name: "access token", bearer: tok, status: 200},
		{name: "gateway certificate and API key", bearer: w.byTen["acme"].allKey, cert: true, status: 200},
		{name: "no credential", status: 401},
		{name: "gateway certificate alone", cert: true, status: 401},
		{name: "revoked API key", bearer: revokedKey, status: 401},
		{name: "token of a revoked client", bearer: revokedTok, status: 401},
		{name: "not a credential", bearer: "itk_0123456789abcdef_" + strings.Repeat("x", 43), status: 401},
	}
	for _, rt := range routes {
		for _, tc := range tests {
			t.Run(rt.Method+" "+rt.Pattern+"/"+tc.name, func(t *testing.T) {
				var r tu.Response
				if tc.cert {
					req, err := http.NewRequest(rt.Method, w.api.Base()+rt.Pattern, nil)
					if err != nil {
						t.Fatal(err)
					}
					if tc.bearer != "" {
						req.Header.Set("Authorization", "Bearer "+tc.bearer)
					}
					r = tu.Send(t, gw, req)
				} else {
					r = w.api.Do(rt.Method, rt.Pattern, tc.bearer, nil)
				}
				if r.Status != tc.status {
					t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Body)
				}
				if code, _ := r.Problem(); tc.status == 401 && code != "api.unauthenticated" {
					t.Errorf("code %q, want api.unauthenticated: %s", code, r.Body)
				}
				checkNoLeak(t, r)
			})
		}
	}
}

// TestAPIKeysCannotEscalate checks that a credential can only grant scopes
// it holds.
func TestAPIKeysCannotEscalate(t *testing.T) {
	w := newWorld(t)
	k := w.key("acme", []string{credential.ScopeKeysWrite, credential.ScopeMessagesRead})
	r := w.api.Do("POST", "/v1/tenants/acme/api-keys", k, map[string]any{"scopes": []string{"gateways:write"}})
	if code, _ := r.Problem(); r.Status != 403 || code != "credential.scope_exceeds" {
		t.Fatalf("escalation: %d %s", r.Status, r.Body)
	}
	if r := w.api.Do("POST", "/v1/tenants/acme/api-keys", k, map[string]any{"scopes": []string{"messages:read"}}); r.Status != 201 {
		t.Fatalf("subset: %d %s", r.Status, r.Body)
	}
	r = w.api.Do("POST", "/v1/tenants/acme/oauth2-clients", k, map[string]any{"scopes": []string{"audit:read"}})
	if code, _ := r.Problem(); r.Status != 403 || code != "credential.scope_exceeds" {
		t.Fatalf("client escalation: %d %s", r.Status, r.Body)
	}
}

func clientWithSecret(t *testing.T, w *world, tenant string, scopes []string) (string, string) {
	t.Helper()
	r := w.api.Do("POST", "/v1/tenants/"+tenant+"/oauth2-clients", w.api.Key(), map[string]any{"scopes": scopes})
	if r.Status != 201 {
		t.Fatalf("create client: %d %s", r.Status, r.Body)
	}
	var c struct{ ClientID, ClientSecret string }
	r.Decode(t, &c)
	return c.ClientID, c.ClientSecret
}

func accessToken(t *testing.T, w *world, id, secret string) string {
	t.Helper()
	req, err := http.NewRequest("POST", w.api.Base()+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(id, secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, w.n, nil)}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 {
		t.Fatalf("token: %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// TestAPIIntegrationsWriteCannotReachMessages: a credential with
// integrations:write but not messages:read cannot have the tenant's
// messages delivered anywhere it chooses: creating an integration that
// delivers (every type but websocket, whose stream needs messages:read),
// pointing one elsewhere (endpoint, topic, trusted CA, encryption key) and
// re-driving dead letters need messages:read as well. What does not move
// data (a websocket integration, batching, pausing) stays open to it.
func TestAPIIntegrationsWriteCannotReachMessages(t *testing.T) {
	w := newWorld(t)
	other := tu.NewReceiver(t)
	_, sealPub, err := receiver.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	writer := w.key("acme", []string{credential.ScopeIntegrationsRead, credential.ScopeIntegrationsWrite})
	reader := w.key("acme", []string{credential.ScopeIntegrationsRead, credential.ScopeIntegrationsWrite, credential.ScopeMessagesRead})
	webhook := func(url, ca string) map[string]any {
		return map[string]any{"name": fmt.Sprintf("n%d", w.seq.Add(1)), "type": "webhook", "webhook": map[string]any{"url": url, "caPem": ca}}
	}
	base := "/v1/tenants/acme/integrations"
	cases := []struct {
		name   string
		method string
		path   func() string
		body   func() any
		// open: integrations:write alone may do it.
		open bool
	}{
		{"create a webhook", "POST", func() string { return base }, func() any { return webhook(other.URL, other.CAPEM) }, false},
		{"create an MQTT integration", "POST", func() string { return base }, func() any {
			return map[string]any{"name": fmt.Sprintf("m%d", w.seq.Add(1)), "type": "mqtt", "mqtt": map[string]any{"broker": "mqtts://127.0.0.1:8883"}}
		}, false},
		{"create a websocket integration", "POST", func() string { return base }, func() any {
			return map[string]any{"name": fmt.Sprintf("ws%d", w.seq.Add(1)), "type": "websocket"}
		}, true},
		{"retarget a webhook", "PATCH", func() string { return base + "/" + w.integration("acme") }, func() any {
			return map[string]any{"webhook": map[string]any{"url": other.URL, "caPem": other.CAPEM}}
		}, false},
		{"change the CA a webhook trusts", "PATCH", func() string { return base + "/" + w.integration("acme") }, func() any {
			return map[string]any{"webhook": map[string]any{"url": w.rcv.URL, "caPem": other.CAPEM}}
		}, false},
		{"change the encryption key", "PATCH", func() string { return base + "/" + w.integration("acme") }, func() any {
			return map[string]any{"encryption": map[string]any{"publicKeyPem": string(sealPub)}}
		}, false},
		{"change the batching", "PATCH", func() string { return base + "/" + w.integration("acme") }, func() any {
			return map[string]any{"batch": map[string]any{"maxMessages": 10}}
		}, true},
		{"send the same settings back", "PATCH", func() string { return base + "/" + w.integration("acme") }, func() any {
			return map[string]any{"webhook": map[string]any{"url": w.rcv.URL, "caPem": w.rcv.CAPEM}}
		}, true},
		{"pause", "POST", func() string { return base + "/" + w.integration("acme") + "/pause" }, func() any { return nil }, true},
		{"re-drive dead letters", "POST", func() string { return base + "/" + w.integration("acme") + "/dead-letters/redrive" }, func() any { return nil }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := w.api.Do(tc.method, tc.path(), writer, tc.body())
			if tc.open {
				if r.Status >= 300 {
					t.Fatalf("integrations:write alone: %d %s", r.Status, r.Body)
				}
			} else if code, _ := r.Problem(); r.Status != 403 || code != "api.scope_missing" || !strings.Contains(string(r.Body), credential.ScopeMessagesRead) {
				t.Fatalf("integrations:write alone: %d %s, want 403 api.scope_missing naming messages:read", r.Status, r.Body)
			}
			if r := w.api.Do(tc.method, tc.path(), reader, tc.body()); r.Status >= 300 {
				t.Fatalf("with messages:read as well: %d %s", r.Status, r.Body)
			}
		})
	}
	if got := other.Got(); len(got) != 0 {
		t.Errorf("the other receiver got %d deliveries", len(got))
	}
}
