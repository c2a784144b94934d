package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestAPIAuditVerifyIsBudgeted (security review of issue 8, review3):
// GET …/audit/verify reads and hashes the tenant's whole log on every
// request, and takes no read budget: a key with audit:read can ask for it
// at its request rate (50 a second) for ever, the cost the read budgets
// were made to bound. With a log larger than the key's read burst, the
// key must run out of its budget after a few verifications.
func TestAPIAuditVerifyIsBudgeted(t *testing.T) {
	const entries = 600
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = api.Limits{
			PerCredential: 1e6, CredentialBurst: 1e6, PerIP: 1e6, IPBurst: 1e6, AuthFailures: 1e6,
			ReadsPerCredential: 10, ReadBurst: 500, ReadsPerTenant: 1e6, TenantReadBurst: 1e6, MaxReadsPerRequest: 500,
		}
	})
	a := nodetest.NewAPI(t, n)
	const gw = "TSGW06VER00000001"
	if r := a.Do("POST", "/v1/tenants/dev/gateways", a.Key(), map[string]string{"serial": gw}); r.Status != 201 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	for i := range entries {
		labels := map[string]string{"n": fmt.Sprint(i)}
		if _, err := a.Client.UpdateGateway(context.Background(), "dev", gw, client.UpdateGatewayRequest{Labels: &labels}); err != nil {
			t.Fatal(err)
		}
	}
	r := a.Do("POST", "/v1/tenants/dev/api-keys", a.Key(), map[string]any{"scopes": []string{"audit:read"}})
	var k struct{ Key string }
	r.Decode(t, &k)
	for i := range 20 {
		r := a.Do("GET", "/v1/tenants/dev/audit/verify", k.Key, nil)
		if r.Status == 429 {
			return
		}
		if r.Status != 200 {
			t.Fatalf("verify %d: %d %s", i, r.Status, r.Body)
		}
	}
	t.Errorf("20 verifications of a log of %d entries on a read budget of 500: never refused", entries)
}

// TestAPIStreamReplayIsBudgeted (review3): a WebSocket stream resumed from
// an old sequence (?after=0) replays the tenant's history at the server's
// full speed, every message read and opened, and takes no read budget; a
// key with messages:read can do so on 8 streams at once, again and again.
// GET …/messages reads the same messages within the key's budget; the
// stream must not read past it either.
func TestAPIStreamReplayIsBudgeted(t *testing.T) {
	const messages = 1100
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = api.Limits{
			PerCredential: 1e6, CredentialBurst: 1e6, PerIP: 1e6, IPBurst: 1e6, AuthFailures: 1e6,
			ReadsPerCredential: 10, ReadBurst: 500, ReadsPerTenant: 1e6, TenantReadBurst: 1e6, MaxReadsPerRequest: 500,
		}
		c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e6, 1e6
	})
	a := nodetest.NewAPI(t, n)
	const serial, sensor = "TSGW06REP00000001", "TSEN01REP00000001"
	u, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, "dev", serial), serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix() - messages
	for i := 0; i < messages; i += 100 {
		var parts []string
		for j := i; j < min(i+100, messages); j++ {
			parts = append(parts, tu.Thingsee(sensor, ts+int64(j), 20))
		}
		if _, err := u.Publish(context.Background(), []byte("["+strings.Join(parts, ",")+"]"), 1); err != nil {
			t.Fatal(err)
		}
	}
	r := a.Do("POST", "/v1/tenants/dev/api-keys", a.Key(), map[string]any{"scopes": []string{"messages:read"}})
	var k struct{ Key string }
	r.Decode(t, &k)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, _, err := websocket.Dial(ctx, strings.Replace(a.Base(), "https://", "wss://", 1)+"/v1/tenants/dev/stream?after=0", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + k.Key}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	got := 0
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	for got < messages {
		_, b, err := c.Read(rctx)
		if err != nil {
			break // the time is up
		}
		var batch []json.RawMessage
		if err := json.Unmarshal(b, &batch); err != nil {
			t.Fatalf("frame: %v", err)
		}
		got += len(batch)
	}
	elapsed := time.Since(start)
	if max := 500 + int(10*elapsed.Seconds()) + 100; got > max {
		t.Errorf("the stream replayed %d stored messages in %s on a read budget of %d", got, elapsed.Round(time.Millisecond), max)
	}
}
