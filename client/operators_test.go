package client_test

import (
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
)

// operators creates, lists, shows, rotates and revokes a named operator,
// and finally retires the bootstrap key with a named admin (last: e.op
// holds the bootstrap key).
func (e *env) operators(t *testing.T) {
	ro := must[*client.Operator](t)(e.op.CreateOperator(ctx(t), client.CreateOperatorRequest{Name: "viewer", Role: client.RoleReadonly, TTL: "24h"}))
	e.sameAsSent(t, ro)
	if !strings.HasPrefix(ro.Key, "ito_") || ro.ExpiresAt == nil || ro.CreatedBy != "operator" {
		t.Errorf("created %+v", ro)
	}
	got := must[*client.Operator](t)(e.op.GetOperator(ctx(t), ro.ID))
	e.sameAsSent(t, got)
	if got.Key != "" || got.Name != "viewer" {
		t.Errorf("got %+v", got)
	}
	all := must[[]client.Operator](t)(e.op.ListOperators(ctx(t)))
	e.sameAsSent(t, client.List[client.Operator]{Items: all})
	if len(all) != 1 || all[0].Key != "" {
		t.Errorf("list %+v", all)
	}
	rot := must[*client.Operator](t)(e.op.RotateOperator(ctx(t), ro.ID))
	e.sameAsSent(t, rot)
	if rot.Key == "" || rot.Key == ro.Key || rot.RotatedAt == nil {
		t.Errorf("rotated %+v", rot)
	}
	viewer := e.op.WithCredential(rot.Key)
	if _, err := viewer.ListTenants(ctx(t)); err != nil {
		t.Errorf("readonly lists tenants: %v", err)
	}
	_, err := viewer.CreateTenant(ctx(t), "viewers-tenant")
	wantProblem(t, err, 403, "api.operator_role")
	rev := must[*client.Operator](t)(e.op.RevokeOperator(ctx(t), ro.ID))
	e.sameAsSent(t, rev)
	if rev.RevokedAt == nil {
		t.Errorf("revoked %+v", rev)
	}
	_, err = viewer.ListTenants(ctx(t))
	wantProblem(t, err, 401, "api.unauthenticated")
	_, err = e.op.GetOperator(ctx(t), "0000000000000000")
	wantProblem(t, err, 404, "credential.not_found")

	_, err = e.op.RetireBootstrapOperator(ctx(t))
	wantProblem(t, err, 409, "credential.operator_lockout")
	adm := must[*client.Operator](t)(e.op.CreateOperator(ctx(t), client.CreateOperatorRequest{Name: "admin", Role: client.RoleAdmin}))
	admin := e.op.WithCredential(adm.Key)
	b := must[*client.BootstrapOperator](t)(admin.RetireBootstrapOperator(ctx(t)))
	e.sameAsSent(t, b)
	if !b.Retired || b.RetiredBy != "operator:admin" || b.RetiredAt == nil {
		t.Errorf("retired %+v", b)
	}
	_, err = e.op.ListTenants(ctx(t))
	wantProblem(t, err, 401, "api.unauthenticated")
}
