package main

import (
	"context"
	"flag"
	"io"
	"strings"
	"time"

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
				credentialFlags(fs, "key", &req.Scopes, &req.Name)
				ttl := ttlFlag(fs, "key")
				return func(ctx context.Context, e *env, _ []string) error {
					if err := needScopes("apikey create", req.Scopes); err != nil {
						return err
					}
					var err error
					if req.TTL, err = ttl(); err != nil {
						return err
					}
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
		return []string{k.ID, k.Name, strings.Join(k.Scopes, ","), fmtExpiry(k.ExpiresAt), fmtTime(k.LastUsedAt), fmtTime(k.RevokedAt)}
	})
}

// The flags and columns of the commands that make tenant credentials (API
// keys, OAuth2 clients).

// credentialFlags defines --scope (repeatable) and --name of a command
// that creates a credential (what, e.g. "key").
func credentialFlags(fs *flag.FlagSet, what string, scopes *[]string, name *string) {
	fs.Var(listFlag{list: scopes, repeatable: true}, "scope", "scope the "+what+" holds (repeatable, or comma-separated): "+strings.Join(client.Scopes, ", "))
	fs.StringVar(name, "name", "", "a name to recognise the "+what+" by")
}

// ttlFlag defines --ttl of a command that creates a credential (what,
// e.g. "key"); the function it returns checks it and gives the request's
// TTL ("": never).
func ttlFlag(fs *flag.FlagSet, what string) func() (string, error) {
	ttl := fs.Duration("ttl", 0, "the "+what+" expires after this long, 1m to 2 years (default: never)")
	return func() (string, error) {
		if *ttl < 0 {
			return "", usageError("--ttl must be positive")
		}
		return optionalDuration(*ttl), nil
	}
}

// needScopes refuses a credential without scopes (cmd names the command).
func needScopes(cmd string, scopes []string) error {
	if len(scopes) == 0 {
		return usageError("%s needs at least one --scope", cmd)
	}
	return nil
}

// fmtExpiry formats a credential's expiry for a table: "never" when unset.
func fmtExpiry(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return fmtTime(t)
}
