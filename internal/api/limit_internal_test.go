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

// TestReadBudget: a request is lent what its credential and its tenant
// have left (at most the per-request bound), gives back what it did not
// read, and is refused with the time to wait once either is spent; a
// credential cannot get round its tenant's budget, and another tenant has
// its own.
func TestReadBudget(t *testing.T) {
	l := newLimiter(Limits{ReadsPerCredential: 10, ReadBurst: 100, ReadsPerTenant: 20, TenantReadBurst: 150, MaxReadsPerRequest: 60})
	now := time.Unix(1_700_000_000, 0)
	steps := []struct {
		name         string
		cred, tenant string
		used         int // what the request reads of its loan
		lent         int
		wait         time.Duration
	}{
		{"the per-request bound", "k1", "acme", 10, 60, 0},
		{"what was not read is given back", "k1", "acme", 60, 60, 0},
		{"what the credential has left", "k1", "acme", 30, 30, 0},
		{"a spent credential waits a read's time", "k1", "acme", 0, 0, 100 * time.Millisecond},
		{"another credential of the tenant: what the tenant has left", "k2", "acme", 50, 50, 0},
		{"a spent tenant: its credentials wait", "k3", "acme", 0, 0, 50 * time.Millisecond},
		{"another tenant has its own budget", "k4", "beta", 0, 60, 0},
	}
	for _, st := range steps {
		lent, wait := l.lendReads(st.cred, st.tenant, now)
		if lent != st.lent || wait != st.wait {
			t.Fatalf("%s: lent %d, wait %v; want %d, %v", st.name, lent, wait, st.lent, st.wait)
		}
		if lent > 0 {
			l.settleReads(st.cred, st.tenant, lent, st.used, now)
		}
	}
	// A request that read more than it was lent leaves a debt, paid in time.
	lent, _ := l.lendReads("k5", "gamma", now)
	l.settleReads("k5", "gamma", lent, lent+140, now)
	if n, wait := l.lendReads("k5", "gamma", now); n != 0 || wait != 10100*time.Millisecond {
		t.Fatalf("in debt of 100 reads at 10/s: lent %d, wait %v", n, wait)
	}
	if n, _ := l.lendReads("k5", "gamma", now.Add(11*time.Second)); n != 10 {
		t.Fatalf("after the debt is paid: lent %d, want 10", n)
	}
}
