package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// costWorld is a node whose tenant dev holds more messages, rejected
// messages and audit entries than one request may read, and a sensor whose
// messages a failed resume would search.
type costWorld struct {
	n      *node.Node
	api    *nodetest.API
	sensor string
}

const (
	costMessages = 1100
	costRejected = 2200
	costAudit    = 2100
)

func newCostWorld(t *testing.T, limits api.Limits) *costWorld {
	t.Helper()
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = limits
		c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e6, 1e6
	})
	w := &costWorld{n: n, api: nodetest.NewAPI(t, n), sensor: "TSEN01COS00000001"}
	const serial = "TSGW06COS00000001"
	u, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, "dev", serial), serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int, msg func(i int) string) {
		for i := 0; i < n; i += 100 {
			var parts []string
			for j := i; j < min(i+100, n); j++ {
				parts = append(parts, msg(j))
			}
			if _, err := u.Publish(context.Background(), []byte("["+strings.Join(parts, ",")+"]"), 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	ts := time.Now().Unix() - costMessages
	publish(costMessages, func(i int) string { return tu.Thingsee(w.sensor, ts+int64(i), 20) })
	publish(costRejected, func(i int) string { return fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d}`, ts+int64(i)) })
	// Each writer changes a gateway of its own (one gateway's changes
	// conflict with each other).
	var wg sync.WaitGroup
	for g := range 8 {
		gw := fmt.Sprintf("TSGW06COS%08d", 100+g)
		if r := w.api.Do("POST", "/v1/tenants/dev/gateways", w.api.Key(), map[string]string{"serial": gw}); r.Status != 201 {
			t.Fatalf("register %s: %d %s", gw, r.Status, r.Body)
		}
		wg.Go(func() {
			for i := g; i < costAudit; i += 8 {
				labels := map[string]string{"n": fmt.Sprint(i)}
				if _, err := w.api.Client.UpdateGateway(context.Background(), "dev", gw, client.UpdateGatewayRequest{Labels: &labels}); err != nil {
					t.Errorf("label %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return w
}

// costLimits lift the limits of requests and of a tenant's reads; a
// credential may read 5,000 stored items at once, then 100 a second, and a
// request 1,500.
var costLimits = api.Limits{
	PerCredential: 1e6, CredentialBurst: 1e6, PerIP: 1e6, IPBurst: 1e6, AuthFailures: 1e6,
	ReadsPerCredential: 100, ReadBurst: 5000, ReadsPerTenant: 1e6, TenantReadBurst: 1e6, MaxReadsPerRequest: 1500,
}

// TestAPICostlyReadsAreBounded replays the costly reads of the security
// test: a filter that matches nothing answers a partial page (with a
// cursor to go on) instead of reading on; an audit filter by actor reads
// only that actor's entries (an index), not the log; one key that keeps
// asking for large pages, or for resumes that miss, runs out of its read
// budget (429 with Retry-After) while a key of another tenant is served.
func TestAPICostlyReadsAreBounded(t *testing.T) {
	w := newCostWorld(t, costLimits)
	key := func(tenant string) string {
		if tenant != "dev" {
			if r := w.api.Do("POST", "/v1/tenants", w.api.Key(), map[string]string{"id": tenant}); r.Status != 201 {
				t.Fatalf("tenant %s: %d %s", tenant, r.Status, r.Body)
			}
		}
		r := w.api.Do("POST", "/v1/tenants/"+tenant+"/api-keys", w.api.Key(), map[string]any{"scopes": []string{"messages:read", "audit:read"}})
		var k struct{ Key string }
		r.Decode(t, &k)
		return k.Key
	}
	type page struct {
		Items   []any
		Next    string
		Partial bool
	}
	get := func(k, path string) (tu.Response, page) {
		t.Helper()
		r := w.api.Do("GET", path, k, nil)
		var p page
		if r.Status == 200 {
			r.Decode(t, &p)
		}
		return r, p
	}

	t.Run("a filter without a match answers a partial page", func(t *testing.T) {
		k := key("dev")
		for _, path := range []string{
			"/v1/tenants/dev/rejected?code=thingsee.no_such_code",
			"/v1/tenants/dev/audit?outcome=no.such.outcome",
		} {
			r, p := get(k, path)
			if r.Status != 200 || len(p.Items) != 0 || p.Next == "" || !p.Partial {
				t.Errorf("%s: %d, %d items, next %q, partial %v: want an empty partial page with a cursor", path, r.Status, len(p.Items), p.Next, p.Partial)
			}
		}
	})

	t.Run("an audit filter by actor reads only the actor's entries", func(t *testing.T) {
		k := key("dev")
		before := tu.Counter(t, w.n.Metrics(), "iotransit_api_reads_total", map[string]string{"route": "GET /v1/tenants/{tenant}/audit"})
		for _, q := range []string{"actor=nobody", "action=no.such.action", "target=gateway:TSGW06NOT00000000", "actor=nobody&order=oldest"} {
			r, p := get(k, "/v1/tenants/dev/audit?"+q)
			if r.Status != 200 || len(p.Items) != 0 || p.Next != "" {
				t.Errorf("%s: %d, %d items, next %q", q, r.Status, len(p.Items), p.Next)
			}
		}
		r, p := get(k, "/v1/tenants/dev/audit?actor=operator&action=registry.gateway.update&limit=10")
		if r.Status != 200 || len(p.Items) != 10 || p.Next == "" {
			t.Errorf("actor=operator: %d, %d items, next %q", r.Status, len(p.Items), p.Next)
		}
		after := tu.Counter(t, w.n.Metrics(), "iotransit_api_reads_total", map[string]string{"route": "GET /v1/tenants/{tenant}/audit"})
		if after == 0 || after-before > 100 {
			t.Errorf("the audit lists by actor, action and target read %v entries of a log of %d", after-before, costAudit)
		}
	})

	t.Run("large pages run out of the key's read budget", func(t *testing.T) {
		hungry, other := key("dev"), key("acme")
		if r, p := get(hungry, "/v1/tenants/dev/messages?limit=1000"); r.Status != 200 || len(p.Items) != 1000 || p.Partial {
			t.Fatalf("the first page of 1000: %d, %d items, partial %v", r.Status, len(p.Items), p.Partial)
		}
		throttled := hammer(t, 50, func() tu.Response { return w.api.Do("GET", "/v1/tenants/dev/messages?limit=1000", hungry, nil) })
		if throttled.Status != 429 || throttled.Header.Get("Retry-After") == "" {
			t.Fatalf("50 more pages of 1000 messages on a budget of 5000: never refused")
		}
		if code, _ := throttled.Problem(); code != "api.read_budget_spent" {
			t.Errorf("refusal %s", throttled.Body)
		}
		if r := w.api.Do("GET", "/v1/tenants/acme/messages", other, nil); r.Status != 200 {
			t.Errorf("another tenant's key: %d %s", r.Status, r.Body)
		}
	})

	t.Run("resumes that miss run out of the key's read budget", func(t *testing.T) {
		k := key("dev")
		missing := "/v1/tenants/dev/stream?after=" + w.sensor + ":12100:1"
		if r := websocketRequest(t, w.api, w.n, missing, k); r.Status != 404 {
			t.Fatalf("a resume after a missing message: %d, want 404", r.Status)
		}
		throttled := hammer(t, 50, func() tu.Response { return websocketRequest(t, w.api, w.n, missing, k) })
		if code, _ := throttled.Problem(); throttled.Status != 429 || code != "api.read_budget_spent" {
			t.Fatalf("50 more resumes after a missing message: never refused (%d %s)", throttled.Status, code)
		}
	})
}

// hammer sends up to n requests, one after the other, until one is
// refused with 429; it returns that answer (or the last one).
func hammer(t *testing.T, n int, send func() tu.Response) tu.Response {
	t.Helper()
	var r tu.Response
	for range n {
		if r = send(); r.Status == 429 {
			break
		}
	}
	return r
}

// websocketRequest sends a WebSocket opening handshake to path (answered,
// but never upgraded on this side: the test only needs the status).
func websocketRequest(t *testing.T, a *nodetest.API, n *node.Node, path, key string) tu.Response {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}
	return tu.WebSocketHandshake(t, c, a.Base()+path, key)
}
