package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

func newStore(t testing.TB) (*store.Store, *backbone.Backbone) {
	t.Helper()
	s, bb, _ := storetest.Store(t, "acme")
	return s, bb
}

func rec(id string, body string) store.Record {
	return store.Record{ID: id, Gateway: "TSGW06ACM00000001", Tuid: "TSEN01ABC12345678", TsmID: 12100, ReceivedAt: time.Now(), Body: []byte(body)}
}

func TestStoreSealsPayloadsAtRest(t *testing.T) {
	s, bb := newStore(t)
	ctx := context.Background()
	secret := `{"tsmId":12100,"temp":21.123456}`
	if _, err := s.Append(ctx, "acme", []store.Record{rec("id1", secret)}); err != nil {
		t.Fatal(err)
	}
	st, err := bb.JS.Stream(ctx, names.MessageStream("acme"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw.Data, []byte("21.123456")) {
		t.Fatal("the stored message is plaintext")
	}
	msgs, err := s.Messages(ctx, "acme", 10)
	if err != nil || len(msgs) != 1 || string(msgs[0].Message) != secret || msgs[0].ID != "id1" {
		t.Fatalf("read back %+v, %v", msgs, err)
	}
}

func TestStoreAppendsOncePerContentID(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	res, err := s.Append(ctx, "acme", []store.Record{rec("a", `{"n":1}`), rec("b", `{"n":2}`), rec("a", `{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored != 2 || res.Duplicates != 1 {
		t.Fatalf("result %+v, want 2 stored and 1 duplicate", res)
	}
	msgs, err := s.Messages(ctx, "acme", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].ID != "b" || msgs[1].ID != "a" {
		t.Fatalf("messages %+v, want b then a (newest first)", msgs)
	}
}

func TestStoreRejected(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	r := store.Rejected{Gateway: "TSGW06ACM00000001", ReceivedAt: time.Now().UTC(), Index: 2, Code: "thingsee.field_range", Field: "temp", Reason: "temp: 120 is out of range", Raw: []byte(`{"temp":120}`)}
	for i := 0; i < 2; i++ { // a resent publish stores its rejection once
		if err := s.AppendRejected(ctx, "acme", []store.Rejected{r}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.RejectedMessages(ctx, "acme", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Code != r.Code || got[0].Index != 2 || string(got[0].Raw) != string(r.Raw) {
		t.Fatalf("rejected %+v", got)
	}
}

func TestStoreUnknownTenant(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Messages(context.Background(), "nobody", 10); !errors.Is(err, store.ErrNoStream) {
		t.Fatalf("messages of an unknown tenant: %v, want ErrNoStream", err)
	}
	if _, err := s.Append(context.Background(), "nobody", []store.Record{rec("x", "{}")}); err == nil {
		t.Fatal("append to a tenant without stream succeeded")
	}
}

// TestStoreAppendAsyncWaitsInOrder: several AppendAsync calls in flight at
// once each count their own records once JetStream acknowledged them, a
// duplicate among them counts as one, and a write to a stream that no
// longer exists fails its own Waiter only.
func TestStoreAppendAsyncWaitsInOrder(t *testing.T) {
	s, bb := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bb.JS.DeleteStream(ctx, names.RejectedStream("acme")); err != nil {
		t.Fatal(err)
	}
	rejected := store.Rejected{Gateway: "TSGW06ACM00000001", ReceivedAt: time.Now(), Code: "thingsee.field_range", Reason: "r", Raw: []byte("{}")}
	tests := []struct {
		name       string
		write      func() (store.Waiter, error)
		stored     int
		duplicates int
		fails      bool
	}{
		{name: "two new", write: func() (store.Waiter, error) {
			return s.AppendAsync(ctx, "acme", []store.Record{rec("p1", `{"n":1}`), rec("p2", `{"n":2}`)})
		}, stored: 2},
		{name: "rejected stream gone", write: func() (store.Waiter, error) {
			return s.AppendRejectedAsync(ctx, "acme", []store.Rejected{rejected})
		}, fails: true},
		{name: "one new one repeated", write: func() (store.Waiter, error) {
			return s.AppendAsync(ctx, "acme", []store.Record{rec("p3", `{"n":3}`), rec("p1", `{"n":1}`)})
		}, stored: 1, duplicates: 1},
		{name: "nothing", write: func() (store.Waiter, error) { return s.AppendAsync(ctx, "acme", nil) }},
	}
	waiters := make([]store.Waiter, len(tests))
	for i, tc := range tests {
		w, err := tc.write()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		waiters[i] = w
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := waiters[i]
			tu.Eventually(t, 5*time.Second, time.Millisecond, func() error {
				if !w.Ready() {
					return errors.New("not ready")
				}
				return nil
			})
			res, err := w.Wait(ctx)
			if (err != nil) != tc.fails {
				t.Fatalf("wait: %v, want failure %v", err, tc.fails)
			}
			if res.Stored != tc.stored || res.Duplicates != tc.duplicates {
				t.Errorf("result %+v, want %d stored and %d duplicates", res, tc.stored, tc.duplicates)
			}
		})
	}
	msgs, err := s.Messages(ctx, "acme", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Errorf("stored %d messages, want 3", len(msgs))
	}
}

// TestStoreEmptyAppendWithEndedContext: an append of nothing is settled at
// once, so waiting for it with a context that has already ended returns
// its empty result (it used to panic, half the time, closing the Waiter's
// channel a second time).
func TestStoreEmptyAppendWithEndedContext(t *testing.T) {
	s, _ := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name   string
		append func() error
	}{
		{name: "messages", append: func() error {
			res, err := s.Append(ctx, "acme", nil)
			if res != (store.AppendResult{}) {
				return fmt.Errorf("result %+v", res)
			}
			return err
		}},
		{name: "rejections", append: func() error { return s.AppendRejected(ctx, "acme", nil) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 100 { // the Waiter's select picks the ended context half the time
				if err := tc.append(); err != nil {
					t.Fatalf("append of nothing: %v", err)
				}
			}
		})
	}
}

// appendOne appends the record id (body(id)) to acme's stream and waits
// for it at most wait. It reports whether the record was stored, and a
// problem when the Waiter hung or reported success without exactly one
// stored record. It scribbles over the record's body once AppendAsync
// returned, as a caller reusing its buffers may.
func appendOne(ctx context.Context, s *store.Store, id string, wait time.Duration) (stored bool, problem error) {
	r := rec(id, body(id))
	w, err := s.AppendAsync(ctx, "acme", []store.Record{r})
	for i := range r.Body { // the caller's again once AppendAsync returned
		r.Body[i] = '#'
	}
	if err != nil {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	res, err := w.Wait(wctx)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return false, fmt.Errorf("%s: the Waiter hung", id)
	case err != nil:
		return false, nil
	case res.Stored != 1:
		return false, fmt.Errorf("%s: %+v", id, res)
	}
	return true, nil
}

// tally gathers the outcomes of appendOne across goroutines.
type tally struct {
	mu       sync.Mutex
	acked    []string
	failed   int
	problems []error
}

// add records one outcome of appendOne and returns how many records were
// stored so far.
func (ta *tally) add(id string, stored bool, problem error) int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	switch {
	case problem != nil:
		ta.problems = append(ta.problems, problem)
	case !stored:
		ta.failed++
	default:
		ta.acked = append(ta.acked, id)
	}
	return len(ta.acked)
}

// stored returns how many records were stored so far.
func (ta *tally) stored() int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return len(ta.acked)
}

// check reports the problems seen, and any record of the stream msgs
// stored twice, stored with another body than its own, or reported stored
// but missing from it.
func (ta *tally) check(t *testing.T, msgs []store.Message) {
	t.Helper()
	ta.mu.Lock()
	defer ta.mu.Unlock()
	for _, err := range ta.problems {
		t.Error(err)
	}
	have := map[string]bool{}
	for _, m := range msgs {
		if have[m.ID] {
			t.Errorf("%s stored twice", m.ID)
		}
		have[m.ID] = true
		if string(m.Message) != body(m.ID) {
			t.Errorf("%s stored as %s", m.ID, m.Message)
		}
	}
	for _, id := range ta.acked {
		if !have[id] {
			t.Errorf("%s reported stored but not in the stream", id)
		}
	}
	t.Logf("%d reported stored, %d failed, %d in the stream", len(ta.acked), ta.failed, len(have))
}
