package api_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/credential"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// apiAllowCIDRs: a tenant's API key, OAuth2 client and access token are
// refused (403 api.source_not_allowed, audited) from an address outside
// its networks and accepted from one inside, at the network's boundary
// (the test's peer is 127.0.0.1); the operator and another tenant are not
// bound; an empty list lets every address in again.
func TestAPIPolicySourceAllowlist(t *testing.T) {
	w := newWorld(t)
	acme, beta := w.byTen["acme"].allKey, w.byTen["beta"].allKey
	id, secret := clientWithSecret(t, w, "acme", []string{credential.ScopeGatewaysRead})
	grant := url.Values{"grant_type": {"client_credentials"}}
	status, tok := tokenRequest(t, w, grant, id, secret)
	if status != 200 {
		t.Fatalf("token before the policy: %d %v", status, tok)
	}
	jwt := tok["access_token"].(string)
	get := func(tenant, key string) tu.Response {
		return w.api.Do("GET", "/v1/tenants/"+tenant+"/gateways", key, nil)
	}
	for _, tc := range []struct {
		name    string
		cidrs   []string
		allowed bool
	}{
		{name: "network just above the peer", cidrs: []string{"127.0.0.2/31"}},
		{name: "network ending at the peer", cidrs: []string{"127.0.0.0/31"}, allowed: true},
		{name: "the peer alone among others", cidrs: []string{"10.0.0.0/8", "127.0.0.1/32"}, allowed: true},
		{name: "IPv6 only", cidrs: []string{"2001:db8::/32"}},
		{name: "empty list", cidrs: []string{}, allowed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.putPolicy("acme", map[string]any{"apiAllowCIDRs": tc.cidrs})
			for _, key := range []struct{ name, key string }{{"api key", acme}, {"access token", jwt}} {
				r := get("acme", key.key)
				if tc.allowed {
					if r.Status != 200 {
						t.Fatalf("%s from inside: %d %s", key.name, r.Status, r.Body)
					}
					continue
				}
				wantProblem(t, key.name, r, 403, "api.source_not_allowed", "127.0.0.1")
			}
			status, out := tokenRequest(t, w, grant, id, secret)
			if tc.allowed != (status == 200) {
				t.Fatalf("token request: %d %v", status, out)
			}
			if r := get("acme", w.api.Key()); r.Status != 200 {
				t.Fatalf("operator: %d %s", r.Status, r.Body)
			}
			if r := get("beta", beta); r.Status != 200 {
				t.Fatalf("beta: %d %s", r.Status, r.Body)
			}
		})
	}
	r := w.api.Do("GET", "/v1/tenants/acme/audit?action=api.source.refuse", w.api.Key(), nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"api.source.refuse"`) || !strings.Contains(string(r.Body), "apikey:") ||
		!strings.Contains(string(r.Body), "oauth2:"+id) {
		t.Fatalf("refusals audited: %d %s", r.Status, r.Body)
	}

	for _, tc := range []struct{ name, body, detail string }{
		{name: "not a network", body: `{"apiAllowCIDRs": ["10.0.0.0"]}`, detail: "apiAllowCIDRs"},
		{name: "host bits", body: `{"apiAllowCIDRs": ["10.1.2.3/8"]}`, detail: "10.0.0.0/8"},
		{name: "prefix too long", body: `{"apiAllowCIDRs": ["10.0.0.0/33"]}`, detail: "apiAllowCIDRs"},
		{name: "zone", body: `{"apiAllowCIDRs": ["fe80::%eth0/64"]}`, detail: "apiAllowCIDRs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.api.Do("PUT", "/v1/tenants/acme/policy", w.api.Key(), []byte(tc.body))
			wantProblem(t, tc.body, r, 400, "policy.invalid", tc.detail)
		})
	}
}
