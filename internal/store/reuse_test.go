package store_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// TestStoreAppendCallerReusesBuffers holds AppendAsync and
// AppendRejectedAsync to their contract that they keep neither the records
// nor their bodies (nor a rejection's raw bytes) once they returned, under
// both write modes: many goroutines, each keeping several calls in flight,
// scribble over the bodies, raw bytes and record slices they handed over as
// soon as each call returns (as the ingest's pooled upload buffers do), and
// every stored message and rejection is then read back and compared with
// what was sent: subject, headers and body. A write that queued or
// published a reference to the caller's bytes, or to a buffer of the
// store's own pool reused for the next record, stores the scribble or
// another record's bytes. Some calls resend an earlier record, so that
// group commit's refused batches are split and retried with the same
// writes.
func TestStoreAppendCallerReusesBuffers(t *testing.T) {
	for _, mode := range writeModes {
		t.Run(mode.name, func(t *testing.T) {
			s, bb := mode.store(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second*tu.Slowdown())
			defer cancel()
			const (
				callers  = 12
				calls    = 20
				perCall  = 4
				inFlight = 4
			)
			type sent struct {
				rec  store.Record
				body string
			}
			var (
				mu       sync.Mutex
				want     = map[string]sent{}   // content id -> record as sent
				wantRej  = map[string]string{} // gateway/index -> raw as sent
				failures []error
			)
			fail := func(err error) {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
			}
			var wg sync.WaitGroup
			for g := range callers {
				wg.Go(func() {
					gw := fmt.Sprintf("TSGW06ACM%08d", g)
					// One body buffer and one record slice, reused for
					// every call, as the ingest's pooled upload does.
					var bodies []byte
					recs := make([]store.Record, perCall)
					raw := make([]byte, 0, 64)
					var waiters []store.Waiter
					for c := range calls {
						bodies = bodies[:0]
						for i := range recs {
							n := c*perCall + i
							if i == 0 && c%5 == 4 {
								// A resend of the previous call's first
								// record: under group commit its batch is
								// refused and split, and the halves retried.
								n = (c - 1) * perCall
							}
							tuid := fmt.Sprintf("TSEN%02d%011d", g, n)
							start := len(bodies)
							bodies = fmt.Appendf(bodies, `{"g":%d,"n":%d,"pad":%q}`, g, n, bytes.Repeat([]byte{'a' + byte(n%26)}, n%40))
							recs[i] = store.Record{
								ID: fmt.Sprintf("g%02d-%04d", g, n), Gateway: gw, Tuid: tuid, TsmID: 1000*(g+1) + n,
								ReceivedAt: time.Unix(0, int64(1_700_000_000_000_000_000+g*1_000_000+n)), Body: bodies[start:len(bodies):len(bodies)],
							}
						}
						mu.Lock()
						for _, r := range recs {
							want[r.ID] = sent{rec: r, body: string(r.Body)}
						}
						mu.Unlock()
						w, err := s.AppendAsync(ctx, "acme", recs)
						if err != nil {
							fail(err)
							return
						}
						waiters = append(waiters, w)
						// The call returned: its buffers are the caller's again.
						for i := range bodies {
							bodies[i] = '#'
						}
						clear(recs)

						raw = fmt.Appendf(raw[:0], `{"g":%d,"c":%d}`, g, c)
						mu.Lock()
						wantRej[gw+"/"+strconv.Itoa(c)] = string(raw)
						mu.Unlock()
						rw, err := s.AppendRejectedAsync(ctx, "acme", []store.Rejected{{Gateway: gw, ReceivedAt: time.Now(), Index: c,
							Code: "thingsee.field_range", Reason: "r", Raw: raw}})
						if err != nil {
							fail(err)
							return
						}
						waiters = append(waiters, rw)
						for i := range raw {
							raw[i] = '#'
						}
						for len(waiters) >= 2*inFlight {
							if _, err := waiters[0].Wait(ctx); err != nil {
								fail(err)
							}
							waiters = waiters[1:]
						}
					}
					for _, w := range waiters {
						if _, err := w.Wait(ctx); err != nil {
							fail(err)
						}
					}
				})
			}
			wg.Wait()
			for _, err := range failures {
				t.Error(err)
			}
			if t.Failed() {
				return
			}

			stored := storetest.Messages(t, bb, s, "acme")
			for _, sm := range stored {
				raw, m, seq := sm.Raw, sm.Msg, sm.Raw.Sequence
				w, ok := want[m.ID]
				if !ok {
					t.Errorf("message %d: content id %q was never sent", seq, m.ID)
					continue
				}
				r := w.rec
				checks := []struct{ what, got, want string }{
					{"subject", raw.Subject, names.Message("acme", r.Gateway, r.Tuid, r.TsmID)},
					{"body", string(m.Message), w.body},
					{jetstream.MsgIDHeader, raw.Header.Get(jetstream.MsgIDHeader), r.ID},
					{"Iot-Gateway", raw.Header.Get("Iot-Gateway"), r.Gateway},
					{"Iot-Tuid", raw.Header.Get("Iot-Tuid"), r.Tuid},
					{"Iot-Tsm-Id", raw.Header.Get("Iot-Tsm-Id"), strconv.Itoa(r.TsmID)},
					{"Iot-Received", raw.Header.Get("Iot-Received"), strconv.FormatInt(r.ReceivedAt.UnixNano(), 10)},
				}
				for _, c := range checks {
					if c.got != c.want {
						t.Errorf("%s: %s %q, sent %q", r.ID, c.what, c.got, c.want)
					}
				}
				for k, v := range raw.Header {
					if strings.HasPrefix(k, "Iot-") && len(v) != 1 || k == "Iot-Content-Id" || k == "Iot-Redriven" {
						t.Errorf("%s: header %s %q", r.ID, k, v)
					}
				}
			}
			if len(stored) != len(want) {
				t.Errorf("%d messages stored, %d sent", len(stored), len(want))
			}

			if mode.name == "group commit" {
				count, messages, fallbacks := commits(t, s)
				t.Logf("%d writes in %d commits, %d refused batches split or retried", messages, count, fallbacks)
			}

			rej, err := s.RejectedMessages(ctx, "acme", store.MaxLimit)
			if err != nil {
				t.Fatal(err)
			}
			if len(rej) != len(wantRej) {
				t.Errorf("%d rejections stored, %d sent", len(rej), len(wantRej))
			}
			for _, r := range rej {
				if w, ok := wantRej[r.Gateway+"/"+strconv.Itoa(r.Index)]; !ok || string(r.Raw) != w {
					t.Errorf("rejection %s/%d stored with raw %q, sent %q", r.Gateway, r.Index, r.Raw, w)
				}
			}
		})
	}
}
