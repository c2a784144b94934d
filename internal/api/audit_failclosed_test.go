package api_test

import (
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/credential"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// refuseAuditWrites makes the tenant's audit stream refuse writes until
// restore is called.
func refuseAuditWrites(t *testing.T, w *world, tenant string) (restore func()) {
	t.Helper()
	return tu.RefuseWrites(t, w.n.JetStream(), names.AuditStream(tenant))
}

// verified checks that the tenant's audit log verifies through the API.
func verified(t *testing.T, w *world, tenant string) {
	t.Helper()
	var rep client.AuditReport
	r := w.api.Do("GET", "/v1/tenants/"+tenant+"/audit/verify", w.api.Key(), nil)
	if r.Status != 200 {
		t.Fatalf("verify %s: %d %s", tenant, r.Status, r.Body)
	}
	r.Decode(t, &rep)
	if !rep.OK {
		t.Fatalf("verify %s: %+v", tenant, rep)
	}
}

// TestAPIChangeFailsClosedWhenAuditCannotBeWritten: while the tenant's
// audit log refuses writes, a change (create an API key, isolate a
// gateway, create an integration) answers 503 audit.unavailable with a
// request id and does not happen; reads still answer. Once the log takes
// writes again the same changes work, each with a write-ahead entry and
// its outcome paired by request id, and the log verifies.
func TestAPIChangeFailsClosedWhenAuditCannotBeWritten(t *testing.T) {
	w := newWorld(t)
	gw := w.gateway("acme")
	key := w.byTen["acme"].allKey
	base := "/v1/tenants/acme"
	count := func(path string) int {
		t.Helper()
		var p struct{ Items []map[string]any }
		r := w.api.Do("GET", base+path, key, nil)
		if r.Status != 200 {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		r.Decode(t, &p)
		return len(p.Items)
	}
	gatewayState := func() string {
		t.Helper()
		var g struct{ State string }
		w.api.Do("GET", base+"/gateways/"+gw, key, nil).Decode(t, &g)
		return g.State
	}
	keysBefore, intsBefore := count("/api-keys"), count("/integrations")
	changes := []struct {
		name    string
		method  string
		pattern string // the route's
		path    string
		body    any
		status  int
		done    func() bool // whether the change took effect
	}{
		{"create an API key", "POST", "/v1/tenants/{tenant}/api-keys", base + "/api-keys", map[string]any{"scopes": []string{credential.ScopeGatewaysRead}}, 201,
			func() bool { return count("/api-keys") != keysBefore }},
		{"isolate a gateway", "POST", "/v1/tenants/{tenant}/gateways/{serial}/isolate", base + "/gateways/" + gw + "/isolate", nil, 200,
			func() bool { return gatewayState() == "isolated" }},
		{"create an integration", "POST", "/v1/tenants/{tenant}/integrations", base + "/integrations", map[string]any{"name": "failclosed", "type": "websocket"}, 201,
			func() bool { return count("/integrations") != intsBefore }},
	}
	restore := refuseAuditWrites(t, w, "acme")
	for _, tc := range changes {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			r := w.api.Do(tc.method, tc.path, key, tc.body)
			code, rid := r.Problem()
			if r.Status != 503 || code != "audit.unavailable" || rid == "" {
				t.Fatalf("%s while the audit log refuses writes: %d %s, want 503 audit.unavailable with a request id", tc.name, r.Status, r.Body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("content type %q", ct)
			}
			if tc.done() {
				t.Fatalf("%s took effect although its audit entry was not written", tc.name)
			}
		})
	}
	if r := w.api.Do("GET", base+"/gateways", key, nil); r.Status != 200 {
		t.Fatalf("a read while the audit log refuses writes: %d %s", r.Status, r.Body)
	}
	restore()
	for _, tc := range changes {
		t.Run("accepted: "+tc.name, func(t *testing.T) {
			r := w.api.Do(tc.method, tc.path, key, tc.body)
			if r.Status != tc.status {
				t.Fatalf("%s once the log is healthy: %d %s", tc.name, r.Status, r.Body)
			}
			if !tc.done() {
				t.Fatalf("%s did not take effect", tc.name)
			}
			rid := r.Header.Get("X-Request-Id")
			var page client.Page[audit.Entry]
			w.api.Do("GET", base+"/audit?limit=20", w.api.Key(), nil).Decode(t, &page)
			var started, outcome bool
			for _, e := range page.Items {
				if e.Detail["requestId"] != rid {
					continue
				}
				switch {
				case e.Action == "api.change" && e.Outcome == "started" && e.Target == "route:"+tc.method+" "+tc.pattern:
					started = true
				case e.Action != "api.change" && e.Outcome == "ok":
					outcome = true
				}
			}
			if !started || !outcome {
				t.Fatalf("request %s: write-ahead entry %v, outcome entry %v; log %+v", rid, started, outcome, page.Items)
			}
		})
	}
	verified(t, w, "acme")
}

// TestAPIOperatorChangeWithoutTenantFailsClosed: an operator change that
// names no tenant (creating one) is written ahead to the platform's log;
// while that log refuses writes the tenant is not created.
func TestAPIOperatorChangeWithoutTenantFailsClosed(t *testing.T) {
	w := newWorld(t)
	restore := refuseAuditWrites(t, w, audit.SystemTenant)
	r := w.api.Do("POST", "/v1/tenants", w.api.Key(), map[string]string{"id": "gamma"})
	if code, rid := r.Problem(); r.Status != 503 || code != "audit.unavailable" || rid == "" {
		t.Fatalf("create tenant while _system refuses writes: %d %s", r.Status, r.Body)
	}
	if r := w.api.Do("GET", "/v1/tenants/gamma", w.api.Key(), nil); r.Status != 404 {
		t.Fatalf("tenant gamma after a refused creation: %d %s", r.Status, r.Body)
	}
	restore()
	if r := w.api.Do("POST", "/v1/tenants", w.api.Key(), map[string]string{"id": "gamma"}); r.Status != 201 {
		t.Fatalf("create tenant once _system is healthy: %d %s", r.Status, r.Body)
	}
	verified(t, w, audit.SystemTenant)
	verified(t, w, "gamma")
}

// TestAPIChangeRefusedByItsHandlerIsClosedInTheAudit: a change its handler
// refuses before recording anything (a body that does not decode) still
// has its write-ahead entry closed with the error code.
func TestAPIChangeRefusedByItsHandlerIsClosedInTheAudit(t *testing.T) {
	w := newWorld(t)
	r := w.api.Do("POST", "/v1/tenants/acme/api-keys", w.byTen["acme"].allKey, map[string]any{"colour": "red"})
	if r.Status != 400 {
		t.Fatalf("create key with an unknown field: %d %s", r.Status, r.Body)
	}
	rid := r.Header.Get("X-Request-Id")
	var page client.Page[audit.Entry]
	w.api.Do("GET", "/v1/tenants/acme/audit?action=api.change&limit=10", w.api.Key(), nil).Decode(t, &page)
	var outcomes []string
	for _, e := range page.Items {
		if e.Detail["requestId"] == rid {
			outcomes = append(outcomes, e.Outcome)
		}
	}
	if len(outcomes) != 2 || outcomes[0] != "api.json_invalid" || outcomes[1] != "started" {
		t.Fatalf("api.change entries of request %s (newest first): %v, want api.json_invalid then started", rid, outcomes)
	}
	verified(t, w, "acme")
}
