package ingest

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	tu "github.com/iotransit/iotransit/internal/testutil"
)

// Summaries name their gateway, and a gateway's budget bounds them.

// TestIngestRecorderOneGatewayCannotHideAnother: one gateway of a tenant
// (a stolen key is enough) connects from many source networks (IPv6 /64s
// are cheap) and fills its tenant's summaries (MaxGroups); while they are
// due, another gateway's genuine event (here the disconnect of a
// revocation) is gathered too, and used to land in the catch-all summary
// whose gateway was "*": the tenant's log no longer said which gateway was
// cut off. Every event of a gateway must still name it.
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
// budget of one gateway (burst 20, then 10 a minute, summaries included,
// EventBudget) must hold when the gateway varies its source network: each
// /64 used to get a summary of its own, and summaries took only the
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

// TestIngestRecorderSpentGatewayHoldsBackNoOther: a due summary whose
// gateway's budget is spent waits for it, without holding back the other
// summaries of its log, or fresh events of other gateways.
func TestIngestRecorderSpentGatewayHoldsBackNoOther(t *testing.T) {
	r, out, _ := testRecorder(t, EventBudget{Gateway: Budget{PerMinute: 1, Burst: 1}, Tenant: Budget{PerMinute: 100, Burst: 100}})
	noisy, other := "TSGW06ACM00000001", "TSGW06ACM00000002"
	for i := range 4 { // one recorded, then a summary per network
		r.recordAt(Event{Kind: EventConnect, Tenant: "acme", Serial: noisy, Remote: fmt.Sprintf("192.0.%d.1:1000", i)}, t0.Add(time.Duration(i)*time.Millisecond))
	}
	for i := range 2 { // one recorded, one gathered
		r.recordAt(Event{Kind: EventConnect, Tenant: "acme", Serial: other, Remote: "198.51.100.1:1000"}, t0.Add(time.Duration(4+i)*time.Millisecond))
	}
	later := t0.Add(61 * time.Second) // every summary due; one token for each gateway
	r.flush(later, false)
	written := map[string]int{}
	for _, e := range out.summaries() {
		written[e.Serial]++
	}
	if written[noisy] != 1 || written[other] != 1 {
		t.Fatalf("summaries written per gateway %v, want one each (the noisy gateway's others wait for its budget)", written)
	}
	if n := r.logs["acme"].byKey[noisy]; n != 2 {
		t.Fatalf("%d summaries of the noisy gateway still gathering, want 2", n)
	}
	fresh := Event{Kind: EventConnect, Tenant: "acme", Serial: "TSGW06ACM00000003", Remote: "203.0.113.1:1000"}
	r.recordAt(fresh, later)
	if last := out.events[len(out.events)-1]; last != fresh {
		t.Fatalf("a fresh event of another gateway was held back by summaries waiting for their own gateway's budget: last record %+v", last)
	}
}

// TestIngestRecorderGatewayTakesAQuarterOfTheSources: a gateway gathering
// from many networks holds at most a quarter of its tenant's summaries by
// source; another gateway's summary still says where it came from.
func TestIngestRecorderGatewayTakesAQuarterOfTheSources(t *testing.T) {
	r, out, _ := testRecorder(t, EventBudget{Gateway: Budget{PerMinute: 1, Burst: 1}, MaxGroups: 8})
	noisy, other := "TSGW06ACM00000001", "TSGW06ACM00000002"
	for i := range 100 {
		r.recordAt(Event{Kind: EventConnect, Tenant: "acme", Serial: noisy, Remote: fmt.Sprintf("[2001:db8:%x::1]:1000", i)}, t0)
	}
	for range 2 {
		r.recordAt(Event{Kind: EventConnect, Tenant: "acme", Serial: other, Remote: "198.51.100.1:1000"}, t0)
	}
	r.close()
	sources := map[string][]string{}
	for _, e := range out.summaries() {
		sources[e.Serial] = append(sources[e.Serial], e.Remote)
	}
	if n := len(sources[noisy]); n != 3 || !slices.Contains(sources[noisy], anySource) {
		t.Errorf("the noisy gateway's summaries come from %v, want 2 networks and the catch-all", sources[noisy])
	}
	if !slices.Equal(sources[other], []string{"198.51.100.0/24"}) {
		t.Errorf("the other gateway's summaries come from %v, want its network", sources[other])
	}
	if out.total() != 102 {
		t.Errorf("records account for %d of 102 events", out.total())
	}
}

// TestIngestRecorderLogOnlyEvents: a refused topic or a dropped will is a
// server-log line about a gateway, never an audit event, within the
// gateway's budget and summarised past it.
func TestIngestRecorderLogOnlyEvents(t *testing.T) {
	cfg := EventBudget{}
	cfg.defaults()
	var audited []Event
	var logged tu.SyncBuffer
	r := newRecorder(cfg, func(e Event) { audited = append(audited, e) }, slog.New(slog.NewTextHandler(&logged, nil)), nil)
	const flood = 500
	for i := range flood {
		kind, reason := eventTopicRefused, "publish_denied"
		if i%2 == 1 {
			kind, reason = eventWillDropped, ""
		}
		r.recordAt(Event{Kind: kind, Tenant: "acme", Serial: "TSGW06ACM00000001", Remote: "192.0.2.1:1000", Reason: reason}, t0.Add(time.Duration(i)*time.Millisecond))
	}
	r.close()
	if len(audited) != 0 {
		t.Errorf("%d log-only events reached OnEvent: %+v", len(audited), audited[0])
	}
	lines := strings.Count(logged.String(), "\n")
	topic, will := strings.Count(logged.String(), `msg="topic refused`), strings.Count(logged.String(), `msg="will message dropped`)
	if topic == 0 || will == 0 || topic+will != lines {
		t.Errorf("%d topic and %d will lines of %d:\n%s", topic, will, lines, logged.String())
	}
	if max := cfg.Gateway.Burst + 2; lines > max { // the burst, then a summary of each kind at close
		t.Errorf("%d log lines for %d events of one gateway, budget %d", lines, flood, max)
	}
}
