package bench

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/thingsee"
)

func TestScheduleAt(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := Schedule{Start: start, Rate: 1000, Gateways: 4}
	// Gateway g's j-th publish is publish j*4+g of the run, 1 ms apart.
	for _, tc := range []struct {
		g, j int
		want time.Duration
	}{
		{0, 0, 0}, {1, 0, time.Millisecond}, {3, 0, 3 * time.Millisecond},
		{0, 1, 4 * time.Millisecond}, {2, 5, 22 * time.Millisecond},
	} {
		if got := s.At(tc.g, tc.j).Sub(start); got != tc.want {
			t.Errorf("At(%d, %d) = start+%v, want start+%v", tc.g, tc.j, got, tc.want)
		}
	}
	// Merged over gateways, the due times are evenly 1/Rate apart and
	// each gateway's are Gateways/Rate apart.
	s = Schedule{Start: start, Rate: 3000, Gateways: 7}
	var all []time.Time
	for g := range s.Gateways {
		for j := range 100 {
			at := s.At(g, j)
			if j > 0 {
				if d := at.Sub(s.At(g, j-1)); d < 2333*time.Microsecond-time.Microsecond || d > 2333*time.Microsecond+time.Microsecond {
					t.Fatalf("gateway %d: publishes %d and %d are %v apart, want 7/3000 s", g, j-1, j, d)
				}
			}
			all = append(all, at)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Before(all[j]) })
	for i := 1; i < len(all); i++ {
		if d := all[i].Sub(all[i-1]); d < 333*time.Microsecond || d > 334*time.Microsecond {
			t.Fatalf("publishes %d and %d of the run are %v apart, want 1/3000 s", i-1, i, d)
		}
	}
}

func TestScheduleCount(t *testing.T) {
	start := time.Unix(1700000000, 0)
	for _, s := range []Schedule{
		{Start: start, Rate: 1000, Gateways: 4},
		{Start: start, Rate: 3000, Gateways: 7},
		{Start: start, Rate: 0.5, Gateways: 3},
		{Start: start, Rate: 12345.6, Gateways: 50},
	} {
		for _, d := range []time.Duration{0, time.Nanosecond, time.Millisecond, 7 * time.Millisecond, time.Second, 3*time.Second + 17*time.Microsecond} {
			end := start.Add(d)
			total := 0
			for g := range s.Gateways {
				n := s.Count(g, end)
				// Count is exactly the number of due times before end.
				if n > 0 && !s.At(g, n-1).Before(end) {
					t.Fatalf("%+v: Count(%d, +%v) = %d, but publish %d is due at +%v", s, g, d, n, n-1, s.At(g, n-1).Sub(start))
				}
				if s.At(g, n).Before(end) {
					t.Fatalf("%+v: Count(%d, +%v) = %d, but publish %d is due at +%v", s, g, d, n, n, s.At(g, n).Sub(start))
				}
				total += n
			}
			// In total, Rate per second (rounded up: publish 0 is due at +0).
			want := d.Seconds() * s.Rate
			if float64(total) < want-1 || float64(total) > want+1 {
				t.Errorf("%+v: %d publishes due in %v, want about %g", s, total, d, want)
			}
		}
	}
	if n := (Schedule{Start: start, Rate: 100, Gateways: 2}).Count(0, start.Add(-time.Second)); n != 0 {
		t.Errorf("Count before the start = %d", n)
	}
}

// fakePublisher answers every publish after delay, counting what it sees.
type fakePublisher struct {
	delay    time.Duration
	reason   byte
	err      error
	mu       sync.Mutex
	sends    []time.Time
	inflight atomic.Int64
	peak     atomic.Int64
	closed   chan struct{}
}

func newFake(delay time.Duration) *fakePublisher {
	return &fakePublisher{delay: delay, closed: make(chan struct{})}
}

func (f *fakePublisher) publish(ctx context.Context, payload []byte) (byte, error) {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	f.mu.Lock()
	f.sends = append(f.sends, time.Now())
	f.mu.Unlock()
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return f.reason, f.err
}
func (f *fakePublisher) done() <-chan struct{} { return f.closed }
func (f *fakePublisher) close() error          { return nil }

func runFakes(t *testing.T, cfg Config, fakes ...*fakePublisher) *Result {
	t.Helper()
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	pubs := make([]publisher, len(fakes))
	serials := make([]string, len(fakes))
	for i, f := range fakes {
		pubs[i] = f
		serials[i] = "TSGW06BNC0000000" + string(rune('0'+i))
	}
	return run(context.Background(), pubs, serials, cfg, 0)
}

// TestOpenLoopKeepsTheRate: a fast server gets exactly the scheduled load,
// and latency is the server's answer time.
func TestOpenLoopKeepsTheRate(t *testing.T) {
	a, b := newFake(time.Millisecond), newFake(time.Millisecond)
	before := time.Now() // the schedule starts at or after this
	res := runFakes(t, Config{Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond, Rate: 400}, a, b)
	if res.Mode != "open-loop" || res.Errors.Total != 0 || res.Missed != 0 {
		t.Fatalf("result %+v", res)
	}
	// 400/s for 0.5 s measured: 200 publishes (±1 at the window edges).
	if res.Sent < 199 || res.Sent > 201 || res.Acked != res.Sent {
		t.Errorf("sent %d, acked %d in the window, want 200", res.Sent, res.Acked)
	}
	if total := len(a.sends) + len(b.sends); total < 239 || total > 241 {
		t.Errorf("%d publishes in 0.6 s at 400/s, want 240", total)
	}
	if res.PublishesPerSecond < 398 || res.PublishesPerSecond > 402 {
		t.Errorf("%g publishes/s, want 400", res.PublishesPerSecond)
	}
	// The bounds are loose on purpose: a busy CI machine stalls goroutines
	// for tens of milliseconds; what this guards is the order of magnitude.
	if res.Latency.P50Ms < 1 || res.Latency.P50Ms > 50 {
		t.Errorf("p50 %g ms, want about 1 ms", res.Latency.P50Ms)
	}
	// Each gateway sent every 5 ms, never ahead of its due time: a burst
	// would put publish i before start + i*5 ms. (Measured from before the
	// run, not from the first send, which a busy CI machine may delay: the
	// sends after it then catch up, as an open loop must.)
	for _, f := range []*fakePublisher{a, b} {
		for i := 1; i < len(f.sends); i++ {
			if d := f.sends[i].Sub(before); d < time.Duration(i)*5*time.Millisecond-time.Millisecond {
				t.Fatalf("send %d at +%v after the start: ahead of the schedule (5 ms apart)", i, d)
			}
		}
	}
}

// TestOpenLoopNoCoordinatedOmission: a server that answers in 20 ms, with
// one publish in flight per gateway, can take 50/s per gateway; offered
// 100/s per gateway it falls further behind with every publish. A closed
// loop would report 20 ms; the open loop must report the growing delay
// (measured from the due time) and the publishes it never got to send.
func TestOpenLoopNoCoordinatedOmission(t *testing.T) {
	a, b := newFake(20*time.Millisecond), newFake(20*time.Millisecond)
	res := runFakes(t, Config{Duration: 600 * time.Millisecond, Rate: 200, MaxInflight: 1, LateGrace: time.Millisecond}, a, b)
	if a.peak.Load() != 1 || b.peak.Load() != 1 {
		t.Errorf("in flight at most %d and %d, want 1", a.peak.Load(), b.peak.Load())
	}
	// About 60 of 120 due publishes were sent; the rest are missed.
	if res.Sent+res.Missed < 118 || res.Sent+res.Missed > 122 {
		t.Errorf("sent %d + missed %d, want the 120 due", res.Sent, res.Missed)
	}
	if res.Missed < 40 {
		t.Errorf("missed %d, want about 60", res.Missed)
	}
	// The last publishes sent were due ~300 ms before they were sent.
	if res.Latency.MaxMs < 200 {
		t.Errorf("max latency %g ms: the delay behind the schedule is hidden", res.Latency.MaxMs)
	}
	if res.Latency.P50Ms < 100 {
		t.Errorf("p50 %g ms: want well above the 20 ms service time", res.Latency.P50Ms)
	}
	if res.PublishesPerSecond > 110 {
		t.Errorf("%g publishes/s acked, more than the fake can answer", res.PublishesPerSecond)
	}
}

// TestOpenLoopInflight: with room for many in flight, a slow server is
// offered the full rate and latency stays its answer time.
func TestOpenLoopInflight(t *testing.T) {
	a := newFake(30 * time.Millisecond)
	res := runFakes(t, Config{Duration: 400 * time.Millisecond, Rate: 500}, a)
	if res.Missed != 0 || res.Sent < 199 || res.Sent > 201 {
		t.Errorf("sent %d, missed %d, want 200 and 0", res.Sent, res.Missed)
	}
	if p := a.peak.Load(); p < 10 {
		t.Errorf("peak in flight %d, want about 15", p)
	}
	if res.Latency.P50Ms > 100 {
		t.Errorf("p50 %g ms, want about 30", res.Latency.P50Ms)
	}
}

func TestClosedLoop(t *testing.T) {
	a, b := newFake(5*time.Millisecond), newFake(5*time.Millisecond)
	res := runFakes(t, Config{Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond}, a, b)
	if a.peak.Load() != 1 || b.peak.Load() != 1 {
		t.Errorf("in flight at most %d and %d, want 1 (closed loop)", a.peak.Load(), b.peak.Load())
	}
	// Two gateways at ~5 ms each: about 400/s.
	if res.PublishesPerSecond < 200 || res.PublishesPerSecond > 420 {
		t.Errorf("%g publishes/s, want about 400", res.PublishesPerSecond)
	}
	if res.TotalAcked <= res.Acked {
		t.Errorf("total acked %d not above measured %d: the warmup was not excluded", res.TotalAcked, res.Acked)
	}
	if res.Latency.P50Ms < 5 || res.Latency.P50Ms > 50 {
		t.Errorf("p50 %g ms, want about 5", res.Latency.P50Ms)
	}
}

func TestRunCountsErrors(t *testing.T) {
	refused := newFake(time.Millisecond)
	refused.reason = 0x97
	timeout := newFake(time.Millisecond)
	timeout.err = context.DeadlineExceeded
	other := newFake(time.Millisecond)
	other.err = errors.New("connection reset")
	ok := newFake(time.Millisecond)
	ok.reason = 0x10 // mosquitto: no matching subscribers, a success
	res := runFakes(t, Config{Duration: 100 * time.Millisecond, Rate: 200}, refused, timeout, other, ok)
	// 20 publishes due in 100 ms, 5 per gateway (one may be missed on a
	// loaded machine).
	e := res.Errors
	if e.Refused < 4 || e.Timeouts < 4 || e.Other < 4 || e.Total != e.Refused+e.Timeouts+e.Other || e.Total > 15 {
		t.Errorf("errors %+v, want 5 of each kind", e)
	}
	if res.Acked < 4 || res.Acked > 5 || res.ReasonCodes["0x10"] != res.Acked || res.ReasonCodes["0x97"] != e.Refused {
		t.Errorf("acked %d, reason codes %v", res.Acked, res.ReasonCodes)
	}
	if len(e.Samples) == 0 {
		t.Error("no error samples")
	}
}

// TestPayloads: every payload is valid for the server's Thingsee validator
// and no message repeats (the server would store a repeat once).
func TestPayloads(t *testing.T) {
	v := thingsee.NewValidator(thingsee.Options{})
	for _, kind := range []PayloadKind{PayloadTypical, PayloadArray10} {
		const gw = "TSGW06BNC00000007"
		g := newPayloadGen(kind, 7, gw)
		ids := map[string]bool{}
		now := time.Now()
		for range 3000 {
			res := v.Validate(g.next(now), gw)
			if len(res.Rejected) > 0 || len(res.Accepted) != kind.Messages() {
				t.Fatalf("%s: %d accepted, rejected %+v", kind, len(res.Accepted), res.Rejected)
			}
			for _, m := range res.Accepted {
				id := m.ContentID(gw)
				if ids[id] {
					t.Fatalf("%s: message repeats: %s", kind, m.Raw)
				}
				ids[id] = true
			}
		}
		p := g.next(now)
		switch kind {
		case PayloadTypical:
			if len(p) < 130 || len(p) > 180 {
				t.Errorf("typical payload is %d bytes, want about 150: %s", len(p), p)
			}
		case PayloadArray10:
			if p[0] != '[' || len(p) < 1300 {
				t.Errorf("array10 payload: %s", p)
			}
		}
	}
	if _, err := ParsePayloadKind("huge"); err == nil {
		t.Error("ParsePayloadKind accepted an unknown kind")
	}
}
