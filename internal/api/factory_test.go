package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// provisioned makes one unclaimed gateway (by the operator) and returns its
// serial and claim code.
func (w *world) provisioned() (serial, code string) {
	w.t.Helper()
	b := provision(w.t, w.api, 1)
	return b.Gateways[0].Serial, b.Gateways[0].ClaimCode
}

func provision(t *testing.T, a *nodetest.API, count int) client.ProvisionedBatch {
	t.Helper()
	r := a.Do("POST", "/v1/factory/gateways", a.Key(), map[string]any{"count": count, "model": "TSGW06"})
	if r.Status != 201 {
		t.Fatalf("provision: %d %s", r.Status, r.Body)
	}
	var b client.ProvisionedBatch
	r.Decode(t, &b)
	if len(b.Gateways) != count {
		t.Fatalf("provisioned %d gateways, want %d", len(b.Gateways), count)
	}
	return b
}

func claimReq(a *nodetest.API, tenant, key, serial, code string) tu.Response {
	return a.Do("POST", "/v1/tenants/"+tenant+"/gateways/claim", key, map[string]string{"serial": serial, "claimCode": code})
}

// claimWorld is a node with tenants acme and beta, each with a key holding
// the gateway scopes, and a failed-claim budget of failures.
type claimWorld struct {
	n    *node.Node
	api  *nodetest.API
	keys map[string]string
	logs *tu.SyncBuffer
}

func newClaimWorld(t *testing.T, failures int) *claimWorld {
	logs := &tu.SyncBuffer{}
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.APILimits.ClaimFailures, c.APILimits.ClaimRefill = failures, time.Hour
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	w := &claimWorld{n: n, api: nodetest.NewAPI(t, n), keys: map[string]string{}, logs: logs}
	for _, id := range []string{"acme", "beta"} {
		if r := w.api.Do("POST", "/v1/tenants", w.api.Key(), map[string]string{"id": id}); r.Status != 201 {
			t.Fatalf("create tenant %s: %d %s", id, r.Status, r.Body)
		}
		r := w.api.Do("POST", "/v1/tenants/"+id+"/api-keys", w.api.Key(), map[string]any{"scopes": []string{credential.ScopeGatewaysWrite, credential.ScopeGatewaysRead, credential.ScopeMessagesRead}})
		if r.Status != 201 {
			t.Fatalf("key: %d %s", r.Status, r.Body)
		}
		var k struct{ Key string }
		r.Decode(t, &k)
		w.keys[id] = k.Key
	}
	return w
}

// withoutRequestID is an answer's body without its request id, which
// differs in every answer.
func withoutRequestID(t *testing.T, r tu.Response) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("not JSON: %s", r.Body)
	}
	if m["requestId"] == "" || m["requestId"] == nil {
		t.Errorf("no request id: %s", r.Body)
	}
	delete(m, "requestId")
	b, _ := json.Marshal(m)
	return fmt.Sprintf("%d %s %s", r.Status, r.Header.Get("Content-Type"), b)
}

// TestAPIClaimThenEnrollAndPublish is the factory flow end to end: the
// operator provisions, the tenant claims with the label's code (its own
// key, gateways:write), makes an enrollment token, the gateway enrolls
// with a CSR and publishes over MQTT; the message is stored in the
// tenant's stream. The claim is audited in the tenant's log and in
// _system.
func TestAPIClaimThenEnrollAndPublish(t *testing.T) {
	w := newClaimWorld(t, 10)
	b := provision(t, w.api, 2)
	g := b.Gateways[0]
	r := claimReq(w.api, "acme", w.keys["acme"], g.Serial, g.ClaimCode)
	if r.Status != 201 {
		t.Fatalf("claim: %d %s", r.Status, r.Body)
	}
	var gw client.Gateway
	r.Decode(t, &gw)
	if gw.Tenant != "acme" || gw.Serial != g.Serial || gw.State != client.GatewayActive {
		t.Errorf("claimed gateway %+v", gw)
	}
	tr := w.api.Do("POST", "/v1/tenants/acme/enrollment-tokens", w.keys["acme"], map[string]string{"serial": g.Serial})
	if tr.Status != 201 {
		t.Fatalf("token: %d %s", tr.Status, tr.Body)
	}
	var tok struct{ Token string }
	tr.Decode(t, &tok)
	csr, kp := csrFor(t, g.Serial)
	er := w.api.Do("POST", "/v1/enroll", "", map[string]string{"token": tok.Token, "csr": csr})
	if er.Status != 200 {
		t.Fatalf("enroll: %d %s", er.Status, er.Body)
	}
	var enr enrolled
	er.Decode(t, &enr)
	chain, err := pki.ParseCertsPEM([]byte(enr.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chain {
		kp.Certificate = append(kp.Certificate, c.Raw)
	}
	up, err := nodetest.Dial(t, w.n, kp, g.Serial, nil)
	if err != nil {
		t.Fatalf("dial as the claimed gateway: %v", err)
	}
	if res, err := up.Publish(t.Context(), []byte(tu.Thingsee("TSEN01ABC12345678", 1700000000, 21.5)), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, res)
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, m := range w.api.Messages("acme", 10) {
			if m.Gateway == g.Serial {
				return nil
			}
		}
		return errors.New("the message is not stored yet")
	})
	for _, tenant := range []string{"acme", "_system"} {
		if !auditHas(t, w.n, tenant, `"registry.gateway.claim"`, g.Serial) {
			t.Errorf("the claim is not in %s's audit log", tenant)
		}
	}
	if !auditHas(t, w.n, "_system", `"registry.factory.provision"`, b.Batch) {
		t.Error("the provisioning is not in _system's audit log")
	}
}

// auditHas reports whether one raw entry of tenant's audit log holds all
// of parts.
func auditHas(t *testing.T, n *node.Node, tenant string, parts ...string) bool {
	t.Helper()
	for _, e := range rawAudit(t, n, tenant) {
		all := true
		for _, p := range parts {
			all = all && bytes.Contains(e, []byte(p))
		}
		if all {
			return true
		}
	}
	return false
}

// rawAudit returns the stored bytes of every entry of tenant's audit log.
func rawAudit(t *testing.T, n *node.Node, tenant string) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.JetStream().Stream(ctx, names.AuditStream(tenant))
	if err != nil {
		t.Fatalf("audit stream of %s: %v", tenant, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Data)
	}
	return out
}

// TestAPIClaimRefusalsLookLikeAnUnknownSerial: every claim that binds
// nothing answers exactly as one of a serial that does not exist: same
// status, content type, code and body (but the request id). Nothing is
// bound by any of them.
func TestAPIClaimRefusalsLookLikeAnUnknownSerial(t *testing.T) {
	w := newClaimWorld(t, 1000)
	b := provision(t, w.api, 4)
	unclaimed, claimedByBeta, claimedByAcme := b.Gateways[0], b.Gateways[1], b.Gateways[2]
	for _, c := range []struct{ tenant, serial, code string }{{"beta", claimedByBeta.Serial, claimedByBeta.ClaimCode}, {"acme", claimedByAcme.Serial, claimedByAcme.ClaimCode}} {
		if r := claimReq(w.api, c.tenant, w.keys[c.tenant], c.serial, c.code); r.Status != 201 {
			t.Fatalf("claim: %d %s", r.Status, r.Body)
		}
	}
	if r := w.api.Do("POST", "/v1/tenants/beta/gateways", w.api.Key(), map[string]string{"serial": "TSGW06BET00000001"}); r.Status != 201 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	baseline := withoutRequestID(t, claimReq(w.api, "acme", w.keys["acme"], "TSGW06ZZZ99999999", unclaimed.ClaimCode))
	if !strings.HasPrefix(baseline, "404 application/problem+json ") || !strings.Contains(baseline, `"code":"registry.claim_invalid"`) {
		t.Fatalf("unknown serial: %s", baseline)
	}
	for _, tc := range []struct{ name, serial, code string }{
		{name: "unclaimed serial, wrong code", serial: unclaimed.Serial, code: "AAAAA-AAAAA-AAAAA-AAAAA"},
		{name: "unclaimed serial, another gateway's code", serial: unclaimed.Serial, code: b.Gateways[3].ClaimCode},
		{name: "serial claimed by another tenant, its code", serial: claimedByBeta.Serial, code: claimedByBeta.ClaimCode},
		{name: "serial claimed by another tenant, wrong code", serial: claimedByBeta.Serial, code: "AAAAA-AAAAA-AAAAA-AAAAA"},
		{name: "reused code", serial: claimedByAcme.Serial, code: claimedByAcme.ClaimCode},
		{name: "serial registered in another tenant", serial: "TSGW06BET00000001", code: unclaimed.ClaimCode},
		{name: "malformed serial", serial: "tsgw06;' OR 1=1", code: unclaimed.ClaimCode},
		{name: "NATS subject as serial", serial: "TSGW06ACM0000.*>", code: unclaimed.ClaimCode},
		{name: "malformed code", serial: unclaimed.Serial, code: "not a code at all!"},
		{name: "empty", serial: "", code: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := claimReq(w.api, "acme", w.keys["acme"], tc.serial, tc.code)
			if got := withoutRequestID(t, r); got != baseline {
				t.Errorf("answer\n%s\nwant (as an unknown serial)\n%s", got, baseline)
			}
			checkNoLeak(t, r)
		})
	}
	if _, ok := w.n.Registry().Gateway("acme", unclaimed.Serial); ok {
		t.Error("a refused claim bound the gateway")
	}
	if g, ok := w.n.Registry().Gateway("beta", claimedByBeta.Serial); !ok || g.Tenant != "beta" {
		t.Error("beta lost its claimed gateway")
	}
	if r := claimReq(w.api, "acme", w.keys["acme"], unclaimed.Serial, unclaimed.ClaimCode); r.Status != 201 {
		t.Errorf("the refusals spent the code: %d %s", r.Status, r.Body)
	}
}

// TestAPIRacingClaimsOneWins: two tenants claim one gateway with its code,
// many requests at once: exactly one answers 201, every other as an
// unknown serial.
func TestAPIRacingClaimsOneWins(t *testing.T) {
	w := newClaimWorld(t, 1000)
	g := provision(t, w.api, 1).Gateways[0]
	const each = 6
	var wg sync.WaitGroup
	res := make([]tu.Response, 2*each)
	tenants := make([]string, 2*each)
	for i := range res {
		tenants[i] = []string{"acme", "beta"}[i%2]
		wg.Go(func() { res[i] = claimReq(w.api, tenants[i], w.keys[tenants[i]], g.Serial, g.ClaimCode) })
	}
	wg.Wait()
	var winner string
	for i, r := range res {
		code, _ := r.Problem()
		switch {
		case r.Status == 201 && winner == "":
			winner = tenants[i]
		case r.Status == 404 && code == "registry.claim_invalid":
		default:
			t.Errorf("claim %d by %s: %d %s", i, tenants[i], r.Status, r.Body)
		}
	}
	if winner == "" {
		t.Fatal("no claim won")
	}
	for _, tenant := range []string{"acme", "beta"} {
		if _, ok := w.n.Registry().Gateway(tenant, g.Serial); ok != (tenant == winner) {
			t.Errorf("%s holds the gateway: %v (winner %s)", tenant, ok, winner)
		}
	}
}

// TestAPIClaimFailuresAreRateLimited: a tenant that spent its failed
// claims is refused with 429 and Retry-After on every claim, the right
// code too (else a guess would still be told right from wrong); a
// success costs nothing; another tenant is not affected.
func TestAPIClaimFailuresAreRateLimited(t *testing.T) {
	w := newClaimWorld(t, 3)
	b := provision(t, w.api, 4)
	wrong := func(tenant string) tu.Response {
		return claimReq(w.api, tenant, w.keys[tenant], b.Gateways[0].Serial, "AAAAA-AAAAA-AAAAA-AAAAA")
	}
	for i := range 2 {
		if r := wrong("acme"); r.Status != 404 {
			t.Fatalf("failure %d: %d %s", i+1, r.Status, r.Body)
		}
	}
	if r := claimReq(w.api, "acme", w.keys["acme"], b.Gateways[1].Serial, b.Gateways[1].ClaimCode); r.Status != 201 {
		t.Fatalf("a claim with the code: %d %s", r.Status, r.Body)
	}
	if r := wrong("acme"); r.Status != 404 {
		t.Fatalf("failure 3 (the success cost nothing): %d %s", r.Status, r.Body)
	}
	for _, r := range []tu.Response{wrong("acme"), claimReq(w.api, "acme", w.keys["acme"], b.Gateways[2].Serial, b.Gateways[2].ClaimCode)} {
		if code, _ := r.Problem(); r.Status != 429 || code != "api.claim_throttled" || r.Header.Get("Retry-After") == "" {
			t.Errorf("after the budget: %d %v %s", r.Status, r.Header, r.Body)
		}
	}
	if _, ok := w.n.Registry().Gateway("acme", b.Gateways[2].Serial); ok {
		t.Error("a throttled claim bound the gateway")
	}
	if r := claimReq(w.api, "beta", w.keys["beta"], b.Gateways[2].Serial, b.Gateways[2].ClaimCode); r.Status != 201 {
		t.Errorf("another tenant's claim: %d %s", r.Status, r.Body)
	}
}

// TestAPIClaimCodesStayOutOfLogsAndAudit: after provisioning and claims
// (right, wrong, spent), no claim code, with or without its dashes, is in
// the node's log or in any audit log.
func TestAPIClaimCodesStayOutOfLogsAndAudit(t *testing.T) {
	w := newClaimWorld(t, 1000)
	b := provision(t, w.api, 3)
	g := b.Gateways
	claimReq(w.api, "acme", w.keys["acme"], g[0].Serial, g[0].ClaimCode)
	claimReq(w.api, "acme", w.keys["acme"], g[0].Serial, g[0].ClaimCode)
	claimReq(w.api, "beta", w.keys["beta"], g[1].Serial, g[2].ClaimCode)
	claimReq(w.api, "beta", w.keys["beta"], "TSGW06ZZZ99999999", g[1].ClaimCode)
	if !auditHas(t, w.n, "beta", `"registry.gateway.claim"`, `"registry.claim_invalid"`) {
		t.Error("failed claims are not audited in the tenant's log")
	}
	var stored [][]byte
	for _, tenant := range []string{"_system", "acme", "beta"} {
		stored = append(stored, rawAudit(t, w.n, tenant)...)
	}
	stored = append(stored, []byte(w.logs.String()))
	for _, p := range g {
		for _, form := range []string{p.ClaimCode, strings.ReplaceAll(p.ClaimCode, "-", "")} {
			for _, s := range stored {
				if bytes.Contains(s, []byte(form)) {
					t.Errorf("claim code %s is stored: %.200s", form, s)
				}
			}
		}
	}
}

// TestAPIDirectRegistrationIsTheOperators: a tenant credential holding
// gateways:write is refused direct registration the same way whatever the
// serial: free, held by another tenant, provisioned and unclaimed, or
// malformed. It learns nothing of other tenants' serials and reserves none
// (the free serial can still be registered elsewhere, the provisioned one
// still claimed). The operator registers directly as before, and learns
// of a conflict.
func TestAPIDirectRegistrationIsTheOperators(t *testing.T) {
	w := newClaimWorld(t, 1000)
	g := provision(t, w.api, 1).Gateways[0]
	if r := w.api.Do("POST", "/v1/tenants/beta/gateways", w.api.Key(), map[string]string{"serial": "TSGW06BET00000001"}); r.Status != 201 {
		t.Fatalf("operator registration: %d %s", r.Status, r.Body)
	}
	register := func(serial string) tu.Response {
		return w.api.Do("POST", "/v1/tenants/acme/gateways", w.keys["acme"], map[string]string{"serial": serial})
	}
	baseline := withoutRequestID(t, register("TSGW06FRE00000001"))
	if !strings.HasPrefix(baseline, "403 ") || !strings.Contains(baseline, `"api.operator_only"`) {
		t.Fatalf("a free serial: %s", baseline)
	}
	for _, tc := range []struct{ name, serial string }{
		{name: "held by another tenant", serial: "TSGW06BET00000001"},
		{name: "provisioned, unclaimed", serial: g.Serial},
		{name: "malformed", serial: "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := withoutRequestID(t, register(tc.serial)); got != baseline {
				t.Errorf("answer\n%s\nwant (as a free serial)\n%s", got, baseline)
			}
		})
	}
	if gws, _ := w.n.Registry().Gateways("acme"); len(gws) != 0 {
		t.Errorf("acme registered %d gateways", len(gws))
	}
	if r := w.api.Do("POST", "/v1/tenants/beta/gateways", w.api.Key(), map[string]string{"serial": "TSGW06FRE00000001"}); r.Status != 201 {
		t.Errorf("the free serial was reserved by the refused registration: %d %s", r.Status, r.Body)
	}
	if r := w.api.Do("POST", "/v1/tenants/acme/gateways", w.api.Key(), map[string]string{"serial": "TSGW06BET00000001"}); r.Status != 409 {
		t.Errorf("operator registering a held serial: %d %s", r.Status, r.Body)
	}
	if r := claimReq(w.api, "beta", w.keys["beta"], g.Serial, g.ClaimCode); r.Status != 201 {
		t.Errorf("claim after the refused registration: %d %s", r.Status, r.Body)
	}
}

// TestAPIProvisionRefusals: provisioning is the operator's, and its input
// is checked.
func TestAPIProvisionRefusals(t *testing.T) {
	w := newClaimWorld(t, 10)
	for _, tc := range []struct {
		name   string
		key    string
		body   any
		status int
		code   string
	}{
		{name: "tenant key", key: w.keys["acme"], body: map[string]any{"count": 1, "model": "TSGW06"}, status: 403, code: "api.operator_only"},
		{name: "bad model", key: w.api.Key(), body: map[string]any{"count": 1, "model": "tsgw6"}, status: 400, code: "registry.model_invalid"},
		{name: "no count", key: w.api.Key(), body: map[string]any{"model": "TSGW06"}, status: 400, code: "registry.provision_count_invalid"},
		{name: "too many", key: w.api.Key(), body: map[string]any{"count": 1001, "model": "TSGW06"}, status: 400, code: "registry.provision_count_invalid"},
		{name: "unknown field", key: w.api.Key(), body: map[string]any{"count": 1, "model": "TSGW06", "tenant": "acme"}, status: 400, code: "api.json_invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.api.Do("POST", "/v1/factory/gateways", tc.key, tc.body)
			if code, _ := r.Problem(); r.Status != tc.status || code != tc.code {
				t.Errorf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
}
