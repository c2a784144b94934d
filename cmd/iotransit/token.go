package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/registry"
)

// tokenGroup is "iotransit token".
var tokenGroup = &group{
	name:    "token",
	summary: "create enrollment tokens for gateways",
	cmds: []command{
		{name: "create", args: []string{"serial"}, synopsis: "[--ttl " + shortDuration(registry.DefaultTokenTTL) + "]", summary: "create a one-time enrollment token for a registered, active gateway", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				ttl := fs.Duration("ttl", 0, fmt.Sprintf("how long the token is valid (server default %s, at most %s)",
					shortDuration(registry.DefaultTokenTTL), shortDuration(registry.MaxTokenTTL)))
				return func(ctx context.Context, e *env, args []string) error {
					if *ttl < 0 {
						return usageError("--ttl must be positive")
					}
					tok, err := e.api.CreateEnrollmentToken(ctx, e.tenant, client.CreateEnrollmentTokenRequest{Serial: args[0], TTL: optionalDuration(*ttl)})
					if err != nil {
						return err
					}
					return e.show(tok, func(w io.Writer) error {
						t := newTable(w, "TOKEN-ID", "SERIAL", "EXPIRES")
						t.row(tok.ID, tok.Serial, fmtTime(&tok.ExpiresAt))
						if err := t.flush(); err != nil {
							return err
						}
						printSecret(w, "enrollment token", tok.Token)
						ca := ""
						if e.caFile != "" {
							ca = " --ca " + e.caFile
						}
						fmt.Fprintf(w, "Enroll the gateway with it (the private key is made on the gateway and never leaves it):\n  iotransit enroll --server %s%s --serial %s --token-file FILE --out DIR\n", e.api.Server(), ca, tok.Serial)
						return nil
					})
				}
			}},
	},
}

// optionalDuration writes a duration flag for a request: "" when it is 0
// (the server's default), else time.Duration.String.
func optionalDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}
