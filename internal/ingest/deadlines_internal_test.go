package ingest

import (
	"context"
	"testing"
	"time"
)

// TestIngestDeadlinesShared: the uploads' shared persist deadlines
// (Core.deadlines). Under a steady stream of uploads, each gets a context
// that ends no earlier than Config.PersistTimeout after it began and at
// most a step (a twentieth of it) later; one context is made per step, not
// per upload; and none ends before its deadline, since nothing but its
// deadline ends it (an upload never cancels a shared context: Pending's
// release cancels only a context of its own).
func TestIngestDeadlinesShared(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
	}{
		{name: "default persist timeout", timeout: 10 * time.Second},
		{name: "short persist timeout", timeout: 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDeadlines(tc.timeout)
			start := time.Now()
			const uploads = 5000
			span := 3 * tc.timeout
			made := map[context.Context]bool{}
			for i := range uploads {
				now := start.Add(span * time.Duration(i) / uploads)
				c := d.context(now)
				made[c] = true
				at, ok := c.Deadline()
				switch {
				case !ok:
					t.Fatalf("upload %d: a context without a deadline", i)
				case at.Before(now.Add(tc.timeout)):
					t.Fatalf("upload %d: deadline %v after it began, before the persist timeout %v", i, at.Sub(now), tc.timeout)
				case at.After(now.Add(tc.timeout + d.step)):
					t.Fatalf("upload %d: deadline %v after it began, more than a step (%v) past the persist timeout %v", i, at.Sub(now), d.step, tc.timeout)
				}
				if err := c.Err(); err != nil && time.Now().Before(at) {
					t.Fatalf("upload %d: its context ended (%v) before its deadline", i, err)
				}
			}
			if most := int(span/d.step) + 2; len(made) > most {
				t.Errorf("%d contexts for %d uploads over %v, at most %d (one per step of %v)", len(made), uploads, span, most, d.step)
			}
			t.Logf("%d contexts for %d uploads over %v", len(made), uploads, span)
		})
	}
}
