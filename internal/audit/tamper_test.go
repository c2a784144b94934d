package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// storedMsg is a message of an audit stream as an attacker reads it.
type storedMsg struct {
	subject string
	data    []byte
	header  nats.Header
}

func (m storedMsg) entry(t *testing.T) (audit.Entry, bool) {
	t.Helper()
	if !strings.HasSuffix(m.subject, ".entry") {
		return audit.Entry{}, false
	}
	var e audit.Entry
	if err := json.Unmarshal(m.data, &e); err != nil {
		t.Fatal(err)
	}
	return e, true
}

func (m storedMsg) checkpoint(t *testing.T) (audit.Checkpoint, bool) {
	t.Helper()
	if !strings.HasSuffix(m.subject, ".checkpoint") {
		return audit.Checkpoint{}, false
	}
	var c audit.Checkpoint
	if err := json.Unmarshal(m.data, &c); err != nil {
		t.Fatal(err)
	}
	return c, true
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// indexOfEntry returns the position of entry seq in msgs.
func indexOfEntry(t *testing.T, msgs []storedMsg, seq uint64) int {
	t.Helper()
	for i, m := range msgs {
		if e, ok := m.entry(t); ok && e.Seq == seq {
			return i
		}
	}
	t.Fatalf("entry %d not stored", seq)
	return -1
}

// rebuild does what an attacker with NATS admin rights can do to a stream
// that refuses deletes and purges: read every message, delete the stream,
// create it again without the protection, and publish the messages back
// after mutate. It returns the new stream.
func rebuild(t *testing.T, bb *backbone.Backbone, tenant string, mutate func([]storedMsg) []storedMsg) jetstream.Stream {
	t.Helper()
	ctx := context.Background()
	st, err := bb.JS.Stream(ctx, names.AuditStream(tenant))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []storedMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, storedMsg{subject: m.Subject, data: m.Data, header: m.Header})
	}
	if err := bb.JS.DeleteStream(ctx, names.AuditStream(tenant)); err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.DenyDelete, cfg.DenyPurge = false, false
	st, err = bb.JS.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mutate(msgs) {
		h := nats.Header{}
		for k, v := range m.header { // the original publish conditions no longer hold
			if !strings.HasPrefix(k, "Nats-Expected") {
				h[k] = v
			}
		}
		if _, err := bb.JS.PublishMsg(ctx, &nats.Msg{Subject: m.subject, Data: m.data, Header: h}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// recompute rewrites entry seq with change and recomputes the hashes of it
// and of every later entry, as an attacker who knows the algorithm (but not
// the signing key) would.
func recompute(t *testing.T, msgs []storedMsg, seq uint64, change func(*audit.Entry)) []storedMsg {
	t.Helper()
	out := append([]storedMsg(nil), msgs...)
	prev := ""
	for i, m := range out {
		e, ok := m.entry(t)
		if !ok || e.Seq < seq {
			if ok {
				prev = e.Hash
			}
			continue
		}
		if e.Seq == seq {
			change(&e)
		}
		e.Prev = prev
		e.Hash = audit.HashEntry(&e)
		prev = e.Hash
		out[i].data = mustJSON(t, e)
	}
	return out
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	bb := startBackbone(t)
	key := newKey(t)
	// Checkpoints at 4 and 8 as entries are appended, and at 10 explicitly.
	l := openLog(t, bb, audit.Config{CheckpointEvery: 4}, key)
	// A second node, with nothing in memory: what the stream alone proves.
	auditor := openLog(t, bb, audit.Config{CheckpointEvery: 4}, key)
	ctx := context.Background()

	cases := []struct {
		name    string
		tamper  func(t *testing.T, msgs []storedMsg) []storedMsg
		after   func(t *testing.T, st jetstream.Stream, tenant string) // after the rebuild
		first   uint64
		problem string
	}{
		{
			name: "one byte of an entry changed",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				i := indexOfEntry(t, msgs, 5)
				changed := bytes.Replace(msgs[i].data, []byte(`"outcome":"ok"`), []byte(`"outcome":"ko"`), 1)
				if bytes.Equal(changed, msgs[i].data) || len(changed) != len(msgs[i].data) {
					t.Fatal("the byte was not changed")
				}
				msgs[i].data = changed
				return msgs
			},
			first:   5,
			problem: "entry 5: hash does not match its content",
		},
		{
			name: "an entry re-encoded without changing its meaning",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				i := indexOfEntry(t, msgs, 5)
				e, _ := msgs[i].entry(t)
				dot := fmt.Sprintf(":%02d.", e.Time.Second())
				changed := bytes.Replace(msgs[i].data, []byte(dot), []byte(strings.Replace(dot, ".", ",", 1)), 1)
				if bytes.Equal(changed, msgs[i].data) {
					t.Fatal("the byte was not changed")
				}
				msgs[i].data = changed
				return msgs
			},
			first:   5,
			problem: "the entry stored where entry 5 belongs is malformed (its bytes are not in the exact form Append writes)",
		},
		{
			name: "an entry replaced by garbage",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				msgs[indexOfEntry(t, msgs, 2)].data = []byte("{not json")
				return msgs
			},
			first:   2,
			problem: "the entry stored where entry 2 belongs is malformed (it is not valid JSON of the expected shape)",
		},
		{
			name:   "an entry deleted",
			tamper: func(_ *testing.T, msgs []storedMsg) []storedMsg { return msgs },
			after: func(t *testing.T, st jetstream.Stream, tenant string) {
				// The attacker recreated the stream without the protection.
				ctx := context.Background()
				subject := "audit." + tenant + ".entry"
				m, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
				for err == nil && !bytes.Contains(m.Data, []byte(`"seq":5,`)) {
					m, err = st.GetMsg(ctx, m.Sequence+1, jetstream.WithGetMsgSubject(subject))
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
					t.Fatal(err)
				}
			},
			first:   5,
			problem: "entry 5 is missing (gap after 4)",
		},
		{
			name: "two entries swapped",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				i, j := indexOfEntry(t, msgs, 5), indexOfEntry(t, msgs, 6)
				msgs[i], msgs[j] = msgs[j], msgs[i]
				return msgs
			},
			first:   5,
			problem: "entry 6 appears before entry 5 (entries are reordered)",
		},
		{
			name: "an entry duplicated",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				i, j := indexOfEntry(t, msgs, 3), indexOfEntry(t, msgs, 7)
				out := append([]storedMsg(nil), msgs[:j+1]...)
				out = append(out, msgs[i])
				return append(out, msgs[j+1:]...)
			},
			first:   8,
			problem: "entry 3 appears again where entry 8 belongs",
		},
		{
			name: "an entry rewritten with recomputed hashes",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				return recompute(t, msgs, 5, func(e *audit.Entry) { e.Outcome = "ko" })
			},
			first:   5,
			problem: "checkpoint at 8 does not match the chain: an entry in 5..8 was changed after it was signed",
		},
		{
			// The chain cannot say which entry between two checkpoints was
			// rewritten: the report names the first one after the last
			// checkpoint that still matches.
			name: "an entry rewritten with recomputed hashes, between checkpoints",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				return recompute(t, msgs, 7, func(e *audit.Entry) { e.Actor = "apikey:innocent" })
			},
			first:   5,
			problem: "checkpoint at 8 does not match the chain",
		},
		{
			name: "a forged checkpoint signed by another key",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				msgs = recompute(t, msgs, 9, func(e *audit.Entry) { e.Source = "203.0.113.1:1" })
				var out []storedMsg
				var head audit.Entry
				for _, m := range msgs {
					if c, ok := m.checkpoint(t); ok && c.Seq == 10 {
						continue // the genuine checkpoint no longer matches: drop it
					}
					if e, ok := m.entry(t); ok {
						head = e
					}
					out = append(out, m)
				}
				forged := audit.Checkpoint{Tenant: head.Tenant, Seq: head.Seq, Hash: head.Hash, Time: time.Now().UTC()}
				audit.SignCheckpoint(&forged, newKey(t))
				forged.KeyID = audit.KeyID(l.PublicKey()) // claim the real key
				return append(out, storedMsg{subject: "audit." + head.Tenant + ".checkpoint", data: mustJSON(t, forged)})
			},
			first:   9,
			problem: "checkpoint at 10 has a bad signature",
		},
		{
			name: "the tail cut after a checkpoint",
			tamper: func(t *testing.T, msgs []storedMsg) []storedMsg {
				var out []storedMsg
				for _, m := range msgs {
					if e, ok := m.entry(t); ok && e.Seq > 8 {
						continue
					}
					out = append(out, m)
				}
				return out
			},
			first:   9,
			problem: "checkpoint at 10 is beyond the last entry 8: entries 9..10 are missing",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tenant := fmt.Sprintf("t%d", i+1)
			ensure(t, l, tenant)
			appendN(t, l, tenant, 10)
			if _, err := l.Checkpoint(ctx, tenant); err != nil {
				t.Fatal(err)
			}
			if r := verify(t, l, tenant); !r.OK || r.LastSignedSeq != 10 || r.Checkpoints != 3 || r.Unsigned != 0 {
				t.Fatalf("before tampering: %+v", r)
			}
			st := rebuild(t, bb, tenant, func(msgs []storedMsg) []storedMsg { return tc.tamper(t, msgs) })
			if tc.after != nil {
				tc.after(t, st, tenant)
			}
			for _, v := range []struct {
				name string
				log  *audit.Log
			}{{"writer", l}, {"auditor", auditor}} {
				r := verify(t, v.log, tenant)
				t.Logf("%s: %+v", v.name, r)
				if r.OK || r.FirstBroken != tc.first || !strings.Contains(r.Problem, tc.problem) {
					t.Errorf("%s: report %+v; want first broken %d and %q", v.name, r, tc.first, tc.problem)
				}
			}
		})
	}
}

func TestAuditWriterNoticesTailCutBeforeItIsSigned(t *testing.T) {
	bb := startBackbone(t)
	key := newKey(t)
	l := openLog(t, bb, audit.Config{CheckpointEvery: 4}, key)
	auditor := openLog(t, bb, audit.Config{CheckpointEvery: 4}, key)
	ensure(t, l, "acme")
	appendN(t, l, "acme", 10) // signed up to 8
	rebuild(t, bb, "acme", func(msgs []storedMsg) []storedMsg {
		var out []storedMsg
		for _, m := range msgs {
			if e, ok := m.entry(t); ok && e.Seq > 8 {
				continue
			}
			out = append(out, m)
		}
		return out
	})
	r := verify(t, l, "acme")
	if r.OK || r.FirstBroken != 9 || r.Problem != "entries 9..10 were appended by this node but are missing" {
		t.Fatalf("writer: %+v", r)
	}
	// A known limit: entries after the last checkpoint are protected only by
	// the chain, so from the stream alone the cut is not visible.
	if r := verify(t, auditor, "acme"); !r.OK || r.Entries != 8 || r.LastSignedSeq != 8 {
		t.Fatalf("auditor: %+v", r)
	}
}

func TestAuditConcurrentWritersKeepOneChain(t *testing.T) {
	bb := startBackbone(t)
	key := newKey(t)
	ctx := context.Background()
	logs := []*audit.Log{
		openLog(t, bb, audit.Config{CheckpointEvery: 16}, key),
		openLog(t, bb, audit.Config{CheckpointEvery: 16}, key),
	}
	for _, l := range logs {
		ensure(t, l, "acme")
	}
	const perLog = 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*perLog)
	got := make(chan uint64, 2*perLog)
	for n, l := range logs {
		for i := range perLog {
			wg.Go(func() {
				e, err := l.Append(ctx, "acme", event(n*perLog+i))
				if err != nil {
					errs <- err
					return
				}
				got <- e.Seq
			})
		}
	}
	wg.Wait()
	close(errs)
	close(got)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for seq := range got {
		if seen[seq] || seq < 1 || seq > 2*perLog {
			t.Fatalf("seq %d returned twice or out of range", seq)
		}
		seen[seq] = true
	}
	entries, next, err := logs[0].List(ctx, "acme", audit.Filter{Limit: 1000})
	if err != nil || next != 0 || len(entries) != 2*perLog {
		t.Fatalf("%d entries, next %d, %v", len(entries), next, err)
	}
	for i, e := range entries {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i+1, e.Seq)
		}
	}
	for _, l := range logs {
		if _, err := l.Checkpoint(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
	}
	r := verify(t, logs[1], "acme")
	if !r.OK || r.Entries != 2*perLog || r.LastSignedSeq == 0 {
		t.Fatalf("report %+v", r)
	}
}

func TestAuditContinuesChainAfterRestart(t *testing.T) {
	bb := startBackbone(t)
	key := newKey(t)
	ctx := context.Background()
	l := openLog(t, bb, audit.Config{}, key)
	ensure(t, l, "acme")
	before := appendN(t, l, "acme", 5)
	l.Close() // signs the five entries
	if _, err := l.Append(ctx, "acme", event(6)); err == nil {
		t.Fatal("append after close succeeded")
	}

	l = openLog(t, bb, audit.Config{}, key)
	ensure(t, l, "acme")
	e, err := l.Append(ctx, "acme", event(6))
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 6 || e.Prev != before[4].Hash {
		t.Fatalf("entry after restart: seq %d prev %s, want 6 and %s", e.Seq, e.Prev, before[4].Hash)
	}
	r := verify(t, l, "acme")
	if !r.OK || r.Entries != 6 || r.LastSignedSeq != 5 || r.Unsigned != 1 {
		t.Fatalf("report %+v", r)
	}
}

func TestAuditCheckpointsEveryNEntries(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{CheckpointEvery: 4}, newKey(t))
	ctx := context.Background()
	ensure(t, l, "acme")
	appendN(t, l, "acme", 9)
	r := verify(t, l, "acme")
	if !r.OK || r.Checkpoints != 2 || r.LastSignedSeq != 8 || r.Unsigned != 1 {
		t.Fatalf("report %+v", r)
	}
	c, err := l.Checkpoint(ctx, "acme")
	if err != nil || c == nil || c.Seq != 9 {
		t.Fatalf("checkpoint %+v, %v", c, err)
	}
	if again, err := l.Checkpoint(ctx, "acme"); err != nil || again != nil {
		t.Fatalf("second checkpoint %+v, %v: nothing was left to sign", again, err)
	}
	// An export verifies offline with the public key alone.
	entries, _, err := l.List(ctx, "acme", audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if r := audit.VerifyEntries(entries, []audit.Checkpoint{*c}, l.PublicKey()); !r.OK || r.LastSignedSeq != 9 {
		t.Fatalf("offline report %+v", r)
	}
}

func TestAuditCheckpointLoopSignsWithinInterval(t *testing.T) {
	bb := startBackbone(t)
	l := openLog(t, bb, audit.Config{CheckpointInterval: 100 * time.Millisecond}, newKey(t))
	ensure(t, l, "acme")
	appendN(t, l, "acme", 3)
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		r := verify(t, l, "acme")
		if !r.OK || r.LastSignedSeq != 3 || r.Unsigned != 0 {
			return fmt.Errorf("report %+v", r)
		}
		return nil
	})
}

func BenchmarkAppend(b *testing.B) {
	bb := startBackbone(b)
	l := openLog(b, bb, audit.Config{}, newKey(b))
	ensure(b, l, "acme")
	ctx := context.Background()
	ev := event(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Append(ctx, "acme", ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	bb := startBackbone(b)
	l := openLog(b, bb, audit.Config{}, newKey(b))
	ensure(b, l, "acme")
	appendN(b, l, "acme", 5000)
	ctx := context.Background()
	for b.Loop() {
		r, err := l.Verify(ctx, "acme")
		if err != nil || !r.OK || r.Entries != 5000 || r.LastSignedSeq != 4992 {
			b.Fatalf("report %+v, %v", r, err)
		}
	}
}

func BenchmarkAppendParallelTenants(b *testing.B) {
	bb := startBackbone(b)
	l := openLog(b, bb, audit.Config{}, newKey(b))
	const tenants = 8
	for i := range tenants {
		ensure(b, l, fmt.Sprintf("t%d", i))
	}
	ctx := context.Background()
	var next sync.Mutex
	n := 0
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		next.Lock()
		tenant := fmt.Sprintf("t%d", n%tenants)
		n++
		next.Unlock()
		ev := event(1)
		for pb.Next() {
			if _, err := l.Append(ctx, tenant, ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
