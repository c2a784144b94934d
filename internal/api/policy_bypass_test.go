package api_test

import (
	"testing"

	tu "github.com/iotransit/iotransit/internal/testutil"
)

// requireAuth holds at update whatever the body says of the type: an
// empty "type" (the type cannot change; the registry keeps the stored
// one) must not make the integration look like one that needs no
// authentication.
func TestAPIPolicyUpdateEmptyTypeKeepsRequireAuth(t *testing.T) {
	w := newWorld(t)
	rcv := tu.NewReceiver(t)
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"requireAuth": true}})
	r := w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), map[string]any{"name": "wh", "type": "webhook",
		"webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM, "auth": map[string]any{"kind": "apikey", "headerName": "X-Key", "headerValue": "s3cret-value"}}})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var in struct{ ID string }
	r.Decode(t, &in)
	r = w.api.Do("PATCH", "/v1/tenants/acme/integrations/"+in.ID, w.api.Key(), map[string]any{"type": "",
		"webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM, "auth": map[string]any{"kind": "none"}}})
	wantProblem(t, "update dropping auth with an empty type", r, 403, "policy.violation", "integrations.requireAuth")
}
