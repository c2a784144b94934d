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

// readBudget lets a credential read burst stored items at once, then
// perSecond a second, and one request 500; nothing else is limited.
func readBudget(perSecond float64, burst int) api.Limits {
	return api.Limits{
		PerCredential: 1e6, CredentialBurst: 1e6, PerIP: 1e6, IPBurst: 1e6, AuthFailures: 1e6,
		ReadsPerCredential: perSecond, ReadBurst: burst, ReadsPerTenant: 1e6, TenantReadBurst: 1e6, MaxReadsPerRequest: 500,
	}
}

// TestAPIAuditVerifyIsBudgeted: GET …/audit/verify reads and hashes the
// tenant's whole log, so it is charged the log's size against the read
// budget: a key with audit:read cannot ask for it at its request rate (50
// a second) for ever. With a log larger than the key's read burst, the key
// runs out of its budget after a verification, and is told when to retry.
func TestAPIAuditVerifyIsBudgeted(t *testing.T) {
	const entries = 600
	n := nodetest.Start(t, func(c *node.Config) { c.APILimits = readBudget(10, 500) })
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
			if code, _ := r.Problem(); code != "api.read_budget_spent" || r.Header.Get("Retry-After") == "" {
				t.Fatalf("refusal: %s %v", r.Body, r.Header)
			}
			return
		}
		if r.Status != 200 {
			t.Fatalf("verify %d: %d %s", i, r.Status, r.Body)
		}
	}
	t.Errorf("20 verifications of a log of %d entries on a read budget of 500: never refused", entries)
}

// storedMessages starts a node with a read budget of 500, then 10 a
// second, where gateway serial of tenant dev sent count messages of
// sensor, and returns it with a new key of dev with messages:read.
func storedMessages(t *testing.T, serial, sensor string, count int) (*node.Node, *nodetest.API, string) {
	t.Helper()
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = readBudget(10, 500)
		c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e6, 1e6
	})
	a := nodetest.NewAPI(t, n)
	u, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, "dev", serial), serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix() - int64(count)
	for i := 0; i < count; i += 100 {
		var parts []string
		for j := i; j < min(i+100, count); j++ {
			parts = append(parts, tu.Thingsee(sensor, ts+int64(j), 20))
		}
		if _, err := u.Publish(context.Background(), []byte("["+strings.Join(parts, ",")+"]"), 1); err != nil {
			t.Fatal(err)
		}
	}
	r := a.Do("POST", "/v1/tenants/dev/api-keys", a.Key(), map[string]any{"scopes": []string{"messages:read"}})
	var k struct{ Key string }
	r.Decode(t, &k)
	return n, a, k.Key
}

// openStream opens the WebSocket at path (a stream route with its query)
// with key.
func openStream(t *testing.T, ctx context.Context, n *node.Node, a *nodetest.API, path, key string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, strings.Replace(a.Base(), "https://", "wss://", 1)+path, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + key}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestAPIStreamReplayIsBudgeted: a WebSocket stream resumed from an old
// sequence (?after=0) replays the tenant's history, every message read and
// opened; a key with messages:read may hold 8 streams at once, again and
// again. GET …/messages reads the same messages within the key's budget,
// and the stream does not read past it either: it waits for the budget,
// and goes on at its rate.
func TestAPIStreamReplayIsBudgeted(t *testing.T) {
	const messages = 1100
	n, a, key := storedMessages(t, "TSGW06REP00000001", "TSEN01REP00000001", messages)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c := openStream(t, ctx, n, a, "/v1/tenants/dev/stream?after=0", key)
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
	if got <= 500 {
		t.Errorf("the stream sent %d messages in %s: once the burst of 500 was spent it must go on at the budget's rate, not stop", got, elapsed.Round(time.Millisecond))
	}
}

// TestAPIStreamFilterIsBudgeted: a stream with ?integration= naming a
// websocket integration whose filter is applied in the server's process
// (more than 256 combinations) reads every message and drops those the
// filter does not select; what it drops was read and opened all the same,
// and is paid for: a filter that selects nothing spends the key's budget
// and then reads at its rate.
func TestAPIStreamFilterIsBudgeted(t *testing.T) {
	const messages, serial = 1100, "TSGW06FLT00000001"
	n, a, key := storedMessages(t, serial, "TSEN01FLT00000001", messages)
	// 17 gateways (the sender among them) by 17 sensors (not its own).
	f := client.Filter{Gateways: []string{serial}}
	for i := range 17 {
		f.Devices = append(f.Devices, fmt.Sprintf("TSEN01FLT%08d", 100+i))
		if i > 0 {
			f.Gateways = append(f.Gateways, fmt.Sprintf("TSGW06FLT%08d", 100+i))
		}
	}
	in, err := a.Client.CreateIntegration(context.Background(), "dev", client.Integration{Name: "none", Type: client.IntegrationWebsocket, Filter: f})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	openStream(t, ctx, n, a, "/v1/tenants/dev/stream?after=0&integration="+in.ID, key)
	reads := func() int {
		return int(tu.Counter(t, n.Metrics(), "iotransit_api_reads_total", map[string]string{"route": "GET /v1/tenants/{tenant}/stream"}))
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := reads(); got < 500 {
			return fmt.Errorf("the filtered stream was charged %d reads", got)
		}
		return nil
	})
	if got, max := reads(), 500+int(10*time.Since(start).Seconds())+100; got > max {
		t.Errorf("the filtered stream read %d messages in %s on a read budget of %d", got, time.Since(start).Round(time.Millisecond), max)
	}
	// What the stream read is the key's: a page of messages finds the
	// budget spent (or the one or two reads the stream has not yet taken).
	r := a.Do("GET", "/v1/tenants/dev/messages?limit=100", key, nil)
	var page struct {
		Items   []json.RawMessage
		Partial bool
	}
	if r.Status == 200 {
		r.Decode(t, &page)
	}
	if r.Status != 429 && (r.Status != 200 || len(page.Items) > 2 || !page.Partial) {
		t.Errorf("a page of messages after the stream spent the key's budget: %d, %d items", r.Status, len(page.Items))
	}
}

// TestAPIDeadLettersAreBudgeted: GET …/dead-letters?limit=1000 opens up to
// 1,000 sealed messages with integrations:read alone; it reads within the
// credential's read budget like the messages list: a partial page with a
// cursor that goes on, then 429 with Retry-After once the budget is spent.
func TestAPIDeadLettersAreBudgeted(t *testing.T) {
	const letters = 60
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = readBudget(1, 25)
		c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e6, 1e6
	})
	a := nodetest.NewAPI(t, n)
	id := deadLetters(t, n, a, "dev", letters)
	r := a.Do("POST", "/v1/tenants/dev/api-keys", a.Key(), map[string]any{"scopes": []string{"integrations:read"}})
	var k struct{ Key string }
	r.Decode(t, &k)

	path := "/v1/tenants/dev/integrations/" + id + "/dead-letters?limit=1000"
	var page struct {
		Items   []json.RawMessage
		Next    string
		Partial bool
	}
	r = a.Do("GET", path, k.Key, nil)
	if r.Status != 200 {
		t.Fatalf("dead letters: %d %s", r.Status, r.Body)
	}
	r.Decode(t, &page)
	if len(page.Items) == 0 || len(page.Items) > 25 || !page.Partial || page.Next == "" {
		t.Fatalf("a page of dead letters on a read budget of 25: %d items of %d, partial %v, next %q", len(page.Items), letters, page.Partial, page.Next)
	}
	// The budget refills at one read a second: the next pages are one
	// read each, until one finds nothing left.
	throttled := hammer(t, 10, func() tu.Response { return a.Do("GET", path+"&cursor="+page.Next, k.Key, nil) })
	if code, _ := throttled.Problem(); throttled.Status != 429 || code != "api.read_budget_spent" || throttled.Header.Get("Retry-After") == "" {
		t.Fatalf("the next pages on a spent budget: %d %.300s", throttled.Status, throttled.Body)
	}
}

// deadLetters fills the dead-letter stream of a new webhook integration of
// tenant with count messages (its receiver always fails, and its maxAge is
// the shortest) and returns the integration's id.
func deadLetters(t *testing.T, n *node.Node, a *nodetest.API, tenant string, count int) string {
	t.Helper()
	ctx := context.Background()
	rcv := tu.NewReceiver(t)
	rcv.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool { w.WriteHeader(503); return true })
	in, err := a.Client.CreateIntegration(ctx, tenant, client.Integration{
		Name: "dead", Type: client.IntegrationWebhook, MaxAge: client.Duration(time.Second),
		Webhook: &client.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM},
	})
	if err != nil {
		t.Fatal(err)
	}
	const serial, sensor = "TSGW06DLT00000001", "TSEN01DLT00000001"
	u, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, serial), serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix() - int64(count)
	var parts []string
	for i := range count {
		parts = append(parts, tu.Thingsee(sensor, ts+int64(i), 20))
	}
	if _, err := u.Publish(ctx, []byte("["+strings.Join(parts, ",")+"]"), 1); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		v, err := a.Client.GetIntegration(ctx, tenant, in.ID)
		if err != nil {
			return err
		}
		if v.DeadLetters < uint64(count) {
			return fmt.Errorf("%d dead letters of %d", v.DeadLetters, count)
		}
		return nil
	})
	return in.ID
}
