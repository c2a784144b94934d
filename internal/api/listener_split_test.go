package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestAdminListenerHidesOtherRoutes: with an admin listener, each listener
// answers as if the other's routes did not exist. A path with no route on
// the listener answers 404 api.not_found without Allow whatever the method;
// a path with routes on it answers any other method 405 with Allow naming
// only its own methods, the method served on the other listener included.
func TestAdminListenerHidesOtherRoutes(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.AdminAddr = "127.0.0.1:0" })
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}
	send := func(addr, method, path string) (int, string, string) {
		req, err := http.NewRequest(method, "https://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := tu.Send(t, hc, req)
		code, _ := r.Problem()
		return r.Status, code, r.Header.Get("Allow")
	}
	pub, adm := n.APIAddr(), n.AdminAddr()
	for _, tc := range []struct {
		name, addr, method, path string
		status                   int
		code, allow              string
	}{
		{"public: operator method on a tenant path", pub, "POST", "/v1/tenants/acme/gateways", 405, "api.method_not_allowed", "GET"},
		{"public: unused method on a tenant path", pub, "PUT", "/v1/tenants/acme/gateways", 405, "api.method_not_allowed", "GET"},
		{"public: operator policy write", pub, "PUT", "/v1/tenants/acme/policy", 405, "api.method_not_allowed", "GET"},
		{"public: operator-only path", pub, "GET", "/v1/operators", 404, "api.not_found", ""},
		{"public: operator-only path, unused method", pub, "DELETE", "/v1/operators", 404, "api.not_found", ""},
		{"public: metrics, unused method", pub, "POST", "/metrics", 404, "api.not_found", ""},
		{"public: unknown path", pub, "PUT", "/v1/nope", 404, "api.not_found", ""},
		{"admin: tenant method on an operator path", adm, "GET", "/v1/tenants/acme/gateways", 405, "api.method_not_allowed", "POST"},
		{"admin: tenant policy read", adm, "GET", "/v1/tenants/acme/policy", 405, "api.method_not_allowed", "PUT"},
		{"admin: unused method on an operator path", adm, "PATCH", "/v1/tenants/acme/policy", 405, "api.method_not_allowed", "PUT"},
		{"admin: tenant-only path", adm, "GET", "/v1/tenants/acme/messages", 404, "api.not_found", ""},
		{"admin: tenant-only path, unused method", adm, "PUT", "/v1/tenants/acme/messages", 404, "api.not_found", ""},
		{"admin: enrollment", adm, "POST", "/v1/enroll", 404, "api.not_found", ""},
		{"admin: unused method on an operator path", adm, "PUT", "/v1/tenants", 405, "api.method_not_allowed", "GET, POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code, allow := send(tc.addr, tc.method, tc.path)
			if status != tc.status || code != tc.code || allow != tc.allow {
				t.Errorf("%s %s: %d %s Allow %q, want %d %s Allow %q", tc.method, tc.path, status, code, allow, tc.status, tc.code, tc.allow)
			}
		})
	}
	// The invariant behind the table: a route served on the other listener
	// answers exactly as a method no route has (OPTIONS) on the same path.
	for _, rt := range n.Routes() {
		addr := ""
		switch {
		case rt.Access == api.Operator:
			addr = pub
		case rt.Access == api.Tenant || rt.Access == api.Gateway:
			addr = adm
		default:
			continue
		}
		path := concrete(rt.Pattern)
		gs, gc, ga := send(addr, rt.Method, path)
		ws, wc, wa := send(addr, http.MethodOptions, path)
		if gs != ws || gc != wc || ga != wa {
			t.Errorf("%s %s on %s: %d %s Allow %q, a method no route has: %d %s Allow %q", rt.Method, path, addr, gs, gc, ga, ws, wc, wa)
		}
	}
}
