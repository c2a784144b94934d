package hostile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// Names of the management API's replay (prefixed: the package holds every
// area's replay).
const (
	apiTenant  = "hostile-api"
	apiOther   = "hostile-api-other"
	apiGateway = "TSGW06HOA00000001"
	apiSensor  = "TSEN01HOA00000001"
)

// fromAddress returns an HTTPS client of n's API whose connections come
// from the loopback address ip (127.0.0.0/8 is all loopback on Linux): the
// API sees a different client address per ip, as from k hosts.
func fromAddress(t *testing.T, n *node.Node, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:     d.DialContext,
		TLSClientConfig: nodetest.ClientTLS(t, n, nil),
	}}
}

// tokenRequest asks the token endpoint for a token with a client id and
// secret over c.
func tokenRequest(t *testing.T, c *http.Client, base, id, secret string) tu.Response {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	return tu.Send(t, c, req)
}

// TestHostileAPITokenFloodStaysWithinTheAuditBudget replays finding 3 of
// issue 8: failed OAuth2 token requests with a known client id wrote one
// audit entry each into the client's tenant, so k addresses (each within
// its own lock-out of 20 failures a minute) wrote 20·k a minute. Now they
// share the tenant's budget of refused authentications (burst 20) with the
// bearer path, and the next entry written counts the ones left out.
func TestHostileAPITokenFloodStaysWithinTheAuditBudget(t *testing.T) {
	const burst, addresses, perAddress = 20, 8, 20
	n := nodetest.Start(t, func(c *node.Config) {
		// The shipped shape (20 failures an address a minute, burst 20 of
		// refusals a tenant), with the tenant's budget refilled every 3 s
		// so that the entry with the count comes soon.
		c.APILimits = api.Limits{AuthFailures: perAddress, AuditRefusals: 20, AuditBurst: burst}
	})
	a := nodetest.NewAPI(t, n)
	ctx := context.Background()
	if _, err := a.Client.CreateTenant(ctx, apiTenant); err != nil {
		t.Fatal(err)
	}
	oc, err := a.Client.CreateOAuth2Client(ctx, apiTenant, client.CreateOAuth2ClientRequest{Scopes: []string{client.ScopeMessagesRead}})
	if err != nil {
		t.Fatal(err)
	}
	attempts := 0
	for i := range addresses {
		c := fromAddress(t, n, fmt.Sprintf("127.0.0.%d", 10+i))
		for range perAddress {
			if r := tokenRequest(t, c, a.Base(), oc.ID, "wrong-secret"); r.Status != 401 {
				t.Fatalf("address %d, attempt %d: %d %s", i, attempts, r.Status, r.Body)
			}
			attempts++
		}
		// The address's own lock-out holds as before.
		if r := tokenRequest(t, c, a.Base(), oc.ID, "wrong-secret"); r.Status != 429 {
			t.Fatalf("address %d after %d failures: %d, want 429", i, perAddress, r.Status)
		}
	}
	type entry struct {
		Detail map[string]string
	}
	refusals := func() []entry {
		p, err := a.Client.ListAudit(ctx, apiTenant, client.AuditQuery{Action: "credential.oauth2.token", Oldest: true, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out := make([]entry, len(p.Items))
		for i, e := range p.Items {
			out[i].Detail = e.Detail
		}
		return out
	}
	// At most the burst, and one more if the budget refilled meanwhile.
	if got := len(refusals()); got < 1 || got > burst+1 {
		t.Fatalf("%d refused token requests from %d addresses wrote %d audit entries, budget %d", attempts, addresses, got, burst)
	}
	// The next entry written carries the count: every refusal is
	// accounted for, written or counted.
	poll := fromAddress(t, n, "127.0.0.99")
	tu.Eventually(t, 15*time.Second, 500*time.Millisecond, func() error {
		if r := tokenRequest(t, poll, a.Base(), oc.ID, "wrong-secret"); r.Status != 401 {
			t.Fatalf("poll: %d", r.Status)
		}
		attempts++
		es := refusals()
		if es[len(es)-1].Detail["refusalsLeftOut"] == "" {
			return fmt.Errorf("no entry with refusalsLeftOut yet")
		}
		total := 0
		for _, e := range es {
			left, _ := strconv.Atoi(e.Detail["refusalsLeftOut"])
			total += 1 + left
		}
		if total != attempts {
			t.Fatalf("%d refusals accounted for, %d made", total, attempts)
		}
		return nil
	})
}

// TestHostileAPIIntegrationsWriteReachesNoMessage replays finding 4 of
// issue 8: a key with integrations:read and integrations:write (403 on the
// messages) created a webhook to its own receiver, or retargeted one and
// re-drove its dead letters, and received the tenant's messages. Now each
// needs messages:read as well, and the attacker's receiver gets nothing
// while the tenant's own receiver gets the messages.
func TestHostileAPIIntegrationsWriteReachesNoMessage(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { nodetest.NoLimits(c) })
	a := nodetest.NewAPI(t, n)
	ctx := context.Background()
	cert := nodetest.Gateway(t, n, apiTenant, apiGateway)
	own, evil := tu.NewReceiver(t), tu.NewReceiver(t)
	legit, err := a.Client.CreateIntegration(ctx, apiTenant, client.Integration{Name: "own", Type: client.IntegrationWebhook,
		Webhook: &client.WebhookConfig{URL: own.URL, CAPEM: own.CAPEM}})
	if err != nil {
		t.Fatal(err)
	}
	k, err := a.Client.CreateAPIKey(ctx, apiTenant, client.CreateAPIKeyRequest{Scopes: []string{client.ScopeIntegrationsRead, client.ScopeIntegrationsWrite}})
	if err != nil {
		t.Fatal(err)
	}
	base := "/v1/tenants/" + apiTenant
	attacks := []struct {
		name, method, path string
		body               any
	}{
		{"read the messages", "GET", base + "/messages", nil},
		{"create a webhook to its own receiver", "POST", base + "/integrations", map[string]any{
			"name": "exfil", "type": "webhook", "webhook": map[string]any{"url": evil.URL, "caPem": evil.CAPEM}}},
		{"create an MQTT integration to its own broker", "POST", base + "/integrations", map[string]any{
			"name": "exfil-mqtt", "type": "mqtt", "mqtt": map[string]any{"broker": "mqtts://127.0.0.1:8883"}}},
		{"retarget the tenant's webhook", "PATCH", base + "/integrations/" + legit.ID, map[string]any{
			"webhook": map[string]any{"url": evil.URL, "caPem": evil.CAPEM}}},
		{"re-drive the dead letters", "POST", base + "/integrations/" + legit.ID + "/dead-letters/redrive", nil},
	}
	for _, at := range attacks {
		r := a.Do(at.method, at.path, k.Key, at.body)
		if code, _ := r.Problem(); r.Status != 403 || code != "api.scope_missing" {
			t.Errorf("%s with integrations:write: %d %.300s, want 403 api.scope_missing", at.name, r.Status, r.Body)
		}
	}
	up, err := nodetest.Dial(t, n, cert, apiGateway, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Publish(ctx, []byte(tu.Thingsee(apiSensor, time.Now().Unix(), 21)), 1); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		if len(own.Got()) == 0 {
			return fmt.Errorf("the tenant's receiver got nothing yet")
		}
		return nil
	})
	if got := evil.Got(); len(got) != 0 {
		t.Fatalf("the attacker's receiver got %d deliveries", len(got))
	}
	if v, err := a.Client.GetIntegration(ctx, apiTenant, legit.ID); err != nil || v.Webhook.URL != own.URL {
		t.Fatalf("the tenant's webhook after the attacks: %+v, %v", v, err)
	}
}

// TestHostileAPICostlyReadsAreBounded replays finding 5 of issue 8: with
// thousands of messages and audit entries, a filter that matches nothing
// read the whole stream or log on every request (an audit filter by actor
// most of all), a failed resume searched a sensor's messages without taking
// a stream slot, and one key at its allowed request rate took seconds of CPU
// a second from every tenant. Now a request reads at most its budget (a
// partial page with a cursor), an audit filter by actor reads the index,
// and a key that reads too much is refused with 429 while another tenant is
// served. Asserted by pages, reads counted and 429s, never by time.
func TestHostileAPICostlyReadsAreBounded(t *testing.T) {
	const items = 400 // of each kind, above one request's budget
	n, a := budgetNode(t, 10, 1500, 300)
	ctx := context.Background()
	if _, err := a.Client.CreateTenant(ctx, apiOther); err != nil {
		t.Fatal(err)
	}
	storeItems(t, n, a, items, true)
	key := func(tenant string) string {
		k, err := a.Client.CreateAPIKey(ctx, tenant, client.CreateAPIKeyRequest{Scopes: []string{client.ScopeMessagesRead, client.ScopeAuditRead}})
		if err != nil {
			t.Fatal(err)
		}
		return k.Key
	}
	type page struct {
		Items   []any
		Next    string
		Partial bool
	}
	get := func(k, path string) (tu.Response, page) {
		r := a.Do("GET", path, k, nil)
		var p page
		if r.Status == 200 {
			r.Decode(t, &p)
		}
		return r, p
	}
	base := "/v1/tenants/" + apiTenant
	readsOf := func(route string) float64 {
		return tu.Counter(t, n.Metrics(), "iotransit_api_reads_total", map[string]string{"route": "GET /v1/tenants/{tenant}/" + route})
	}

	// Filters without a match: a partial page and a cursor, not a scan.
	k := key(apiTenant)
	for _, path := range []string{base + "/rejected?code=thingsee.no_such_code", base + "/audit?outcome=no.such.outcome"} {
		if r, p := get(k, path); r.Status != 200 || len(p.Items) != 0 || !p.Partial || p.Next == "" {
			t.Errorf("%s: %d, %d items, partial %v, next %q", path, r.Status, len(p.Items), p.Partial, p.Next)
		}
	}
	// An audit filter by actor reads the index: nothing, for nobody.
	before := readsOf("audit")
	for range 20 {
		if r, p := get(key(apiTenant), base+"/audit?actor=nobody"); r.Status != 200 || len(p.Items) != 0 || p.Next != "" {
			t.Fatalf("actor=nobody: %d, %d items, next %q", r.Status, len(p.Items), p.Next)
		}
	}
	if got := readsOf("audit") - before; got > 20*3 {
		t.Errorf("20 lists by an unknown actor read %v items of a log of %d entries", got, items)
	}
	// One key asking for large pages runs out of its read budget; another
	// tenant's key is served meanwhile.
	hungry, other := key(apiTenant), key(apiOther)
	var refused tu.Response
	for range 20 {
		if refused = a.Do("GET", base+"/messages?limit=1000", hungry, nil); refused.Status == 429 {
			break
		}
	}
	if code, _ := refused.Problem(); refused.Status != 429 || code != "api.read_budget_spent" || refused.Header.Get("Retry-After") == "" {
		t.Fatalf("20 pages of messages on a budget of 1500 reads: %d %.300s", refused.Status, refused.Body)
	}
	if r := a.Do("GET", "/v1/tenants/"+apiOther+"/messages", other, nil); r.Status != 200 {
		t.Errorf("another tenant's key while one key is refused: %d %s", r.Status, r.Body)
	}
	// Resumes that miss spend the budget too, and are looked up only in a
	// WebSocket handshake.
	k = key(apiTenant)
	missing := base + "/stream?after=" + apiSensor + ":12100:1"
	if r := a.Do("GET", missing, k, nil); r.Status != 426 {
		t.Errorf("a resume without a WebSocket handshake: %d, want 426 before any lookup", r.Status)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, n, nil)}}
	statuses := map[int]int{}
	for range 20 {
		r := tu.WebSocketHandshake(t, hc, a.Base()+missing, k)
		statuses[r.Status]++
		if r.Status == 429 {
			break
		}
	}
	if statuses[404] == 0 || statuses[429] != 1 {
		t.Fatalf("resumes after a missing message: %v, want 404s then 429", statuses)
	}
}

// budgetNode starts a node where one credential may read burst stored
// items at once, then perSecond a second, and one request perRequest;
// nothing else is limited.
func budgetNode(t *testing.T, perSecond float64, burst, perRequest int) (*node.Node, *nodetest.API) {
	t.Helper()
	n := nodetest.Start(t, func(c *node.Config) {
		c.APILimits = api.Limits{PerCredential: 1e6, CredentialBurst: 1e6, PerIP: 1e6, IPBurst: 1e6, AuthFailures: 1e6,
			ReadsPerCredential: perSecond, ReadBurst: burst, ReadsPerTenant: 1e6, TenantReadBurst: 1e6, MaxReadsPerRequest: perRequest}
		c.Ingest.MsgRate, c.Ingest.MsgBurst = 1e6, 1e6
	})
	return n, nodetest.NewAPI(t, n)
}

// storeItems has apiGateway send items Thingsee messages of apiSensor to
// apiTenant (and as many refused ones, when rejected), and writes items
// entries to apiTenant's audit log (label changes of the gateway).
func storeItems(t *testing.T, n *node.Node, a *nodetest.API, items int, rejected bool) {
	t.Helper()
	ctx := context.Background()
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, apiTenant, apiGateway), apiGateway, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix() - int64(items)
	kinds := []func(j int) string{func(j int) string { return tu.Thingsee(apiSensor, ts+int64(j), 20) }}
	if rejected {
		kinds = append(kinds, func(j int) string { return fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d}`, ts+int64(j)) })
	}
	for _, msg := range kinds {
		for i := 0; i < items; i += 100 {
			var msgs []string
			for j := i; j < min(i+100, items); j++ {
				msgs = append(msgs, msg(j))
			}
			if _, err := up.Publish(ctx, []byte("["+strings.Join(msgs, ",")+"]"), 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range items {
		labels := map[string]string{"n": strconv.Itoa(i)}
		if _, err := a.Client.UpdateGateway(ctx, apiTenant, apiGateway, client.UpdateGatewayRequest{Labels: &labels}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHostileAPIDuplicateKeysAreRefused replays the API half of finding 7
// of issue 8: a JSON body that named a member twice was accepted with the
// last value winning, so what a proxy or an audit of the body saw could
// differ from what the API did. Now it is refused, whatever the case of the
// second spelling, and nothing is created.
func TestHostileAPIDuplicateKeysAreRefused(t *testing.T) {
	n := nodetest.Start(t, nil)
	a := nodetest.NewAPI(t, n)
	ctx := context.Background()
	if _, err := a.Client.CreateTenant(ctx, apiTenant); err != nil {
		t.Fatal(err)
	}
	bodies := []struct {
		name, path, body string
	}{
		{"a tenant named twice", "/v1/tenants", `{"id":"hostile-a","id":"hostile-b"}`},
		{"scopes widened by a second spelling", "/v1/tenants/" + apiTenant + "/api-keys", `{"scopes":["messages:read"],"Scopes":["keys:write"]}`},
		{"a duplicate inside an object", "/v1/tenants/" + apiTenant + "/gateways", `{"serial":"TSGW06HOA00000002","labels":{"site":"a","site":"b"}}`},
	}
	for _, b := range bodies {
		r := a.Do("POST", b.path, a.Key(), []byte(b.body))
		if code, _ := r.Problem(); r.Status != 400 || code != "api.json_invalid" || !strings.Contains(string(r.Body), "duplicate key") {
			t.Errorf("%s: %d %.300s", b.name, r.Status, r.Body)
		}
	}
	ts, err := a.Client.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		if x.ID == "hostile-a" || x.ID == "hostile-b" {
			t.Errorf("a refused body created tenant %s", x.ID)
		}
	}
	if keys, err := a.Client.ListAPIKeys(ctx, apiTenant); err != nil || len(keys) != 0 {
		t.Errorf("a refused body created keys: %v, %v", keys, err)
	}
	if _, err := a.Client.GetGateway(ctx, apiTenant, "TSGW06HOA00000002"); err == nil {
		t.Error("a refused body registered a gateway")
	}
}

// TestHostileAPIWholeReadsAreBudgeted replays what a review of the issue-8
// read budgets found outside them, with keys of one scope each: a key with
// audit:read asked for GET …/audit/verify (which reads and hashes the whole
// log) at its request rate; a key with messages:read replayed the history
// over a stream from ?after=0, at the server's full speed; a key with
// integrations:read alone listed dead letters 1,000 at a time. Now a
// verification is charged the log's size (one, then 429), a stream reads
// no faster than its key's budget and waits for it, and a page of dead
// letters stops at the budget (partial, then 429). Asserted by items read
// and answers, against the key's budget.
func TestHostileAPIWholeReadsAreBudgeted(t *testing.T) {
	const items, burst, perSecond = 400, 300, 10 // more of each than a key may read at once
	n, a := budgetNode(t, perSecond, burst, 1000)
	ctx := context.Background()
	if _, err := a.Client.CreateTenant(ctx, apiTenant); err != nil {
		t.Fatal(err)
	}
	rcv := tu.NewReceiver(t) // always down: every message becomes a dead letter
	rcv.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool { w.WriteHeader(503); return true })
	dead, err := a.Client.CreateIntegration(ctx, apiTenant, client.Integration{Name: "down", Type: client.IntegrationWebhook,
		MaxAge: client.Duration(time.Second), Webhook: &client.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM}})
	if err != nil {
		t.Fatal(err)
	}
	storeItems(t, n, a, items, false)
	key := func(scope string) string {
		k, err := a.Client.CreateAPIKey(ctx, apiTenant, client.CreateAPIKeyRequest{Scopes: []string{scope}})
		if err != nil {
			t.Fatal(err)
		}
		return k.Key
	}
	base := "/v1/tenants/" + apiTenant
	readsOf := func(route string) int {
		return int(tu.Counter(t, n.Metrics(), "iotransit_api_reads_total", map[string]string{"route": "GET /v1/tenants/{tenant}/" + route}))
	}
	refusedForBudget := func(r tu.Response) bool {
		code, _ := r.Problem()
		return r.Status == 429 && code == "api.read_budget_spent" && r.Header.Get("Retry-After") != ""
	}

	// Verifications of a log larger than the key's burst: one, then 429.
	k := key(client.ScopeAuditRead)
	statuses := map[int]int{}
	for range 20 {
		r := a.Do("GET", base+"/audit/verify", k, nil)
		statuses[r.Status]++
		if r.Status == 429 {
			if !refusedForBudget(r) {
				t.Fatalf("verify refused: %.300s", r.Body)
			}
			break
		}
	}
	if statuses[200] != 1 || statuses[429] != 1 {
		t.Errorf("verifications of a log of more than %d entries on a read burst of %d: %v, want one 200 then 429", items, burst, statuses)
	}
	if got := readsOf("audit/verify"); got < items {
		t.Errorf("a verification of more than %d entries was charged %d reads", items, got)
	}

	// A replay of the history over a stream: the key's budget, not the
	// server's speed.
	sc, err := client.New(client.Config{Server: a.Base(), CAPEM: n.ServerCAPEM(), Credential: key(client.ScopeMessagesRead)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s, err := sc.OpenStream(ctx, apiTenant, client.StreamOptions{After: "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	got := 0
	for ; got < items; got++ {
		if _, err := s.Next(rctx); err != nil {
			break // the time is up
		}
	}
	elapsed := time.Since(start)
	if limit := burst + int(perSecond*elapsed.Seconds()) + 100; got > limit || readsOf("stream") > limit {
		t.Errorf("a replay from ?after=0 sent %d of %d messages (and read %d) in %s on a read budget of %d",
			got, items, readsOf("stream"), elapsed.Round(time.Millisecond), limit)
	}
	if charged := readsOf("stream"); got == 0 || charged < got {
		t.Errorf("a replay from ?after=0 sent %d messages and was charged %d reads", got, charged)
	}

	// Dead letters 1,000 at a time: a page within the budget, then 429.
	tu.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		if v, err := a.Client.GetIntegration(ctx, apiTenant, dead.ID); err != nil || v.DeadLetters < items {
			return fmt.Errorf("dead letters: %v, %v", v, err)
		}
		return nil
	})
	k = key(client.ScopeIntegrationsRead)
	dl := base + "/integrations/" + dead.ID + "/dead-letters?limit=1000"
	start, read, cursor := time.Now(), 0, ""
	var r tu.Response
	for range 20 {
		if r = a.Do("GET", dl+cursor, k, nil); r.Status != 200 {
			break
		}
		var page struct {
			Items   []json.RawMessage
			Next    string
			Partial bool
		}
		r.Decode(t, &page)
		if !page.Partial || page.Next == "" {
			t.Fatalf("a page of dead letters within the budget: %d items, partial %v, next %q", len(page.Items), page.Partial, page.Next)
		}
		read += len(page.Items)
		cursor = "&cursor=" + page.Next
	}
	if !refusedForBudget(r) {
		t.Errorf("pages of 1,000 dead letters on a read burst of %d: never refused (%d %.300s)", burst, r.Status, r.Body)
	}
	if limit := burst + int(perSecond*time.Since(start).Seconds()) + 1; read == 0 || read > limit {
		t.Errorf("pages of dead letters read %d in %s on a read budget of %d", read, time.Since(start).Round(time.Millisecond), limit)
	}
}
