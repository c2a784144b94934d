package api_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// raw sends body bytes with a content type.
func raw(t *testing.T, a *nodetest.API, n *node.Node, method, path, key, ctype string, body []byte) tu.Response {
	t.Helper()
	req, err := http.NewRequest(method, a.Base()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return tu.Response{Status: resp.StatusCode, Header: resp.Header, Body: b.Bytes()}
}

// TestAPIBadRequests sends malformed, oversized, mistyped and hostile
// requests: each gets a clear problem+json with a stable code, nothing is
// created, and no answer carries internal detail.
func TestAPIBadRequests(t *testing.T) {
	w := newWorld(t)
	key := w.api.Key()
	const js = "application/json"
	huge := append([]byte(`{"serial":"`), bytes.Repeat([]byte("A"), 100<<10)...)
	huge = append(huge, `"}`...)
	cases := []struct {
		name, method, path, ctype string
		body                      []byte
		status                    int
		code                      string
	}{
		{"malformed JSON", "POST", "/v1/tenants", js, []byte(`{"id":`), 400, "api.json_invalid"},
		{"not an object", "POST", "/v1/tenants", js, []byte(`["acme"]`), 400, "api.json_invalid"},
		{"unknown field", "POST", "/v1/tenants", js, []byte(`{"id":"zz","admin":true}`), 400, "api.json_invalid"},
		{"trailing data", "POST", "/v1/tenants", js, []byte(`{"id":"zz"} {"id":"yy"}`), 400, "api.json_invalid"},
		{"trailing garbage", "POST", "/v1/tenants", js, []byte(`{"id":"zz"}x`), 400, "api.json_invalid"},
		{"wrong type", "POST", "/v1/tenants", js, []byte(`{"id":42}`), 400, "api.json_invalid"},
		{"duplicate key", "POST", "/v1/tenants", js, []byte(`{"id":"zz","id":"yy"}`), 400, "api.json_invalid"},
		{"duplicate key in another case", "POST", "/v1/tenants/acme/api-keys", js, []byte(`{"scopes":["messages:read"],"Scopes":["keys:write"]}`), 400, "api.json_invalid"},
		{"empty body", "POST", "/v1/tenants", js, nil, 400, "api.json_invalid"},
		{"huge body", "POST", "/v1/tenants/acme/gateways", js, huge, 413, "api.body_too_large"},
		{"wrong content type", "POST", "/v1/tenants", "text/plain", []byte(`{"id":"zz"}`), 415, "api.content_type"},
		{"form content type", "POST", "/v1/tenants", "application/x-www-form-urlencoded", []byte(`id=zz`), 415, "api.content_type"},
		{"no content type", "POST", "/v1/tenants", "", []byte(`{"id":"zz"}`), 415, "api.content_type"},
		{"SQL in a tenant id", "POST", "/v1/tenants", js, []byte(`{"id":"a'; DROP TABLE tenants;--"}`), 400, "registry.tenant_invalid"},
		{"shell in a tenant id", "POST", "/v1/tenants", js, []byte(`{"id":"$(rm -rf /)"}`), 400, "registry.tenant_invalid"},
		{"path in a tenant id", "POST", "/v1/tenants", js, []byte(`{"id":"../../etc"}`), 400, "registry.tenant_invalid"},
		{"NATS wildcard in a tenant id", "POST", "/v1/tenants", js, []byte(`{"id":"a.>"}`), 400, "registry.tenant_invalid"},
		{"unicode tenant id", "POST", "/v1/tenants", js, []byte(`{"id":"acmé"}`), 400, "registry.tenant_invalid"},
		{"SQL in a serial", "POST", "/v1/tenants/acme/gateways", js, []byte(`{"serial":"' OR 1=1 --"}`), 400, "registry.serial_invalid"},
		{"NATS subject in a serial", "POST", "/v1/tenants/acme/gateways", js, []byte(`{"serial":"TSGW06ACM0000.*>"}`), 400, "registry.serial_invalid"},
		{"path traversal in a serial", "GET", "/v1/tenants/acme/gateways/..%2F..%2Fetc%2Fpasswd", "", nil, 404, ""},
		{"wildcard serial", "GET", "/v1/tenants/acme/gateways/*", "", nil, 404, "registry.gateway_not_found"},
		{"shell in a serial path", "POST", "/v1/tenants/acme/gateways/$(id)/revoke", "", nil, 404, "registry.gateway_not_found"},
		{"bad label key", "POST", "/v1/tenants/acme/gateways", js, []byte(`{"serial":"TSGW06ACM00099999","labels":{"Bad Key":"x"}}`), 400, "registry.labels_invalid"},
		{"unknown scope", "POST", "/v1/tenants/acme/api-keys", js, []byte(`{"scopes":["root"]}`), 400, "credential.scope_invalid"},
		{"no scope", "POST", "/v1/tenants/acme/api-keys", js, []byte(`{"scopes":[]}`), 400, "credential.scopes_required"},
		{"bad ttl", "POST", "/v1/tenants/acme/api-keys", js, []byte(`{"scopes":["messages:read"],"ttl":"forever"}`), 400, "api.bad_parameter"},
		{"bad key id", "GET", "/v1/tenants/acme/api-keys/../../x", "", nil, 404, ""},
		{"bad cursor", "GET", "/v1/tenants/acme/messages?cursor=%00%01", "", nil, 400, "store.cursor_invalid"},
		{"bad tsmTuid", "GET", "/v1/tenants/acme/messages?tsmTuid=*", "", nil, 400, "store.query_invalid"},
		{"bad time", "GET", "/v1/tenants/acme/messages?from=yesterday", "", nil, 400, "api.bad_parameter"},
		{"bad order", "GET", "/v1/tenants/acme/audit?order=random", "", nil, 400, "api.bad_parameter"},
		{"bad audit cursor", "GET", "/v1/tenants/acme/audit?cursor=-1", "", nil, 400, "api.bad_parameter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := raw(t, w.api, w.n, tc.method, tc.path, key, tc.ctype, tc.body)
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %.300s", r.Status, tc.status, r.Body)
			}
			code, rid := r.Problem()
			if tc.code != "" && code != tc.code {
				t.Errorf("code %q, want %q: %.300s", code, tc.code, r.Body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("content type %q", ct)
			}
			if rid == "" {
				t.Error("no request id")
			}
			checkNoLeak(t, r)
			for _, goErr := range []string{"json: ", "cannot unmarshal", "strconv.", "invalid character"} {
				if strings.Contains(string(r.Body), goErr) {
					t.Errorf("answer carries a Go error string %q: %s", goErr, r.Body)
				}
			}
		})
	}
	var ts struct{ Items []struct{ ID string } }
	w.api.Do("GET", "/v1/tenants", key, nil).Decode(t, &ts)
	for _, it := range ts.Items {
		if it.ID != "acme" && it.ID != "beta" && it.ID != "dev" {
			t.Errorf("a bad request created tenant %q", it.ID)
		}
	}
}

// TestAPIRateLimits bursts one credential past its limit: 429 with
// Retry-After, while another credential keeps working; then failed
// authentications lock the address out.
func TestAPIRateLimits(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = api.Limits{PerCredential: 1, CredentialBurst: 5, PerIP: 1000, IPBurst: 1000, AuthFailures: 5, AuthWindow: time.Minute}
	})
	a := nodetest.NewAPI(t, n)
	mk := func() string {
		r := a.Do("POST", "/v1/tenants/dev/api-keys", a.Key(), map[string]any{"scopes": []string{"messages:read"}})
		var k struct{ Key string }
		r.Decode(t, &k)
		return k.Key
	}
	k1, k2 := mk(), mk()
	var limited tu.Response
	for i := 0; i < 10; i++ {
		r := a.Do("GET", "/v1/tenants/dev/messages", k1, nil)
		if r.Status == 429 {
			limited = r
			break
		}
		if r.Status != 200 {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
		}
	}
	if limited.Status != 429 {
		t.Fatal("no 429 after a burst of 10 at 1/s with burst 5")
	}
	if code, _ := limited.Problem(); code != "api.rate_limited" {
		t.Errorf("code %q", code)
	}
	if s, err := strconv.Atoi(limited.Header.Get("Retry-After")); err != nil || s < 1 || s > 2 {
		t.Errorf("Retry-After %q", limited.Header.Get("Retry-After"))
	}
	if r := a.Do("GET", "/v1/tenants/dev/messages", k2, nil); r.Status != 200 {
		t.Errorf("another credential is limited too: %d", r.Status)
	}

	// Failed authentications: after 5, even a valid key from this address
	// waits for the window to end.
	for i := 0; i < 5; i++ {
		if r := a.Do("GET", "/v1/tenants/dev/messages", "itk_0000000000000000_"+strings.Repeat("x", 43), nil); r.Status != 401 {
			t.Fatalf("bad key %d: %d", i, r.Status)
		}
	}
	r := a.Do("GET", "/v1/tenants/dev/messages", k2, nil)
	if code, _ := r.Problem(); r.Status != 429 || code != "api.auth_throttled" || r.Header.Get("Retry-After") == "" {
		t.Errorf("after 5 failures: %d %s", r.Status, r.Body)
	}
}

// TestAPIAuditRefusalsBounded: anyone who knows a key id can make refused
// authentications that name its tenant; they are written to the tenant's
// audit log only up to a budget, and the next entry written says how many
// were left out.
func TestAPIAuditRefusalsBounded(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = api.Limits{AuthFailures: 1000, AuditRefusals: 0.001, AuditBurst: 3}
	})
	a := nodetest.NewAPI(t, n)
	r := a.Do("POST", "/v1/tenants/dev/api-keys", a.Key(), map[string]any{"scopes": []string{"messages:read"}})
	var k struct{ ID string }
	r.Decode(t, &k)
	forged := "itk_" + k.ID + "_" + strings.Repeat("x", 43)
	for i := range 30 {
		if r := a.Do("GET", "/v1/tenants/dev/messages", forged, nil); r.Status != 401 {
			t.Fatalf("forged key %d: %d", i, r.Status)
		}
	}
	var entries struct {
		Items []struct {
			Action string
			Detail map[string]string
		}
	}
	tu.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
		entries.Items = nil
		a.Do("GET", "/v1/tenants/dev/audit?action=api.auth.refuse&limit=100", a.Key(), nil).Decode(t, &entries)
		if len(entries.Items) < 3 {
			return fmt.Errorf("%d refusal entries", len(entries.Items))
		}
		return nil
	})
	if len(entries.Items) != 3 {
		t.Errorf("%d refusal entries for 30 refusals with a budget of 3", len(entries.Items))
	}
}

// TestAPITokenRefusalsShareTheAuditBudget: failed OAuth2 token requests
// (a known client id, a wrong secret) are refused authentications that name
// a tenant like the bearer path's, written to its log within the same
// budget; the next entry written counts the ones left out, so that every
// refusal is accounted for.
func TestAPITokenRefusalsShareTheAuditBudget(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = api.Limits{AuthFailures: 1000, AuditRefusals: 20, AuditBurst: 3} // a token every 3 s
	})
	a := nodetest.NewAPI(t, n)
	r := a.Do("POST", "/v1/tenants/dev/oauth2-clients", a.Key(), map[string]any{"scopes": []string{"messages:read"}})
	var c struct{ ClientID string }
	r.Decode(t, &c)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}
	attempts := 0
	fail := func() {
		t.Helper()
		req, _ := http.NewRequest("POST", a.Base()+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(c.ClientID, "wrong")
		if r := tu.Send(t, hc, req); r.Status != 401 {
			t.Fatalf("wrong secret: %d %s", r.Status, r.Body)
		}
		attempts++
	}
	type entry struct {
		Action string
		Detail map[string]string
	}
	refusals := func() []entry {
		var p struct{ Items []entry }
		a.Do("GET", "/v1/tenants/dev/audit?action=credential.oauth2.token&order=oldest&limit=1000", a.Key(), nil).Decode(t, &p)
		return p.Items
	}
	for range 30 {
		fail()
	}
	if got := len(refusals()); got < 1 || got > 4 {
		t.Fatalf("%d entries for %d refused token requests with a burst of 3", got, attempts)
	}
	// The next one written says how many were left out: with it, every
	// refusal is accounted for.
	tu.Eventually(t, 10*time.Second, 200*time.Millisecond, func() error {
		fail()
		es := refusals()
		if es[len(es)-1].Detail["refusalsLeftOut"] == "" {
			return fmt.Errorf("no entry with refusalsLeftOut yet")
		}
		total := 0
		for _, e := range es {
			total++
			left, _ := strconv.Atoi(e.Detail["refusalsLeftOut"])
			total += left
		}
		if total != attempts {
			t.Fatalf("%d refusals accounted for (entries + refusalsLeftOut), %d made", total, attempts)
		}
		return nil
	})
}
