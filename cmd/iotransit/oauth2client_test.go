package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
)

// oauth2-client create shows its secret once; the client's id and secret
// get a token that the CLI can use; revoke stops both the token and the
// client at once.
func TestAdminOAuth2ClientLifecycle(t *testing.T) {
	a := startAdminNode(t)
	dev := "--tenant=" + node.DevTenant

	out := a.mustOp(t, "oauth2-client", "create", dev, "--scope", "gateways:read", "--name", "dashboard", "--ttl", "24h")
	wantLines(t, out, "client secret (shown only once", "its_", "grant_type=client_credentials", "/oauth2/token'")
	if row := tableRow(t, out, "CLIENT-ID"); strings.Join(row, " ") != "CLIENT-ID NAME SCOPES EXPIRES CREATED-BY REVOKED" {
		t.Fatalf("oauth2-client header %q", row)
	}
	if row := strings.Fields(strings.Split(out, "\n")[1]); row[1] != "dashboard" || row[3] == "never" {
		t.Fatalf("a client made with --ttl 24h never expires: %q", row)
	}
	_, _, err := a.op(t, "oauth2-client", "create", dev, "--scope", "gateways:read", "--ttl", "1s")
	wantProblem(t, err, "credential.ttl_invalid")

	var c client.OAuth2Client
	a.mustJSON(t, &c, "oauth2-client", "create", dev, "--scope", "gateways:read,audit:read", "--name", "auditor")
	if !strings.HasPrefix(c.ID, "itc_") || !strings.HasPrefix(c.ClientSecret, "its_") || len(c.Scopes) != 2 {
		t.Fatalf("oauth2-client create -o json: %+v", c)
	}
	out = a.mustOp(t, "oauth2-client", "list", dev)
	if row := tableRow(t, out, c.ID); strings.Join(row[1:], " ") != "auditor audit:read,gateways:read never operator -" {
		t.Fatalf("oauth2-client list row %q", row)
	}
	if strings.Contains(out, c.ClientSecret) {
		t.Fatal("oauth2-client list shows a secret")
	}
	out = a.mustOp(t, "oauth2-client", "get", c.ID, dev)
	tableRow(t, out, c.ID)

	// The client's id and secret get a token from the token endpoint; the
	// CLI uses it as its credential.
	api, err := client.New(client.Config{Server: a.server, CAPEM: a.n.ServerCAPEM()})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	tok, err := api.Token(context.Background(), c.ID, c.ClientSecret)
	if err != nil {
		t.Fatalf("token for the new client: %v", err)
	}
	asClient := func(args ...string) (string, error) {
		out, _, err := a.cli(t, append(args, "--server", a.server, "--ca", a.caFile, "--key", tok.AccessToken, dev)...)
		return out, err
	}
	if out, err := asClient("gateway", "list"); err != nil {
		t.Fatalf("gateway list with the client's token: %v", err)
	} else {
		tableRow(t, out, node.DevGateway)
	}
	_, err = asClient("apikey", "list")
	wantProblem(t, err, "api.scope_missing")

	out = a.mustOp(t, "oauth2-client", "revoke", c.ID, dev)
	if row := tableRow(t, out, c.ID); row[len(row)-1] == "-" {
		t.Fatalf("revoked client shows no revocation time: %q", row)
	}
	a.mustOp(t, "oauth2-client", "revoke", c.ID, dev) // again: no error
	_, err = asClient("gateway", "list")
	wantProblem(t, err, "api.unauthenticated")
	var oe *client.OAuthError
	if _, err := api.Token(context.Background(), c.ID, c.ClientSecret); !errors.As(err, &oe) || oe.Code != "invalid_client" {
		t.Fatalf("token for a revoked client: %v", err)
	}

	_, _, err = a.op(t, "oauth2-client", "get", "itc_0000000000000000", dev)
	wantProblem(t, err, "credential.not_found")
	_, _, err = a.op(t, "oauth2-client", "create", dev)
	if !errors.Is(err, errUsage) {
		t.Fatalf("oauth2-client create without --scope: %v", err)
	}
}
