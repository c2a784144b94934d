package ingest

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	tu "github.com/iotransit/iotransit/internal/testutil"
)

// recorded collects what a recorder writes.
type recorded struct{ events []Event }

func (r *recorded) add(e Event) { r.events = append(r.events, e) }

// total is how many events the records stand for.
func (r *recorded) total() int {
	n := 0
	for _, e := range r.events {
		n += max(e.Count, 1)
	}
	return n
}

func (r *recorded) summaries() []Event {
	var out []Event
	for _, e := range r.events {
		if e.Count > 0 {
			out = append(out, e)
		}
	}
	return out
}

func testRecorder(t *testing.T, cfg EventBudget) (*recorder, *recorded, *int) {
	cfg.defaults()
	out := &recorded{}
	summarised := 0
	return newRecorder(cfg, out.add, slog.New(tu.Logger(t).Handler()), func(string) { summarised++ }), out, &summarised
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func refusedFrom(remote string) Event {
	return Event{Kind: EventRefused, Remote: remote, Reason: "handshake_failed"}
}

// TestIngestRecorderUnauthenticatedBudget: past the burst, unauthenticated
// refusals are gathered per source network and reason; a summary is
// written once its window passed and a token is there; every refusal is
// accounted for, and no more entries are written than the budget allows.
func TestIngestRecorderUnauthenticatedBudget(t *testing.T) {
	r, out, summarised := testRecorder(t, EventBudget{Unauthenticated: Budget{PerMinute: 10, Burst: 5}, Window: time.Minute})
	for i := range 100 {
		r.recordAt(refusedFrom(fmt.Sprintf("198.51.100.%d:4000", i%200)), t0.Add(time.Duration(i)*10*time.Millisecond))
	}
	if len(out.events) != 5 || *summarised != 95 {
		t.Fatalf("%d recorded one by one, %d gathered; want 5 and 95", len(out.events), *summarised)
	}
	r.flush(t0.Add(30*time.Second), false) // not due yet
	if len(out.events) != 5 {
		t.Fatalf("a summary was written before its window ended: %+v", out.events[5:])
	}
	r.flush(t0.Add(61*time.Second), false)
	s := out.summaries()
	if len(s) != 1 || s[0].Count != 95 || s[0].Remote != "198.51.100.0/24" || s[0].Reason != "handshake_failed" ||
		s[0].Tenant != "" || s[0].Serial != "" || !s[0].First.Equal(t0.Add(50*time.Millisecond)) || !s[0].Last.Equal(t0.Add(990*time.Millisecond)) {
		t.Fatalf("summaries %+v, want one of 95 refusals from 198.51.100.0/24", s)
	}
	if out.total() != 100 {
		t.Fatalf("records account for %d of 100 refusals", out.total())
	}
	// A steady flood for ten minutes: entries stay within burst + rate.
	start := len(out.events)
	for i := range 6000 {
		now := t0.Add(2*time.Minute + time.Duration(i)*100*time.Millisecond)
		r.recordAt(refusedFrom("203.0.113.7:1"), now)
		if i%50 == 0 {
			r.flush(now, false)
		}
	}
	if written, max := len(out.events)-start, 5+100+1; written > max {
		t.Errorf("%d entries for a 10-minute flood, budget %d", written, max)
	}
	r.close()
	if out.total() != 6100 {
		t.Errorf("records account for %d of 6100 refusals after close", out.total())
	}
}

// TestIngestRecorderBoundsSummaries: sources beyond MaxGroups are counted
// in one catch-all summary per kind and reason, so an attacker with many
// addresses cannot grow the recorder.
func TestIngestRecorderBoundsSummaries(t *testing.T) {
	r, out, _ := testRecorder(t, EventBudget{Unauthenticated: Budget{PerMinute: 1, Burst: 1}, MaxGroups: 4})
	for i := range 1000 {
		r.recordAt(refusedFrom(fmt.Sprintf("[2001:db8:%x::1]:443", i)), t0)
	}
	g := r.logs[""]
	if len(g.groups) != 5 {
		t.Fatalf("%d summaries gathering, want 4 and the catch-all", len(g.groups))
	}
	r.close()
	var catchAll *Event
	for _, e := range out.summaries() {
		if e.Remote == anySource {
			catchAll = &e
		}
	}
	if catchAll == nil || catchAll.Count != 1000-1-4 {
		t.Fatalf("catch-all summary %+v, want 995 refusals", catchAll)
	}
	if out.total() != 1000 {
		t.Errorf("records account for %d of 1000", out.total())
	}
	if len(r.logs) != 0 {
		t.Errorf("%d logs still held after close", len(r.logs))
	}
}

// TestIngestRecorderGatewayBudget: a gateway in a reconnect loop is
// summarised on its own budget; another gateway of its tenant is still
// recorded one by one; summaries name the gateway.
func TestIngestRecorderGatewayBudget(t *testing.T) {
	r, out, _ := testRecorder(t, EventBudget{Gateway: Budget{PerMinute: 10, Burst: 3}, Tenant: Budget{PerMinute: 100, Burst: 100}})
	loop := Event{Kind: EventConnect, Tenant: "acme", Serial: "TSGW06ACM00000001", Remote: "192.0.2.1:1000"}
	for i := range 50 {
		r.recordAt(loop, t0.Add(time.Duration(i)*time.Millisecond))
	}
	other := Event{Kind: EventConnect, Tenant: "acme", Serial: "TSGW06ACM00000002", Remote: "192.0.2.2:1000"}
	r.recordAt(other, t0.Add(time.Second))
	if len(out.events) != 4 || out.events[3].Serial != other.Serial || out.events[3].Count != 0 {
		t.Fatalf("records %+v: want 3 of the looping gateway and the other one's", out.events)
	}
	r.flush(t0.Add(2*time.Minute), false)
	s := out.summaries()
	if len(s) != 1 || s[0].Count != 47 || s[0].Serial != loop.Serial || s[0].Tenant != "acme" || s[0].Remote != "192.0.2.0/24" {
		t.Fatalf("summaries %+v, want 47 connects of %s", s, loop.Serial)
	}
}

// TestIngestRecorderDueSummariesFirst: once a summary is due, fresh events
// of its log are gathered too, so the tokens go to the summary.
func TestIngestRecorderDueSummariesFirst(t *testing.T) {
	r, out, _ := testRecorder(t, EventBudget{Tenant: Budget{PerMinute: 1, Burst: 2}, Gateway: Budget{PerMinute: 100, Burst: 100}})
	for i := range 10 { // ten gateways: two recorded, eight gathered
		r.recordAt(Event{Kind: EventConnect, Tenant: "acme", Serial: fmt.Sprintf("TSGW06ACM0000000%d", i), Remote: "192.0.2.1:1"}, t0)
	}
	later := t0.Add(2 * time.Minute) // due, and two tokens again
	r.recordAt(Event{Kind: EventConnect, Tenant: "acme", Serial: "TSGW06ACM00000099", Remote: "192.0.2.1:1"}, later)
	if len(out.events) != 2 {
		t.Fatalf("a fresh event was recorded before the due summaries: %+v", out.events[2:])
	}
	r.flush(later, false)
	if s := out.summaries(); len(s) != 2 {
		t.Fatalf("%d summaries written with two tokens, want 2", len(s))
	}
}

// TestIngestRecorderForgetsIdleState: once its summaries are written and
// its buckets full again, nothing of a flood stays in memory.
func TestIngestRecorderForgetsIdleState(t *testing.T) {
	r, _, _ := testRecorder(t, EventBudget{})
	for i := range 100 {
		r.recordAt(Event{Kind: EventDisconnect, Tenant: "acme", Serial: fmt.Sprintf("TSGW06ACM%08d", i), Remote: "192.0.2.1:1"}, t0)
		r.recordAt(refusedFrom("192.0.2.1:1"), t0)
	}
	r.flush(t0.Add(time.Hour), false)
	r.flush(t0.Add(2*time.Hour), false)
	if len(r.logs) != 0 || len(r.buckets) != 0 {
		t.Fatalf("%d logs and %d buckets held after the flood", len(r.logs), len(r.buckets))
	}
}

func TestIngestNetwork(t *testing.T) {
	tests := []struct{ name, remote, want string }{
		{name: "IPv4", remote: "198.51.100.77:5000", want: "198.51.100.0/24"},
		{name: "IPv6", remote: "[2001:db8:1:2:3:4:5:6]:5000", want: "2001:db8:1:2::/64"},
		{name: "IPv4 in IPv6", remote: "[::ffff:198.51.100.77]:5000", want: "198.51.100.0/24"},
		{name: "IPv6 with a zone", remote: "[fe80::1%eth0]:5000", want: "fe80::/64"},
		{name: "no port", remote: "198.51.100.77", want: "198.51.100.0/24"},
		{name: "not an address", remote: "pipe", want: "*"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := network(tc.remote); got != tc.want {
				t.Errorf("network(%q) = %q, want %q", tc.remote, got, tc.want)
			}
		})
	}
}

func TestIngestEventBudgetValidate(t *testing.T) {
	tests := []struct {
		name string
		b    EventBudget
		want string
	}{
		{name: "defaults", b: EventBudget{}},
		{name: "negative tenant burst", b: EventBudget{Tenant: Budget{Burst: -1}}, want: "tenant event budget"},
		{name: "negative window", b: EventBudget{Window: -time.Second}, want: "window"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Events: tc.b}
			err := cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
