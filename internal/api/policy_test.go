package api_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/credential"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// putPolicy sets tenant's policy as the operator and fails the test if it
// is refused.
func (w *world) putPolicy(tenant string, p any) client.PolicyView {
	w.t.Helper()
	r := w.api.Do("PUT", "/v1/tenants/"+tenant+"/policy", w.api.Key(), p)
	if r.Status != 200 {
		w.t.Fatalf("put policy: %d %s", r.Status, r.Body)
	}
	var v client.PolicyView
	r.Decode(w.t, &v)
	return v
}

// wantProblem fails unless r is a problem with status and code whose
// detail contains detail.
func wantProblem(t *testing.T, what string, r tu.Response, status int, code, detail string) {
	t.Helper()
	var p struct{ Code, Detail string }
	r.Decode(t, &p)
	if r.Status != status || p.Code != code || !strings.Contains(p.Detail, detail) {
		t.Fatalf("%s: %d %s, want %d %s naming %q", what, r.Status, r.Body, status, code, detail)
	}
}

// The policy resource: the tenant reads it with the node's defaults shown,
// only the operator sets it, the body is strict and validated member by
// member, and every change is audited with the members before and after.
func TestAPIPolicyResource(t *testing.T) {
	w := newWorld(t)
	acme := w.byTen["acme"].allKey
	var v client.PolicyView
	r := w.api.Do("GET", "/v1/tenants/acme/policy", acme, nil)
	if r.Status != 200 {
		t.Fatalf("get: %d %s", r.Status, r.Body)
	}
	r.Decode(t, &v)
	if v.Effective.Quotas == nil || v.Effective.Quotas.IngestMsgsPerSecond == nil || *v.Effective.Quotas.IngestMsgsPerSecond != 500 ||
		!slices.Contains(v.Defaults, "quotas.ingestMsgsPerSecond") || v.Effective.CertificateValidity == nil {
		t.Fatalf("default policy: %s", r.Body)
	}

	// A tenant may not change its own policy, not even to tighten it.
	r = w.api.Do("PUT", "/v1/tenants/acme/policy", acme, map[string]any{"strictValidation": true})
	wantProblem(t, "tenant PUT", r, 403, "api.operator_only", "")
	r = w.api.Do("PUT", "/v1/tenants/nope/policy", w.api.Key(), map[string]any{})
	wantProblem(t, "unknown tenant", r, 404, "registry.tenant_not_found", "")

	for _, tc := range []struct {
		name   string
		body   string
		code   string
		detail string
	}{
		{name: "unknown member", body: `{"strict": true}`, code: "api.json_invalid", detail: "strict"},
		{name: "unknown quota", body: `{"quotas": {"bytes": 1}}`, code: "api.json_invalid", detail: "bytes"},
		{name: "negative quota", body: `{"quotas": {"gateways": -1}}`, code: "policy.invalid", detail: "quotas.gateways"},
		{name: "unknown type", body: `{"integrations": {"allowedTypes": ["ftp"]}}`, code: "policy.invalid", detail: "integrations.allowedTypes"},
		{name: "host with scheme", body: `{"integrations": {"allowedHosts": ["https://x.example.com"]}}`, code: "policy.invalid", detail: "integrations.allowedHosts"},
		{name: "validity past the node's", body: `{"certificateValidity": "8761h"}`, code: "policy.invalid", detail: "certificateValidity"},
		{name: "bad duration", body: `{"apiKeyMaxLifetime": "forever"}`, code: "api.json_invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.api.Do("PUT", "/v1/tenants/acme/policy", w.api.Key(), []byte(tc.body))
			wantProblem(t, tc.body, r, 400, tc.code, tc.detail)
		})
	}

	v = w.putPolicy("acme", map[string]any{"strictValidation": true, "quotas": map[string]any{"gateways": 3, "ingestMsgsPerSecond": 2.5}})
	if v.Policy.Quotas == nil || *v.Policy.Quotas.Gateways != 3 || *v.Effective.Quotas.IngestMsgsPerSecond != 2.5 ||
		slices.Contains(v.Defaults, "quotas.ingestMsgsPerSecond") || !slices.Contains(v.Defaults, "quotas.ingestBurst") {
		t.Fatalf("after PUT: %+v", v)
	}
	w.putPolicy("acme", map[string]any{"quotas": map[string]any{"gateways": 4}})
	var page struct{ Items []client.AuditEntry }
	r = w.api.Do("GET", "/v1/tenants/acme/audit?action=registry.policy.update", w.api.Key(), nil)
	r.Decode(t, &page)
	var changes []map[string]string
	for _, e := range page.Items {
		if e.Action == "registry.policy.update" && e.Outcome == "ok" {
			delete(e.Detail, "requestId") // every API entry names its request
			changes = append(changes, e.Detail)
		}
	}
	want := map[string]string{"strictValidation": "true -> default", "quotas.gateways": "3 -> 4", "quotas.ingestMsgsPerSecond": "2.5 -> default"}
	if len(changes) != 2 || !slices.ContainsFunc(changes, func(d map[string]string) bool { return fmt.Sprint(d) == fmt.Sprint(want) }) {
		t.Fatalf("audited changes %v, want two, one of them %v", changes, want)
	}
	// The platform's log has it too.
	r = w.api.Do("GET", "/v1/tenants/_system/audit?action=registry.policy.update", w.api.Key(), nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), "tenant:acme") {
		t.Fatalf("_system audit: %d %s", r.Status, r.Body)
	}
}

// Count quotas: creating one more than the quota is refused, one at it is
// accepted, and another tenant is not bound by it.
func TestAPIPolicyCountQuotas(t *testing.T) {
	w := newWorld(t)
	w.putPolicy("acme", map[string]any{"quotas": map[string]any{"gateways": 1, "integrations": 1, "apiKeys": 3}})
	acme := w.byTen["acme"].allKey // the first key of acme's quota

	ws := func(tenant string) tu.Response {
		return w.api.Do("POST", "/v1/tenants/"+tenant+"/integrations", w.api.Key(), map[string]any{"name": fmt.Sprintf("ws%d", w.seq.Add(1)), "type": "websocket"})
	}
	if r := ws("acme"); r.Status != 201 {
		t.Fatalf("integration at the quota: %d %s", r.Status, r.Body)
	}
	wantProblem(t, "integration past the quota", ws("acme"), 409, "policy.quota_exceeded", "quotas.integrations is 1")

	reg := func(tenant string) tu.Response {
		return w.api.Do("POST", "/v1/tenants/"+tenant+"/gateways", w.api.Key(), map[string]string{"serial": fmt.Sprintf("TSGW06QUO%08d", w.seq.Add(1))})
	}
	if r := reg("acme"); r.Status != 201 {
		t.Fatalf("gateway at the quota: %d %s", r.Status, r.Body)
	}
	wantProblem(t, "gateway past the quota", reg("acme"), 409, "policy.quota_exceeded", "quotas.gateways is 1")

	key := func(kind string) tu.Response {
		return w.api.Do("POST", "/v1/tenants/acme/"+kind, acme, map[string]any{"scopes": []string{credential.ScopeMessagesRead}})
	}
	if r := key("api-keys"); r.Status != 201 { // 2 of 3
		t.Fatalf("second key: %d %s", r.Status, r.Body)
	}
	r := key("oauth2-clients") // 3 of 3: clients count with keys
	if r.Status != 201 {
		t.Fatalf("client at the quota: %d %s", r.Status, r.Body)
	}
	var c struct{ ClientID string }
	r.Decode(t, &c)
	wantProblem(t, "key past the quota", key("api-keys"), 409, "policy.quota_exceeded", "quotas.apiKeys is 3")
	wantProblem(t, "client past the quota", key("oauth2-clients"), 409, "policy.quota_exceeded", "quotas.apiKeys is 3")
	// A revoked credential no longer counts.
	if r := w.api.Do("POST", "/v1/tenants/acme/oauth2-clients/"+c.ClientID+"/revoke", acme, nil); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if r := key("api-keys"); r.Status != 201 {
		t.Fatalf("key after a revocation: %d %s", r.Status, r.Body)
	}

	// beta is not bound by acme's quotas.
	for i := 0; i < 2; i++ {
		if r := ws("beta"); r.Status != 201 {
			t.Fatalf("beta integration %d: %d %s", i, r.Status, r.Body)
		}
		if r := reg("beta"); r.Status != 201 {
			t.Fatalf("beta gateway %d: %d %s", i, r.Status, r.Body)
		}
	}
}

// Integration rules: a type not allowed, a host not allowed, or no
// outbound authentication when it is required is refused at create and at
// update, naming the rule; one within them is accepted.
func TestAPIPolicyIntegrations(t *testing.T) {
	w := newWorld(t)
	rcv := tu.NewReceiver(t)
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{
		"allowedTypes": []string{"webhook", "mqtt"}, "allowedHosts": []string{"127.0.0.1", "*.example.com"}, "requireAuth": true,
	}})
	auth := map[string]any{"kind": "apikey", "headerName": "X-Key", "headerValue": "s3cret-value"}
	hook := func(url string, auth map[string]any) map[string]any {
		h := map[string]any{"url": url, "caPem": rcv.CAPEM}
		if auth != nil {
			h["auth"] = auth
		}
		return map[string]any{"name": fmt.Sprintf("wh%d", w.seq.Add(1)), "type": "webhook", "webhook": h}
	}
	create := func(body map[string]any) tu.Response {
		return w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), body)
	}
	for _, tc := range []struct {
		name   string
		body   map[string]any
		detail string // "" accepted
	}{
		{name: "allowed", body: hook(rcv.URL, auth)},
		{name: "wildcard host", body: hook("https://hooks.example.com/in", auth)},
		{name: "type not allowed", body: map[string]any{"name": "ws", "type": "websocket"}, detail: "integrations.allowedTypes"},
		{name: "apex under wildcard", body: hook("https://example.com/in", auth), detail: "integrations.allowedHosts"},
		{name: "other host", body: hook("https://hooks.example.org/in", auth), detail: "integrations.allowedHosts"},
		{name: "token host", body: hook("https://hooks.example.com/in", map[string]any{"kind": "oauth2", "tokenUrl": "https://login.example.org/token", "clientId": "c", "clientSecret": "s"}), detail: "integrations.allowedHosts"},
		{name: "no auth", body: hook(rcv.URL, nil), detail: "integrations.requireAuth"},
		{name: "mqtt without auth", body: map[string]any{"name": "mq", "type": "mqtt", "mqtt": map[string]any{"broker": "mqtts://broker.example.com:8883"}}, detail: "integrations.requireAuth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := create(tc.body)
			if tc.detail == "" {
				if r.Status != 201 {
					t.Fatalf("refused: %d %s", r.Status, r.Body)
				}
				return
			}
			wantProblem(t, tc.name, r, 403, "policy.violation", tc.detail)
		})
	}

	// An integration made before the policy is held to it when changed.
	w.putPolicy("acme", map[string]any{})
	r := create(hook(rcv.URL, nil))
	if r.Status != 201 {
		t.Fatalf("create without a policy: %d %s", r.Status, r.Body)
	}
	var in struct{ ID string }
	r.Decode(t, &in)
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"requireAuth": true}})
	path := "/v1/tenants/acme/integrations/" + in.ID
	wantProblem(t, "update without auth", w.api.Do("PATCH", path, w.api.Key(), map[string]any{"batch": map[string]any{"maxMessages": 10}}), 403, "policy.violation", "integrations.requireAuth")
	if r := w.api.Do("PATCH", path, w.api.Key(), map[string]any{"webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM, "auth": auth}}); r.Status != 200 {
		t.Fatalf("update adding auth: %d %s", r.Status, r.Body)
	}
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"allowedHosts": []string{"*.example.com"}}})
	wantProblem(t, "update to a host not allowed", w.api.Do("PATCH", path, w.api.Key(), map[string]any{"name": "renamed"}), 403, "policy.violation", "integrations.allowedHosts")
}

// apiKeyMaxLifetime: a key or client asked without a ttl gets the maximum,
// one at it is accepted, one past it refused.
func TestAPIPolicyCredentialLifetime(t *testing.T) {
	w := newWorld(t)
	acme := w.byTen["acme"].allKey
	w.putPolicy("acme", map[string]any{"apiKeyMaxLifetime": "720h"})
	for _, kind := range []string{"api-keys", "oauth2-clients"} {
		t.Run(kind, func(t *testing.T) {
			create := func(ttl string) tu.Response {
				body := map[string]any{"scopes": []string{credential.ScopeMessagesRead}}
				if ttl != "" {
					body["ttl"] = ttl
				}
				return w.api.Do("POST", "/v1/tenants/acme/"+kind, acme, body)
			}
			var k struct{ ExpiresAt *time.Time }
			r := create("")
			if r.Status != 201 {
				t.Fatalf("no ttl: %d %s", r.Status, r.Body)
			}
			r.Decode(t, &k)
			if k.ExpiresAt == nil || time.Until(*k.ExpiresAt) > 720*time.Hour || time.Until(*k.ExpiresAt) < 719*time.Hour {
				t.Fatalf("no ttl: expires %v, want in 720h", k.ExpiresAt)
			}
			if r := create("720h"); r.Status != 201 {
				t.Fatalf("ttl at the maximum: %d %s", r.Status, r.Body)
			}
			wantProblem(t, "ttl past the maximum", create("720h1s"), 403, "policy.violation", "apiKeyMaxLifetime")
		})
	}
}

// certificateValidity: an enrollment issues a certificate of the policy's
// lifetime, no longer; without it, of the node's --cert-validity.
func TestAPIPolicyCertificateValidity(t *testing.T) {
	w := newWorld(t)
	lifetime := func() time.Duration {
		t.Helper()
		e, _ := enroll(t, w, "acme", w.gateway("acme"))
		block, _ := pem.Decode([]byte(e.Certificate))
		if block == nil {
			t.Fatalf("no certificate in %q", e.Certificate)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return time.Until(cert.NotAfter)
	}
	if got := lifetime(); got < 364*24*time.Hour {
		t.Fatalf("without a policy: %s, want the node's 365 days", got)
	}
	w.putPolicy("acme", map[string]any{"certificateValidity": "48h"})
	if got := lifetime(); got > 48*time.Hour || got < 47*time.Hour {
		t.Fatalf("with certificateValidity 48h: %s", got)
	}
}

// integrations.allowedHosts holds an Azure IoT Hub integration to the host
// the forwarder connects to: a bare hub name is checked as the hub's full
// host name (myhub.azure-devices.net), like a full name.
func TestAPIPolicyAzureHostCompleted(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		name, pattern, host string
		allowed             bool
	}{
		{name: "bare hub name under the hub suffix", pattern: "*.azure-devices.net", host: "myhub", allowed: true},
		{name: "bare hub name under another pattern", pattern: "*.example.com", host: "myhub"},
		{name: "bare hub name matching as typed", pattern: "myhub", host: "myhub"},
		{name: "full host name", pattern: "*.azure-devices.net", host: "myhub.azure-devices.net", allowed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.putPolicy("acme", map[string]any{"integrations": map[string]any{"allowedHosts": []string{tc.pattern}}})
			r := w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), map[string]any{
				"name": fmt.Sprintf("hub%d", w.seq.Add(1)), "type": "azure-iothub",
				"azureIothub": map[string]any{"hostName": tc.host, "deviceId": "gw-1", "deviceKey": "c2VjcmV0LWRldmljZS1rZXk="},
			})
			if !tc.allowed {
				wantProblem(t, tc.name, r, 403, "policy.violation", "myhub.azure-devices.net")
				return
			}
			if r.Status != 201 {
				t.Fatalf("refused: %d %s", r.Status, r.Body)
			}
		})
	}
}
