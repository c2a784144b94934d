package node_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// tenantObjects lists the streams (KV buckets and object stores are
// streams too) of the JetStream n uses whose name holds the tenant's id.
func tenantObjects(t *testing.T, n *node.Node, tenant string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	l := n.JetStream().StreamNames(ctx)
	for name := range l.Name() {
		if strings.Contains(strings.ToLower(name), "_"+tenant+"_") || strings.HasSuffix(strings.ToLower(name), "_"+tenant) {
			out = append(out, name)
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTenantDeleteLeavesNothingBehindOnBusyNodes: a tenant whose gateway
// uploads to one node of a pair while a failing integration keeps
// retrying is deleted through the other node; afterwards no stream or
// bucket of the tenant is left or made again by a late writer (the
// gateway's session end, the forwarder, the audit of the session's end).
func TestTenantDeleteLeavesNothingBehindOnBusyNodes(t *testing.T) {
	a, b := nodetest.StartPair(t, func(c *node.Config) {
		c.Forward.RetryBase, c.Forward.RetryMax = 10*time.Millisecond, 20*time.Millisecond
		c.AllowPrivateTargets = true // the test's receiver
	})
	ctx := context.Background()
	if _, err := a.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	const serial = "TSGW06ACM00000001"
	cert := nodetest.Gateway(t, a, "acme", serial)
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, ok := b.Registry().Gateway("acme", serial); !ok {
			return errors.New("node b does not know the gateway yet")
		}
		return nil
	})
	apiA := nodetest.NewAPI(t, a)
	rcv := tu.NewReceiver(t)
	rcv.Handle(func(w http.ResponseWriter, _ *http.Request, _ []byte) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return true
	})
	if _, err := apiA.Client.CreateIntegration(ctx, "acme", client.Integration{Name: "failing", Type: "webhook",
		Webhook: &client.WebhookConfig{URL: rcv.URL, CAPEM: rcv.CAPEM}}); err != nil {
		t.Fatal(err)
	}
	up, err := nodetest.Dial(t, b, cert, serial, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if res, err := up.Publish(ctx, []byte(tu.Thingsee("TSEN01ABC12345678", int64(1700000000+i), 20)), 1); err != nil || res.ReasonCode != 0 {
			t.Fatalf("publish: %v 0x%02x", err, res.ReasonCode)
		}
	}
	tu.Eventually(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := len(rcv.Got()); got < 3 {
			return fmt.Errorf("%d attempts so far", got)
		}
		return nil
	})
	if _, err := apiA.Client.DeleteTenant(ctx, "acme", "acme"); err != nil {
		t.Fatal(err)
	}
	// Whatever a late writer does, it does within a few seconds: nothing
	// of the tenant may show up meanwhile.
	deadline := time.Now().Add(3 * time.Second * tu.Slowdown())
	for time.Now().Before(deadline) {
		if left := tenantObjects(t, a, "acme"); len(left) > 0 {
			t.Fatalf("streams of the deleted tenant after its deletion: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTenantBeingDeletedRefusesItsCredentials: a deletion cut short
// before the tenant's credentials are purged (here at its first step)
// leaves the tenant marked deleting; its API key and OAuth2 client must
// be refused from the mark on, as its gateways are, not only once the
// deletion gets to purge them.
func TestTenantBeingDeletedRefusesItsCredentials(t *testing.T) {
	n := nodetest.Start(t, nil)
	api := nodetest.NewAPI(t, n)
	ctx := context.Background()
	nodetest.Gateway(t, n, "acme", "TSGW06ACM00000001")
	key, err := api.Client.CreateAPIKey(ctx, "acme", client.CreateAPIKeyRequest{Name: "reader", Scopes: []string{"gateways:read"}})
	if err != nil {
		t.Fatal(err)
	}
	oc, err := api.Client.CreateOAuth2Client(ctx, "acme", client.CreateOAuth2ClientRequest{Name: "reader", Scopes: []string{"gateways:read"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.Client.WithCredential(key.Key).WhoAmI(ctx); err != nil {
		t.Fatalf("the key before the deletion: %v", err)
	}
	node.SetTenantDeleteHook(n, func(step string) error {
		if step == "shred" {
			return errors.New("injected failure")
		}
		return nil
	})
	if _, err := api.Client.DeleteTenant(ctx, "acme", "acme"); err == nil {
		t.Fatal("the deletion did not fail at the injected step")
	}
	tests := []struct {
		name string
		use  func() error
	}{
		{name: "api key", use: func() error {
			_, err := api.Client.WithCredential(key.Key).WhoAmI(ctx)
			return err
		}},
		{name: "oauth2 client", use: func() error {
			_, err := api.Client.Token(ctx, oc.ID, oc.ClientSecret)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.use()
			var p *client.Problem
			var o *client.OAuthError
			if !(errors.As(err, &p) && p.Status == http.StatusUnauthorized) && !(errors.As(err, &o) && o.Status == http.StatusUnauthorized) {
				t.Errorf("the credential of a tenant being deleted: %v, want 401", err)
			}
		})
	}
}

// TestTenantDeleteRunsThatOverlapBothEnd: two runs of one tenant's
// deletion overlap (a DELETE sent again while the first still runs, or the
// start-up sweeps of several nodes started at once): the one that comes to
// the shared buckets after the other wrote the tombstone must end with
// the tombstone too, not fail for good (the sweep would retry it for ever).
func TestTenantDeleteRunsThatOverlapBothEnd(t *testing.T) {
	n := nodetest.Start(t, nil)
	ctx := context.Background()
	nodetest.Gateway(t, n, "acme", "TSGW06ACM00000001")
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	node.SetTenantDeleteHook(n, func(step string) error {
		if step == "shared" {
			first := false
			once.Do(func() { first = true })
			if first {
				close(reached)
				<-release
			}
		}
		return nil
	})
	type result struct {
		state string
		err   error
	}
	firstRun := make(chan result, 1)
	go func() {
		tomb, err := n.DeleteTenant(ctx, "acme", "operator")
		firstRun <- result{tomb.State, err}
	}()
	select {
	case <-reached:
	case <-time.After(30 * time.Second * tu.Slowdown()):
		t.Fatal("the first run did not reach the shared buckets")
	}
	tomb, err := n.DeleteTenant(ctx, "acme", "operator")
	if err != nil || tomb.State != "deleted" {
		t.Fatalf("the second run: %+v, %v", tomb, err)
	}
	close(release)
	select {
	case r := <-firstRun:
		if r.err != nil || r.state != "deleted" {
			t.Errorf("the first run, ending after the second: state %q, %v; want the tombstone", r.state, r.err)
		}
	case <-time.After(30 * time.Second * tu.Slowdown()):
		t.Fatal("the first run did not end")
	}
}
