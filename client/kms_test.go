package client_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	tu "github.com/iotransit/iotransit/internal/testutil"
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
	job := must[*client.KMSReencryption](t)(e.op.ReencryptKMS(ctx(t), tenant))
	e.sameAsSent(t, job)
	if job.State != client.ReencryptRunning && job.State != client.ReencryptDone {
		t.Errorf("reencrypt %+v", job)
	}
	var done *client.KMSStatus
	tu.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := e.op.KMSStatus(ctx(t), tenant)
		if err != nil {
			return err
		}
		if st.Reencryption == nil || st.Reencryption.State != client.ReencryptDone {
			return fmt.Errorf("re-encryption %+v", st.Reencryption)
		}
		done = st
		return nil
	})
	e.sameAsSent(t, done)
	if j := done.Reencryption; j.TargetVersion != 2 || len(j.Records) == 0 || len(j.Streams) == 0 || j.FinishedAt == nil {
		t.Errorf("re-encryption %+v", j)
	}
	_, err := e.op.KMSStatus(ctx(t), "nobody")
	wantProblem(t, err, 404, "registry.tenant_not_found")
}
