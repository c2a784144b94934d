package forward_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// laneDevices returns a device whose lane (of n) no other device takes,
// then the others: every device of the list is in another lane than the
// first.
func laneDevices(t *testing.T, n, count int) []string {
	t.Helper()
	out := []string{"TSEN01LAN00000000"}
	slow := forward.LaneOf(out[0], n)
	for i := 1; len(out) < count && i < 1000; i++ {
		d := fmt.Sprintf("TSEN01LAN%08d", i)
		if forward.LaneOf(d, n) != slow {
			out = append(out, d)
		}
	}
	if len(out) < count {
		t.Fatalf("found %d devices", len(out))
	}
	return out
}

// publishTo sends count messages per device (one publish each, round
// robin), returning the bodies published in order.
func (e *env) publishTo(devs []string, count int) []string {
	e.t.Helper()
	var sent []string
	for range count {
		for _, d := range devs {
			m := fmt.Sprintf(`{"tsmId":13100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"%s","moveCount":%d}`, tsmTs.Add(1), d, e.next[d])
			e.next[d]++
			res, err := e.up.Publish(context.Background(), []byte(m), 1)
			if err != nil || res.ReasonCode != 0 {
				e.t.Fatalf("publish: %v %x", err, res.ReasonCode)
			}
			sent = append(sent, m)
		}
	}
	return sent
}

// accepted records the requests a receiver accepted (webhook-id and body).
type accepted struct {
	mu  sync.Mutex
	got []tu.Delivery
}

func (a *accepted) add(r *http.Request, body []byte) {
	a.mu.Lock()
	a.got = append(a.got, tu.Delivery{Header: r.Header.Clone(), Body: body})
	a.mu.Unlock()
}

// messages returns the accepted messages in arrival order, and how many
// times each was accepted under a webhook-id not seen before for it.
func (a *accepted) messages(t *testing.T) (order []map[string]any, once map[string]int) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := map[string]bool{}
	once = map[string]int{}
	seen := map[string]bool{}
	for _, d := range a.got {
		var batch []map[string]any
		if err := json.Unmarshal(d.Body, &batch); err != nil {
			t.Fatalf("body: %v", err)
		}
		dup := ids[d.Header.Get("webhook-id")]
		ids[d.Header.Get("webhook-id")] = true
		for _, m := range batch {
			k := thingseeKey(m)
			if !dup {
				once[k]++
			}
			if !seen[k] {
				seen[k] = true
				order = append(order, m)
			}
		}
	}
	return order, once
}

// total returns how many messages the receiver accepted, resends included.
func (a *accepted) total(t *testing.T) int {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, d := range a.got {
		var batch []json.RawMessage
		if err := json.Unmarshal(d.Body, &batch); err != nil {
			t.Fatal(err)
		}
		n += len(batch)
	}
	return n
}

func contains(body []byte, device string) bool {
	return bytes.Contains(body, []byte(`"tsmTuid":"`+device+`"`))
}

// TestForwardLanesKeepDeviceOrderPastASlowDevice: with 8 lanes, a device
// whose deliveries hang holds up only its own lane: the other devices'
// messages are delivered meanwhile, and every device's order is kept.
func TestForwardLanesKeepDeviceOrderPastASlowDevice(t *testing.T) {
	e := newEnv(t, nil)
	devs := laneDevices(t, 8, 6)
	slow := devs[0]
	gate := make(chan struct{})
	var acc accepted
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if contains(body, slow) {
			select {
			case <-gate:
			case <-r.Context().Done():
				return true
			}
		}
		acc.add(r, body)
		return false
	})
	id, _ := e.integration(map[string]any{"delivery": map[string]any{"concurrency": 8}, "batch": map[string]any{"maxMessages": 5}})
	if v := getView(t, e, id); v.Delivery.Concurrency != 8 {
		t.Fatalf("delivery %+v", v.Delivery)
	}
	sent := e.publishTo(devs, 4)
	others := len(sent) - 4
	tu.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
		got, _ := acc.messages(t)
		if len(got) < others {
			return fmt.Errorf("%d of the other devices' %d messages delivered", len(got), others)
		}
		return nil
	})
	got, _ := acc.messages(t)
	for _, m := range got {
		if m["tsmTuid"] == slow {
			t.Fatalf("the slow device's message was accepted before its gate opened: %v", m)
		}
	}
	close(gate)
	tu.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
		if got, _ = acc.messages(t); len(got) < len(sent) {
			return fmt.Errorf("%d of %d delivered", len(got), len(sent))
		}
		return nil
	})
	checkOrder(t, got)
	if len(got) != len(sent) {
		t.Fatalf("%d delivered, %d sent", len(got), len(sent))
	}
}

// TestForwardFailingLaneDeadLettersOnlyItsDevices: a device whose
// deliveries fail past the max age is dead-lettered; the devices of the
// other lanes are delivered, none of them dead-lettered.
func TestForwardFailingLaneDeadLettersOnlyItsDevices(t *testing.T) {
	e := newEnv(t, nil)
	devs := laneDevices(t, 8, 5)
	bad := devs[0]
	var acc accepted
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if contains(body, bad) {
			w.WriteHeader(503)
			return true
		}
		acc.add(r, body)
		return false
	})
	id, _ := e.integration(map[string]any{"delivery": map[string]any{"concurrency": 8}, "maxAge": "1s"})
	sent := e.publishTo(devs, 3)
	waitState(t, e, id, func(s forward.State) bool { return s.DeadLettered == 3 && s.Delivered == uint64(len(sent)-3) })
	// Once another lane delivers, the failure is over: dead letters wait.
	sent = append(sent, e.publishTo(devs[1:2], 1)...)
	v := waitState(t, e, id, func(s forward.State) bool { return s.Delivered == uint64(len(sent)-3) })
	if v.Health != "dead-letters" || v.DeadLetters != 3 {
		t.Errorf("health %q, dead letters %d, state %+v", v.Health, v.DeadLetters, v.State)
	}
	var dl struct{ Items []forward.DeadLetter }
	e.api.Do("GET", "/v1/tenants/"+tenant+"/integrations/"+id+"/dead-letters", e.api.Key(), nil).Decode(t, &dl)
	if len(dl.Items) != 3 {
		t.Fatalf("%d dead letters", len(dl.Items))
	}
	for _, d := range dl.Items {
		if !contains(d.Message, bad) || d.Reason != "HTTP 503" {
			t.Errorf("dead letter of another device or reason: %s %s", d.Reason, d.Message)
		}
	}
	got, _ := acc.messages(t)
	checkOrder(t, got)
	if len(got) != len(sent)-3 {
		t.Errorf("%d delivered, want %d", len(got), len(sent)-3)
	}
}

// TestForwardLanesRestartMidBatch: the node stops while one lane's batch
// is in flight and the others have delivered; after a restart on the same
// data, nothing is lost, every device's order holds among what was
// accepted, and a receiver that drops requests whose webhook-id it has
// seen gets every message exactly once (the interrupted batch keeps its
// id and its messages, and what the other lanes delivered is not sent
// again). The interrupted batch is the lane's first, or (busy) one that
// grew while the lane delivered the one before.
func TestForwardLanesRestartMidBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		busy bool
	}{
		{name: "first batch"},
		{name: "busy lane", busy: true},
	} {
		t.Run(tc.name, func(t *testing.T) { testLanesRestartMidBatch(t, tc.busy) })
	}
}

func testLanesRestartMidBatch(t *testing.T, busy bool) {
	dir := t.TempDir()
	e := newEnv(t, func(c *node.Config) { c.DataDir = dir })
	devs := laneDevices(t, 8, 6)
	slow := devs[0]
	var acc accepted
	var open sync.Mutex
	hold := true
	var heldIDs sync.Map // webhook-id → body of the slow lane's batch in flight
	gate := make(chan struct{})
	var slowSeen atomic.Int32
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if contains(body, slow) {
			open.Lock()
			h := hold
			open.Unlock()
			if busy && slowSeen.Add(1) == 1 { // the next batch grows meanwhile
				select {
				case <-gate:
				case <-r.Context().Done():
					return true
				}
				h = false
			}
			if h {
				heldIDs.Store(r.Header.Get("webhook-id"), body)
				<-r.Context().Done() // in flight until the node stops
				return true
			}
		}
		acc.add(r, body)
		return false
	})
	id, _ := e.integration(map[string]any{"delivery": map[string]any{"concurrency": 8}})
	var sent []string
	slowAccepted, slowSent := 0, 5
	if busy { // the lane's first batch is in flight before the others come
		slowAccepted, slowSent = 1, 6
		sent = e.publishTo(devs[:1], 1)
		tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
			if slowSeen.Load() == 0 {
				return fmt.Errorf("the slow lane's first batch has not arrived")
			}
			return nil
		})
	}
	sent = append(sent, e.publishTo(devs, 5)...)
	held := func() (ids []string, body []byte) {
		heldIDs.Range(func(k, v any) bool { ids, body = append(ids, k.(string)), v.([]byte); return true })
		return ids, body
	}
	// The other devices' messages delivered: the lanes were handed every
	// message before them, the slow lane its own (in stream order).
	othersDone := func() error {
		got, _ := acc.messages(t)
		others := 0
		for _, m := range got {
			if m["tsmTuid"] != slow {
				others++
			}
		}
		if others < len(sent)-slowSent {
			return fmt.Errorf("%d of the other devices' %d messages delivered", others, len(sent)-slowSent)
		}
		return nil
	}
	if busy {
		tu.Eventually(t, 15*time.Second, 50*time.Millisecond, othersDone)
	}
	close(gate)
	tu.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
		if ids, _ := held(); len(ids) == 0 {
			return fmt.Errorf("the slow lane's batch has not been tried")
		}
		return othersDone()
	})
	_ = e.up.Close()
	e.n.Close()
	before, heldBody := held()
	open.Lock()
	hold = false
	open.Unlock()

	e.restart(dir)
	var got []map[string]any
	var once map[string]int
	tu.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		if got, once = acc.messages(t); len(got) < len(sent) {
			return fmt.Errorf("%d of %d delivered", len(got), len(sent))
		}
		return nil
	})
	checkOrder(t, got)
	if len(got) != len(sent) {
		t.Fatalf("%d delivered, %d sent", len(got), len(sent))
	}
	for k, c := range once {
		if c != 1 {
			t.Errorf("message %s accepted %d times under new webhook-ids", k, c)
		}
	}
	if len(before) != 1 {
		t.Fatalf("the slow lane's batch in flight went out under %d webhook-ids", len(before))
	}
	var inFlight []map[string]any
	if err := json.Unmarshal(heldBody, &inFlight); err != nil {
		t.Fatal(err)
	}
	acc.mu.Lock()
	var first tu.Delivery // the slow lane's first batch after the restart
	n, delivered := 0, 0  // the slow lane's batches, and its messages delivered before the stop
	for _, d := range acc.got {
		if contains(d.Body, slow) {
			if n++; n > slowAccepted {
				first = d
				break
			}
			delivered = bytes.Count(d.Body, []byte(slow))
		}
	}
	acc.mu.Unlock()
	if busy && (len(inFlight) != slowSent-delivered || len(inFlight) < 2) {
		t.Errorf("the busy lane's batch in flight held %d messages, want the %d that came while it delivered", len(inFlight), slowSent-delivered)
	}
	if id := first.Header.Get("webhook-id"); id != before[0] || !bytes.Equal(first.Body, heldBody) {
		t.Errorf("the interrupted batch came back as %q with %s, not under its id %q with %s", id, first.Body, before[0], heldBody)
	}
	if v := waitState(t, e, id, func(s forward.State) bool { return s.Delivered >= uint64(len(sent)) }); v.Backlog != 0 {
		t.Errorf("backlog %d", v.Backlog)
	}
}

// TestForwardDeliveryConcurrencySetting: a webhook's delivery.concurrency
// defaults to 4 and takes 1 to 32; the other types take only 1.
func TestForwardDeliveryConcurrencySetting(t *testing.T) {
	e := newEnv(t, nil)
	hook := func(delivery any) map[string]any {
		b := map[string]any{"name": fmt.Sprintf("n%d", time.Now().UnixNano()), "type": "webhook",
			"webhook": map[string]any{"url": e.rcv.URL, "caPem": e.rcv.CAPEM}}
		if delivery != nil {
			b["delivery"] = delivery
		}
		return b
	}
	mqtt := map[string]any{"name": "m", "type": "mqtt", "mqtt": map[string]any{"broker": "mqtts://127.0.0.1:1"}, "delivery": map[string]any{"concurrency": 2}}
	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		want   int
	}{
		{name: "default", body: hook(nil), status: 201, want: forward.DefaultConcurrency},
		{name: "one", body: hook(map[string]any{"concurrency": 1}), status: 201, want: 1},
		{name: "max", body: hook(map[string]any{"concurrency": 32}), status: 201, want: 32},
		{name: "above max", body: hook(map[string]any{"concurrency": 33}), status: 400},
		{name: "negative", body: hook(map[string]any{"concurrency": -1}), status: 400},
		{name: "linger past maxWait", body: hook(map[string]any{"concurrency": 2, "linger": "2s"}), status: 400},
		{name: "mqtt above one", body: mqtt, status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations?test=false", e.api.Key(), tc.body)
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Body)
			}
			if tc.status != 201 {
				if !bytes.Contains(r.Body, []byte("delivery.")) {
					t.Errorf("refusal does not name the setting: %s", r.Body)
				}
				return
			}
			var in forward.Integration
			r.Decode(t, &in)
			if in.Delivery.Concurrency != tc.want {
				t.Errorf("concurrency %d, want %d", in.Delivery.Concurrency, tc.want)
			}
		})
	}
	id, _ := e.integration(nil)
	if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), map[string]any{"delivery": map[string]any{"concurrency": 6}}); r.Status != 200 {
		t.Fatalf("update: %d %s", r.Status, r.Body)
	}
	if v := getView(t, e, id); v.Delivery.Concurrency != 6 || v.Batch.MaxMessages != forward.DefaultMaxMessages {
		t.Errorf("after update: delivery %+v batch %+v", v.Delivery, v.Batch)
	}
}

// TestForwardLaneLinger: with lanes, a batch holds what is waiting (one
// message when they come one by one), unless delivery.linger lets it wait
// for more.
func TestForwardLaneLinger(t *testing.T) {
	for _, tc := range []struct {
		name     string
		delivery map[string]any
		batches  int // requests for 3 messages of one device
	}{
		{name: "adaptive", delivery: map[string]any{"concurrency": 4}, batches: 3},
		{name: "linger", delivery: map[string]any{"concurrency": 4, "linger": "3s"}, batches: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			_, secret := e.integration(map[string]any{"delivery": tc.delivery, "batch": map[string]any{"maxWait": "5s"}})
			for range 3 {
				n := len(e.rcv.Got()) + 1
				e.publishTo(devices[:1], 1)
				if tc.batches > 1 { // each delivered before the next is published
					tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
						if len(e.rcv.Got()) < n {
							return fmt.Errorf("%d requests", len(e.rcv.Got()))
						}
						return nil
					})
				}
			}
			got := waitArrived(t, e.rcv, secret, 3, 15*time.Second)
			checkOrder(t, got)
			if n := len(e.rcv.Got()); n != tc.batches {
				t.Errorf("%d requests, want %d", n, tc.batches)
			}
		})
	}
}

// TestForwardFailingLaneKeepsHealthFailing: while one lane fails, the
// others deliver, and the integration stays failing (another lane's
// success does not resolve the error); retry-now reaches the failing lane
// in its backoff, and once it delivers the error is resolved.
func TestForwardFailingLaneKeepsHealthFailing(t *testing.T) {
	e := newEnv(t, func(c *node.Config) { c.Forward.RetryBase, c.Forward.RetryMax = time.Hour, time.Hour })
	devs := laneDevices(t, 8, 4)
	var bad atomic.Bool
	bad.Store(true)
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if bad.Load() && contains(body, devs[0]) {
			w.WriteHeader(503)
			return true
		}
		return false
	})
	id, secret := e.integration(map[string]any{"delivery": map[string]any{"concurrency": 8}})
	sent := e.publishTo(devs, 2)
	v := waitState(t, e, id, func(s forward.State) bool {
		return s.Delivered == uint64(len(sent)-2) && s.NextRetryAt != nil
	})
	if v.Health != "failing" || v.State.LastError != "HTTP 503" || v.State.LastErrorResolvedAt != nil {
		t.Fatalf("one lane failing: health %s, state %+v", v.Health, v.State)
	}
	sent = append(sent, e.publishTo(devs[1:], 1)...) // the other lanes go on
	v = waitState(t, e, id, func(s forward.State) bool { return s.Delivered == uint64(len(sent)-2) })
	if v.Health != "failing" || v.State.LastErrorResolvedAt != nil {
		t.Fatalf("another lane's success resolved the failure: health %s, state %+v", v.Health, v.State)
	}
	bad.Store(false)
	if r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/retry-now", e.api.Key(), nil); r.Status != 200 {
		t.Fatalf("retry-now: %d %s", r.Status, r.Body)
	}
	got := waitArrived(t, e.rcv, secret, len(sent), 10*time.Second)
	checkOrder(t, got)
	v = waitState(t, e, id, func(s forward.State) bool { return s.Delivered == uint64(len(sent)) })
	if v.Health != "ok" || v.State.LastErrorResolvedAt == nil || v.State.NextRetryAt != nil {
		t.Errorf("after the retry: health %s, state %+v", v.Health, v.State)
	}
}

// TestForwardBusyLaneBatchesGrow: messages that keep coming while a lane
// delivers go in fewer, larger batches: a busy lane starts at most one
// batch per pace (2ms per lane: 20ms with 10 lanes), every message is
// delivered once and every device's order is kept.
func TestForwardBusyLaneBatchesGrow(t *testing.T) {
	e := newEnv(t, nil)
	const lanes, pace = 10, 20 * time.Millisecond
	devs := laneDevices(t, lanes, 3)
	used := map[int]bool{}
	for _, d := range devs {
		used[forward.LaneOf(d, lanes)] = true
	}
	id, secret := e.integration(map[string]any{"delivery": map[string]any{"concurrency": lanes}})
	sent := e.publishTo(devs, 100)
	got := waitArrived(t, e.rcv, secret, len(sent), 20*time.Second)
	checkOrder(t, got)
	if len(got) != len(sent) {
		t.Fatalf("%d delivered, %d sent", len(got), len(sent))
	}
	reqs := e.rcv.Got()
	span := reqs[len(reqs)-1].At.Sub(reqs[0].At)
	// Each lane's batches start at least the pace apart; arrivals jitter
	// by a few milliseconds around their starts.
	limit := len(used) * (int(span/pace) + 5)
	t.Logf("%d messages of %d devices in %d lanes: %d requests in %s (at most %d)", len(sent), len(devs), len(used), len(reqs), span, limit)
	if len(reqs) > limit {
		t.Errorf("%d requests in %s for %d busy lanes: more than one batch per %s each", len(reqs), span, len(used), pace)
	}
	// The lanes do not wait for their acks to be confirmed, but every
	// message is acknowledged: nothing stays pending.
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if v := getView(t, e, id); v.Backlog != 0 || v.State.Delivered != uint64(len(sent)) {
			return fmt.Errorf("backlog %d, delivered %d", v.Backlog, v.State.Delivered)
		}
		return nil
	})
}

// TestForwardDeepBacklogGoesInFullBatches: what a lane's queue holds when
// it is free goes in batches of up to batch.maxMessages, at once, in
// order, each message once.
func TestForwardDeepBacklogGoesInFullBatches(t *testing.T) {
	e := newEnv(t, nil)
	gate := make(chan struct{})
	var first atomic.Bool
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if first.CompareAndSwap(false, true) {
			select { // the first request waits while the backlog grows
			case <-gate:
			case <-r.Context().Done():
				return true
			}
		}
		return false
	})
	_, secret := e.integration(map[string]any{"delivery": map[string]any{"concurrency": 10}, "batch": map[string]any{"maxMessages": 50}})
	sent := e.publishTo(devices[:1], 1)
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !first.Load() {
			return fmt.Errorf("the first request has not arrived")
		}
		return nil
	})
	sent = append(sent, e.publishTo(devices[:1], 150)...)
	close(gate)
	got := waitArrived(t, e.rcv, secret, len(sent), 20*time.Second)
	checkOrder(t, got)
	if len(got) != len(sent) {
		t.Fatalf("%d delivered, %d sent", len(got), len(sent))
	}
	// The held request (1 message), then 150 in batches of at most 50
	// (one more if the lane was free before its queue held them all).
	if n := len(e.rcv.Got()); n > 5 {
		t.Errorf("%d requests for 1 + 150 messages in batches of at most 50, want 4 or 5", n)
	}
}

// TestForwardLaneCountChangeDeliversOnce: when an integration's number of
// lanes changes while one device holds the delivery position back (its
// receiver answers 503), what the other lanes had delivered above that
// position is not delivered again by the new lanes; every message reaches
// the receiver once.
func TestForwardLaneCountChangeDeliversOnce(t *testing.T) {
	for _, to := range []int{8, 1} {
		t.Run(fmt.Sprintf("4 to %d lanes", to), func(t *testing.T) {
			e := newEnv(t, nil)
			devs := laneDevices(t, 4, 4)
			var refuse atomic.Bool
			refuse.Store(true)
			var acc accepted
			e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
				if refuse.Load() && contains(body, devs[0]) {
					w.WriteHeader(503)
					return true
				}
				acc.add(r, body)
				return false
			})
			id, _ := e.integration(map[string]any{"delivery": map[string]any{"concurrency": 4}})
			sent := e.publishTo(devs, 3)
			tu.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
				if got, _ := acc.messages(t); len(got) != len(sent)-3 {
					return fmt.Errorf("%d accepted, want the other devices' %d", len(got), len(sent)-3)
				}
				return nil
			})
			if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), map[string]any{"delivery": map[string]any{"concurrency": to}}); r.Status != 200 {
				t.Fatalf("update: %d %s", r.Status, r.Body)
			}
			refuse.Store(false)
			sent = append(sent, e.publishTo(devs, 1)...)
			waitState(t, e, id, func(s forward.State) bool { return s.Delivered >= uint64(len(sent)) })
			got, _ := acc.messages(t)
			checkOrder(t, got)
			if len(got) != len(sent) {
				t.Errorf("%d distinct messages accepted, want %d", len(got), len(sent))
			}
			if total := acc.total(t); total != len(sent) {
				t.Errorf("the receiver accepted %d messages for %d sent: delivered again after the lane change", total, len(sent))
			}
		})
	}
}

// duringFirstDelivery makes the receiver record every request in acc and,
// on the first, call change (a change of the integration) and hold the
// request 500 ms before accepting it; the flag it returns is set once
// change was called. The change reaches the worker while that batch waits
// for its answer. Nothing observable says when it has; the hold is well
// above the change's path (KV watch, reconcile) on a quiet machine, and a
// slower path only leaves the case unexercised, never a false failure.
func (e *env) duringFirstDelivery(acc *accepted, change func()) *atomic.Bool {
	var called atomic.Bool
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		acc.add(r, body)
		if called.CompareAndSwap(false, true) {
			change()
			time.Sleep(500 * time.Millisecond)
		}
		return false
	})
	return &called
}

// TestForwardConfigChangeLetsADeliveryFinish: a change of an integration
// while a batch is at the receiver (here delivery.concurrency, from 4
// lanes to 1 or 8, or 1 to 1 with another batch size) lets that delivery
// finish, and the batch is recorded as delivered: the receiver gets every
// message once. Before, the change cancelled the request under way, so
// the batch the receiver had taken went out again (after a change of
// lanes under another webhook-id, which a receiver cannot recognise).
func TestForwardConfigChangeLetsADeliveryFinish(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to int
	}{
		{name: "4 to 1 lanes", from: 4, to: 1},
		{name: "4 to 8 lanes", from: 4, to: 8},
		{name: "1 lane, another batch size", from: 1, to: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			devs := laneDevices(t, 4, 4)
			var acc accepted
			var id string
			changed := e.duringFirstDelivery(&acc, func() {
				upd := map[string]any{"delivery": map[string]any{"concurrency": tc.to}, "batch": map[string]any{"maxMessages": 7}}
				if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), upd); r.Status != 200 {
					t.Errorf("update: %d %s", r.Status, r.Body)
				}
			})
			id, _ = e.integration(map[string]any{"delivery": map[string]any{"concurrency": tc.from}})
			sent := e.publishTo(devs, 3)
			waitState(t, e, id, func(s forward.State) bool { return s.Delivered >= uint64(len(sent)) })
			if !changed.Load() {
				t.Fatal("no batch reached the receiver")
			}
			got, once := acc.messages(t)
			checkOrder(t, got)
			if len(got) != len(sent) {
				t.Errorf("%d distinct messages accepted, want %d", len(got), len(sent))
			}
			for m, n := range once {
				if n != 1 {
					t.Errorf("message %s accepted under %d webhook-ids", m, n)
				}
			}
			if total := acc.total(t); total != len(sent) {
				t.Errorf("the receiver accepted %d messages for %d sent: the batch at the receiver went out again", total, len(sent))
			}
		})
	}
}

// TestForwardPauseAcksTheFinishedDelivery: a pause while a batch is at the
// receiver lets that delivery finish and acknowledges it to JetStream
// too, with one lane or several: the paused integration's backlog is
// what was not delivered, not one more per lane that finished a batch.
func TestForwardPauseAcksTheFinishedDelivery(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lanes int
	}{
		{name: "1 lane", lanes: 1},
		{name: "4 lanes", lanes: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			var acc accepted
			var id string
			paused := e.duringFirstDelivery(&acc, func() {
				if r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/pause", e.api.Key(), nil); r.Status != 200 {
					t.Errorf("pause: %d %s", r.Status, r.Body)
				}
			})
			id, _ = e.integration(map[string]any{"delivery": map[string]any{"concurrency": tc.lanes}})
			sent := e.publishTo(laneDevices(t, 4, 1), 4)
			tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
				v := getView(t, e, id)
				got := acc.total(t)
				if got == 0 || v.State.Delivered != uint64(got) || v.Backlog != uint64(len(sent)-got) {
					return fmt.Errorf("%d accepted, %d sent; state: %d delivered, backlog %d", got, len(sent), v.State.Delivered, v.Backlog)
				}
				return nil
			})
			if !paused.Load() {
				t.Fatal("no batch reached the receiver")
			}
		})
	}
}
