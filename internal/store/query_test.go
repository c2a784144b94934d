package store_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// fixture is a store on a real embedded JetStream.
type fixture struct {
	s    *store.Store
	bb   *backbone.Backbone
	keys *kms.Keyring
	n    int // messages appended so far (ids)
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	s, bb, keys := storetest.Store(tb, "acme")
	return &fixture{s: s, bb: bb, keys: keys}
}

// The test dataset: 3 gateways with 5 sensors each, sensor 0 roaming (the
// same TUID on every gateway), 4 message ids.
var (
	gateways = []string{"TSGW06ACM00000000", "TSGW06ACM00000001", "TSGW06ACM00000002"}
	tsmIDs   = []int{1100, 12100, 13100, 24100}
	roaming  = "TSEN01ROAM0000001"
)

func sensor(gw, i int) string {
	if i == 0 {
		return roaming
	}
	return fmt.Sprintf("TSEN01ABC%08d", gw*10+i)
}

type spot struct{ gw, sensor, tsm int }

// appendN appends n messages on random subjects in batches of batch.
func (f *fixture) appendN(tb testing.TB, rng *rand.Rand, n, batch int, pause time.Duration) {
	tb.Helper()
	var recs []store.Record
	for range n {
		sp := spot{rng.IntN(3), rng.IntN(5), rng.IntN(4)}
		recs = append(recs, f.rec(sp))
		if len(recs) == batch {
			f.flush(tb, recs)
			recs = recs[:0]
			time.Sleep(pause)
		}
	}
	f.flush(tb, recs)
}

func (f *fixture) rec(sp spot) store.Record {
	id := fmt.Sprintf("m%06d", f.n)
	f.n++
	return store.Record{
		ID: id, Gateway: gateways[sp.gw], Tuid: sensor(sp.gw, sp.sensor), TsmID: tsmIDs[sp.tsm],
		ReceivedAt: time.Now(), Body: []byte(`{"id":"` + id + `"}`),
	}
}

func (f *fixture) flush(tb testing.TB, recs []store.Record) {
	tb.Helper()
	if len(recs) == 0 {
		return
	}
	res, err := f.s.Append(context.Background(), "acme", recs)
	if err != nil || res.Stored != len(recs) {
		tb.Fatalf("append: %+v, %v", res, err)
	}
}

func (f *fixture) stream(tb testing.TB, name string) jetstream.Stream {
	tb.Helper()
	st, err := f.bb.JS.Stream(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// stored is a message as the brute force reads it.
type stored struct {
	id        string
	seq       uint64
	gw, tuid  string
	tsm       int
	at        time.Time
	code      string // rejected only
	rejectIdx int    // rejected only
}

// readAll reads every stored message sequence by sequence: the brute force.
func (f *fixture) readAll(t *testing.T, stream string) []stored {
	t.Helper()
	ctx := context.Background()
	st := f.stream(t, stream)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		tsm, _ := strconv.Atoi(m.Header.Get("Iot-Tsm-Id"))
		s := stored{id: m.Header.Get(jetstream.MsgIDHeader), seq: m.Sequence, gw: m.Header.Get("Iot-Gateway"),
			tuid: m.Header.Get("Iot-Tuid"), tsm: tsm, at: m.Time}
		if strings.HasPrefix(stream, "REJ_") {
			body, err := f.keys.Open(ctx, "acme", m.Data, []byte("store/rejected"))
			if err != nil {
				t.Fatal(err)
			}
			var r store.Rejected
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			s.code, s.rejectIdx = r.Code, r.Index
			s.id = fmt.Sprintf("%s/%d", r.Gateway, r.Index)
		}
		out = append(out, s)
	}
	if uint64(len(out)) != info.State.Msgs {
		t.Fatalf("brute force read %d messages, the stream holds %d", len(out), info.State.Msgs)
	}
	return out
}

func inRange(at, from, to time.Time) bool {
	return (from.IsZero() || !at.Before(from)) && (to.IsZero() || at.Before(to))
}

// expect filters all by q and orders the ids as q asks.
func expect(all []stored, q store.Query) []string {
	var ids []string
	for _, m := range all {
		if (q.Gateway == "" || m.gw == q.Gateway) && (q.Tuid == "" || m.tuid == q.Tuid) &&
			(q.TsmID == 0 || m.tsm == q.TsmID) && inRange(m.at, q.From, q.To) {
			ids = append(ids, m.id)
		}
	}
	if !q.Oldest {
		slices.Reverse(ids)
	}
	return ids
}

func expectRejected(all []stored, q store.RejectedQuery) []string {
	var ids []string
	for _, m := range all {
		if (q.Gateway == "" || m.gw == q.Gateway) && (q.Code == "" || m.code == q.Code) && inRange(m.at, q.From, q.To) {
			ids = append(ids, m.id)
		}
	}
	if !q.Oldest {
		slices.Reverse(ids)
	}
	return ids
}

// walkMessages pages through q with limit, calling between after each page
// that has a next; it checks every page and returns the ids in order.
func walkMessages(t *testing.T, s *store.Store, q store.Query, limit int, between func(page int)) []string {
	t.Helper()
	q.Limit = limit
	var ids []string
	seen := map[string]bool{}
	var lastSeq uint64
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatal("the walk does not end")
		}
		p, err := s.QueryMessages(context.Background(), "acme", q)
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		if len(p.Items) > limit {
			t.Fatalf("page %d has %d items, limit %d", page, len(p.Items), limit)
		}
		for _, m := range p.Items {
			if seen[m.ID] {
				t.Fatalf("page %d repeats %s", page, m.ID)
			}
			seen[m.ID] = true
			if lastSeq != 0 && (q.Oldest && m.Seq <= lastSeq || !q.Oldest && m.Seq >= lastSeq) {
				t.Fatalf("page %d: %s (seq %d) out of order after seq %d", page, m.ID, m.Seq, lastSeq)
			}
			lastSeq = m.Seq
			if want := `{"id":"` + m.ID + `"}`; string(m.Message) != want {
				t.Fatalf("message %s body %s, want %s", m.ID, m.Message, want)
			}
			ids = append(ids, m.ID)
		}
		if p.Next == "" {
			return ids
		}
		if between != nil {
			between(page)
		}
		q.Cursor = p.Next
	}
}

func walkRejected(t *testing.T, s *store.Store, q store.RejectedQuery, limit int) (ids []string, pages int, partial bool) {
	t.Helper()
	q.Limit = limit
	seen := map[string]bool{}
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatal("the walk does not end")
		}
		p, err := s.QueryRejected(context.Background(), "acme", q)
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		for _, r := range p.Items {
			id := fmt.Sprintf("%s/%d", r.Gateway, r.Index)
			if seen[id] {
				t.Fatalf("page %d repeats %s", page, id)
			}
			seen[id] = true
			if q.Code != "" && r.Code != q.Code {
				t.Fatalf("code %s in a query for %s", r.Code, q.Code)
			}
			ids = append(ids, id)
		}
		if p.Next == "" {
			return ids, page + 1, partial
		}
		if len(p.Items) < limit {
			partial = true
		}
		q.Cursor = p.Next
	}
}

func diff(got, want []string) string {
	if slices.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	g, w := got[i:], want[i:]
	if len(g) > 5 {
		g = g[:5]
	}
	if len(w) > 5 {
		w = w[:5]
	}
	return fmt.Sprintf("got %d ids, want %d; first difference at %d: got %v, want %v", len(got), len(want), i, g, w)
}

// queries returns every filter alone and combined, and time ranges taken
// from the stored times of all.
func queries(all []stored) map[string]store.Query {
	at := func(i int) time.Time { return all[i*len(all)/100].at }
	qs := map[string]store.Query{
		"all":                    {},
		"gateway":                {Gateway: gateways[1]},
		"tuid roaming":           {Tuid: roaming},
		"tuid":                   {Tuid: sensor(2, 3)},
		"tsmId":                  {TsmID: 12100},
		"gateway+tsmId":          {Gateway: gateways[1], TsmID: 13100},
		"gateway+tuid":           {Gateway: gateways[0], Tuid: roaming},
		"tuid+tsmId":             {Tuid: roaming, TsmID: 1100},
		"gateway+tuid+tsmId":     {Gateway: gateways[2], Tuid: sensor(2, 4), TsmID: 24100},
		"gateway+foreign tuid":   {Gateway: gateways[0], Tuid: sensor(1, 2)},
		"unknown tuid":           {Tuid: "TSEN01ZZZ99999999"},
		"unknown tsmId":          {TsmID: 999999},
		"from":                   {From: at(37)},
		"to":                     {To: at(61)},
		"from+to":                {From: at(25), To: at(75)},
		"from+to+tuid":           {Tuid: roaming, From: at(25), To: at(75)},
		"from+to+gateway+tsmId":  {Gateway: gateways[0], TsmID: 1100, From: at(10), To: at(90)},
		"from+tsmId":             {TsmID: 24100, From: at(50)},
		"to+gateway+tuid":        {Gateway: gateways[1], Tuid: roaming, To: at(40)},
		"from after last":        {From: all[len(all)-1].at.Add(time.Nanosecond)},
		"to before first":        {To: all[0].at},
		"from+to narrow":         {From: at(50), To: at(51)},
		"from=to-1ns at message": {From: at(50), To: at(50).Add(time.Nanosecond)},
	}
	return qs
}

func TestQueryMessagesMatchesBruteForce(t *testing.T) {
	f := newFixture(t)
	f.appendN(t, rand.New(rand.NewPCG(1, 2)), 2400, 60, time.Millisecond)
	all := f.readAll(t, names.MessageStream("acme"))
	budgets := []struct {
		name       string
		scan, span int
	}{{"default budgets", 0, 0}, {"span budget 300", 0, 300}, {"scan budget 40", 40, 0}}
	// Low budgets (partial pages) on a few queries: dense, sparse, empty.
	lowBudgets := map[string]bool{"all": true, "tuid": true, "tsmId": true, "gateway+tuid+tsmId": true, "from+to+tuid": true, "unknown tuid": true}
	for name, q := range queries(all) {
		for _, b := range budgets {
			if b.name != "default budgets" && !lowBudgets[name] {
				continue
			}
			for _, oldest := range []bool{false, true} {
				q := q
				q.Oldest = oldest
				t.Run(fmt.Sprintf("%s/%s/oldest=%v", name, b.name, oldest), func(t *testing.T) {
					defer store.SetBudgets(b.scan, uint64(b.span))()
					want := expect(all, q)
					if d := diff(walkMessages(t, f.s, q, 7, nil), want); d != "" {
						t.Fatalf("walk with limit 7: %s", d)
					}
					if b.scan != 0 || b.span != 0 {
						return // pages may be partial
					}
					q.Limit = 1000
					p, err := f.s.QueryMessages(context.Background(), "acme", q)
					if err != nil {
						t.Fatal(err)
					}
					w := want[:min(1000, len(want))]
					if d := diff(ids(p.Items), w); d != "" {
						t.Fatalf("one page: %s", d)
					}
					if (p.Next != "") != (len(want) > 1000) {
						t.Fatalf("next %q with %d matches", p.Next, len(want))
					}
				})
			}
		}
	}
	// The dataset is what the cases assume.
	for name, n := range map[string]int{"gateway+foreign tuid": 0, "unknown tuid": 0, "tuid roaming": 100, "from+to": 1000} {
		if got := len(expect(all, queries(all)[name])); (n == 0) != (got == 0) || got < n {
			t.Errorf("%s matches %d messages", name, got)
		}
	}
}

func ids(ms []store.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func TestQueryTimeBoundaries(t *testing.T) {
	f := newFixture(t)
	f.appendN(t, rand.New(rand.NewPCG(3, 4)), 400, 20, 2*time.Millisecond)
	all := f.readAll(t, names.MessageStream("acme"))
	ctx := context.Background()
	x := all[200]
	for _, oldest := range []bool{false, true} {
		// From is inclusive.
		p, err := f.s.QueryMessages(ctx, "acme", store.Query{From: x.at, Oldest: true, Limit: 1})
		if err != nil || len(p.Items) != 1 || p.Items[0].StoredAt.Compare(x.at) < 0 {
			t.Fatalf("from %v: %+v, %v", x.at, p, err)
		}
		if !p.Items[0].StoredAt.Equal(x.at) {
			t.Fatalf("from its store time does not find message %d first: %+v", x.seq, p.Items[0])
		}
		// To is exclusive.
		p, err = f.s.QueryMessages(ctx, "acme", store.Query{To: x.at, Limit: 1})
		if err != nil || len(p.Items) != 1 || !p.Items[0].StoredAt.Before(x.at) {
			t.Fatalf("to %v: %+v, %v", x.at, p, err)
		}
		// A range between two messages holds nothing.
		if y := all[201]; y.at.After(x.at.Add(time.Nanosecond)) {
			p, err = f.s.QueryMessages(ctx, "acme", store.Query{From: x.at.Add(time.Nanosecond), To: y.at, Oldest: oldest})
			if err != nil || len(p.Items) != 0 || p.Next != "" {
				t.Fatalf("empty range: %+v, %v", p, err)
			}
		}
		// The page shows the store time the range applies to.
		for _, m := range walkMessagesItems(t, f.s, store.Query{From: x.at, To: all[300].at, Oldest: oldest}) {
			if m.StoredAt.Before(x.at) || !m.StoredAt.Before(all[300].at) {
				t.Fatalf("message %d stored at %v is outside the range", m.Seq, m.StoredAt)
			}
			if m.ReceivedAt.IsZero() || m.ReceivedAt.After(m.StoredAt) {
				t.Fatalf("message %d received %v, stored %v", m.Seq, m.ReceivedAt, m.StoredAt)
			}
		}
	}
}

func walkMessagesItems(t *testing.T, s *store.Store, q store.Query) []store.Message {
	t.Helper()
	var out []store.Message
	for {
		p, err := s.QueryMessages(context.Background(), "acme", q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Items...)
		if p.Next == "" {
			return out
		}
		q.Cursor = p.Next
	}
}

func TestQueryWithDeletedAndPurged(t *testing.T) {
	f := newFixture(t)
	f.appendN(t, rand.New(rand.NewPCG(5, 6)), 1200, 40, time.Millisecond)
	before := f.readAll(t, names.MessageStream("acme"))
	ctx := context.Background()
	st := f.stream(t, names.MessageStream("acme"))
	// A purged prefix, a run of deleted messages, scattered deletes and a
	// subject purged entirely.
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(151)); err != nil {
		t.Fatal(err)
	}
	del := []uint64{300, 302, 303, 500, 777, 1199, 1200}
	for seq := uint64(600); seq < 700; seq++ {
		del = append(del, seq)
	}
	for _, seq := range del {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(seq, err)
		}
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(names.Message("acme", gateways[1], roaming, 1100))); err != nil {
		t.Fatal(err)
	}
	all := f.readAll(t, names.MessageStream("acme"))
	if len(all) >= len(before)-250 {
		t.Fatalf("only %d of %d messages removed", len(before)-len(all), len(before))
	}
	qs := queries(all)
	// Bounds that fall on removed messages.
	qs["from purged"] = store.Query{From: before[100].at, To: before[400].at}
	qs["from deleted run"] = store.Query{From: before[620].at, Tuid: roaming}
	qs["to deleted run"] = store.Query{To: before[650].at, Gateway: gateways[2]}
	qs["inside deleted run"] = store.Query{From: before[610].at, To: before[690].at}
	qs["purged subject"] = store.Query{Gateway: gateways[1], Tuid: roaming, TsmID: 1100}
	for name, q := range qs {
		for _, oldest := range []bool{false, true} {
			q := q
			q.Oldest = oldest
			t.Run(fmt.Sprintf("%s/oldest=%v", name, oldest), func(t *testing.T) {
				if d := diff(walkMessages(t, f.s, q, 7, nil), expect(all, q)); d != "" {
					t.Fatal(d)
				}
			})
		}
	}
	if n := len(expect(all, qs["inside deleted run"])); n != 0 {
		t.Fatalf("the deleted run still holds %d messages", n)
	}
}

func TestQueryPagingWhileAppending(t *testing.T) {
	for _, q := range []store.Query{{}, {Tuid: roaming}, {Gateway: gateways[2]}, {TsmID: 12100}, {Gateway: gateways[0], Tuid: roaming, TsmID: 1100}} {
		t.Run(fmt.Sprintf("%+v", q), func(t *testing.T) {
			f := newFixture(t)
			rng := rand.New(rand.NewPCG(7, 8))
			f.appendN(t, rng, 600, 50, 0)
			appendSome := func(page int) {
				// New messages on every subject of the filter and others,
				// including the first message of a new subject.
				recs := []store.Record{f.rec(spot{0, 0, 0}), f.rec(spot{2, 1, 1}), f.rec(spot{1, 0, 2})}
				if page == 3 {
					recs = append(recs, store.Record{ID: fmt.Sprintf("m%06d", f.n), Gateway: gateways[0], Tuid: roaming,
						TsmID: 777777, ReceivedAt: time.Now(), Body: []byte(fmt.Sprintf(`{"id":"m%06d"}`, f.n))})
					f.n++
				}
				f.flush(t, recs)
			}

			// Newest first: the walk is the stream as it was; appends are above it.
			snapshot := f.readAll(t, names.MessageStream("acme"))
			got := walkMessages(t, f.s, q, 7, appendSome)
			if d := diff(got, expect(snapshot, q)); d != "" {
				t.Fatalf("newest first while appending: %s", d)
			}

			// Oldest first: the walk reaches the new messages at the end.
			q.Oldest = true
			got = walkMessages(t, f.s, q, 7, func(page int) {
				if page < 40 {
					appendSome(page)
				}
			})
			all := f.readAll(t, names.MessageStream("acme"))
			if d := diff(got, expect(all, q)); d != "" {
				t.Fatalf("oldest first while appending: %s", d)
			}
		})
	}
}

func TestQueryInvalid(t *testing.T) {
	f := newFixture(t)
	f.appendN(t, rand.New(rand.NewPCG(9, 10)), 60, 60, 0)
	ctx := context.Background()
	first, err := f.s.QueryMessages(ctx, "acme", store.Query{Tuid: roaming, Limit: 2})
	if err != nil || first.Next == "" {
		t.Fatalf("first page: %+v, %v", first, err)
	}
	firstRej := rejectedPage(t, f)
	now := time.Now()
	tampered := []byte(first.Next)
	tampered[12] ^= 1 // still base64url, another sequence or hash
	if tampered[12] == '-' || tampered[12] == '_' {
		tampered[12] = 'A'
	}
	reencoded := func(edit func(b []byte)) string {
		b, err := base64.RawURLEncoding.DecodeString(first.Next)
		if err != nil {
			t.Fatal(err)
		}
		edit(b)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	cases := []struct {
		name   string
		q      store.Query
		code   string
		detail string
	}{
		{"gateway lowercase", store.Query{Gateway: "tsgw06acm00000001"}, "store.query_invalid", "gateway"},
		{"gateway wildcard", store.Query{Gateway: "TSGW06ACM0000000*"}, "store.query_invalid", "gateway"},
		{"gateway subject", store.Query{Gateway: "TSGW06ACM00000001.>"}, "store.query_invalid", "gateway"},
		{"gateway short", store.Query{Gateway: "TSGW06"}, "store.query_invalid", "gateway"},
		{"gateway letters where digits", store.Query{Gateway: "TSGWAAACM00000001"}, "store.query_invalid", "gateway"},
		{"tuid", store.Query{Tuid: "TSEN01ABC0000000"}, "store.query_invalid", "tsmTuid"},
		{"tuid dot", store.Query{Tuid: "TSEN01ABC0000000."}, "store.query_invalid", "tsmTuid"},
		{"tuid space", store.Query{Tuid: "TSEN01ABC0000000 "}, "store.query_invalid", "tsmTuid"},
		{"tsmId low", store.Query{TsmID: 999}, "store.query_invalid", "tsmId"},
		{"tsmId high", store.Query{TsmID: 1000000}, "store.query_invalid", "tsmId"},
		{"tsmId negative", store.Query{TsmID: -12100}, "store.query_invalid", "tsmId"},
		{"limit negative", store.Query{Limit: -1}, "store.query_invalid", "limit"},
		{"limit high", store.Query{Limit: 1001}, "store.query_invalid", "limit"},
		{"from after to", store.Query{From: now, To: now.Add(-time.Second)}, "store.query_invalid", "from"},
		{"from equals to", store.Query{From: now, To: now}, "store.query_invalid", "from"},
		{"cursor garbage", store.Query{Tuid: roaming, Cursor: "!!!"}, "store.cursor_invalid", "cursor"},
		{"cursor tampered", store.Query{Tuid: roaming, Cursor: string(tampered)}, "store.cursor_invalid", "cursor"},
		{"cursor sequence edited", store.Query{Tuid: roaming, Cursor: reencoded(func(b []byte) { b[9]++ })}, "store.cursor_invalid", "cursor"},
		{"cursor truncated", store.Query{Tuid: roaming, Cursor: first.Next[:20]}, "store.cursor_invalid", "cursor"},
		{"cursor padded", store.Query{Tuid: roaming, Cursor: first.Next + "AA"}, "store.cursor_invalid", "cursor"},
		{"cursor another tuid", store.Query{Tuid: sensor(1, 1), Cursor: first.Next}, "store.cursor_invalid", "filters"},
		{"cursor without the filter", store.Query{Cursor: first.Next}, "store.cursor_invalid", "filters"},
		{"cursor another time range", store.Query{Tuid: roaming, From: now.Add(-time.Hour), Cursor: first.Next}, "store.cursor_invalid", "filters"},
		{"cursor another order", store.Query{Tuid: roaming, Oldest: true, Cursor: first.Next}, "store.cursor_invalid", "order"},
		{"cursor of rejected messages", store.Query{Cursor: firstRej}, "store.cursor_invalid", "filters"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.s.QueryMessages(ctx, "acme", c.q)
			checkFault(t, err, c.code, c.detail)
		})
	}
	// The cursor still works with its own query, and with another limit.
	if p, err := f.s.QueryMessages(ctx, "acme", store.Query{Tuid: roaming, Limit: 5, Cursor: first.Next}); err != nil || len(p.Items) == 0 {
		t.Fatalf("the cursor with its query: %+v, %v", p, err)
	}

	rej := []struct {
		name   string
		q      store.RejectedQuery
		code   string
		detail string
	}{
		{"gateway", store.RejectedQuery{Gateway: "TSGW06ACM0000000>"}, "store.query_invalid", "gateway"},
		{"code uppercase", store.RejectedQuery{Code: "thingsee.Field_range"}, "store.query_invalid", "code"},
		{"code wildcard", store.RejectedQuery{Code: "thingsee.*"}, "store.query_invalid", "code"},
		{"code long", store.RejectedQuery{Code: strings.Repeat("a", 65)}, "store.query_invalid", "code"},
		{"limit", store.RejectedQuery{Limit: 5000}, "store.query_invalid", "limit"},
		{"range", store.RejectedQuery{From: now, To: now}, "store.query_invalid", "from"},
		{"cursor of messages", store.RejectedQuery{Cursor: first.Next}, "store.cursor_invalid", "filters"},
		{"cursor another code", store.RejectedQuery{Code: "thingsee.unknown_id", Cursor: firstRej}, "store.cursor_invalid", "filters"},
		{"cursor garbage", store.RejectedQuery{Cursor: "AAAA"}, "store.cursor_invalid", "cursor"},
	}
	for _, c := range rej {
		t.Run("rejected "+c.name, func(t *testing.T) {
			_, err := f.s.QueryRejected(ctx, "acme", c.q)
			checkFault(t, err, c.code, c.detail)
		})
	}

	// A tenant id that cannot exist has no stream (it is never put into a subject).
	for _, tenant := range []string{"ACME", "acme.>", "a", "acme*", ""} {
		if _, err := f.s.QueryMessages(ctx, tenant, store.Query{}); !errors.Is(err, store.ErrNoStream) {
			t.Errorf("tenant %q: %v, want ErrNoStream", tenant, err)
		}
	}
	if _, err := f.s.QueryMessages(ctx, "nobody", store.Query{}); !errors.Is(err, store.ErrNoStream) {
		t.Errorf("unknown tenant: %v", err)
	}
	if _, err := f.s.QueryRejected(ctx, "nobody", store.RejectedQuery{}); !errors.Is(err, store.ErrNoStream) {
		t.Errorf("unknown tenant: %v", err)
	}
}

// rejectedPage stores a few rejections and returns the next of a first
// page of one.
func rejectedPage(t *testing.T, f *fixture) string {
	t.Helper()
	var recs []store.Rejected
	for i := range 3 {
		recs = append(recs, store.Rejected{Gateway: gateways[0], ReceivedAt: time.Now(), Index: i, Code: "thingsee.field_range", Reason: "r", Raw: []byte("{}")})
	}
	if err := f.s.AppendRejected(context.Background(), "acme", recs); err != nil {
		t.Fatal(err)
	}
	p, err := f.s.QueryRejected(context.Background(), "acme", store.RejectedQuery{Code: "thingsee.field_range", Limit: 1})
	if err != nil || p.Next == "" {
		t.Fatalf("rejected page: %+v, %v", p, err)
	}
	return p.Next
}

func checkFault(t *testing.T, err error, code, detail string) {
	t.Helper()
	e, ok := fault.As(err)
	if !ok {
		t.Fatalf("error %v, want fault %s", err, code)
	}
	if e.Code() != code || e.Kind() != fault.InvalidArgument {
		t.Fatalf("fault %s (%v), want %s", e.Code(), e.Kind(), code)
	}
	if !strings.Contains(e.Detail(), detail) {
		t.Fatalf("detail %q does not name %q", e.Detail(), detail)
	}
}

func TestQueryRejected(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	codes := []string{"thingsee.field_range", "thingsee.unknown_id", "ingest.payload_too_large"}
	rng := rand.New(rand.NewPCG(11, 12))
	for b := range 10 {
		var recs []store.Rejected
		for i := range 30 {
			recs = append(recs, store.Rejected{
				Gateway: gateways[rng.IntN(3)], ReceivedAt: time.Now(), Index: b*30 + i,
				Code: codes[rng.IntN(3)], Reason: "because", Raw: []byte(fmt.Sprintf(`{"n":%d}`, b*30+i)),
			})
		}
		if err := f.s.AppendRejected(ctx, "acme", recs); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	all := f.readAll(t, names.RejectedStream("acme"))
	at := func(i int) time.Time { return all[i].at }
	qs := map[string]store.RejectedQuery{
		"all":             {},
		"gateway":         {Gateway: gateways[2]},
		"code":            {Code: codes[1]},
		"gateway+code":    {Gateway: gateways[0], Code: codes[2]},
		"from+to":         {From: at(50), To: at(250)},
		"from+to+code":    {Code: codes[0], From: at(50), To: at(250)},
		"to+gateway":      {Gateway: gateways[1], To: at(100)},
		"unknown code":    {Code: "ingest.other"},
		"unknown gateway": {Gateway: "TSGW06ACM00000009"},
	}
	for name, q := range qs {
		for _, oldest := range []bool{false, true} {
			q := q
			q.Oldest = oldest
			t.Run(fmt.Sprintf("%s/oldest=%v", name, oldest), func(t *testing.T) {
				got, _, _ := walkRejected(t, f.s, q, 7)
				if d := diff(got, expectRejected(all, q)); d != "" {
					t.Fatal(d)
				}
			})
		}
	}
	// The old entry point is a newest-first page.
	got, err := f.s.RejectedMessages(ctx, "acme", 5)
	if err != nil || len(got) != 5 || got[0].Seq != all[len(all)-1].seq || got[0].StoredAt.IsZero() {
		t.Fatalf("RejectedMessages: %+v, %v", got, err)
	}
}

// TestQueryRejectedScanBudget: a rare code behind more than a scan budget
// of other codes is reached in several pages, some of them partial.
func TestQueryRejectedScanBudget(t *testing.T) {
	const budget = 500
	defer store.SetBudgets(budget, 0)()
	f := newFixture(t)
	ctx := context.Background()
	add := func(code string, from, n int) {
		var recs []store.Rejected
		for i := from; i < from+n; i++ {
			recs = append(recs, store.Rejected{Gateway: gateways[i%3], ReceivedAt: time.Now(), Index: i, Code: code, Reason: "r", Raw: []byte("x")})
			if len(recs) == 500 || i == from+n-1 {
				if err := f.s.AppendRejected(ctx, "acme", recs); err != nil {
					t.Fatal(err)
				}
				recs = recs[:0]
			}
		}
	}
	add("thingsee.rare", 0, 4)
	add("thingsee.common", 4, budget*2+200)
	add("thingsee.rare", budget*2+204, 3)
	all := f.readAll(t, names.RejectedStream("acme"))
	for _, oldest := range []bool{false, true} {
		q := store.RejectedQuery{Code: "thingsee.rare", Oldest: oldest}
		got, pages, partial := walkRejected(t, f.s, q, 5)
		if d := diff(got, expectRejected(all, q)); d != "" {
			t.Fatalf("oldest=%v: %s", oldest, d)
		}
		if pages < 2 || !partial {
			t.Fatalf("oldest=%v: %d pages, partial %v: the budget did not bound a page", oldest, pages, partial)
		}
	}
	// Without the code filter a page is full.
	p, err := f.s.QueryRejected(ctx, "acme", store.RejectedQuery{Limit: budget - 10})
	if err != nil || len(p.Items) != budget-10 || p.Next == "" {
		t.Fatalf("%d items, next %q, %v", len(p.Items), p.Next, err)
	}
}

// TestQueryBudgetBoundsWhatAPageCosts: a query's Budget bounds the reads
// of one page (the page is then partial, and its cursor goes on without a
// gap or a repeat), and every page says what it cost.
func TestQueryBudgetBoundsWhatAPageCosts(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.appendN(t, rand.New(rand.NewPCG(21, 22)), 600, 200, 0)
	var rej []store.Rejected
	for i := range 300 {
		rej = append(rej, store.Rejected{Gateway: gateways[i%3], ReceivedAt: time.Now(), Index: i, Code: "thingsee.common", Reason: "r", Raw: []byte("x")})
	}
	if err := f.s.AppendRejected(ctx, "acme", rej); err != nil {
		t.Fatal(err)
	}
	all := f.readAll(t, names.MessageStream("acme"))
	cases := []struct {
		name    string
		q       store.Query
		partial bool
	}{
		{"a full page within the budget", store.Query{Limit: 100, Budget: 500}, false},
		{"a page past the budget", store.Query{Limit: 100, Budget: 40}, true},
		{"oldest first past the budget", store.Query{Limit: 100, Budget: 40, Oldest: true}, true},
		{"a sensor past the budget", store.Query{Tuid: sensor(1, 2), Limit: 100, Budget: 10}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := f.s.QueryMessages(ctx, "acme", tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if p.Reads > tc.q.Budget || p.Cost() > tc.q.Budget+1 || p.Reads < len(p.Items) {
				t.Errorf("%d items, %d reads, cost %d, budget %d", len(p.Items), p.Reads, p.Cost(), tc.q.Budget)
			}
			if p.Partial != tc.partial || (tc.partial && (p.Next == "" || len(p.Items) >= tc.q.Limit)) {
				t.Errorf("partial %v (want %v), %d items, next %q", p.Partial, tc.partial, len(p.Items), p.Next)
			}
			// Following the cursors with the same budget gives every match once.
			q := tc.q
			got := ids(p.Items)
			for pages := 0; p.Next != "" && pages < 1000; pages++ {
				q.Cursor = p.Next
				if p, err = f.s.QueryMessages(ctx, "acme", q); err != nil {
					t.Fatal(err)
				}
				if p.Reads > q.Budget {
					t.Fatalf("%d reads, budget %d", p.Reads, q.Budget)
				}
				got = append(got, ids(p.Items)...)
			}
			want := expect(all, store.Query{Tuid: tc.q.Tuid, Oldest: tc.q.Oldest})
			if d := diff(got, want); d != "" {
				t.Fatal(d)
			}
		})
	}
	// A rejected-message code that matches nothing costs its budget, not
	// the stream.
	p, err := f.s.QueryRejected(ctx, "acme", store.RejectedQuery{Code: "thingsee.none", Budget: 50})
	if err != nil || len(p.Items) != 0 || !p.Partial || p.Next == "" || p.Reads > 50 {
		t.Fatalf("code without a match: %d items, partial %v, next %q, %d reads, %v", len(p.Items), p.Partial, p.Next, p.Reads, err)
	}
	// FindByKey stops at its budget.
	m := all[len(all)-1]
	if _, ok, cost, err := f.s.FindByKey(ctx, "acme", m.tuid, m.tsm, "1", 30); err != nil || ok || cost > 31 {
		t.Fatalf("FindByKey of a missing key: found %v, cost %d, %v", ok, cost, err)
	}
}

func TestMessagesIsNewestPage(t *testing.T) {
	f := newFixture(t)
	f.appendN(t, rand.New(rand.NewPCG(13, 14)), 50, 50, 0)
	all := f.readAll(t, names.MessageStream("acme"))
	got, err := f.s.Messages(context.Background(), "acme", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := expect(all, store.Query{})[:10]
	if d := diff(ids(got), want); d != "" {
		t.Fatal(d)
	}
	if got, err := f.s.Messages(context.Background(), "acme", 0); err != nil || len(got) != 0 {
		t.Fatalf("limit 0: %v, %v", got, err)
	}
	if _, err := f.s.Messages(context.Background(), "nobody", 0); !errors.Is(err, store.ErrNoStream) {
		t.Fatalf("limit 0, unknown tenant: %v", err)
	}
}

// BenchmarkQuery pages a 200,000-message stream: 10 gateways x 100 sensors x
// 2 message ids, so one sensor's filter matches 1 message in 1,000.
func BenchmarkQuery(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	const n = 200_000
	gw := func(i int) string { return fmt.Sprintf("TSGW06BEN%08d", i) }
	tuid := func(g, s int) string { return fmt.Sprintf("TSEN01BEN%08d", g*100+s) }
	start := time.Now()
	recs := make([]store.Record, 0, 5000)
	for i := range n {
		g, s := i%10, (i/10)%100
		recs = append(recs, store.Record{
			ID: fmt.Sprintf("b%07d", i), Gateway: gw(g), Tuid: tuid(g, s), TsmID: 12100 + (i/1000)%2*1000,
			ReceivedAt: time.Now(), Body: []byte(`{"tsmId":12100,"temp":21.5,"hum":40.25}`),
		})
		if len(recs) == cap(recs) {
			if _, err := f.s.Append(ctx, "acme", recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.Logf("stored %d messages in %v", n, time.Since(start))
	st := f.stream(b, names.MessageStream("acme"))
	at := func(seq uint64) time.Time {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			b.Fatal(err)
		}
		return m.Time
	}
	mid, late := at(n/2), at(n*3/4)
	sel := tuid(7, 42)
	cases := []struct {
		name string
		q    store.Query
		want int
	}{
		{"newest/tsmTuid", store.Query{Tuid: sel}, 100},
		{"oldest/tsmTuid", store.Query{Tuid: sel, Oldest: true}, 100},
		{"newest/tsmTuid+tsmId", store.Query{Tuid: sel, TsmID: 12100}, 100},
		{"oldest/tsmTuid+tsmId", store.Query{Tuid: sel, TsmID: 12100, Oldest: true}, 100},
		{"newest/tsmTuid+range", store.Query{Tuid: sel, From: mid, To: late}, 50},
		{"newest/gateway", store.Query{Gateway: gw(3)}, 100},
		{"oldest/gateway", store.Query{Gateway: gw(3), Oldest: true}, 100},
		{"newest/tsmId", store.Query{TsmID: 13100}, 100},
		{"newest/all", store.Query{}, 100},
		{"oldest/all", store.Query{Oldest: true}, 100},
		{"newest/all/range", store.Query{From: mid, To: late}, 100},
		{"oldest/all/range", store.Query{From: mid, To: late, Oldest: true}, 100},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			c.q.Limit = 100
			for b.Loop() {
				p, err := f.s.QueryMessages(ctx, "acme", c.q)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Items) != c.want {
					b.Fatalf("%d items, want %d", len(p.Items), c.want)
				}
			}
		})
	}
}
