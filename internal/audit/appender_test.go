package audit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/audit"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestAuditAppenderDropsWhenFullAndDrainsOnClose: Enqueue does not wait for
// a busy log; beyond the queue an event is dropped and counted; Close
// appends every queued event; after Close nothing more is appended.
func TestAuditAppenderDropsWhenFullAndDrainsOnClose(t *testing.T) {
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
	start := time.Now()
	for i := 2; i <= 5; i++ { // 2 and 3 are queued, 4 and 5 dropped
		a.Enqueue("acme", event(i))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Enqueue waited %s for a busy log", d)
	}
	if a.Dropped() != 2 {
		t.Fatalf("dropped %d, want 2", a.Dropped())
	}
	release()
	a.Close()
	a.Enqueue("acme", event(6))
	if a.DroppedClosed() != 1 {
		t.Errorf("an event after Close: counted %d, want 1", a.DroppedClosed())
	}
	a.Close() // a second Close is harmless
	entries, _, err := l.List(context.Background(), "acme", audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Detail["n"])
	}
	if fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("appended events %v, want 1, 2 and 3", got)
	}
}
