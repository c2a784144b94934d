package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// tokenOf creates an enrollment token of serial and returns it, secret
// included.
func tokenOf(t *testing.T, w *world, tenant, serial string) client.EnrollmentToken {
	t.Helper()
	r := w.api.Do("POST", "/v1/tenants/"+tenant+"/enrollment-tokens", w.api.Key(), map[string]string{"serial": serial})
	if r.Status != 201 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	var tok client.EnrollmentToken
	r.Decode(t, &tok)
	return tok
}

// A revoked enrollment token enrolls nothing, and the refusal says what to
// do; revocation is scoped, idempotent, audited, and shown in the list.
func TestAPIRevokeEnrollmentToken(t *testing.T) {
	w := newWorld(t)
	serial := w.gateway("acme")
	writer := w.key("acme", []string{credential.ScopeGatewaysWrite, credential.ScopeGatewaysRead})
	reader := w.key("acme", []string{credential.ScopeGatewaysRead})
	betaKey := w.key("beta", credential.TenantScopes)
	tok := tokenOf(t, w, "acme", serial)
	if tok.State != client.TokenValid {
		t.Fatalf("a new token is %q", tok.State)
	}
	revoke := func(tenant, id, key string) tu.Response {
		return w.api.Do("POST", "/v1/tenants/"+tenant+"/enrollment-tokens/"+id+"/revoke", key, nil)
	}

	for _, tc := range []struct {
		name, tenant, id, key, code string
		status                      int
	}{
		{"without gateways:write", "acme", tok.ID, reader, "api.scope_missing", 403},
		{"another tenant's key", "acme", tok.ID, betaKey, "registry.tenant_not_found", 404},
		{"the token under another tenant", "beta", tok.ID, betaKey, "registry.token_not_found", 404},
		{"unknown id", "acme", "0123456789abcdef", writer, "registry.token_not_found", 404},
		{"malformed id", "acme", "not-an-id", writer, "registry.token_not_found", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := revoke(tc.tenant, tc.id, tc.key)
			if code, _ := r.Problem(); r.Status != tc.status || code != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}

	var first, again client.EnrollmentToken
	if r := revoke("acme", tok.ID, writer); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	} else {
		r.Decode(t, &first)
	}
	if first.State != client.TokenRevoked || first.RevokedAt == nil || first.Token != "" || first.Serial != serial {
		t.Fatalf("revoked token %+v", first)
	}
	if r := revoke("acme", tok.ID, writer); r.Status != 200 {
		t.Fatalf("revoke again: %d %s", r.Status, r.Body)
	} else {
		r.Decode(t, &again)
	}
	if again.RevokedAt == nil || !again.RevokedAt.Equal(*first.RevokedAt) {
		t.Fatalf("revoking again changed revokedAt: %v, then %v", first.RevokedAt, again.RevokedAt)
	}

	r := w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": tok.Token, "csr": mustCSR(t, serial)})
	var p client.Problem
	r.Decode(t, &p)
	if r.Status != 401 || p.Code != "registry.token_revoked" || !strings.Contains(p.Title, "iotransit token create") {
		t.Fatalf("enroll with a revoked token: %d %s", r.Status, r.Body)
	}
	checkNoLeak(t, r)

	// The list shows each state.
	used := tokenOf(t, w, "acme", serial)
	if r := w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": used.Token, "csr": mustCSR(t, serial)}); r.Status != 200 {
		t.Fatalf("enroll: %d %s", r.Status, r.Body)
	}
	expired := tokenOf(t, w, "acme", serial)
	expireToken(t, w, expired.Token)
	valid := tokenOf(t, w, "acme", serial)
	var list client.List[client.EnrollmentToken]
	w.api.Do("GET", "/v1/tenants/acme/enrollment-tokens", reader, nil).Decode(t, &list)
	want := map[string]client.TokenState{tok.ID: client.TokenRevoked, used.ID: client.TokenUsed, expired.ID: client.TokenExpired, valid.ID: client.TokenValid}
	for _, it := range list.Items {
		if want[it.ID] != it.State {
			t.Errorf("token %s is %q, want %q", it.ID, it.State, want[it.ID])
		}
		delete(want, it.ID)
	}
	if len(want) != 0 {
		t.Errorf("tokens missing from the list: %v", want)
	}

	// Audited once per revocation that found the token, by whom and of which
	// gateway; refusals of unknown tokens are not.
	var page client.Page[audit.Entry]
	w.api.Do("GET", "/v1/tenants/acme/audit?action=registry.token.revoke", w.api.Key(), nil).Decode(t, &page)
	if len(page.Items) != 2 {
		t.Fatalf("audit entries of registry.token.revoke: %+v", page.Items)
	}
	for _, e := range page.Items {
		if e.Target != "gateway:"+serial || e.Detail["token_id"] != tok.ID || !strings.HasPrefix(e.Actor, "apikey:") || e.Outcome != "ok" {
			t.Errorf("audit entry %+v", e)
		}
	}
	if time.Since(*first.RevokedAt) > time.Minute {
		t.Errorf("revokedAt %v is not now", first.RevokedAt)
	}
}
