package client_test

import (
	"slices"
	"testing"

	"github.com/iotransit/iotransit/client"
)

// whoami asks GET /v1/whoami with the operator key and with an API key,
// and with a revoked key (401).
func (e *env) whoami(t *testing.T) {
	op := must[*client.WhoAmI](t)(e.op.WhoAmI(ctx(t)))
	e.sameAsSent(t, op)
	if op.Kind != client.KindOperator || op.Tenant != "" || op.Scopes != nil || op.ExpiresAt != nil {
		t.Errorf("the operator is %+v", op)
	}
	k := must[*client.APIKey](t)(e.op.CreateAPIKey(ctx(t), tenant, client.CreateAPIKeyRequest{Name: "whoami", Scopes: []string{client.ScopeMeshRead}, TTL: "1h"}))
	key := e.op.WithCredential(k.Key)
	who := must[*client.WhoAmI](t)(key.WhoAmI(ctx(t)))
	e.sameAsSent(t, who)
	if who.Kind != client.KindAPIKey || who.ID != k.ID || who.Tenant != tenant || !slices.Equal(who.Scopes, k.Scopes) ||
		who.ExpiresAt == nil || !who.ExpiresAt.Equal(*k.ExpiresAt) {
		t.Errorf("the API key %+v is %+v", k, who)
	}
	must[*client.APIKey](t)(e.op.RevokeAPIKey(ctx(t), tenant, k.ID))
	_, err := key.WhoAmI(ctx(t))
	wantProblem(t, err, 401, "api.unauthenticated")
}
