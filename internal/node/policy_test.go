package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
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
