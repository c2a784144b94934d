package client_test

import (
	"slices"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
)

// policy sets a tenant's policy through SetPolicy, reads it back through
// GetPolicy (answers as the client's types read them), is refused a
// member out of range, and leaves the tenant without a policy again.
func (e *env) policy(t *testing.T) {
	v := must[*client.PolicyView](t)(e.op.GetPolicy(ctx(t), tenant))
	e.sameAsSent(t, v)
	if v.Tenant != tenant || !slices.Contains(v.Defaults, "quotas.gateways") || v.Effective.CertificateValidity == nil {
		t.Errorf("the default policy %+v", v)
	}
	gateways, life := 50, client.Duration(720*time.Hour)
	set := client.Policy{Quotas: &client.Quotas{Gateways: &gateways}, APIKeyMaxLifetime: &life,
		Integrations: &client.IntegrationPolicy{AllowedHosts: []string{"*.example.com"}}}
	v = must[*client.PolicyView](t)(e.op.SetPolicy(ctx(t), tenant, set))
	e.sameAsSent(t, v)
	if v.Policy.Quotas == nil || *v.Policy.Quotas.Gateways != 50 || slices.Contains(v.Defaults, "quotas.gateways") ||
		v.Effective.APIKeyMaxLifetime == nil || *v.Effective.APIKeyMaxLifetime != life {
		t.Errorf("after SetPolicy %+v", v)
	}
	got := must[*client.PolicyView](t)(e.op.GetPolicy(ctx(t), tenant))
	if !slices.Equal(got.Policy.Integrations.AllowedHosts, []string{"*.example.com"}) {
		t.Errorf("GetPolicy after SetPolicy %+v", got.Policy)
	}
	short := client.Duration(time.Second)
	_, err := e.op.SetPolicy(ctx(t), tenant, client.Policy{APIKeyMaxLifetime: &short})
	if p := wantProblem(t, err, 400, "policy.invalid"); p.Detail == "" {
		t.Errorf("the refusal names no member: %+v", p)
	}
	must[*client.PolicyView](t)(e.op.SetPolicy(ctx(t), tenant, client.Policy{}))
}
