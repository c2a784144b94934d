package api

import (
	"testing"
	"time"
)

func TestAuditRefusalBudget(t *testing.T) {
	l := newLimiter(Limits{AuditRefusals: 6, AuditBurst: 2}) // one token every 10 s
	now := time.Unix(1_700_000_000, 0)
	var written, leftOut int
	for range 7 {
		if w, n := l.auditRefusal("acme", now); w {
			written++
			leftOut += n
		}
	}
	if written != 2 || leftOut != 0 {
		t.Fatalf("burst: %d written, %d left out reported", written, leftOut)
	}
	// Another tenant has its own budget.
	if w, _ := l.auditRefusal("beta", now); !w {
		t.Error("beta refused by acme's budget")
	}
	// Ten seconds later one more is written, saying 5 were left out.
	w, n := l.auditRefusal("acme", now.Add(10*time.Second))
	if !w || n != 5 {
		t.Errorf("after refill: write %v, left out %d, want true and 5", w, n)
	}
	if w, n := l.auditRefusal("acme", now.Add(20*time.Second)); !w || n != 0 {
		t.Errorf("count not reset: write %v, left out %d", w, n)
	}
}
