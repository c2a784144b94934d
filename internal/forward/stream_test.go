package forward_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/iotransit/iotransit/internal/forward/seal"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

func dialStream(t *testing.T, e *env, key, query string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(e.api.Base(), "https://", "wss://", 1) + "/v1/tenants/" + tenant + "/stream" + query
	return websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: nodetest.ClientTLS(t, e.n, nil)}},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + key}},
	})
}

// read collects messages from the stream until n have arrived.
func readN(t *testing.T, c *websocket.Conn, n int) []map[string]any {
	t.Helper()
	var out []map[string]any
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(out) < n {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d: %v", len(out), n, err)
		}
		if typ != websocket.MessageText {
			t.Fatalf("frame type %v", typ)
		}
		var batch []map[string]any
		if err := json.Unmarshal(b, &batch); err != nil {
			t.Fatalf("frame is not a JSON array: %v", err)
		}
		out = append(out, batch...)
	}
	return out
}

func apiKey(t *testing.T, e *env, tenant string, scopes ...string) string {
	t.Helper()
	r := e.api.Do("POST", "/v1/tenants/"+tenant+"/api-keys", e.api.Key(), map[string]any{"scopes": scopes})
	if r.Status != 201 {
		t.Fatalf("key: %d %s", r.Status, r.Body)
	}
	var k struct{ Key string }
	r.Decode(t, &k)
	return k.Key
}

// TestForwardWebSocketStreamResumesWithoutGap: live delivery over wss, a
// disconnect, messages stored meanwhile, and a resume from the last
// message's Thingsee key that misses nothing and repeats nothing.
func TestForwardWebSocketStreamResumesWithoutGap(t *testing.T) {
	e := newEnv(t, nil)
	key := apiKey(t, e, tenant, "messages:read")
	// after=0: from the start of the (empty) stream, so nothing published
	// right after the upgrade can be missed.
	c, _, err := dialStream(t, e, key, "?after=0")
	if err != nil {
		t.Fatal(err)
	}
	first := e.publish(2)
	got := readN(t, c, len(first))
	checkOrder(t, got)
	c.Close(websocket.StatusNormalClosure, "")

	missed := e.publish(3)
	last := got[len(got)-1]
	after := fmt.Sprintf("%v:%v:%v", last["tsmTuid"], last["tsmId"], json.Number(fmt.Sprint(int64(last["tsmTs"].(float64)))))
	c2, _, err := dialStream(t, e, key, "?after="+after)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close(websocket.StatusNormalClosure, "")
	resumed := readN(t, c2, len(missed))
	if len(resumed) != len(missed) {
		t.Fatalf("resumed %d, missed %d", len(resumed), len(missed))
	}
	for i, m := range resumed {
		var want map[string]any
		_ = json.Unmarshal([]byte(missed[i]), &want)
		if m["tsmTuid"] != want["tsmTuid"] || m["moveCount"] != want["moveCount"] {
			t.Fatalf("resumed[%d] = %v, want %v (gap or repeat)", i, m, want)
		}
	}
	// Live again after the catch-up.
	live := e.publish(1)
	if got := readN(t, c2, len(live)); len(got) != len(live) {
		t.Fatalf("live after resume: %d", len(got))
	}
}

func TestForwardWebSocketRefusesOthers(t *testing.T) {
	e := newEnv(t, nil)
	if r := e.api.Do("POST", "/v1/tenants", e.api.Key(), map[string]string{"id": "beta"}); r.Status != 201 {
		t.Fatal(r.Status)
	}
	foreign := apiKey(t, e, "beta", "messages:read")
	_, resp, err := dialStream(t, e, foreign, "")
	if err == nil || resp == nil || resp.StatusCode != 404 {
		t.Fatalf("foreign tenant's key: %v %v", err, resp)
	}
	noScope := apiKey(t, e, tenant, "gateways:read")
	if _, resp, err := dialStream(t, e, noScope, ""); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("key without messages:read: %v", err)
	}
	if _, resp, err := dialStream(t, e, "nope", ""); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("bad key: %v", err)
	}
	if _, resp, err := dialStream(t, e, apiKey(t, e, tenant, "messages:read"), "?after=TSEN01ABC00000001:13100:1"); err == nil || resp == nil || resp.StatusCode != 404 {
		t.Fatalf("unknown resume point: %v", err)
	}
}

// TestForwardEncryptedWebhookOpensWithPrivateKey: with a public key, the
// webhook body is HPKE-sealed; the private key (iotransit keygen) opens it
// to the same JSON array, and another key cannot.
func TestForwardEncryptedWebhookOpensWithPrivateKey(t *testing.T) {
	e := newEnv(t, nil)
	priv, pub, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, secret := e.integration(map[string]any{"encryption": map[string]any{"publicKeyPem": string(pub)}})
	e.publish(1)
	var d tu.Delivery
	tu.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if len(e.rcv.Got()) == 0 {
			return fmt.Errorf("nothing arrived")
		}
		d = e.rcv.Got()[0]
		return nil
	})
	if d.Header.Get("Content-Type") != "application/octet-stream" || !strings.HasPrefix(d.Header.Get("iotransit-encryption"), "hpke") {
		t.Fatalf("headers %v", d.Header)
	}
	if strings.Contains(string(d.Body), "tsmTuid") {
		t.Fatal("the sealed body holds plaintext")
	}
	op, err := seal.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := op.Open(d.Body)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	var batch []map[string]any
	if err := json.Unmarshal(plain, &batch); err != nil || len(batch) != len(devices) {
		t.Fatalf("opened %s: %v", plain, err)
	}
	other, _, _ := seal.GenerateKey()
	op2, _ := seal.ParsePrivateKey(other)
	if _, err := op2.Open(d.Body); err == nil {
		t.Fatal("another key opened the payload")
	}
	// The signature covers the sealed bytes.
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(d.Body, d.Header); err != nil {
		t.Fatalf("signature over the sealed body: %v", err)
	}
}

// TestForwardWebSocketEndsWhenKeyRevoked: an open stream stops once its
// API key is revoked.
func TestForwardWebSocketEndsWhenKeyRevoked(t *testing.T) {
	e := newEnv(t, func(c *node.Config) { c.StreamRecheck = 100 * time.Millisecond })
	r := e.api.Do("POST", "/v1/tenants/"+tenant+"/api-keys", e.api.Key(), map[string]any{"scopes": []string{"messages:read"}})
	var k struct{ Key, ID string }
	r.Decode(t, &k)
	c, _, err := dialStream(t, e, k.Key, "?after=0")
	if err != nil {
		t.Fatal(err)
	}
	if r := e.api.Do("POST", "/v1/tenants/"+tenant+"/api-keys/"+k.ID+"/revoke", e.api.Key(), nil); r.Status != 200 {
		t.Fatal(r.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("stream after revocation: %v", err)
	}
	// A plain GET is told to upgrade, as problem+json.
	g := e.api.Do("GET", "/v1/tenants/"+tenant+"/stream", e.api.Key(), nil)
	if code, _ := g.Problem(); g.Status != 426 || code != "api.upgrade_required" {
		t.Errorf("plain GET: %d %s", g.Status, g.Body)
	}
}

// TestForwardWebSocketStreamsAreBounded: one credential can hold only so
// many streams open (each holds a JetStream consumer); beyond it 429 with
// Retry-After, and a closed stream frees its slot. Another credential of
// the tenant has its own slots until the tenant's limit.
func TestForwardWebSocketStreamsAreBounded(t *testing.T) {
	e := newEnv(t, func(c *node.Config) { c.MaxStreamsPerCredential, c.MaxStreamsPerTenant = 2, 3 })
	k1, k2 := apiKey(t, e, tenant, "messages:read"), apiKey(t, e, tenant, "messages:read")
	var open []*websocket.Conn
	for range 2 {
		c, _, err := dialStream(t, e, k1, "")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	refused := func(key, why string) {
		t.Helper()
		_, resp, err := dialStream(t, e, key, "")
		if err == nil || resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: %v %+v", why, err, resp)
		}
	}
	refused(k1, "a third stream of one credential")
	c3, _, err := dialStream(t, e, k2, "")
	if err != nil {
		t.Fatalf("another credential: %v", err)
	}
	refused(k2, "a fourth stream of the tenant")
	c3.Close(websocket.StatusNormalClosure, "")
	open[0].Close(websocket.StatusNormalClosure, "")
	tu.Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
		c, _, err := dialStream(t, e, k1, "")
		if err != nil {
			return err
		}
		open[0] = c
		return nil
	})
	for _, c := range open {
		c.Close(websocket.StatusNormalClosure, "")
	}
}
