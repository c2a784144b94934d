package api_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/credential"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// requireAuth holds at update whatever the body says of the type: an
// empty "type" (the type cannot change; the registry keeps the stored
// one) must not make the integration look like one that needs no
// authentication.
func TestAPIPolicyUpdateEmptyTypeKeepsRequireAuth(t *testing.T) {
	w := newWorld(t)
	rcv := tu.NewReceiver(t)
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"requireAuth": true}})
	r := w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), map[string]any{"name": "wh", "type": "webhook",
		"webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM, "auth": map[string]any{"kind": "apikey", "headerName": "X-Key", "headerValue": "s3cret-value"}}})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var in struct{ ID string }
	r.Decode(t, &in)
	r = w.api.Do("PATCH", "/v1/tenants/acme/integrations/"+in.ID, w.api.Key(), map[string]any{"type": "",
		"webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM, "auth": map[string]any{"kind": "none"}}})
	wantProblem(t, "update dropping auth with an empty type", r, 403, "policy.violation", "integrations.requireAuth")
}

// requireAuth: an MQTT integration authenticates with a user name and a
// password, or a client certificate; a user name alone (no password) is
// no authentication, at create or when an update clears the password.
func TestAPIPolicyMQTTUsernameWithoutPassword(t *testing.T) {
	w := newWorld(t)
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"requireAuth": true}})
	mqtt := func(m map[string]any) map[string]any {
		return map[string]any{"name": fmt.Sprintf("mq%d", w.seq.Add(1)), "type": "mqtt", "mqtt": m}
	}
	r := w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), mqtt(map[string]any{"broker": "mqtts://broker.example.com:8883", "username": "u"}))
	wantProblem(t, "user name without a password", r, 403, "policy.violation", "integrations.requireAuth")

	r = w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), mqtt(map[string]any{"broker": "mqtts://broker.example.com:8883", "username": "u", "password": "p4ss"}))
	if r.Status != 201 {
		t.Fatalf("user name and password: %d %s", r.Status, r.Body)
	}
	var in struct{ ID string }
	r.Decode(t, &in)
	path := "/v1/tenants/acme/integrations/" + in.ID
	if r := w.api.Do("PATCH", path, w.api.Key(), map[string]any{"batch": map[string]any{"maxMessages": 10}}); r.Status != 200 {
		t.Fatalf("update keeping the password: %d %s", r.Status, r.Body)
	}
	r = w.api.Do("PATCH", path, w.api.Key(), map[string]any{"clearSecrets": []string{"mqtt.password"}})
	wantProblem(t, "update clearing the password", r, 403, "policy.violation", "integrations.requireAuth")
	r = w.api.Do("PATCH", path, w.api.Key(), map[string]any{"mqtt": map[string]any{"broker": "mqtts://other.example.com:8883", "username": "u"}})
	if r.Status == 200 {
		t.Fatalf("update moving the broker without a password: accepted %s", r.Body)
	}
}

// An integration made before its host was forbidden is not sent to on
// demand once the policy forbids it: test-send, resume and retry-now are
// refused naming the rule (redrive shares the check); pausing stays
// possible.
func TestAPIPolicyForbiddenHostNotSentOnDemand(t *testing.T) {
	w := newWorld(t)
	rcv := tu.NewReceiver(t)
	r := w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), map[string]any{"name": "wh", "type": "webhook",
		"webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM}})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var in struct{ ID string }
	r.Decode(t, &in)
	path := "/v1/tenants/acme/integrations/" + in.ID
	if r := w.api.Do("POST", path+"/pause", w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("pause: %d %s", r.Status, r.Body)
	}
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"allowedHosts": []string{"*.example.com"}}})
	for _, action := range []string{"test", "resume", "retry-now"} {
		r := w.api.Do("POST", path+"/"+action, w.api.Key(), nil)
		wantProblem(t, action, r, 403, "policy.violation", "integrations.allowedHosts")
	}
	if n := len(rcv.Got()); n != 0 {
		t.Fatalf("the receiver got %d requests from a host the policy forbids", n)
	}
	if r := w.api.Do("POST", path+"/pause", w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("pause under the policy: %d %s", r.Status, r.Body)
	}
}

// Count quotas are exact on one node: many creations at once (an
// integration, an API key or OAuth2 client, a gateway) let exactly the
// quota through.
func TestAPIPolicyCountQuotasConcurrent(t *testing.T) {
	w := newWorld(t)
	const quota, tries = 2, 8
	// beta holds one API key already (the world's).
	w.putPolicy("beta", map[string]any{"quotas": map[string]any{"gateways": quota, "integrations": quota, "apiKeys": quota + 1}})
	ctx := context.Background()
	c := w.api.Client
	for _, tc := range []struct {
		name   string
		create func(i int) error
	}{
		{name: "integrations", create: func(i int) error {
			_, err := c.CreateIntegration(ctx, "beta", client.Integration{Name: fmt.Sprintf("ws%d", i), Type: client.IntegrationWebsocket})
			return err
		}},
		{name: "apiKeys", create: func(i int) error {
			if i%2 == 0 {
				_, err := c.CreateOAuth2Client(ctx, "beta", client.CreateOAuth2ClientRequest{Scopes: []string{credential.ScopeMessagesRead}})
				return err
			}
			_, err := c.CreateAPIKey(ctx, "beta", client.CreateAPIKeyRequest{Scopes: []string{credential.ScopeMessagesRead}})
			return err
		}},
		{name: "gateways", create: func(i int) error {
			_, err := c.RegisterGateway(ctx, "beta", client.RegisterGatewayRequest{Serial: fmt.Sprintf("TSGW06RAC%08d", w.seq.Add(1))})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make([]error, tries)
			var wg sync.WaitGroup
			for i := range tries {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = tc.create(i)
				}()
			}
			wg.Wait()
			ok := 0
			for _, err := range errs {
				var pe *client.Problem
				switch {
				case err == nil:
					ok++
				case errors.As(err, &pe) && pe.Code == "policy.quota_exceeded":
				default:
					t.Fatalf("create: %v", err)
				}
			}
			if ok != quota {
				t.Fatalf("%d of %d concurrent creations went through, want the quota %d", ok, tries, quota)
			}
		})
	}
}

// allowedHosts: an IPv6 literal whose zone looks like a name under an
// allowed domain is an address, not that name, at create and update.
func TestAPIPolicyAllowedHostsZonedAddress(t *testing.T) {
	w := newWorld(t)
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"allowedHosts": []string{"*.example.com"}}})
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{name: "webhook", body: map[string]any{"name": "wh", "type": "webhook", "webhook": map[string]any{"url": "https://[::1%25.example.com]:8443/hook"}}},
		{name: "mqtt", body: map[string]any{"name": "mq", "type": "mqtt", "mqtt": map[string]any{"broker": "mqtts://[::1%25.example.com]:8883"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), tc.body)
			wantProblem(t, tc.name, r, 403, "policy.violation", "integrations.allowedHosts")
		})
	}
}

// A policy that forbids an integration made before it stops its delivery:
// the PUT pauses the tenant's integrations it forbids (audited), and
// leaves the ones within it delivering; resume stays refused until the
// integration complies.
func TestAPIPolicyPausesIntegrationsItForbids(t *testing.T) {
	w := newWorld(t)
	rcv := tu.NewReceiver(t)
	create := func(body map[string]any) string {
		t.Helper()
		r := w.api.Do("POST", "/v1/tenants/acme/integrations", w.api.Key(), body)
		if r.Status != 201 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		var in struct{ ID string }
		r.Decode(t, &in)
		return in.ID
	}
	bare := create(map[string]any{"name": "bare", "type": "webhook", "webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM}})
	keyed := create(map[string]any{"name": "keyed", "type": "webhook", "webhook": map[string]any{"url": rcv.URL, "caPem": rcv.CAPEM,
		"auth": map[string]any{"kind": "apikey", "headerName": "X-Key", "headerValue": "s3cret-value"}}})
	mq := create(map[string]any{"name": "mq", "type": "mqtt", "mqtt": map[string]any{"broker": "mqtts://broker.example.com:8883", "username": "u", "password": "p4ss"}})
	ws := create(map[string]any{"name": "ws", "type": "websocket"})

	paused := func(id string) bool {
		t.Helper()
		r := w.api.Do("GET", "/v1/tenants/acme/integrations/"+id, w.api.Key(), nil)
		var v struct{ Paused bool }
		r.Decode(t, &v)
		return v.Paused
	}
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"requireAuth": true}})
	for id, want := range map[string]bool{bare: true, keyed: false, mq: false, ws: false} {
		if got := paused(id); got != want {
			t.Errorf("requireAuth: integration %s paused %v, want %v", id, got, want)
		}
	}
	w.putPolicy("acme", map[string]any{"integrations": map[string]any{"allowedHosts": []string{"*.example.com"}}})
	for id, want := range map[string]bool{bare: true, keyed: true, mq: false, ws: false} {
		if got := paused(id); got != want {
			t.Errorf("allowedHosts: integration %s paused %v, want %v", id, got, want)
		}
	}
	wantProblem(t, "resume", w.api.Do("POST", "/v1/tenants/acme/integrations/"+keyed+"/resume", w.api.Key(), nil), 403, "policy.violation", "integrations.allowedHosts")
	r := w.api.Do("GET", "/v1/tenants/acme/audit?action=forward.integration.pause", w.api.Key(), nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), "integration:"+keyed) || !strings.Contains(string(r.Body), "integrations.allowedHosts") {
		t.Fatalf("the policy's pause of %s is not audited naming the rule: %d %s", keyed, r.Status, r.Body)
	}
}
