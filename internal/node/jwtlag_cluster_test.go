package node_test

import (
	"context"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestNodeAcceptsATokenOfAKeyRotatedOnTheOtherNodeAtOnce: a client that
// gets a token from the node that has just rotated the signing key and
// sends it to the other node (a load balancer's next pick) is served there
// at once: a token naming a key id the node does not know yet makes it
// read the new versions before refusing, not a poll later.
func TestNodeAcceptsATokenOfAKeyRotatedOnTheOtherNodeAtOnce(t *testing.T) {
	n1, n2 := nodetest.StartPair(t, nil)
	ctx := context.Background()
	api1, api2 := nodetest.NewAPI(t, n1).Client, nodetest.NewAPI(t, n2).Client
	if _, err := api1.CreateTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	oc, err := api1.CreateOAuth2Client(ctx, "acme", client.CreateOAuth2ClientRequest{Scopes: []string{credential.ScopeGatewaysRead}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api1.RotateJWTKey(ctx); err != nil {
		t.Fatal(err)
	}
	tok, err := api1.Token(ctx, oc.ID, oc.ClientSecret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api2.WithCredential(tok.AccessToken).ListGateways(ctx, "acme", client.GatewayQuery{}); err != nil {
		t.Fatalf("node 2 refuses node 1's fresh token: %v", err)
	}
}
