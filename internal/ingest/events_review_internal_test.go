package ingest

import (
	"fmt"
	"testing"
	"time"
)

// Findings of the security review of issue 8 (review3) on the recorder.

// TestIngestRecorderOneGatewayCannotHideAnother: one gateway of a tenant
// (a stolen key is enough) connects from many source networks (IPv6 /64s
// are cheap) and fills its tenant's summaries (MaxGroups); while they are
// due, another gateway's genuine event (here the disconnect of a
// revocation) is gathered too, and lands in the catch-all summary whose
// gateway is "*": the tenant's log no longer says which gateway was cut
// off. Every event of a gateway that is not over its own budget must still
// name it.
func TestIngestRecorderOneGatewayCannotHideAnother(t *testing.T) {
	r, out, _ := testRecorder(t, EventBudget{})
	noisy := "TSGW06ACM00000001"
	for i := range 100 { // past its burst of 20: a summary per source network
		r.recordAt(Event{Kind: EventConnect, Tenant: "acme", Serial: noisy, Remote: fmt.Sprintf("[2001:db8:%x::1]:1000", i)}, t0.Add(time.Duration(i)*time.Millisecond))
	}
	// A minute later the summaries are due; before the next flush tick
	// (every Window/6), the other gateway is revoked and disconnected.
	victim := Event{Kind: EventDisconnect, Tenant: "acme", Serial: "TSGW06ACM00000002", Remote: "192.0.2.9:1000", Reason: "not authorized"}
	r.recordAt(victim, t0.Add(61*time.Second))
	r.close()
	named := 0
	for _, e := range out.events {
		if e.Kind == EventDisconnect {
			if e.Serial != victim.Serial {
				t.Errorf("the victim's disconnect is recorded as gateway %q: %+v", e.Serial, e)
			} else {
				named++
			}
		}
	}
	if named != 1 {
		t.Errorf("%d records name the victim's disconnect, want 1", named)
	}
}

// TestIngestRecorderGatewayBudgetBoundsItsSummaries: the documented
// budget of one gateway (burst 20, then 10 a minute, "summaries included",
// EventBudget) does not hold when the gateway varies its source network:
// each /64 gets a summary of its own, and summaries take only the
// tenant's token.
func TestIngestRecorderGatewayBudgetBoundsItsSummaries(t *testing.T) {
	r, out, _ := testRecorder(t, EventBudget{})
	noisy := "TSGW06ACM00000001"
	const minutes = 10
	for i := range minutes * 600 { // ten connects a second, each from another /64
		now := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		r.recordAt(Event{Kind: EventConnect, Tenant: "acme", Serial: noisy, Remote: fmt.Sprintf("[2001:db8:%x::1]:1000", i)}, now)
		if i%100 == 0 { // the flush tick (Window/6)
			r.flush(now, false)
		}
	}
	b := r.cfg.Gateway
	if written, max := len(out.events), b.Burst+int(b.PerMinute*minutes)+1; written > max {
		t.Errorf("%d entries for one gateway in %d minutes, its budget %d", written, minutes, max)
	}
}
