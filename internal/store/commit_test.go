package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/store"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// syncAlways starts an embedded JetStream that fsyncs every write, in dir
// (a new temporary directory when empty), and a group-committing store of
// tenant acme over it.
func syncAlways(t testing.TB, dir string) (*store.Store, *backbone.Backbone, *kms.Keyring) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	bb, keys := storetest.BackboneWith(t, backbone.Config{DataDir: dir, Replicas: 1, SyncAlways: true}, "acme")
	s := storetest.StoreOn(t, bb, keys, store.Config{GroupCommit: true}, "acme")
	t.Cleanup(s.Close)
	return s, bb, keys
}

// commits returns how many commits the store made and how many messages
// they held (iotransit_store_commit_batch_messages), and how many batches
// fell back to single publishes.
func commits(t testing.TB, s *store.Store) (count, messages, fallbacks uint64) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "iotransit_store_commit_batch_messages":
				count, messages = m.GetHistogram().GetSampleCount(), uint64(m.GetHistogram().GetSampleSum())
			case "iotransit_store_commit_fallbacks_total":
				fallbacks = uint64(m.GetCounter().GetValue())
			}
		}
	}
	return count, messages, fallbacks
}

// streamMessages reads the tenant's message stream in order.
func streamMessages(t testing.TB, s *store.Store, bb *backbone.Backbone) []store.Message {
	t.Helper()
	var msgs []store.Message
	for _, m := range storetest.Messages(t, bb, s, "acme") {
		msgs = append(msgs, m.Msg)
	}
	return msgs
}

func body(id string) string { return fmt.Sprintf(`{"id":%q}`, id) }

// TestGroupCommitConcurrentAppends: many goroutines, each keeping several
// appends in flight, against a server that fsyncs every write. Their
// records share commits (batches of more than one), every acknowledged
// record is stored exactly once with its content, each goroutine's records
// are stored in the order it appended them, and rejections are stored too.
func TestGroupCommitConcurrentAppends(t *testing.T) {
	s, bb, _ := syncAlways(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const (
		callers  = 24
		calls    = 25
		perCall  = 3
		inFlight = 4
	)
	var (
		mu       sync.Mutex
		failures []error
		acked    = map[string]bool{}
		rejected int
	)
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			var waiters []store.Waiter
			var ids [][]string
			settle := func() {
				w := waiters[0]
				res, err := w.Wait(ctx)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					failures = append(failures, err)
				case res.Stored != len(ids[0]) || res.Duplicates != 0:
					failures = append(failures, fmt.Errorf("caller %d: %+v for %d new records", g, res, len(ids[0])))
				default:
					for _, id := range ids[0] {
						acked[id] = true
					}
				}
				waiters, ids = waiters[1:], ids[1:]
			}
			for c := range calls {
				recs := make([]store.Record, perCall)
				var cid []string
				for i := range recs {
					id := fmt.Sprintf("g%02d-%03d", g, c*perCall+i)
					recs[i] = rec(id, body(id))
					cid = append(cid, id)
				}
				w, err := s.AppendAsync(ctx, "acme", recs)
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				waiters, ids = append(waiters, w), append(ids, cid)
				if c%5 == 0 { // a rejection now and then, with its own committer
					r := store.Rejected{Gateway: "TSGW06ACM00000001", ReceivedAt: time.Now(), Index: g*calls + c, Code: "thingsee.field_range", Reason: "r", Raw: []byte("{}")}
					if err := s.AppendRejected(ctx, "acme", []store.Rejected{r}); err != nil {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
					} else {
						mu.Lock()
						rejected++
						mu.Unlock()
					}
				}
				if len(waiters) == inFlight {
					settle()
				}
			}
			for len(waiters) > 0 {
				settle()
			}
		})
	}
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
	if len(acked) != callers*calls*perCall {
		t.Fatalf("%d records acknowledged, want %d", len(acked), callers*calls*perCall)
	}

	msgs := streamMessages(t, s, bb)
	seen := map[string]bool{}
	last := map[string]int{} // caller -> index of its newest record seen
	for _, m := range msgs {
		if seen[m.ID] {
			t.Errorf("%s stored twice", m.ID)
		}
		seen[m.ID] = true
		if string(m.Message) != body(m.ID) {
			t.Errorf("%s stored as %s", m.ID, m.Message)
		}
		var g, i int
		if _, err := fmt.Sscanf(m.ID, "g%d-%d", &g, &i); err != nil {
			t.Fatalf("stored id %q: %v", m.ID, err)
		}
		caller := fmt.Sprint(g)
		if prev, ok := last[caller]; ok && i <= prev {
			t.Errorf("caller %d: record %d stored after record %d", g, i, prev)
		}
		last[caller] = i
	}
	for id := range acked {
		if !seen[id] {
			t.Errorf("%s acknowledged but not stored", id)
		}
	}
	if len(msgs) != len(acked) {
		t.Errorf("%d stored, %d acknowledged", len(msgs), len(acked))
	}
	got, err := s.RejectedMessages(ctx, "acme", store.MaxLimit)
	if err != nil || len(got) != rejected {
		t.Errorf("%d rejections stored (%v), want %d", len(got), err, rejected)
	}

	count, messages, fallbacks := commits(t, s)
	t.Logf("%d messages and rejections in %d commits, %d fallbacks", messages, count, fallbacks)
	if want := uint64(len(msgs) + rejected); messages != want {
		t.Errorf("commits hold %d messages, want %d", messages, want)
	}
	if count == 0 || messages <= count {
		t.Errorf("%d messages in %d commits: no batch held more than one", messages, count)
	}
	if fallbacks != 0 {
		t.Errorf("%d batches fell back with only new records", fallbacks)
	}
}

// TestGroupCommitFallsBackOnDuplicate: a batch holding a record whose
// content id is already stored (a resend), or one record twice, is refused
// by the server as a whole; it is split in halves down to fewer than
// minBatch records, which are published one by one: the resend is stored
// once and counted as a duplicate, the others are stored, all in order, and
// the halves without a resend are still committed as batches.
func TestGroupCommitFallsBackOnDuplicate(t *testing.T) {
	s, bb, _ := syncAlways(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.Append(ctx, "acme", []store.Record{rec("a", body("a"))}); err != nil {
		t.Fatal(err)
	}
	many := make([]string, 0, 41) // 40 new ones, the resend at index 25
	for i := range 40 {
		if i == 25 {
			many = append(many, "a")
		}
		many = append(many, fmt.Sprintf("m%02d", i))
	}
	tests := []struct {
		name       string
		ids        []string
		stored     int
		duplicates int
		commits    uint64 // made for this append
		fallbacks  uint64 // batches refused
	}{
		// Refused, then [b c] and [a d e] one by one.
		{name: "resend inside a batch", ids: []string{"b", "c", "a", "d", "e"}, stored: 4, duplicates: 1, commits: 4, fallbacks: 1},
		// Refused, then [f g] and [h f i] one by one.
		{name: "the same record twice in one batch", ids: []string{"f", "g", "h", "f", "i"}, stored: 4, duplicates: 1, commits: 4, fallbacks: 1},
		{name: "a new batch after the fallback", ids: []string{"j", "k", "l", "m", "n"}, stored: 5, commits: 1},
		{name: "too few for a batch", ids: []string{"o", "a", "p"}, stored: 2, duplicates: 1, commits: 2},
		// [0,41) refused: [0,20) a batch; [20,41) refused: [20,30)
		// refused: [20,25) a batch, [25,30) refused: [25,27) and [27,30)
		// one by one (the resend stores nothing); [30,41) a batch.
		{name: "one resend among many", ids: many, stored: 40, duplicates: 1, commits: 7, fallbacks: 4},
	}
	var want []string // the stream: each id once, in the order first appended
	seen := map[string]bool{"a": true}
	want = append(want, "a")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var recs []store.Record
			for _, id := range tc.ids {
				recs = append(recs, rec(id, body(id)))
				if !seen[id] {
					seen[id] = true
					want = append(want, id)
				}
			}
			count0, _, fallbacks0 := commits(t, s)
			// One call queues its records together: an idle committer
			// takes them as one batch (if there are minBatch).
			res, err := s.Append(ctx, "acme", recs)
			if err != nil {
				t.Fatal(err)
			}
			if res.Stored != tc.stored || res.Duplicates != tc.duplicates {
				t.Errorf("result %+v, want %d stored and %d duplicates", res, tc.stored, tc.duplicates)
			}
			count, _, fallbacks := commits(t, s)
			if count-count0 != tc.commits || fallbacks-fallbacks0 != tc.fallbacks {
				t.Errorf("%d commits and %d batches refused, want %d and %d", count-count0, fallbacks-fallbacks0, tc.commits, tc.fallbacks)
			}
			var got []string
			for _, m := range streamMessages(t, s, bb) {
				if string(m.Message) != body(m.ID) {
					t.Errorf("%s stored as %s", m.ID, m.Message)
				}
				got = append(got, m.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("stream holds %v, want %v", got, want)
			}
		})
	}
}

// TestGroupCommitClosedBackbone: appends in flight when the connection to
// JetStream closes settle (none hangs); those acknowledged are stored (read
// back after a restart on the same data directory), the others fail; and
// appends after that fail.
func TestGroupCommitClosedBackbone(t *testing.T) {
	dir := t.TempDir()
	s, bb, _ := syncAlways(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const callers = 16
	var (
		ta   tally
		once sync.Once
		wg   sync.WaitGroup
	)
	for g := range callers {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("g%02d-%05d", g, i)
				stored, problem := appendOne(ctx, s, id, 20*time.Second)
				n := ta.add(id, stored, problem)
				if !stored {
					return
				}
				if n == 200 {
					once.Do(bb.Close) // while the others keep appending
				}
			}
		})
	}
	wg.Wait()
	if ta.failed == 0 {
		t.Fatal("no append failed after the backbone closed")
	}
	if _, err := s.Append(ctx, "acme", []store.Record{rec("late", body("late"))}); err == nil {
		t.Error("an append after the backbone closed succeeded")
	}
	s2, bb2, _ := syncAlways(t, dir)
	ta.check(t, streamMessages(t, s2, bb2))
}

// TestGroupCommitClose: Close fails what is still queued (its Waiters
// report the failure, none reports success without a stored record), and
// appends after Close fail with ErrClosed.
func TestGroupCommitClose(t *testing.T) {
	s, bb, _ := syncAlways(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var waiters []store.Waiter
	var ids []string
	for i := range 300 {
		id := fmt.Sprintf("c%03d", i)
		w, err := s.AppendAsync(ctx, "acme", []store.Record{rec(id, body(id))})
		if err != nil {
			t.Fatal(err)
		}
		waiters, ids = append(waiters, w), append(ids, id)
	}
	s.Close()
	if _, err := s.AppendAsync(ctx, "acme", []store.Record{rec("late", body("late"))}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("append after Close: %v, want ErrClosed", err)
	}
	if _, err := s.AppendRejectedAsync(ctx, "acme", []store.Rejected{{Gateway: "TSGW06ACM00000001", Code: "x", Raw: []byte("{}")}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("rejection after Close: %v, want ErrClosed", err)
	}
	have := map[string]bool{}
	for _, m := range streamMessages(t, s, bb) {
		have[m.ID] = true
	}
	ok := 0
	for i, w := range waiters {
		if !w.Ready() {
			t.Fatalf("%s: not settled after Close", ids[i])
		}
		res, err := w.Wait(ctx)
		switch {
		case err == nil && res.Stored == 1:
			ok++
			if !have[ids[i]] {
				t.Errorf("%s acknowledged but not stored", ids[i])
			}
		case err == nil:
			t.Errorf("%s: %+v and no error", ids[i], res)
		case !errors.Is(err, store.ErrClosed):
			t.Errorf("%s: %v, want ErrClosed", ids[i], err)
		}
	}
	t.Logf("%d of %d stored before Close", ok, len(waiters))
}

// writeModes are the store's two write modes, each with a store of tenant
// acme: one publish per record, and group commit against a server that
// fsyncs every write.
var writeModes = []struct {
	name  string
	store func(t *testing.T) (*store.Store, *backbone.Backbone)
}{
	{name: "per record", store: func(t *testing.T) (*store.Store, *backbone.Backbone) { return newStore(t) }},
	{name: "group commit", store: func(t *testing.T) (*store.Store, *backbone.Backbone) {
		s, bb, _ := syncAlways(t, "")
		return s, bb
	}},
}

// TestStoreModes runs the store's contract under both write modes: one
// publish per record, and group commit against a server that fsyncs every
// write.
func TestStoreModes(t *testing.T) {
	for _, mode := range writeModes {
		t.Run(mode.name, func(t *testing.T) {
			s, bb := mode.store(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg, err := bb.JS.Stream(ctx, names.MessageStream("acme"))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := cfg.CachedInfo().Config.AllowAtomicPublish, mode.name == "group commit"; got != want {
				t.Errorf("AllowAtomicPublish %v, want %v", got, want)
			}
			res, err := s.Append(ctx, "acme", []store.Record{rec("a", `{"n":1}`), rec("b", `{"n":2}`), rec("a", `{"n":1}`)})
			if err != nil || res.Stored != 2 || res.Duplicates != 1 {
				t.Errorf("append: %+v, %v; want 2 stored and 1 duplicate", res, err)
			}
			if _, err := s.Append(ctx, "nobody", []store.Record{rec("x", "{}")}); err == nil {
				t.Error("append to a tenant without stream succeeded")
			}
			if err := bb.JS.DeleteStream(ctx, names.RejectedStream("acme")); err != nil {
				t.Fatal(err)
			}
			w, err := s.AppendRejectedAsync(ctx, "acme", []store.Rejected{{Gateway: "TSGW06ACM00000001", Code: "x", Raw: []byte("{}")}})
			if err == nil {
				_, err = w.Wait(ctx)
			}
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("rejection to a deleted stream: %v, want a failure", err)
			}
			if _, err := bb.JS.Stream(ctx, names.RejectedStream("acme")); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("rejected stream: %v", err)
			}
		})
	}
}
