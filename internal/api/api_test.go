package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

func do(t *testing.T, n *node.Node, method, path, bearer string) (*http.Response, []byte) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}
	req, err := http.NewRequest(method, "https://"+n.APIAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestAPIRefusesWithProblemDetails(t *testing.T) {
	n := nodetest.Start(t, nil)
	key := n.OperatorKey()
	cases := []struct {
		name, method, path, bearer string
		status                     int
		code                       string
	}{
		{"no credential", "GET", "/v1/tenants/dev/messages", "", 401, "api.unauthenticated"},
		{"wrong credential", "GET", "/v1/tenants/dev/messages", key + "x", 401, "api.unauthenticated"},
		{"prefix of the key", "GET", "/v1/tenants/dev/messages", key[:len(key)-1], 401, "api.unauthenticated"},
		{"unknown tenant", "GET", "/v1/tenants/nope/messages", key, 404, "registry.tenant_not_found"},
		{"malformed tenant", "GET", "/v1/tenants/..%2f..%2fetc/messages", key, 404, ""},
		{"injection in tenant", "GET", "/v1/tenants/dev'%20OR%201=1/rejected", key, 404, "registry.tenant_not_found"},
		{"limit zero", "GET", "/v1/tenants/dev/messages?limit=0", key, 400, "api.bad_parameter"},
		{"limit too big", "GET", "/v1/tenants/dev/messages?limit=100000", key, 400, "api.bad_parameter"},
		{"limit not a number", "GET", "/v1/tenants/dev/rejected?limit=ten", key, 400, "api.bad_parameter"},
		{"unknown route", "GET", "/v1/nothing", key, 404, "api.not_found"},
		{"wrong method", "DELETE", "/v1/tenants/dev/messages", key, 405, "api.method_not_allowed"},
		{"metrics need the operator", "GET", "/metrics", "", 401, "api.unauthenticated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, n, tc.method, tc.path, tc.bearer)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != "no-store" || !strings.Contains(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
				t.Errorf("security headers missing: %v", resp.Header)
			}
			if tc.code == "" {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("content type %q", ct)
			}
			var p struct {
				Type, Title, Code, RequestID string
				Status                       int
			}
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			if p.Code != tc.code || p.Status != tc.status || p.Title == "" || len(p.RequestID) != 24 || p.RequestID != resp.Header.Get("X-Request-Id") {
				t.Errorf("problem = %s", body)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			for _, leak := range []string{"nats", "jetstream", ".go:", "goroutine", "runtime."} {
				if strings.Contains(strings.ToLower(string(body)), leak) {
					t.Errorf("body leaks %q: %s", leak, body)
				}
			}
		})
	}
}

func TestAPIHealthAndMetrics(t *testing.T) {
	n := nodetest.Start(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, body := do(t, n, "GET", path, ""); resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	resp, body := do(t, n, "GET", "/metrics", n.OperatorKey())
	if resp.StatusCode != 200 || !strings.Contains(string(body), "iotransit_ingest_connections_accepted_total") {
		t.Errorf("metrics: %d %.200s", resp.StatusCode, body)
	}
}

func TestAPIListsMessagesNewestFirst(t *testing.T) {
	n := nodetest.Start(t, nil)
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, "acme", "TSGW06ACM00000001"), "TSGW06ACM00000001", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := up.Publish(t.Context(), []byte(tu.Thingsee("TSEN01ABC12345678", 1700000000+int64(i), float64(20+i))), 1); err != nil {
			t.Fatal(err)
		}
	}
	msgs := nodetest.NewAPI(t, n).Messages("acme", 3)
	if len(msgs) != 3 {
		t.Fatalf("limit 3 gave %d", len(msgs))
	}
	for i, m := range msgs {
		var v struct{ Temp float64 }
		if err := json.Unmarshal(m.Message, &v); err != nil {
			t.Fatal(err)
		}
		if want := float64(24 - i); v.Temp != want {
			t.Errorf("item %d has temp %v, want %v (newest first)", i, v.Temp, want)
		}
		if i > 0 && m.Seq >= msgs[i-1].Seq {
			t.Errorf("sequence not descending: %d after %d", m.Seq, msgs[i-1].Seq)
		}
	}
	// Another tenant sees none of them.
	nodetest.Gateway(t, n, "other", "TSGW06OTH00000001")
	if got := nodetest.NewAPI(t, n).Messages("other", 10); len(got) != 0 {
		t.Errorf("tenant other lists %d messages of acme", len(got))
	}
}
