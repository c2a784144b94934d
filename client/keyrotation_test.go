package client_test

import (
	"testing"

	"github.com/iotransit/iotransit/client"
)

// keyRotation rotates, retires and reads the tenant's CA versions and
// rotates and lists the platform keys: each answer decodes to exactly what
// the server sent, and holds no private key.
func (e *env) keyRotation(t *testing.T) {
	st := must[*client.TenantCA](t)(e.op.TenantCA(ctx(t), tenant))
	e.sameAsSent(t, st)
	if st.CurrentVersion != 1 || len(st.Versions) != 1 || st.Versions[0].State != client.KeyCurrent || st.Versions[0].Fingerprint == "" {
		t.Errorf("status %+v", st)
	}
	rotated := must[*client.TenantCA](t)(e.op.RotateCA(ctx(t), tenant, client.RotateCARequest{Overlap: "24h"}))
	e.sameAsSent(t, rotated)
	if rotated.CurrentVersion != 2 || !rotated.Rotated || rotated.Versions[1].State != client.KeyOverlap || rotated.Versions[1].TrustedUntil == nil {
		t.Errorf("rotated %+v", rotated)
	}
	retired := must[*client.TenantCA](t)(e.op.RetireCA(ctx(t), tenant, client.RetireCARequest{Version: 1}))
	e.sameAsSent(t, retired)
	if !retired.Retired || retired.Versions[1].State != client.KeyRetired {
		t.Errorf("retired %+v", retired)
	}
	_, err := e.op.RotateCA(ctx(t), tenant, client.RotateCARequest{Overlap: "forever"})
	wantProblem(t, err, 400, "api.ca_overlap_invalid")

	keys := must[*client.PlatformKeys](t)(e.op.PlatformKeys(ctx(t)))
	e.sameAsSent(t, keys)
	if len(keys.JWT) != 1 || len(keys.Audit) != 1 || len(keys.JWT[0].PublicKey) != 32 {
		t.Errorf("keys %+v", keys)
	}
	for name, rotate := range map[string]func() (*client.PlatformKeys, error){
		"jwt":   func() (*client.PlatformKeys, error) { return e.op.RotateJWTKey(ctx(t)) },
		"audit": func() (*client.PlatformKeys, error) { return e.op.RotateAuditKey(ctx(t)) },
	} {
		ks := must[*client.PlatformKeys](t)(rotate())
		e.sameAsSent(t, ks)
		list := ks.JWT
		if name == "audit" {
			list = ks.Audit
		}
		if len(list) != 2 || list[1].State != client.KeyCurrent || list[0].RetiredAt == nil {
			t.Errorf("%s keys after rotation: %+v", name, list)
		}
	}
}
