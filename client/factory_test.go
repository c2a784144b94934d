package client_test

import (
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
)

// factory provisions two gateways (operator), claims one into the tenant
// and refuses a second claim with the spent code as an unknown serial.
func (e *env) factory(t *testing.T) {
	b := must[*client.ProvisionedBatch](t)(e.op.ProvisionGateways(ctx(t), client.ProvisionGatewaysRequest{Count: 2, Model: "TSGW06"}))
	e.sameAsSent(t, b)
	if b.Batch == "" || b.Model != "TSGW06" || len(b.Gateways) != 2 || b.CreatedAt.IsZero() {
		t.Fatalf("batch %+v", b)
	}
	p := b.Gateways[0]
	if !strings.HasPrefix(p.Serial, "TSGW06") || len(p.ClaimCode) != 23 {
		t.Errorf("gateway %+v", p)
	}
	g := must[*client.Gateway](t)(e.op.ClaimGateway(ctx(t), tenant, client.ClaimGatewayRequest{Serial: p.Serial, ClaimCode: p.ClaimCode}))
	e.sameAsSent(t, g)
	if g.Tenant != tenant || g.Serial != p.Serial || g.State != client.GatewayActive {
		t.Errorf("claimed %+v", g)
	}
	_, err := e.op.ClaimGateway(ctx(t), tenant, client.ClaimGatewayRequest{Serial: p.Serial, ClaimCode: p.ClaimCode})
	wantProblem(t, err, 404, "registry.claim_invalid")
	_, err = e.op.ProvisionGateways(ctx(t), client.ProvisionGatewaysRequest{Count: 1, Model: "tsgw06"})
	wantProblem(t, err, 400, "registry.model_invalid")
}
