package forward_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/forward"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestForwardRedriveReachesOnlyThatIntegration (issue 10, bug 2):
// re-driving an integration's dead letters delivers them to it again, and
// to nothing else: the tenant's history lists each message once, a
// WebSocket stream open since before sees each once, and another
// integration receives each once, whether it delivers one batch at a
// time or in lanes. An integration whose filter selects every message
// reads the whole stream (a consumer without filters, which JetStream
// reads in order) and drops the re-drives to the others itself.
func TestForwardRedriveReachesOnlyThatIntegration(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lanes int
	}{
		{name: "one batch at a time", lanes: 1},
		{name: "lanes", lanes: 4},
	} {
		t.Run(tc.name, func(t *testing.T) { testRedriveReachesOnlyThatIntegration(t, tc.lanes) })
	}
}

func testRedriveReachesOnlyThatIntegration(t *testing.T, lanes int) {
	e := newEnv(t, nil)
	down := e.receiverDown()
	failing, failingSecret := e.integration(map[string]any{"maxAge": "1s"})
	healthyRcv := tu.NewReceiver(t)
	healthy, healthySecret := e.integration(map[string]any{"webhook": map[string]any{"url": healthyRcv.URL, "caPem": healthyRcv.CAPEM},
		"delivery": map[string]any{"concurrency": lanes}})
	c, _, err := dialStream(t, e, apiKey(t, e, tenant, "messages:read"), "?after=0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(websocket.StatusNormalClosure, "")

	sent := e.publish(3)
	waitState(t, e, failing, func(s forward.State) bool { return s.DeadLettered == uint64(len(sent)) })
	waitArrived(t, healthyRcv, healthySecret, len(sent), 10*time.Second)
	down.Store(false)
	before := len(e.rcv.Got()) // the failed attempts
	e.redrive(failing, len(sent))
	// A last round, published after the re-drive, marks the end for every
	// reader: all it received before that round must be the first round,
	// once. The re-driven integration gets them all (again).
	last := e.publish(1)
	total := len(sent) + len(last)
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		got := map[string]bool{}
		for _, k := range receivedKeys(t, e.rcv.Got()[before:]) {
			got[k] = true
		}
		if len(got) < total {
			return fmt.Errorf("re-driven integration: %d of %d messages", len(got), total)
		}
		return nil
	})
	waitArrived(t, healthyRcv, healthySecret, total, 10*time.Second)
	if got := arrived(t, e.rcv, failingSecret); len(got) != total { // signatures
		t.Fatalf("re-driven integration: %d distinct messages, want %d", len(got), total)
	}
	ctx := context.Background()
	for _, id := range []string{failing, healthy} {
		cons, err := e.n.JetStream().Consumer(ctx, names.MessageStream(tenant), names.IntegrationConsumer(id))
		if err != nil {
			t.Fatal(err)
		}
		if c := cons.CachedInfo().Config; c.FilterSubject != "" || len(c.FilterSubjects) > 0 {
			t.Errorf("integration %s: consumer filters %q %q, want none (the whole stream)", id, c.FilterSubject, c.FilterSubjects)
		}
	}

	tests := []struct {
		name string
		keys []string // Thingsee keys, repeats included
	}{
		{"history", historyKeys(t, e)},
		{"stream", streamKeys(t, c, total)},
		{"other integration", receivedKeys(t, healthyRcv.Got())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]int{}
			for _, k := range tc.keys {
				seen[k]++
			}
			for k, n := range seen {
				if n != 1 {
					t.Errorf("%s seen %d times", k, n)
				}
			}
			if len(seen) != total || len(tc.keys) != total {
				t.Errorf("%d items, %d distinct messages; want %d once each", len(tc.keys), len(seen), total)
			}
		})
	}
}

// thingseeKey names a Thingsee message as the stream's resume key does.
func thingseeKey(m map[string]any) string {
	return fmt.Sprintf("%v:%v:%v", m["tsmTuid"], m["tsmId"], m["tsmTs"])
}

// historyKeys lists the ids of the tenant's history.
func historyKeys(t *testing.T, e *env) []string {
	t.Helper()
	var keys []string
	for _, m := range e.api.Messages(tenant, 100) {
		keys = append(keys, m.ID)
	}
	return keys
}

// streamKeys reads n messages from a WebSocket stream.
func streamKeys(t *testing.T, c *websocket.Conn, n int) []string {
	t.Helper()
	var keys []string
	for _, m := range readN(t, c, n) {
		keys = append(keys, thingseeKey(m))
	}
	return keys
}

// receivedKeys lists every message in a receiver's requests.
func receivedKeys(t *testing.T, got []tu.Delivery) []string {
	t.Helper()
	var keys []string
	for _, d := range got {
		var batch []map[string]any
		if err := json.Unmarshal(d.Body, &batch); err != nil {
			t.Fatalf("body is not a JSON array: %v: %.200s", err, d.Body)
		}
		for _, m := range batch {
			keys = append(keys, thingseeKey(m))
		}
	}
	return keys
}

// TestForwardFilterChangeFollowsTheStream: an integration whose device
// filter is removed goes on from where it was with every device's
// messages, its consumer now without filters (made anew: one updated to
// none is not told of new messages); one given a filter goes on with its
// devices' messages only.
func TestForwardFilterChangeFollowsTheStream(t *testing.T) {
	one := map[string]any{"devices": []string{devices[1]}}
	none := map[string]any{"devices": []string{}}
	for _, tc := range []struct {
		name     string
		from, to map[string]any
		filtered bool // the consumer has filters after the change
	}{
		{name: "removed", from: one, to: none},
		{name: "added", from: none, to: one, filtered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			id, secret := e.integration(map[string]any{"filter": tc.from, "delivery": map[string]any{"concurrency": 4}})
			e.publish(2)
			before := 2 * len(devices) // unfiltered
			if !tc.filtered {
				before = 2 // the filter keeps devices[1]'s only
			}
			waitArrived(t, e.rcv, secret, before, 10*time.Second)
			if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), map[string]any{"filter": tc.to}); r.Status != 200 {
				t.Fatalf("update: %d %s", r.Status, r.Body)
			}
			ctx := context.Background()
			tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
				cons, err := e.n.JetStream().Consumer(ctx, names.MessageStream(tenant), names.IntegrationConsumer(id))
				if err != nil {
					return err
				}
				if c := cons.CachedInfo().Config; (c.FilterSubject != "" || len(c.FilterSubjects) > 0) != tc.filtered {
					return fmt.Errorf("consumer filters %q %q", c.FilterSubject, c.FilterSubjects)
				}
				return nil
			})
			want := map[string]bool{}
			for _, b := range e.publish(2) {
				var m map[string]any
				if err := json.Unmarshal([]byte(b), &m); err != nil {
					t.Fatal(err)
				}
				if !tc.filtered || m["tsmTuid"] == devices[1] {
					want[thingseeKey(m)] = true
				}
			}
			// The messages the new filter selects since; those it selects
			// from before the change, above the delivery position, may
			// come too.
			var got []map[string]any
			tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
				got = arrived(t, e.rcv, secret)
				n := 0
				for _, m := range got {
					if want[thingseeKey(m)] {
						n++
					}
				}
				if n < len(want) {
					return fmt.Errorf("%d of the %d messages published since the change arrived", n, len(want))
				}
				return nil
			})
			checkOrder(t, got)
			if tc.filtered {
				for _, m := range got[before:] {
					if m["tsmTuid"] != devices[1] {
						t.Errorf("a device the filter leaves out delivered after the change: %v", m["tsmTuid"])
					}
				}
			}
		})
	}
}
