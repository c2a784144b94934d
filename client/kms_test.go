package client_test

import (
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
)

// kms rotates the tenant's data key and reads its versions back: each
// answer decodes to exactly what the server sent, and holds no key.
func (e *env) kms(t *testing.T) {
	st := must[*client.KMSStatus](t)(e.op.KMSStatus(ctx(t), tenant))
	e.sameAsSent(t, st)
	if st.CurrentVersion != 1 || len(st.Versions) != 1 || !strings.HasPrefix(st.RootKeyID, "file:") || st.Rotated {
		t.Errorf("status %+v", st)
	}
	rotated := must[*client.KMSStatus](t)(e.op.RotateKMSKey(ctx(t), tenant))
	e.sameAsSent(t, rotated)
	if rotated.CurrentVersion != 2 || len(rotated.Versions) != 2 || !rotated.Rotated || rotated.Versions[1].CreatedAt.IsZero() {
		t.Errorf("rotated %+v", rotated)
	}
	_, err := e.op.KMSStatus(ctx(t), "nobody")
	wantProblem(t, err, 404, "registry.tenant_not_found")
}
