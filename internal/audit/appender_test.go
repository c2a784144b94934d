package audit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone/names"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// entriesOf lists the tenant's whole log, oldest first.
func entriesOf(t *testing.T, l *audit.Log, tenant string) []audit.Entry {
	t.Helper()
	entries, _, err := l.List(context.Background(), tenant, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// TestAuditAppenderSummarisesWhatAFullQueueLeavesOut: with the log stalled,
// Enqueue waits at most AppenderWait for room; what still does not fit is
// counted, and once the log moves again one audit.events_dropped entry
// says how many, when and which; the log verifies. Close appends every
// queued event; after Close events are only counted.
func TestAuditAppenderSummarisesWhatAFullQueueLeavesOut(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{}, newKey(t))
	ensure(t, l, "acme")
	a := audit.NewAppenderOf(l, 2, tu.Logger(t))
	release := audit.HoldTenant(l, "acme")
	a.Enqueue("acme", event(1)) // taken, then waits for the tenant
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		if a.Queued() != 0 {
			return errors.New("the first event is not taken yet")
		}
		return nil
	})
	a.Enqueue("acme", event(2)) // 2 and 3 are queued
	a.Enqueue("acme", event(3))
	before := time.Now()
	for i := 4; i <= 6; i++ { // 4, 5 and 6 wait, then are left out
		start := time.Now()
		a.Enqueue("acme", event(i))
		if d := time.Since(start); d < audit.AppenderWait || d > time.Second {
			t.Errorf("Enqueue into a full queue took %s, want %s (and not much more)", d, audit.AppenderWait)
		}
	}
	after := time.Now()
	if a.Dropped() != 3 {
		t.Fatalf("left out %d, want 3", a.Dropped())
	}
	release()
	var summary *audit.Entry
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, e := range entriesOf(t, l, "acme") {
			if e.Action == audit.ActionEventsDropped {
				summary = &e
				return nil
			}
		}
		return errors.New("no audit.events_dropped entry yet")
	})
	d := summary.Detail
	if d["count"] != "3" || d["queueFull"] != "3" || d["actions"] != "registry.gateway.register=3" {
		t.Errorf("summary detail %v: want count 3, queueFull 3, actions registry.gateway.register=3", d)
	}
	first, err1 := time.Parse(time.RFC3339Nano, d["first"])
	last, err2 := time.Parse(time.RFC3339Nano, d["last"])
	if err1 != nil || err2 != nil || first.Before(before) || last.After(after) || last.Before(first) {
		t.Errorf("summary between %q and %q, want within [%s, %s]", d["first"], d["last"], before.UTC(), after.UTC())
	}
	if want := "3 events dropped between " + d["first"] + " and " + d["last"]; d["summary"] != want {
		t.Errorf("summary %q, want %q", d["summary"], want)
	}
	a.Close()
	a.Enqueue("acme", event(7))
	if a.DroppedClosed() != 1 {
		t.Errorf("an event after Close: counted %d, want 1", a.DroppedClosed())
	}
	a.Close() // a second Close is harmless
	var got []string
	for _, e := range entriesOf(t, l, "acme") {
		if e.Action != audit.ActionEventsDropped {
			got = append(got, e.Detail["n"])
		}
	}
	if fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("appended events %v, want 1, 2 and 3", got)
	}
	if rep := verify(t, l, "acme"); !rep.OK {
		t.Fatalf("verify after the summary: %+v", rep)
	}
}

// TestAuditAppenderSummarisesFailedAppends: events whose append fails (the
// tenant's audit stream refuses writes) are counted, and the summary is
// written once the stream takes writes again; the log verifies.
func TestAuditAppenderSummarisesFailedAppends(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{}, newKey(t))
	ensure(t, l, "acme")
	appendN(t, l, "acme", 2)
	a := audit.NewAppenderOf(l, 16, tu.Logger(t))
	defer a.Close()
	restore := tu.RefuseWrites(t, bb.JS, names.AuditStream("acme"))
	for i := 3; i <= 6; i++ {
		a.Enqueue("acme", event(i))
	}
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if a.Failed() != 4 {
			return fmt.Errorf("failed appends %d, want 4", a.Failed())
		}
		return nil
	})
	restore()
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, e := range entriesOf(t, l, "acme") {
			if e.Action == audit.ActionEventsDropped {
				if e.Detail["count"] != "4" || e.Detail["appendFailed"] != "4" {
					return fmt.Errorf("summary detail %v: want count 4, appendFailed 4", e.Detail)
				}
				return nil
			}
		}
		return errors.New("no audit.events_dropped entry yet")
	})
	if rep := verify(t, l, "acme"); !rep.OK {
		t.Fatalf("verify after the summary: %+v", rep)
	}
}
