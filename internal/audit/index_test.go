package audit_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone/names"
)

// mixed appends n entries by three actors, on four targets, with two
// actions, and returns them.
func mixed(t *testing.T, l *audit.Log, tenant string, from, n int) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	for i := from; i < from+n; i++ {
		ev := event(i)
		ev.Actor = fmt.Sprintf("apikey:k%d", i%3)
		ev.Target = fmt.Sprintf("gateway:TSGW06DEV%08d", i%4)
		if i%5 == 0 {
			ev.Action, ev.Outcome = "pki.cert.issue", "pki.csr_invalid"
		}
		e, err := l.Append(context.Background(), tenant, ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// expectSeqs is the brute force: the seqs of all that match f, in its order.
func expectSeqs(all []audit.Entry, f audit.Filter) []uint64 {
	var out []uint64
	for _, e := range all {
		if (f.Actor == "" || e.Actor == f.Actor) && (f.Action == "" || e.Action == f.Action) &&
			(f.Target == "" || e.Target == f.Target) && (f.Outcome == "" || e.Outcome == f.Outcome) {
			out = append(out, e.Seq)
		}
	}
	if f.Newest {
		slices.Reverse(out)
	}
	return out
}

// walk pages f to the end, checking each page's cost against its budget.
func walk(t *testing.T, l *audit.Log, tenant string, f audit.Filter) (got []uint64, pages int, partial bool) {
	t.Helper()
	for pages = 1; pages < 10000; pages++ {
		p, err := l.ListPage(context.Background(), tenant, f)
		if err != nil {
			t.Fatal(err)
		}
		// The budget, plus a step begun, plus placing the cursor.
		if f.Budget > 0 && p.Reads > f.Budget+2+3+20 {
			t.Fatalf("page %d read %d with a budget of %d", pages, p.Reads, f.Budget)
		}
		partial = partial || p.Partial
		got = append(got, seqs(p.Entries)...)
		if p.Next == 0 {
			return got, pages, partial
		}
		if f.Newest {
			f.Before = p.Next
		} else {
			f.After = p.Next
		}
	}
	t.Fatal("the walk does not end")
	return
}

// TestAuditListByIndex: lists filtered by actor, action or target (alone,
// together, with an outcome) page through the index, oldest or newest
// first, to exactly what a brute force finds, also with budgets that cut
// pages short; entries appended after the index was first built are in it;
// and the log still verifies.
func TestAuditListByIndex(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{}, newKey(t))
	ensure(t, l, "acme")
	all := mixed(t, l, "acme", 1, 150)
	filters := []struct {
		name string
		f    audit.Filter
	}{
		{"actor", audit.Filter{Actor: "apikey:k1"}},
		{"action", audit.Filter{Action: "pki.cert.issue"}},
		{"target", audit.Filter{Target: "gateway:TSGW06DEV00000002"}},
		{"actor and action", audit.Filter{Actor: "apikey:k2", Action: "pki.cert.issue"}},
		{"actor and outcome", audit.Filter{Actor: "apikey:k0", Outcome: "pki.csr_invalid"}},
		{"actor nobody", audit.Filter{Actor: "nobody"}},
		{"actor and target that never meet", audit.Filter{Actor: "apikey:k0", Target: "gateway:TSGW06DEV00000099"}},
	}
	budgets := []int{0, 7, 40}
	for round := range 2 {
		if round == 1 {
			// Entries appended since are indexed by the next list.
			all = append(all, mixed(t, l, "acme", 151, 60)...)
		}
		for _, tc := range filters {
			for _, newest := range []bool{false, true} {
				for _, budget := range budgets {
					t.Run(fmt.Sprintf("round %d, %s, newest %v, budget %d", round, tc.name, newest, budget), func(t *testing.T) {
						f := tc.f
						f.Newest, f.Limit, f.Budget = newest, 13, budget
						got, pages, partial := walk(t, l, "acme", f)
						if want := expectSeqs(all, f); fmt.Sprint(got) != fmt.Sprint(want) {
							t.Fatalf("got %v\nwant %v", got, want)
						}
						if budget == 7 && len(got) > 0 && (!partial || pages < 2) {
							t.Errorf("%d pages, partial %v: a budget of 7 reads did not cut a page", pages, partial)
						}
					})
				}
			}
		}
	}
	// A value that matches nothing costs a lookup, not a scan.
	p, err := l.ListPage(context.Background(), "acme", audit.Filter{Actor: "nobody"})
	if err != nil || len(p.Entries) != 0 || p.Next != 0 || p.Reads > 2 {
		t.Fatalf("actor nobody: %+v, %v", p, err)
	}
	// A filter by actor reads about what it lists.
	p, err = l.ListPage(context.Background(), "acme", audit.Filter{Actor: "apikey:k1", Limit: 10, Newest: true})
	if err != nil || len(p.Entries) != 10 || p.Reads > 2*11+3 {
		t.Fatalf("actor k1, 10 newest: %d entries, %d reads, %v", len(p.Entries), p.Reads, err)
	}
	if r := verify(t, l, "acme"); !r.OK || r.Entries != uint64(len(all)) {
		t.Fatalf("report %+v", r)
	}
}

// TestAuditIndexWithManyWriters: two Logs (two processes) append to one
// tenant and list it by actor at the same time: the index holds each entry
// exactly once per field, in entry order, and every list is complete.
func TestAuditIndexWithManyWriters(t *testing.T) {
	bb := startBackbone(t)
	key := newKey(t)
	logs := []*audit.Log{openLog(t, bb, audit.Config{}, key), openLog(t, bb, audit.Config{}, key)}
	ensure(t, logs[0], "acme")
	ensure(t, logs[1], "acme")
	ctx := context.Background()
	var wg sync.WaitGroup
	for i, l := range logs {
		wg.Go(func() {
			for j := range 60 {
				ev := event(j)
				ev.Actor = fmt.Sprintf("apikey:k%d", i)
				if _, err := l.Append(ctx, "acme", ev); err != nil {
					t.Error(err)
					return
				}
				if j%7 == 0 {
					if _, _, err := l.List(ctx, "acme", audit.Filter{Actor: "apikey:k0"}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for i, l := range logs {
		got, _, _ := walk(t, l, "acme", audit.Filter{Actor: fmt.Sprintf("apikey:k%d", 1-i), Limit: 25})
		if len(got) != 60 || !slices.IsSorted(got) {
			t.Fatalf("log %d lists %d entries of the other writer: %v", i, len(got), got)
		}
	}
	st, err := bb.JS.Stream(ctx, names.AuditIndexStream("acme"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3*120 {
		t.Fatalf("the index holds %d entries for 120 entries of 3 fields", info.State.Msgs)
	}
	var last uint64
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq += 3 {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var e uint64
		for _, b := range m.Data[:8] {
			e = e<<8 | uint64(b)
		}
		if e != last+1 {
			t.Fatalf("index entry %d names entry %d after entry %d", seq, e, last)
		}
		last = e
	}
}

// TestAuditIndexFinishesAnEntryCutShort: a process that stopped between
// the index entries of one entry (it wrote the actor's, not the action's
// and target's) leaves them to the next list, which writes the rest once.
func TestAuditIndexFinishesAnEntryCutShort(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{}, newKey(t))
	ensure(t, l, "acme")
	ctx := context.Background()
	appendN(t, l, "acme", 5)
	if _, _, err := l.List(ctx, "acme", audit.Filter{Actor: "operator"}); err != nil {
		t.Fatal(err)
	}
	e6, err := l.Append(ctx, "acme", audit.Event{Actor: "operator", Action: "registry.gateway.delete", Target: "gateway:TSGW06DEV00000666", Outcome: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	log, err := bb.JS.Stream(ctx, names.AuditStream("acme"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := log.GetLastMsgForSubject(ctx, names.AuditEntry("acme"))
	if err != nil {
		t.Fatal(err)
	}
	ref := make([]byte, 16)
	ref[7], ref[15] = byte(e6.Seq), byte(m.Sequence)
	msg := nats.NewMsg(names.AuditIndex("acme", "actor", audit.IndexKey(e6.Actor)))
	msg.Data = ref
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("e%d.actor", e6.Seq))
	if _, err := bb.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	got, _, err := l.List(ctx, "acme", audit.Filter{Target: e6.Target})
	if err != nil || len(got) != 1 || got[0].Seq != e6.Seq {
		t.Fatalf("by the target of the entry cut short: %v, %v", seqs(got), err)
	}
	ix, err := bb.JS.Stream(ctx, names.AuditIndexStream("acme"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := ix.Info(ctx)
	if err != nil || info.State.Msgs != 18 {
		t.Fatalf("the index holds %d entries for 6 entries of 3 fields (%v)", info.State.Msgs, err)
	}
}
