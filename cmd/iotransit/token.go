package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/registry"
)

// tokenGroup is "iotransit token".
var tokenGroup = &group{
	name:    "token",
	summary: "create, list and revoke enrollment tokens for gateways",
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
						if err := tokenTable(*tok)(w); err != nil {
							return err
						}
						printSecret(w, "enrollment token", tok.Token)
						ca := ""
						if e.caFile != "" {
							ca = " --ca " + node.ShellWord(e.caFile)
						}
						fmt.Fprintf(w, "Enroll the gateway with it (the private key is made on the gateway and never leaves it):\n  iotransit enroll --server %s%s --serial %s --token-file FILE --out DIR\n", e.api.Server(), ca, tok.Serial)
						fmt.Fprintf(w, "Revoke it unused with: iotransit token revoke %s --tenant %s\n", tok.ID, e.tenant)
						return nil
					})
				}
			}},
		{name: "list", synopsis: "[--serial S] [--all]", summary: "list the tokens that can still enroll (never their secrets); --all adds used, expired and revoked ones", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				serial := fs.String("serial", "", "only the tokens of this gateway serial")
				all := fs.Bool("all", false, "also the tokens that can no longer enroll: used, expired and revoked")
				return func(ctx context.Context, e *env, _ []string) error {
					toks, err := e.api.ListEnrollmentTokens(ctx, e.tenant)
					if err != nil {
						return err
					}
					shown, hidden := []client.EnrollmentToken{}, 0
					for _, t := range toks {
						switch {
						case *serial != "" && t.Serial != *serial:
						case *all || t.State == client.TokenValid:
							shown = append(shown, t)
						default:
							hidden++
						}
					}
					if err := e.show(client.List[client.EnrollmentToken]{Items: shown}, tokenTable(shown...)); err != nil {
						return err
					}
					if hidden > 0 && !e.json {
						fmt.Fprintf(e.stderr, "%d used, expired or revoked token(s) not shown: add --all\n", hidden)
					}
					return nil
				}
			}},
		{name: "revoke", args: []string{"token-id"}, summary: "revoke an enrollment token at once: it enrolls nothing afterwards (revoking again changes nothing)", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				tok, err := e.api.RevokeEnrollmentToken(ctx, e.tenant, args[0])
				if err != nil {
					return err
				}
				if tok.UsedAt != nil {
					fmt.Fprintf(e.stderr, "token %s had enrolled gateway %s at %s: the gateway keeps its certificate; refuse it with: iotransit gateway revoke %s\n",
						tok.ID, tok.Serial, fmtTime(tok.UsedAt), tok.Serial)
				}
				return e.show(tok, tokenTable(*tok))
			}},
	},
}

// tokenTable writes enrollment tokens, one a row, with their state.
func tokenTable(toks ...client.EnrollmentToken) func(w io.Writer) error {
	return rows([]string{"TOKEN-ID", "SERIAL", "STATE", "CREATED", "EXPIRES", "CREATED-BY"}, toks, func(t client.EnrollmentToken) []string {
		return []string{t.ID, t.Serial, string(t.State), fmtTime(&t.CreatedAt), fmtTime(&t.ExpiresAt), t.CreatedBy}
	})
}

// optionalDuration writes a duration flag for a request: "" when it is 0
// (the server's default), else time.Duration.String.
func optionalDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}
