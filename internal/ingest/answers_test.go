package ingest

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestIngestAnswersCoverEveryStatus checks the Outcome→MQTT table: every
// status of the core has an answer, and what was not persisted is never
// acknowledged (persist-before-ack, DESIGN §3).
func TestIngestAnswersCoverEveryStatus(t *testing.T) {
	for s := AllStored; s <= QuotaExceeded; s++ {
		a, ok := answers[s]
		if !ok {
			t.Errorf("status %s has no MQTT answer", s)
			continue
		}
		refusesV5 := a.v5.ack && a.v5.code.Code >= packets.ErrUnspecifiedError.Code
		if refusesV5 && a.reason == nil {
			t.Errorf("status %s: an MQTT 5 refusal without a reason string", s)
		}
		if (!a.v5.ack || !a.v311.ack) && a.v5.code.Code == 0 && a.v311.code.Code == 0 {
			t.Errorf("status %s: a connection closed without a reason code", s)
		}
	}
	if len(answers) != int(QuotaExceeded) {
		t.Errorf("%d answers for %d statuses", len(answers), int(QuotaExceeded))
	}
	for _, s := range []Status{RateLimited, PersistFailed, QuotaExceeded} {
		a := answers[s]
		if a.v311.ack || (a.v5.ack && a.v5.code.Code < packets.ErrUnspecifiedError.Code) {
			t.Errorf("status %s is acknowledged as a success: %+v", s, a)
		}
	}
	if a := answers[PersistFailed]; a.v5.ack {
		t.Error("a publish that was not persisted gets a PUBACK under MQTT 5")
	}
}
