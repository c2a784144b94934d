package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestServeKill9DuringForwarding kills the server while a batch is at the
// webhook receiver: after the restart every stored message is delivered at
// least once, and the interrupted batch comes again with its webhook-id.
func TestServeKill9DuringForwarding(t *testing.T) {
	s := startDevServer(t)

	rcv := tu.NewReceiver(t)
	var mu sync.Mutex
	requests, hung := 0, tu.Delivery{}
	release := make(chan struct{})
	hangNow := make(chan struct{}, 1)
	rcv.Handle(func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		mu.Lock()
		requests++
		n := requests
		if n == 4 {
			hung = tu.Delivery{Header: r.Header.Clone(), Body: body}
		}
		mu.Unlock()
		if n == 4 { // the fourth batch never gets its answer before the kill
			hangNow <- struct{}{}
			<-release
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	defer close(release)
	_, err := s.Operator(t).CreateIntegration(context.Background(), node.DevTenant, client.Integration{
		Name: "receiver", Type: client.IntegrationWebhook,
		Webhook: &client.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM},
		Batch:   client.Batching{MaxMessages: 10, MaxWait: client.Duration(20 * time.Millisecond)},
	})
	if err != nil {
		t.Fatalf("integration: %v", err)
	}

	up := s.Uplink(t)
	const total = 120
	for i := 0; i < total; i++ {
		msg := fmt.Sprintf(`{"tsmId":13100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSPR04KIL00000001","moveCount":%d}`, 1700000000+i, i)
		if res, err := up.Publish(context.Background(), []byte(msg), 1); err != nil || res.ReasonCode != 0 {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	select {
	case <-hangNow:
	case <-time.After(30 * time.Second):
		t.Fatal("the fourth batch never came")
	}
	_ = s.Cmd.Process.Signal(syscall.SIGKILL)
	_ = s.Cmd.Wait()
	_ = up.Close()

	s2 := s.restart(t)
	seen := map[float64]bool{}
	tu.Eventually(t, 90*time.Second, 200*time.Millisecond, func() error {
		for _, d := range rcv.Got() {
			var batch []map[string]any
			if json.Unmarshal(d.Body, &batch) != nil {
				continue
			}
			for _, m := range batch {
				seen[m["moveCount"].(float64)] = true
			}
		}
		if len(seen) < total {
			return fmt.Errorf("%d of %d messages delivered", len(seen), total)
		}
		return nil
	})
	// The interrupted batch came again, with the same id and the same bytes.
	id := hung.Header.Get("webhook-id")
	again := false
	got := rcv.Got()
	for _, d := range got[4:] {
		if d.Header.Get("webhook-id") == id {
			again = true
			if !bytes.Equal(d.Body, hung.Body) {
				t.Errorf("the retried batch %s has other bytes", id)
			}
		}
	}
	if os.Getenv("IOTRANSIT_TEST_DEBUG") != "" {
		for i, d := range got {
			var batch []map[string]any
			_ = json.Unmarshal(d.Body, &batch)
			first, last := -1.0, -1.0
			if len(batch) > 0 {
				first, last = batch[0]["moveCount"].(float64), batch[len(batch)-1]["moveCount"].(float64)
			}
			t.Logf("request %d: id %s, %d messages %v..%v", i, d.Header.Get("webhook-id"), len(batch), first, last)
		}
		ins, err := s2.Operator(t).ListIntegrations(context.Background(), node.DevTenant)
		b, _ := json.Marshal(ins)
		t.Logf("integrations: %s (%v)", b, err)
	}
	if id == "" || !again {
		t.Fatalf("batch %q was not retried with its webhook-id after the restart", id)
	}
}
