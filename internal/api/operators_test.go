package api_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// operatorClient returns a client of n's API on addr (the public or the
// admin listener) with credential key.
func operatorClient(t *testing.T, n *node.Node, addr, key string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Server: "https://" + addr, CAPEM: n.ServerCAPEM(), Credential: key, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// createOperator makes a named operator through op and returns its key.
func createOperator(t *testing.T, op *client.Client, name, role string) client.Operator {
	t.Helper()
	o, err := op.CreateOperator(context.Background(), client.CreateOperatorRequest{Name: name, Role: role})
	if err != nil {
		t.Fatalf("create operator %s: %v", name, err)
	}
	if !strings.HasPrefix(o.Key, "ito_") || o.Role != role || o.Name != name {
		t.Fatalf("created %+v", o)
	}
	return *o
}

// problemCode returns the code of a refusal, "" for none.
func problemCode(err error) string {
	var p *client.Problem
	if errors.As(err, &p) {
		return p.Code
	}
	return ""
}

// concrete fills a route pattern's wildcards with values that exist where
// it matters (tenant dev) and do not where it does not.
func concrete(pattern string) string {
	r := strings.NewReplacer("{tenant}", node.DevTenant, "{serial}", "TSGW06NOP00000001", "{id}", "0000000000000000",
		"{nodeId}", "TSEN01NOP00000001", "{file}", "root.json", "{sha256}", strings.Repeat("0", 64), "{name}", "x")
	return r.Replace(pattern)
}

// TestOperatorRolesOverRouteTable calls every route that takes a bearer
// credential with each named role's key: a route outside the role is
// refused 403 api.operator_role (a tenant's API key on an operator route
// api.operator_only), a route inside it passes authorisation (whatever
// the handler then says of the empty request).
func TestOperatorRolesOverRouteTable(t *testing.T) {
	n := nodetest.Start(t, nodetest.NoLimits)
	boot := nodetest.NewAPI(t, n)
	keys := map[string]string{}
	for _, role := range client.Roles {
		name := strings.TrimPrefix(role, "operator:") + "-1"
		keys[role] = createOperator(t, boot.Client, name, role).Key
	}
	tenantKey, err := boot.Client.CreateAPIKey(t.Context(), node.DevTenant, client.CreateAPIKeyRequest{Scopes: client.Scopes})
	if err != nil {
		t.Fatal(err)
	}
	customerData := func(p string) bool {
		return strings.HasSuffix(p, "/messages") || strings.HasSuffix(p, "/rejected") || strings.HasSuffix(p, "/stream") || strings.HasSuffix(p, "/dead-letters")
	}
	provisioning := map[string]bool{
		"POST /v1/tenants": true, "GET /v1/tenants": true, "POST /v1/tenants/{tenant}/gateways": true, "POST /v1/factory/gateways": true,
		"POST /v1/tenants/{tenant}/enrollment-tokens": true, "POST /v1/tenants/{tenant}/enrollment-tokens/{id}/revoke": true,
		"GET /v1/tenants/{tenant}": true, "GET /v1/tenants/{tenant}/gateways": true, "GET /v1/tenants/{tenant}/gateways/{serial}": true,
		"GET /v1/tenants/{tenant}/gateways/{serial}/certificates": true, "GET /v1/tenants/{tenant}/enrollment-tokens": true,
		"GET /v1/tenants/{tenant}/policy": true, // read with gateways:read, as the tenant record
	}
	// want says, written out from the design (not from the code under
	// test), whether role may call the route.
	want := func(role string, rt api.Route) bool {
		key := rt.Method + " " + rt.Pattern
		switch role {
		case client.RoleAdmin:
			return true
		case client.RoleMetrics:
			return key == "GET /metrics"
		case client.RoleReadonly:
			return rt.Method == "GET" && !strings.HasPrefix(rt.Pattern, "/v1/operators") && !customerData(rt.Pattern)
		case client.RoleProvisioning:
			return provisioning[key]
		}
		t.Fatalf("role %s", role)
		return false
	}
	var retire api.Route
	checked := map[string]int{}
	for _, rt := range n.Routes() {
		if rt.Access == api.Public || rt.Access == api.Gateway {
			continue
		}
		if rt.Pattern == "/v1/operators/bootstrap/retire" {
			retire = rt // last: it retires the bootstrap key
			continue
		}
		for _, role := range client.Roles {
			checkRole(t, boot, role, keys[role], rt, want(role, rt) || rt.Access == api.Credential)
			checked[role]++
		}
		if rt.Access == api.Operator {
			r := boot.Do(rt.Method, concrete(rt.Pattern), tenantKey.Key, nil)
			if code, _ := r.Problem(); r.Status != 403 || code != "api.operator_only" {
				t.Errorf("tenant key on %s %s: %d %s", rt.Method, rt.Pattern, r.Status, r.Body)
			}
		}
	}
	for _, role := range client.Roles {
		checkRole(t, boot, role, keys[role], retire, want(role, retire))
	}
	if checked[client.RoleAdmin] < 60 {
		t.Errorf("only %d routes checked", checked[client.RoleAdmin])
	}
}

// checkRole calls rt with key (of role) and checks it is allowed or
// refused with api.operator_role.
func checkRole(t *testing.T, a *nodetest.API, role, key string, rt api.Route, allowed bool) {
	t.Helper()
	r := a.Do(rt.Method, concrete(rt.Pattern), key, nil)
	code, _ := r.Problem()
	switch {
	case allowed && (r.Status == 401 || r.Status == 403):
		t.Errorf("%s on %s %s: refused %d %s, want allowed", role, rt.Method, rt.Pattern, r.Status, r.Body)
	case !allowed && (r.Status != 403 || code != "api.operator_role"):
		t.Errorf("%s on %s %s: %d %s, want 403 api.operator_role", role, rt.Method, rt.Pattern, r.Status, r.Body)
	}
}

// TestOperatorKeyShownOnceAndAudited: the key is in the answer that
// creates the operator and in none after; what a named operator does is
// audited under its name.
func TestOperatorKeyShownOnceAndAudited(t *testing.T) {
	n := nodetest.Start(t, nil)
	boot := nodetest.NewAPI(t, n)
	ctx := t.Context()
	created := createOperator(t, boot.Client, "alice", client.RoleAdmin)
	got, err := boot.Client.GetOperator(ctx, created.ID)
	if err != nil || got.Key != "" || got.Name != "alice" {
		t.Fatalf("get: %+v %v", got, err)
	}
	list, err := boot.Client.ListOperators(ctx)
	if err != nil || len(list) != 1 || list[0].Key != "" {
		t.Fatalf("list: %+v %v", list, err)
	}
	for _, path := range []string{"/v1/operators", "/v1/operators/" + created.ID} {
		if r := boot.Do("GET", path, boot.Key(), nil); strings.Contains(string(r.Body), created.Key[len("ito_")+17:]) {
			t.Errorf("GET %s shows the secret: %s", path, r.Body)
		}
	}
	alice := operatorClient(t, n, n.APIAddr(), created.Key)
	if _, err := alice.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	bob := createOperator(t, alice, "bob", client.RoleMetrics)
	if bob.CreatedBy != "operator:alice" {
		t.Errorf("createdBy %q", bob.CreatedBy)
	}
	if _, err := boot.Client.CreateOperator(ctx, client.CreateOperatorRequest{Name: "alice", Role: client.RoleReadonly}); problemCode(err) != "credential.operator_name_taken" {
		t.Errorf("second alice: %v", err)
	}
	if _, err := boot.Client.CreateOperator(ctx, client.CreateOperatorRequest{Name: "carol", Role: "operator:root"}); problemCode(err) != "credential.role_invalid" {
		t.Errorf("unknown role: %v", err)
	}
	page, err := boot.Client.ListAudit(ctx, "_system", client.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"registry.tenant.create": "operator:alice", "operator.create": ""}
	seen := map[string]bool{}
	for _, e := range page.Items {
		if e.Action == "registry.tenant.create" && e.Actor == want[e.Action] {
			seen[e.Action] = true
		}
		if e.Action == "operator.create" && e.Actor == "operator:alice" && e.Target == "operator:"+bob.ID {
			seen[e.Action] = true
		}
	}
	if len(seen) != len(want) {
		t.Errorf("audit of _system misses entries under alice's name: %+v", page.Items)
	}
}

// TestOperatorRevokeAndRotateStopAtOnceOnEveryNode: two nodes on one
// backbone; a key revoked or rotated through one is refused by the other
// on the next request.
func TestOperatorRevokeAndRotateStopAtOnceOnEveryNode(t *testing.T) {
	n1, n2 := nodetest.StartPair(t, nil)
	ctx := t.Context()
	boot1 := operatorClient(t, n1, n1.APIAddr(), n1.OperatorKey())
	op := createOperator(t, boot1, "ops", client.RoleReadonly)
	on2 := operatorClient(t, n2, n2.APIAddr(), op.Key)
	if _, err := on2.ListTenants(ctx); err != nil {
		t.Fatalf("the key does not work on the other node: %v", err)
	}
	rotated, err := boot1.RotateOperator(ctx, op.ID)
	if err != nil || rotated.Key == "" || rotated.Key == op.Key || rotated.RotatedAt == nil {
		t.Fatalf("rotate: %+v %v", rotated, err)
	}
	if _, err := on2.ListTenants(ctx); problemCode(err) != "api.unauthenticated" {
		t.Fatalf("the old key after rotation: %v", err)
	}
	on2 = operatorClient(t, n2, n2.APIAddr(), rotated.Key)
	if _, err := on2.ListTenants(ctx); err != nil {
		t.Fatalf("the new key: %v", err)
	}
	if got, _ := boot1.GetOperator(ctx, op.ID); got == nil || got.Key != "" {
		t.Errorf("get after rotation shows %+v", got)
	}
	if _, err := boot1.RevokeOperator(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := on2.ListTenants(ctx); problemCode(err) != "api.unauthenticated" {
		t.Fatalf("the revoked key on the other node: %v", err)
	}
	if _, err := boot1.RotateOperator(ctx, op.ID); problemCode(err) != "credential.operator_revoked" {
		t.Errorf("rotating a revoked operator: %v", err)
	}
	// The refused uses of the operator's old keys are in _system's log.
	page, err := boot1.ListAudit(ctx, "_system", client.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	refusals := 0
	for _, e := range page.Items {
		if e.Action == "api.auth.refuse" && e.Target == "route:GET /v1/tenants" {
			refusals++
		}
	}
	if refusals != 2 {
		t.Errorf("%d refusals audited in _system, want 2 (rotated, revoked): %+v", refusals, page.Items)
	}
}

// TestOperatorBootstrapRetire: retiring the bootstrap key is refused while
// no other admin could act; once one exists, the key stops on every node
// and the named admin goes on; the last admin cannot then be revoked.
func TestOperatorBootstrapRetire(t *testing.T) {
	n1, n2 := nodetest.StartPair(t, nil)
	ctx := t.Context()
	boot1 := operatorClient(t, n1, n1.APIAddr(), n1.OperatorKey())
	boot2 := operatorClient(t, n2, n2.APIAddr(), n2.OperatorKey())
	if _, err := boot1.RetireBootstrapOperator(ctx); problemCode(err) != "credential.operator_lockout" {
		t.Fatalf("retire without a named admin: %v", err)
	}
	createOperator(t, boot1, "viewer", client.RoleReadonly)
	expiring, err := boot1.CreateOperator(ctx, client.CreateOperatorRequest{Name: "old-admin", Role: client.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := boot1.RevokeOperator(ctx, expiring.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := boot1.RetireBootstrapOperator(ctx); problemCode(err) != "credential.operator_lockout" {
		t.Fatalf("retire with only a revoked admin and a readonly one: %v", err)
	}
	admin := createOperator(t, boot1, "admin", client.RoleAdmin)
	b, err := boot1.RetireBootstrapOperator(ctx)
	if err != nil || !b.Retired || b.RetiredBy != "operator" {
		t.Fatalf("retire: %+v %v", b, err)
	}
	if _, err := boot1.ListTenants(ctx); problemCode(err) != "api.unauthenticated" {
		t.Errorf("the retired key on the node that retired it: %v", err)
	}
	tu.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if _, err := boot2.ListTenants(ctx); problemCode(err) != "api.unauthenticated" {
			return errors.New("the other node still takes the retired key")
		}
		return nil
	})
	on2 := operatorClient(t, n2, n2.APIAddr(), admin.Key)
	if _, err := on2.ListTenants(ctx); err != nil {
		t.Fatalf("the named admin after retirement: %v", err)
	}
	if _, err := on2.RevokeOperator(ctx, admin.ID); problemCode(err) != "credential.operator_lockout" {
		t.Errorf("revoking the last admin: %v", err)
	}
	page, err := on2.ListAudit(ctx, "_system", client.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range page.Items {
		found = found || (e.Action == "operator.bootstrap.retire" && e.Outcome == "ok" && e.Actor == "operator")
	}
	if !found {
		t.Error("the retirement is not audited")
	}
}

// TestOperatorAdminListener: with --admin-addr the operator routes are on
// their own TLS listener and answer 404 on the public one, which keeps the
// tenant routes; health is on both.
func TestOperatorAdminListener(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.AdminAddr = "127.0.0.1:0" })
	ctx := t.Context()
	if n.AdminAddr() == "" || n.AdminAddr() == n.APIAddr() {
		t.Fatalf("admin listener %q", n.AdminAddr())
	}
	public := operatorClient(t, n, n.APIAddr(), n.OperatorKey())
	admin := operatorClient(t, n, n.AdminAddr(), n.OperatorKey())
	for _, c := range []*client.Client{public, admin} {
		if h, err := c.Healthz(ctx); err != nil || h.Status != "ok" {
			t.Errorf("health on %s: %+v %v", c.Server(), h, err)
		}
	}
	if _, err := admin.CreateTenant(ctx, "acme"); err != nil {
		t.Fatalf("create a tenant on the admin listener: %v", err)
	}
	if _, err := public.ListTenants(ctx); problemCode(err) != "api.not_found" {
		t.Errorf("list tenants on the public listener: %v", err)
	}
	if _, err := public.CreateOperator(ctx, client.CreateOperatorRequest{Name: "x", Role: client.RoleAdmin}); problemCode(err) != "api.not_found" {
		t.Errorf("create an operator on the public listener: %v", err)
	}
	// The path has a tenant route (GET) on the public listener: the
	// operator's POST is a wrong method there, as any other.
	if _, err := public.RegisterGateway(ctx, "acme", client.RegisterGatewayRequest{Serial: "TSGW06ACM00000001"}); problemCode(err) != "api.method_not_allowed" {
		t.Errorf("register a gateway on the public listener: %v", err)
	}
	if _, err := admin.RegisterGateway(ctx, "acme", client.RegisterGatewayRequest{Serial: "TSGW06ACM00000001"}); err != nil {
		t.Fatalf("register a gateway on the admin listener: %v", err)
	}
	if _, err := public.ListGateways(ctx, "acme", client.GatewayQuery{}); err != nil {
		t.Errorf("a tenant route on the public listener: %v", err)
	}
	if _, err := admin.ListGateways(ctx, "acme", client.GatewayQuery{}); problemCode(err) != "api.method_not_allowed" {
		t.Errorf("a tenant route on the admin listener: %v", err)
	}
	pa, aa := nodetest.NewAPI(t, n), n.AdminAddr()
	if r := pa.Do("GET", "/metrics", n.OperatorKey(), nil); r.Status != 404 {
		t.Errorf("metrics on the public listener: %d", r.Status)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}
	req, _ := http.NewRequest("GET", "https://"+aa+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+n.OperatorKey())
	if r := tu.Send(t, hc, req); r.Status != 200 {
		t.Errorf("metrics on the admin listener: %d %.200s", r.Status, r.Body)
	}
}

// TestOperatorBootstrapResetAfterRestart: a retired bootstrap key stays
// retired across a restart, and a node started with
// --reset-bootstrap-operator brings it back, audited.
func TestOperatorBootstrapResetAfterRestart(t *testing.T) {
	dir := t.TempDir()
	start := func(reset bool) *node.Node {
		return nodetest.Start(t, func(c *node.Config) { c.DataDir, c.ResetBootstrapOperator = dir, reset })
	}
	n := start(false)
	ctx := t.Context()
	boot := operatorClient(t, n, n.APIAddr(), n.OperatorKey())
	createOperator(t, boot, "admin", client.RoleAdmin)
	if _, err := boot.RetireBootstrapOperator(ctx); err != nil {
		t.Fatal(err)
	}
	// Someone tries the retired key: refused, and the refusal is in _system.
	if _, err := boot.ListTenants(ctx); problemCode(err) != "api.unauthenticated" {
		t.Fatalf("the retired key: %v", err)
	}
	n.Close()
	n = start(false)
	boot = operatorClient(t, n, n.APIAddr(), n.OperatorKey())
	if _, err := boot.ListTenants(ctx); problemCode(err) != "api.unauthenticated" {
		t.Fatalf("the retired key after a restart: %v", err)
	}
	n.Close()
	n = start(true)
	boot = operatorClient(t, n, n.APIAddr(), n.OperatorKey())
	if _, err := boot.ListTenants(ctx); err != nil {
		t.Fatalf("the bootstrap key after --reset-bootstrap-operator: %v", err)
	}
	page, err := boot.ListAudit(ctx, "_system", client.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var reset, refused bool
	for _, e := range page.Items {
		reset = reset || (e.Action == "operator.bootstrap.reset" && e.Actor == "node")
		// The refusal names the key tried (the bootstrap operator), not "anonymous".
		refused = refused || (e.Action == "api.auth.refuse" && e.Target == "route:GET /v1/tenants" && e.Actor == "operator")
	}
	if !reset || !refused {
		t.Errorf("audit of _system: reset %v, refusal of the retired key %v: %+v", reset, refused, page.Items)
	}
}
