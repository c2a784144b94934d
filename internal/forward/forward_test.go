package forward_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

const (
	tenant = "acme"
	gwSer  = "TSGW06ACM00000001"
)

var devices = []string{"TSEN01ABC00000001", "TSEN01ABC00000002", "TSPR04ABC00000003"}

type env struct {
	next map[string]int // next moveCount per device
	t    *testing.T
	n    *node.Node
	api  *nodetest.API
	up   *gateway.Uplink
	rcv  *tu.Receiver
}

func newEnv(t *testing.T, mod func(*node.Config)) *env {
	t.Helper()
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.Forward.RetryBase, c.Forward.RetryMax = 50*time.Millisecond, 300*time.Millisecond
		c.Forward.DeliveryTimeout = 2 * time.Second
		if mod != nil {
			mod(c)
		}
	})
	up, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwSer), gwSer, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, n: n, api: nodetest.NewAPI(t, n), up: up, rcv: tu.NewReceiver(t), next: map[string]int{}}
}

// restart starts a node again on the data of the stopped one (dir), with
// newEnv's settings, and talks to it from then on.
func (e *env) restart(dir string) {
	e.t.Helper()
	n := nodetest.Start(e.t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.DataDir = dir
		c.Forward.RetryBase, c.Forward.RetryMax = 50*time.Millisecond, 300*time.Millisecond
		c.Forward.DeliveryTimeout = 2 * time.Second
	})
	e.n, e.api = n, nodetest.NewAPI(e.t, n)
}

// integration creates a webhook integration to the receiver with the exact
// request of the contract, plus extra fields. It delivers one batch
// at a time (delivery.concurrency 1, the contract these tests were written
// for) unless extra says otherwise.
func (e *env) integration(extra map[string]any) (id, secret string) {
	e.t.Helper()
	body := map[string]any{"name": fmt.Sprintf("n%d", time.Now().UnixNano()), "type": "webhook",
		"webhook": map[string]any{"url": e.rcv.URL, "caPem": e.rcv.CAPEM}, "delivery": map[string]any{"concurrency": 1}}
	for k, v := range extra {
		body[k] = v
	}
	r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations", e.api.Key(), body)
	if r.Status != 201 {
		e.t.Fatalf("create integration: %d %s", r.Status, r.Body)
	}
	var out struct {
		ID      string
		Webhook struct{ Secret string }
	}
	r.Decode(e.t, &out)
	if out.ID == "" || !strings.HasPrefix(out.Webhook.Secret, "whsec_") {
		e.t.Fatalf("answer %s", r.Body)
	}
	return out.ID, out.Webhook.Secret
}

var tsmTs atomic.Int64

func init() { tsmTs.Store(1700000000) }

// publish sends count messages per device (one publish each), returning
// the bodies published in order.
func (e *env) publish(count int) []string {
	e.t.Helper()
	return e.publishTo(devices, count)
}

// arrived returns the messages the receiver got, in arrival order, each
// once (by Thingsee key), after verifying every request's signature.
func arrived(t *testing.T, r *tu.Receiver, secret string) []map[string]any {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []map[string]any
	for _, d := range r.Got() {
		if err := wh.Verify(d.Body, d.Header); err != nil {
			t.Fatalf("signature does not verify with the reference library: %v", err)
		}
		var batch []map[string]any
		if err := json.Unmarshal(d.Body, &batch); err != nil {
			t.Fatalf("body is not a JSON array: %v: %.200s", err, d.Body)
		}
		for _, m := range batch {
			k := fmt.Sprintf("%v:%v:%v", m["tsmTuid"], m["tsmId"], m["tsmTs"])
			if !seen[k] {
				seen[k] = true
				out = append(out, m)
			}
		}
	}
	return out
}

func waitArrived(t *testing.T, r *tu.Receiver, secret string, n int, within time.Duration) []map[string]any {
	t.Helper()
	var got []map[string]any
	tu.Eventually(t, within, 50*time.Millisecond, func() error {
		got = arrived(t, r, secret)
		if len(got) < n {
			return fmt.Errorf("%d of %d messages arrived", len(got), n)
		}
		return nil
	})
	return got
}

// checkOrder checks that each device's messages arrived in publish order.
func checkOrder(t *testing.T, got []map[string]any) {
	t.Helper()
	last := map[string]float64{}
	for _, m := range got {
		d := m["tsmTuid"].(string)
		c := m["moveCount"].(float64)
		if prev, ok := last[d]; ok && c != prev+1 {
			t.Fatalf("device %s: moveCount %v after %v", d, c, prev)
		}
		last[d] = c
	}
}

// TestForwardWebhookDeliversSignedThingseeBatches: batches arrive signed
// per Standard Webhooks (checked with the reference library), in order
// per device, byte for byte the stored messages.
func TestForwardWebhookDeliversSignedThingseeBatches(t *testing.T) {
	e := newEnv(t, nil)
	_, secret := e.integration(nil)
	e.publish(10)
	got := waitArrived(t, e.rcv, secret, 30, 10*time.Second)
	checkOrder(t, got)
	// Byte for byte: every delivered object is a stored message's body.
	stored := map[string]bool{}
	for _, m := range nodetest.NewAPI(t, e.n).Messages(tenant, 100) {
		stored[string(m.Message)] = true
	}
	for _, d := range e.rcv.Got() {
		var batch []json.RawMessage
		if err := json.Unmarshal(d.Body, &batch); err != nil {
			t.Fatal(err)
		}
		for _, m := range batch {
			if !stored[string(m)] {
				t.Errorf("delivered %s is not byte-for-byte a stored message", m)
			}
			var v map[string]any
			_ = json.Unmarshal(m, &v)
			if v["tsmCloudTs"] == nil || v["tsmGw"] != gwSer {
				t.Errorf("cloud fields missing: %s", m)
			}
		}
		if d.Header.Get("Content-Type") != "application/json" || d.Header.Get("webhook-id") == "" {
			t.Errorf("headers %v", d.Header)
		}
	}
	if len(e.rcv.Got()) >= 30 {
		t.Errorf("30 messages took %d requests: no batching", len(e.rcv.Got()))
	}
}

// TestForwardSurvivesOutage: the endpoint refuses connections, then answers
// 500, then times out, then recovers: everything arrives, in order.
func TestForwardSurvivesOutage(t *testing.T) {
	e := newEnv(t, nil)
	id, secret := e.integration(map[string]any{"batch": map[string]any{"maxMessages": 5, "maxWait": "50ms"}})
	addr := e.rcv.Addr
	e.rcv.Stop() // connections refused
	sent := e.publish(4)
	waitState(t, e, id, func(s forward.State) bool { return strings.Contains(s.LastError, "connection refused") })

	var mode atomic.Int32 // 0: 500, 1: hang, 2: ok
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, _ []byte) bool {
		switch mode.Load() {
		case 0:
			w.WriteHeader(500)
			return true
		case 1:
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return true
		}
		return false
	})
	e.rcv.Start(t, addr)
	waitState(t, e, id, func(s forward.State) bool { return s.LastError == "HTTP 500" })
	sent = append(sent, e.publish(2)...)
	mode.Store(1)
	waitState(t, e, id, func(s forward.State) bool { return s.LastError == "timeout" })
	mode.Store(2)
	got := waitArrived(t, e.rcv, secret, len(sent), 20*time.Second)
	checkOrder(t, got)
	if len(got) != len(sent) {
		t.Fatalf("%d arrived, %d sent", len(got), len(sent))
	}
	// The state is stored when the worker goes idle: poll for it.
	v := waitState(t, e, id, func(s forward.State) bool { return s.Delivered >= uint64(len(sent)) })
	if v.State.LastSuccessAt == nil || v.State.Failed == 0 || v.Backlog != 0 {
		t.Errorf("state %+v backlog %d", v.State, v.Backlog)
	}
}

// TestForwardUpdatesWhileFailing: updating an integration restarts its
// delivery at the first undelivered message, however often: a failing
// batch in flight makes the engine reset the consumer to a start sequence,
// and a later update must keep that start (it once lost it, and the
// integration never delivered again).
func TestForwardUpdatesWhileFailing(t *testing.T) {
	e := newEnv(t, nil)
	id, secret := e.integration(map[string]any{"batch": map[string]any{"maxMessages": 5, "maxWait": "50ms"}})
	var fail atomic.Bool
	fail.Store(true)
	e.rcv.Handle(func(w http.ResponseWriter, r *http.Request, _ []byte) bool {
		if fail.Load() {
			w.WriteHeader(503)
			return true
		}
		return false
	})
	sent := e.publish(2)
	for i := range 3 {
		before := getView(t, e, id).State.Failed
		waitState(t, e, id, func(s forward.State) bool { return s.Failed > before })
		name := fmt.Sprintf("renamed-%d", i)
		if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), map[string]any{"name": name}); r.Status != 200 {
			t.Fatalf("update %d: %d %s", i, r.Status, r.Body)
		}
		sent = append(sent, e.publish(1)...)
	}
	fail.Store(false)
	got := waitArrived(t, e.rcv, secret, len(sent), 20*time.Second)
	checkOrder(t, got)
	if v := waitState(t, e, id, func(s forward.State) bool { return s.Delivered >= uint64(len(sent)) }); v.Backlog != 0 || strings.Contains(v.State.LastError, "consumer") {
		t.Errorf("state %+v backlog %d", v.State, v.Backlog)
	}
}

func getView(t *testing.T, e *env, id string) forward.View {
	t.Helper()
	var v forward.View
	r := e.api.Do("GET", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), nil)
	if r.Status != 200 {
		t.Fatalf("get: %d %s", r.Status, r.Body)
	}
	r.Decode(t, &v)
	return v
}

func waitState(t *testing.T, e *env, id string, ok func(forward.State) bool) forward.View {
	t.Helper()
	var v forward.View
	tu.Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
		v = getView(t, e, id)
		if !ok(v.State) {
			return fmt.Errorf("state %+v", v.State)
		}
		return nil
	})
	return v
}

// receiverDown makes the receiver answer 503 while the flag it returns
// (set) stays set.
func (e *env) receiverDown() *atomic.Bool {
	var down atomic.Bool
	down.Store(true)
	e.rcv.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		if down.Load() {
			w.WriteHeader(503)
			return true
		}
		return false
	})
	return &down
}

// redrive re-drives all of an integration's dead letters, n of them.
func (e *env) redrive(id string, n int) {
	e.t.Helper()
	r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/dead-letters/redrive", e.api.Key(), nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), fmt.Sprintf(`"redriven":%d`, n)) {
		e.t.Fatalf("redrive: %d %s", r.Status, r.Body)
	}
}

// TestForwardDeadLettersAndRedrive: past the max age, failing messages go
// to the dead-letter stream, are listed with the reason, and re-drive
// delivers them once the endpoint works.
func TestForwardDeadLettersAndRedrive(t *testing.T) {
	e := newEnv(t, nil)
	down := e.receiverDown()
	id, secret := e.integration(map[string]any{"maxAge": "1s"})
	sent := e.publish(2)
	v := waitState(t, e, id, func(s forward.State) bool { return s.DeadLettered == uint64(len(sent)) })
	if v.DeadLetters != uint64(len(sent)) || v.Backlog != 0 {
		t.Fatalf("view %+v", v)
	}
	var dl struct {
		Items []forward.DeadLetter
	}
	e.api.Do("GET", "/v1/tenants/"+tenant+"/integrations/"+id+"/dead-letters", e.api.Key(), nil).Decode(t, &dl)
	if len(dl.Items) != len(sent) || dl.Items[0].Reason != "HTTP 503" || !bytes.Contains(dl.Items[0].Message, []byte(`"moveCount":0`)) {
		t.Fatalf("dead letters %+v", dl.Items)
	}
	down.Store(false)
	e.redrive(id, len(sent))
	got := waitArrived(t, e.rcv, secret, len(sent), 10*time.Second)
	checkOrder(t, got)
	if v := getView(t, e, id); v.DeadLetters != 0 {
		t.Errorf("dead letters left: %d", v.DeadLetters)
	}
}

// TestForwardFiltersPauseAndTest covers filters, pause/resume with its
// backlog, test-send, and secret rotation (two signatures that verify with
// each secret).
func TestForwardFiltersPauseAndTest(t *testing.T) {
	e := newEnv(t, nil)
	id, secret := e.integration(map[string]any{"filter": map[string]any{"devices": []string{devices[1]}}})
	r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/test", e.api.Key(), nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"ok":true`) {
		t.Fatalf("test-send: %d %s", r.Status, r.Body)
	}
	e.publish(3)
	got := waitArrived(t, e.rcv, secret, 4, 10*time.Second) // the test message + 3
	for _, m := range got {
		if m["tsmTuid"] != devices[1] && m["tsmTuid"] != "XXXX00TESTMESSAGE" {
			t.Errorf("filtered-out device delivered: %v", m["tsmTuid"])
		}
	}
	if r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/pause", e.api.Key(), nil); r.Status != 200 {
		t.Fatalf("pause: %d", r.Status)
	}
	before := len(e.rcv.Got())
	e.publish(2)
	tu.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
		if v := getView(t, e, id); v.Backlog != 2 {
			return fmt.Errorf("backlog %d, want 2", v.Backlog)
		}
		return nil
	})
	if len(e.rcv.Got()) != before {
		t.Fatal("a paused integration delivered")
	}
	rot := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/rotate-secret", e.api.Key(), map[string]string{"overlap": "1h"})
	var rv struct{ Webhook struct{ Secret string } }
	rot.Decode(t, &rv)
	if rot.Status != 200 || rv.Webhook.Secret == "" || rv.Webhook.Secret == secret {
		t.Fatalf("rotate: %d %s", rot.Status, rot.Body)
	}
	if r := e.api.Do("POST", "/v1/tenants/"+tenant+"/integrations/"+id+"/resume", e.api.Key(), nil); r.Status != 200 {
		t.Fatalf("resume: %d", r.Status)
	}
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if len(e.rcv.Got()) <= before {
			return errors.New("nothing after resume")
		}
		return nil
	})
	last := e.rcv.Got()[len(e.rcv.Got())-1]
	if n := len(strings.Fields(last.Header.Get("webhook-signature"))); n != 2 {
		t.Errorf("%d signatures during rotation, want 2", n)
	}
	for _, s := range []string{secret, rv.Webhook.Secret} {
		wh, _ := standardwebhooks.NewWebhook(s)
		if err := wh.Verify(last.Body, last.Header); err != nil {
			t.Errorf("does not verify with one of the secrets: %v", err)
		}
	}
	// The API never returns a secret again.
	g := e.api.Do("GET", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), nil)
	if bytes.Contains(g.Body, []byte("whsec_")) {
		t.Errorf("GET shows a secret: %s", g.Body)
	}
}

// TestForwardWebhookURLQueryIsSecret: a key in the webhook URL's query
// (Azure Functions' ?code=, signed URLs) is sealed like every credential:
// the API shows the URL with its values redacted, deliveries carry the
// real query, an update that copies the shown URL keeps it, a new query
// replaces it.
func TestForwardWebhookURLQueryIsSecret(t *testing.T) {
	e := newEnv(t, nil)
	const query = "code=s3cr3t-functions-key&clientId=default"
	id, secret := e.integration(map[string]any{"webhook": map[string]any{"url": e.rcv.URL + "?" + query, "caPem": e.rcv.CAPEM}})
	shown := func() string {
		t.Helper()
		g := e.api.Do("GET", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), nil)
		if bytes.Contains(g.Body, []byte("s3cr3t")) || bytes.Contains(g.Body, []byte("newkey")) {
			t.Fatalf("GET shows the URL's key: %s", g.Body)
		}
		var v struct {
			Webhook    struct{ URL string }
			SecretsSet []string
		}
		g.Decode(t, &v)
		if !strings.Contains(strings.Join(v.SecretsSet, ","), "webhook.urlQuery") {
			t.Errorf("secretsSet %v lacks webhook.urlQuery", v.SecretsSet)
		}
		return v.Webhook.URL
	}
	if got, want := shown(), e.rcv.URL+"?code=redacted&clientId=redacted"; got != want {
		t.Fatalf("shown URL %q, want %q", got, want)
	}
	lastURI := func(n int) string {
		t.Helper()
		waitArrived(t, e.rcv, secret, n, 10*time.Second)
		got := e.rcv.Got()
		return got[len(got)-1].URI
	}
	e.publish(1)
	if uri := lastURI(3); !strings.HasSuffix(uri, "?"+query) {
		t.Fatalf("delivered to %q, want the real query", uri)
	}
	// A PATCH that leaves the URL as shown keeps the sealed query.
	if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), map[string]any{"name": "renamed"}); r.Status != 200 {
		t.Fatalf("rename: %d %s", r.Status, r.Body)
	}
	if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), map[string]any{"webhook": map[string]any{"url": shown()}}); r.Status != 200 {
		t.Fatalf("patch with the shown URL: %d %s", r.Status, r.Body)
	}
	e.publish(1)
	if uri := lastURI(6); !strings.HasSuffix(uri, "?"+query) {
		t.Fatalf("after updates delivered to %q, want the real query", uri)
	}
	// A new query replaces it.
	if r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/integrations/"+id, e.api.Key(), map[string]any{"webhook": map[string]any{"url": e.rcv.URL + "?code=newkey"}}); r.Status != 200 {
		t.Fatalf("patch with a new key: %d %s", r.Status, r.Body)
	}
	if got := shown(); !strings.HasSuffix(got, "?code=redacted") {
		t.Errorf("shown URL %q", got)
	}
	e.publish(1)
	if uri := lastURI(9); !strings.HasSuffix(uri, "?code=newkey") {
		t.Fatalf("after a new key delivered to %q", uri)
	}
}

// TestForwardRefusesPrivateTargetsOutsideDev is the SSRF guard.
func TestForwardRefusesPrivateTargetsOutsideDev(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		nodetest.NoLimits(c)
		c.Dev, c.ServerNames = false, []string{"127.0.0.1"}
	})
	a := nodetest.NewAPI(t, n)
	if r := a.Do("POST", "/v1/tenants", a.Key(), map[string]string{"id": tenant}); r.Status != 201 {
		t.Fatalf("tenant: %d", r.Status)
	}
	for _, u := range []string{"https://127.0.0.1:9443/hook", "https://localhost/hook", "https://169.254.169.254/latest/meta-data", "https://10.1.2.3/x", "https://[::1]/x"} {
		r := a.Do("POST", "/v1/tenants/"+tenant+"/integrations", a.Key(), map[string]any{"name": "x", "type": "webhook", "webhook": map[string]any{"url": u}})
		if code, _ := r.Problem(); r.Status != 400 || code != "forward.target_private" {
			t.Errorf("%s: %d %s", u, r.Status, r.Body)
		}
	}
}

// TestForwardHonoursRetryAfter: a 429 with Retry-After: 2 makes the engine
// wait at least that long before the next attempt (the backoff alone would
// retry within 300 ms here).
func TestForwardHonoursRetryAfter(t *testing.T) {
	e := newEnv(t, nil)
	var calls atomic.Int32
	e.rcv.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			return true
		}
		return false
	})
	e.integration(nil)
	e.publish(1)
	var got []tu.Delivery
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got = e.rcv.Got(); len(got) < 2 {
			return fmt.Errorf("%d requests", len(got))
		}
		return nil
	})
	if gap := got[1].At.Sub(got[0].At); gap < 2*time.Second {
		t.Errorf("retried after %s, the endpoint asked for 2s", gap)
	}
	if got[0].Header.Get("webhook-id") != got[1].Header.Get("webhook-id") {
		t.Error("the retry has another webhook-id")
	}
}

func TestForwardDeploymentGroupValidation(t *testing.T) {
	e := newEnv(t, nil)
	for dg, ok := range map[string]bool{
		"prfi00samplegroup": true, "unxx00": true, "rdus00lab1": true, "dmfi00demo": true,
		"foo": false, "zzfi00x": false, "prqq00x": false, "prfi01x": false, "prfi00UPPER": false,
		"prfi00" + strings.Repeat("a", 33): false, "prfi00a.b": false, "": true,
	} {
		r := e.api.Do("PATCH", "/v1/tenants/"+tenant+"/gateways/"+gwSer, e.api.Key(), map[string]any{"deploymentGroupId": dg})
		if ok && r.Status != 200 || !ok && r.Status != 400 {
			t.Errorf("%q: %d %s", dg, r.Status, r.Body)
		}
	}
}
