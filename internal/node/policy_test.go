package node_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// A policy set through one node's API is what the other node's API shows
// and enforces within a second: its count quota refuses the integration
// past it there.
func TestPolicyReachesOtherNodesAPI(t *testing.T) {
	n1, n2 := nodetest.StartPair(t, nil)
	api1, api2 := nodetest.NewAPI(t, n1).Client, nodetest.NewAPI(t, n2).Client
	if _, err := api1.CreateTenant(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		_, err := api2.GetPolicy(t.Context(), "acme")
		return err
	})
	one := 1
	start := time.Now()
	if _, err := api1.SetPolicy(t.Context(), "acme", client.Policy{Quotas: &client.Quotas{Integrations: &one}}); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, time.Second, 5*time.Millisecond, func() error {
		v, err := api2.GetPolicy(t.Context(), "acme")
		if err != nil {
			return err
		}
		if q := v.Policy.Quotas; q == nil || q.Integrations == nil || *q.Integrations != 1 {
			return fmt.Errorf("the second node shows %+v", v.Policy)
		}
		return nil
	})
	t.Logf("the policy reached the second node's API in %s", time.Since(start))
	ws := client.Integration{Name: "ws1", Type: client.IntegrationWebsocket}
	if _, err := api2.CreateIntegration(t.Context(), "acme", ws); err != nil {
		t.Fatalf("the integration at the quota: %v", err)
	}
	ws.Name = "ws2"
	_, err := api2.CreateIntegration(t.Context(), "acme", ws)
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != "policy.quota_exceeded" || p.Status != 409 {
		t.Fatalf("the integration past the quota on the second node: %v", err)
	}
}

// A tenant's retention set through one node is its message stream's
// within a second; the other tenant's stream keeps the node's, and lifting
// the policy gives the tenant the node's again.
func TestPolicyRetentionOnMessageStream(t *testing.T) {
	n1, n2 := nodetest.StartPair(t, nil)
	api1 := nodetest.NewAPI(t, n1).Client
	for _, id := range []string{"acme", "beta"} {
		if _, err := api1.CreateTenant(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	limits := func(tenant string) (time.Duration, int64, error) {
		s, err := n2.JetStream().Stream(t.Context(), names.MessageStream(tenant))
		if err != nil {
			return 0, 0, err
		}
		info, err := s.Info(t.Context())
		if err != nil {
			return 0, 0, err
		}
		return info.Config.MaxAge, info.Config.MaxBytes, nil
	}
	want := func(tenant string, age time.Duration, bytes int64, within time.Duration) {
		t.Helper()
		tu.Eventually(t, within, 10*time.Millisecond, func() error {
			a, b, err := limits(tenant)
			if err != nil {
				return err
			}
			if a != age || b != bytes {
				return fmt.Errorf("%s's stream keeps %s and %d bytes, want %s and %d", tenant, a, b, age, bytes)
			}
			return nil
		})
	}
	week := 7 * 24 * time.Hour // the node's default, no byte bound (-1)
	want("acme", week, -1, 5*time.Second)
	age, bytes := client.Duration(2*time.Hour), int64(64<<20)
	if _, err := api1.SetPolicy(t.Context(), "acme", client.Policy{Retention: &client.Retention{MessagesMaxAge: &age, MessagesMaxBytes: &bytes}}); err != nil {
		t.Fatal(err)
	}
	want("acme", 2*time.Hour, 64<<20, time.Second)
	want("beta", week, -1, time.Second)
	v, err := nodetest.NewAPI(t, n2).Client.GetPolicy(t.Context(), "beta")
	if err != nil {
		t.Fatal(err)
	}
	if r := v.Effective.Retention; r == nil || r.MessagesMaxAge == nil || time.Duration(*r.MessagesMaxAge) != week || r.MessagesMaxBytes != nil {
		t.Fatalf("beta's effective retention %+v, want the node's week and no byte bound", v.Effective.Retention)
	}
	if _, err := api1.SetPolicy(t.Context(), "acme", client.Policy{}); err != nil {
		t.Fatal(err)
	}
	want("acme", week, -1, time.Second)
}

// A tenant's retention of rejected messages, dead letters and audit
// entries, set through one node, is the limit of those streams within a
// second as the other node sees them; an audit retention below the
// platform's is refused, and lifting the policy gives the node's again.
func TestPolicyRetentionOnEveryStream(t *testing.T) {
	const day = 24 * time.Hour
	n1, n2 := nodetest.StartPair(t, func(c *node.Config) {
		c.Audit.Retention = 30 * day
		c.Forward.DeadLetterRetention = 10 * day
		c.AllowPrivateTargets = true // the test's receiver
	})
	api1 := nodetest.NewAPI(t, n1).Client
	if _, err := api1.CreateTenant(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	rcv := tu.NewReceiver(t)
	in, err := api1.CreateIntegration(t.Context(), "acme", client.Integration{Name: "wh", Type: client.IntegrationWebhook,
		Webhook: &client.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM}})
	if err != nil {
		t.Fatal(err)
	}
	maxAge := func(stream string) (time.Duration, error) {
		s, err := n2.JetStream().Stream(t.Context(), stream)
		if err != nil {
			return 0, err
		}
		info, err := s.Info(t.Context())
		if err != nil {
			return 0, err
		}
		return info.Config.MaxAge, nil
	}
	want := func(rejected, dlq, audit time.Duration, within time.Duration) {
		t.Helper()
		tu.Eventually(t, within, 10*time.Millisecond, func() error {
			for stream, age := range map[string]time.Duration{names.RejectedStream("acme"): rejected,
				names.DeadLetterStream("acme", in.ID): dlq, names.AuditStream("acme"): audit} {
				got, err := maxAge(stream)
				if err != nil {
					return err
				}
				if got != age {
					return fmt.Errorf("%s keeps %s, want %s", stream, got, age)
				}
			}
			return nil
		})
	}
	want(30*day, 10*day, 30*day, 5*time.Second) // the node's
	d := func(v time.Duration) *client.Duration { c := client.Duration(v); return &c }
	start := time.Now()
	if _, err := api1.SetPolicy(t.Context(), "acme", client.Policy{Retention: &client.Retention{
		RejectedMaxAge: d(2 * day), DeadLettersMaxAge: d(3 * day), AuditMinAge: d(60 * day)}}); err != nil {
		t.Fatal(err)
	}
	want(2*day, 3*day, 60*day, time.Second)
	t.Logf("the retention reached the streams in %s", time.Since(start))
	v, err := nodetest.NewAPI(t, n2).Client.GetPolicy(t.Context(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if r := v.Effective.Retention; r == nil || r.AuditMinAge == nil || time.Duration(*r.AuditMinAge) != 60*day || time.Duration(*r.DeadLettersMaxAge) != 3*day {
		t.Fatalf("the second node shows %+v", v.Effective.Retention)
	}
	_, err = api1.SetPolicy(t.Context(), "acme", client.Policy{Retention: &client.Retention{AuditMinAge: d(30*day - time.Second)}})
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != "policy.invalid" || !strings.Contains(p.Detail, "retention.auditMinAge") {
		t.Fatalf("an audit retention below the platform's: %v", err)
	}
	if _, err := api1.SetPolicy(t.Context(), "acme", client.Policy{}); err != nil {
		t.Fatal(err)
	}
	want(30*day, 10*day, 30*day, time.Second)
}

// An API allowlist set through one node refuses the tenant's key on the
// other node within a second (the test's peer, 127.0.0.1, is outside it),
// and lifting it lets the key in there again.
func TestPolicySourceAllowlistOnOtherNode(t *testing.T) {
	n1, n2 := nodetest.StartPair(t, nil)
	api1, api2 := nodetest.NewAPI(t, n1).Client, nodetest.NewAPI(t, n2).Client
	if _, err := api1.CreateTenant(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	k, err := api1.CreateAPIKey(t.Context(), "acme", client.CreateAPIKeyRequest{Scopes: []string{"gateways:read"}})
	if err != nil {
		t.Fatal(err)
	}
	key2 := api2.WithCredential(k.Key)
	list := func() error {
		_, err := key2.ListGateways(t.Context(), "acme", client.GatewayQuery{})
		return err
	}
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, list)
	if _, err := api1.SetPolicy(t.Context(), "acme", client.Policy{APIAllowCIDRs: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, time.Second, 5*time.Millisecond, func() error {
		var p *client.Problem
		if err := list(); !errors.As(err, &p) || p.Code != "api.source_not_allowed" || p.Status != 403 {
			return fmt.Errorf("the key on the second node: %v", err)
		}
		return nil
	})
	if _, err := api1.SetPolicy(t.Context(), "acme", client.Policy{}); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, time.Second, 5*time.Millisecond, list)
}
