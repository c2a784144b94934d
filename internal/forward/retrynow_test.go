package forward_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestForwardRetryNowReachesTheDeliveringNode runs two nodes on one
// JetStream. A receiver fails with Retry-After: 3600 (an hour's backoff),
// then is healthy again: retry-now, asked through the node that does not
// deliver the integration, makes the delivering node try the batch at
// once. The last error is then resolved, and the list says so.
func TestForwardRetryNowReachesTheDeliveringNode(t *testing.T) {
	var started atomic.Int32
	n1, n2 := nodetest.StartPair(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.AllowPrivateTargets = true
		c.Forward.NodeID = fmt.Sprintf("node-%d", started.Add(1))
		c.Forward.DeliveryTimeout = 2 * time.Second
	})
	byID := map[string]*nodetest.API{"node-1": nodetest.NewAPI(t, n1), "node-2": nodetest.NewAPI(t, n2)}
	up, err := nodetest.Dial(t, n1, nodetest.Gateway(t, n1, tenant, gwSer), gwSer, nil)
	if err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, ok := n2.Registry().Tenant(tenant); !ok {
			return errors.New("node 2 does not know the tenant yet")
		}
		return nil
	})

	rcv := tu.NewReceiver(t)
	down := rcv.Down(http.StatusServiceUnavailable, "3600") // an hour's backoff
	api := byID["node-1"]
	in, err := api.Client.CreateIntegration(context.Background(), tenant, client.Integration{Name: "slow", Type: client.IntegrationWebhook,
		Webhook: &client.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := up.Publish(context.Background(), []byte(tu.Thingsee(devices[0], time.Now().Unix(), 20.5)), 1); err != nil || res.ReasonCode != 0 {
		t.Fatalf("publish: %v %x", err, res.ReasonCode)
	}
	var v *client.IntegrationView
	tu.Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		if v, err = api.Client.GetIntegration(context.Background(), tenant, in.ID); err != nil {
			return err
		}
		if s := v.State; s.NextRetryAt == nil || time.Until(*s.NextRetryAt) < 30*time.Minute {
			return fmt.Errorf("not waiting an hour to retry yet: %+v", s)
		}
		return nil
	})
	if v.Health != client.HealthFailing || v.State.LastError != "HTTP 503" || v.State.LastErrorResolvedAt != nil {
		t.Fatalf("failing integration: health %s, state %+v", v.Health, v.State)
	}
	other := map[string]string{"node-1": "node-2", "node-2": "node-1"}[v.State.Node]
	if other == "" {
		t.Fatalf("delivering node %q", v.State.Node)
	}

	down.Store(false)
	asked := time.Now()
	if _, err := byID[other].Client.RetryIntegrationNow(context.Background(), tenant, in.ID); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
		for _, d := range rcv.Got() {
			if d.At.After(asked) {
				return nil
			}
		}
		return errors.New("no delivery since retry-now")
	})
	var list []client.IntegrationView
	tu.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		if list, err = byID[other].Client.ListIntegrations(context.Background(), tenant); err != nil {
			return err
		}
		if len(list) != 1 || list[0].State.Delivered != 1 {
			return fmt.Errorf("list %+v", list)
		}
		return nil
	})
	s := list[0].State
	if list[0].Health != client.HealthOK || s.LastError != "HTTP 503" || s.LastErrorResolvedAt == nil || s.LastErrorResolvedAt.Before(asked) {
		t.Fatalf("after recovery: health %s, state %+v", list[0].Health, s)
	}
}

// TestForwardRetryNowRefusals: retry-now of a paused integration is
// refused (resume it), of a websocket one too (nothing to deliver).
func TestForwardRetryNowRefusals(t *testing.T) {
	e := newEnv(t, nil)
	id, _ := e.integration(nil)
	if r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/pause", e.api.Key(), nil); r.Status != 200 {
		t.Fatalf("pause: %d %s", r.Status, r.Body)
	}
	ws, err := e.api.Client.CreateIntegration(context.Background(), tenant, client.Integration{Name: "ws", Type: client.IntegrationWebsocket})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, id string
		status   int
		code     string
	}{
		{"paused", id, http.StatusConflict, "forward.integration_paused"},
		{"websocket", ws.ID, http.StatusBadRequest, "forward.integration_invalid"},
		{"unknown", "0123456789ab", http.StatusNotFound, "forward.integration_not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+tc.id+"/retry-now", e.api.Key(), nil)
			var p struct{ Code string }
			r.Decode(t, &p)
			if r.Status != tc.status || p.Code != tc.code {
				t.Fatalf("retry-now: %d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
}

// TestForwardRedriveMaxAgeCountsFromTheRedrive: a re-driven dead letter,
// long past its max age by its receive time, is retried with backoff when
// its delivery fails again, as the OpenAPI says (its max age counts from
// the re-drive), and is delivered once the endpoint accepts.
func TestForwardRedriveMaxAgeCountsFromTheRedrive(t *testing.T) {
	e := newEnv(t, nil)
	var failures atomic.Int32
	var down atomic.Bool
	down.Store(true)
	e.rcv.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		if down.Load() || failures.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	id, secret := e.integration(map[string]any{"maxAge": "2s"})
	sent := e.publish(1)
	waitState(t, e, id, func(s forward.State) bool { return s.DeadLettered == uint64(len(sent)) })
	// A message is dead-lettered once older than its max age: by its
	// receive time it is past it at the re-drive.
	failures.Store(2) // the first two attempts after the re-drive fail
	down.Store(false)
	e.redrive(id, len(sent))
	waitArrived(t, e.rcv, secret, len(sent), 10*time.Second)
	v := waitState(t, e, id, func(s forward.State) bool { return s.Delivered == uint64(len(sent)) })
	if v.DeadLetters != 0 || v.State.DeadLettered != uint64(len(sent)) {
		t.Fatalf("re-driven messages went back to the dead letters: %d waiting, %d dead-lettered", v.DeadLetters, v.State.DeadLettered)
	}
}
