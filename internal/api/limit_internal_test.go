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

// TestReadBudgetWholeReads: a read that cannot stop part way (an audit
// verification) starts only when the credential and the tenant have all
// it reads left, or their whole burst for a read larger than that; it
// takes all of it, and the debt it leaves is waited out by the next reads.
func TestReadBudgetWholeReads(t *testing.T) {
	l := newLimiter(Limits{ReadsPerCredential: 10, ReadBurst: 100, ReadsPerTenant: 20, TenantReadBurst: 150, MaxReadsPerRequest: 60})
	now := time.Unix(1_700_000_000, 0)
	steps := []struct {
		name         string
		at           time.Duration
		cred, tenant string
		need         int
		ok           bool
		wait         time.Duration
	}{
		{"above the per-request bound, within the burst", 0, "k1", "acme", 80, true, 0},
		{"more than the credential has left", 0, "k1", "acme", 80, false, 6 * time.Second},
		{"larger than the tenant's burst: it must be whole", 0, "k2", "acme", 300, false, 4 * time.Second},
		{"once the tenant's burst is whole again", 4 * time.Second, "k2", "acme", 300, true, 0},
		{"an empty log costs nothing", 4 * time.Second, "k3", "beta", 0, true, 0},
	}
	for _, st := range steps {
		ok, wait := l.lendWhole(st.cred, st.tenant, st.need, now.Add(st.at))
		if ok != st.ok || wait != st.wait {
			t.Fatalf("%s: ok %v, wait %v; want %v, %v", st.name, ok, wait, st.ok, st.wait)
		}
	}
	// k2 took 300 of a burst of 100: 200 in debt, 20 s at 10/s.
	if n, wait := l.lendReads("k2", "acme", now.Add(4*time.Second)); n != 0 || wait != 20100*time.Millisecond {
		t.Fatalf("after a read larger than the burst: lent %d, wait %v", n, wait)
	}
}

// TestReadBudgetPacedReader: a paced reader (a stream) reads what the
// budget holds, pays for it, then waits for a step of the rate (a quarter
// second of it, at most a batch) instead of reading one item at a time.
func TestReadBudgetPacedReader(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newLimiter(Limits{ReadsPerCredential: 10, ReadBurst: 250, ReadsPerTenant: 1e6, TenantReadBurst: 1e6})
	got := 0
	for {
		n, wait := l.readsFor("k", "acme", 100, now)
		if n == 0 {
			if wait != 200*time.Millisecond {
				t.Fatalf("a spent budget of 10 a second: wait %v, want 200ms (2 reads)", wait)
			}
			break
		}
		l.spendReads("k", "acme", n, now)
		got += n
	}
	if got != 250 {
		t.Fatalf("read %d at once on a burst of 250", got)
	}
	if n, _ := l.readsFor("k", "acme", 100, now.Add(200*time.Millisecond)); n != 2 {
		t.Fatalf("after 200ms at 10/s: %d reads, want 2", n)
	}
	// Paying for more than was left leaves a debt: the reader waits it out.
	l.spendReads("k", "acme", 102, now.Add(200*time.Millisecond))
	if n, wait := l.readsFor("k", "acme", 100, now.Add(200*time.Millisecond)); n != 0 || wait != 10200*time.Millisecond {
		t.Fatalf("100 in debt: %d reads, wait %v", n, wait)
	}
	// At a high rate the step is a whole batch.
	fast := newLimiter(Limits{ReadsPerCredential: 2000, ReadBurst: 100, ReadsPerTenant: 5000, TenantReadBurst: 200})
	fast.spendReads("k", "acme", 100, now)
	if n, wait := fast.readsFor("k", "acme", 100, now); n != 0 || wait != 50*time.Millisecond {
		t.Fatalf("spent at 2000/s: %d reads, wait %v; want a batch's time, 50ms", n, wait)
	}
}
