package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
)

// oauth2ClientGroup is "iotransit oauth2-client": a tenant's OAuth2
// clients (client credentials grant), managed like its API keys.
var oauth2ClientGroup = &group{
	name:    "oauth2-client",
	summary: "create, list and revoke a tenant's OAuth2 clients (client credentials grant)",
	cmds: []command{
		{name: "create", synopsis: "--scope S [--scope S ...] [--name N] [--ttl 720h]", summary: "create an OAuth2 client whose tokens hold the given scopes", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var req client.CreateOAuth2ClientRequest
				credentialFlags(fs, "client", &req.Scopes, &req.Name)
				ttl := ttlFlag(fs, "client")
				return func(ctx context.Context, e *env, _ []string) error {
					if err := needScopes("oauth2-client create", req.Scopes); err != nil {
						return err
					}
					var err error
					if req.TTL, err = ttl(); err != nil {
						return err
					}
					c, err := e.api.CreateOAuth2Client(ctx, e.tenant, req)
					if err != nil {
						return err
					}
					return e.show(c, func(w io.Writer) error {
						if err := oauth2ClientTable(*c)(w); err != nil {
							return err
						}
						printSecret(w, "client secret", c.ClientSecret)
						ca := ""
						if e.caFile != "" {
							ca = " --cacert " + node.ShellWord(e.caFile)
						}
						fmt.Fprintf(w, "Get an access token with it (client credentials grant, RFC 6749 §4.4) and send that as --key:\n  curl%s -u '%s:SECRET' -d grant_type=client_credentials '%s/oauth2/token'\n",
							ca, c.ID, strings.TrimSuffix(e.api.Server(), "/"))
						return nil
					})
				}
			}},
		{name: "list", summary: "list the tenant's OAuth2 clients (never their secrets)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				cs, err := e.api.ListOAuth2Clients(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(client.List[client.OAuth2Client]{Items: cs}, oauth2ClientTable(cs...))
			}},
		itemCmd("get", "client-id", "show an OAuth2 client", (*client.Client).GetOAuth2Client, oauth2ClientTable),
		itemCmd("revoke", "client-id", "revoke an OAuth2 client at once: it gets no tokens, and its tokens stop working", (*client.Client).RevokeOAuth2Client, oauth2ClientTable),
	},
}

// oauth2ClientTable writes OAuth2 clients, one a row.
func oauth2ClientTable(cs ...client.OAuth2Client) func(w io.Writer) error {
	return rows([]string{"CLIENT-ID", "NAME", "SCOPES", "EXPIRES", "CREATED-BY", "REVOKED"}, cs, func(c client.OAuth2Client) []string {
		return []string{c.ID, c.Name, strings.Join(c.Scopes, ","), fmtExpiry(c.ExpiresAt), c.CreatedBy, fmtTime(c.RevokedAt)}
	})
}
