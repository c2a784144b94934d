package client_test

import (
	"testing"

	"github.com/iotransit/iotransit/client"
)

// erase erases the sensor the messages test sent (its messages are gone), a second time (zeros), and refuses a bad
// TUID and a bad continuation with their problems.
func (e *env) erase(t *testing.T) {
	const tuid = "TSEN01ACM00000001"
	step := must[*client.DeviceErasure](t)(e.op.EraseDeviceStep(ctx(t), tenant, tuid, ""))
	e.sameAsSent(t, step)
	if !step.Complete || step.Tuid != tuid || step.Next != "" || step.Messages < 3 {
		t.Fatalf("erasure %+v", step)
	}
	if page := must[*client.Page[client.Message]](t)(e.op.ListMessages(ctx(t), tenant, client.MessageQuery{TsmTuid: tuid})); len(page.Items) != 0 {
		t.Errorf("the sensor's messages stayed: %+v", page.Items)
	}
	again := must[*client.DeviceErasure](t)(e.op.EraseDevice(ctx(t), tenant, tuid))
	if *again != (client.DeviceErasure{Tuid: tuid, Complete: true}) {
		t.Errorf("second erasure %+v, want zeros", again)
	}
	_, err := e.op.EraseDeviceStep(ctx(t), tenant, "bad", "")
	wantProblem(t, err, 400, "api.tsm_tuid_invalid")
	_, err = e.op.EraseDeviceStep(ctx(t), tenant, tuid, "not-a-continuation")
	wantProblem(t, err, 400, "store.erase_cursor_invalid")
}
