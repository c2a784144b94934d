package main

import (
	"context"
	"flag"
	"io"
	"strings"

	"github.com/iotransit/iotransit/client"
)

// apikeyGroup is "iotransit apikey".
var apikeyGroup = &group{
	name:    "apikey",
	summary: "create, list and revoke a tenant's API keys",
	cmds: []command{
		{name: "create", synopsis: "--scope S [--scope S ...] [--name N] [--ttl 720h]", summary: "create an API key holding the given scopes", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var req client.CreateAPIKeyRequest
				fs.Var(listFlag{list: &req.Scopes, repeatable: true}, "scope", "scope the key holds (repeatable, or comma-separated): "+strings.Join(client.Scopes, ", "))
				fs.StringVar(&req.Name, "name", "", "a name to recognise the key by")
				ttl := fs.Duration("ttl", 0, "the key expires after this long (default: never)")
				return func(ctx context.Context, e *env, _ []string) error {
					if len(req.Scopes) == 0 {
						return usageError("apikey create needs at least one --scope")
					}
					if *ttl < 0 {
						return usageError("--ttl must be positive")
					}
					req.TTL = optionalDuration(*ttl)
					k, err := e.api.CreateAPIKey(ctx, e.tenant, req)
					if err != nil {
						return err
					}
					return e.show(k, func(w io.Writer) error {
						if err := apiKeyTable(*k)(w); err != nil {
							return err
						}
						printSecret(w, "API key", k.Key)
						return nil
					})
				}
			}},
		{name: "list", summary: "list the tenant's API keys (never their secrets)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				ks, err := e.api.ListAPIKeys(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(client.List[client.APIKey]{Items: ks}, apiKeyTable(ks...))
			}},
		itemCmd("get", "id", "show an API key", (*client.Client).GetAPIKey, apiKeyTable),
		itemCmd("revoke", "id", "revoke an API key at once", (*client.Client).RevokeAPIKey, apiKeyTable),
	},
}

// apiKeyTable writes API keys, one a row.
func apiKeyTable(keys ...client.APIKey) func(w io.Writer) error {
	return rows([]string{"ID", "NAME", "SCOPES", "EXPIRES", "LAST-USED", "REVOKED"}, keys, func(k client.APIKey) []string {
		exp := fmtTime(k.ExpiresAt)
		if k.ExpiresAt == nil {
			exp = "never"
		}
		return []string{k.ID, k.Name, strings.Join(k.Scopes, ","), exp, fmtTime(k.LastUsedAt), fmtTime(k.RevokedAt)}
	})
}
