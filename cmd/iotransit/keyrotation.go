package main

import (
	"context"
	"flag"
	"io"
	"strconv"

	"github.com/iotransit/iotransit/client"
)

// caGroup is "iotransit ca": the tenant CA's versions.
var caGroup = &group{
	name:    "ca",
	summary: "the tenant's certificate authority: rotate it, end the overlap of old versions, show its versions",
	cmds: []command{
		{name: "rotate", synopsis: "[--overlap 720h]", tenant: true,
			summary: "make a new CA version: new certificates come from it; the old version's stay accepted for the overlap",
			flags: func(fs *flag.FlagSet) action {
				var req client.RotateCARequest
				fs.StringVar(&req.Overlap, "overlap", "", "how long certificates of the previous version stay accepted, a duration up to 9600h (default 720h: 30 days)")
				return func(ctx context.Context, e *env, _ []string) error {
					st, err := e.api.RotateCA(ctx, e.tenant, req)
					if err != nil {
						return err
					}
					return e.show(st, caTable(*st))
				}
			}},
		{name: "retire", synopsis: "[--version N]", tenant: true,
			summary: "refuse from now on the certificates of a previous CA version (default: every previous version)",
			flags: func(fs *flag.FlagSet) action {
				var req client.RetireCARequest
				fs.IntVar(&req.Version, "version", 0, "the previous version to retire (0: all)")
				return func(ctx context.Context, e *env, _ []string) error {
					st, err := e.api.RetireCA(ctx, e.tenant, req)
					if err != nil {
						return err
					}
					return e.show(st, caTable(*st))
				}
			}},
		{name: "status", summary: "the tenant's CA versions: state, fingerprint, validity, overlap (never keys)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				st, err := e.api.TenantCA(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(st, caTable(*st))
			}},
	},
}

// caTable writes a tenant's CA versions, one a row.
func caTable(st client.TenantCA) func(w io.Writer) error {
	return rows([]string{"VERSION", "STATE", "FINGERPRINT", "NOT-AFTER", "TRUSTED-UNTIL"}, st.Versions, func(v client.CAVersion) []string {
		return []string{strconv.Itoa(v.Version), v.State, v.Fingerprint, fmtTime(&v.NotAfter), fmtTime(v.TrustedUntil)}
	})
}

// keysGroup is "iotransit keys": the platform's signing keys (operator).
var keysGroup = &group{
	name:    "keys",
	summary: "the platform's signing keys for access tokens and audit checkpoints (operator key)",
	cmds: []command{
		{name: "list", summary: "the public keys, current and retired, with their key ids",
			run: func(ctx context.Context, e *env, _ []string) error {
				ks, err := e.api.PlatformKeys(ctx)
				if err != nil {
					return err
				}
				return e.show(ks, platformKeysTable(*ks))
			}},
		{name: "rotate-jwt", summary: "new access-token signing key; tokens of the old one work until they expire",
			run: func(ctx context.Context, e *env, _ []string) error {
				ks, err := e.api.RotateJWTKey(ctx)
				if err != nil {
					return err
				}
				return e.show(ks, platformKeysTable(*ks))
			}},
		{name: "rotate-audit", summary: "new audit checkpoint signing key; checkpoints of the old one still verify",
			run: func(ctx context.Context, e *env, _ []string) error {
				ks, err := e.api.RotateAuditKey(ctx)
				if err != nil {
					return err
				}
				return e.show(ks, platformKeysTable(*ks))
			}},
	},
}

// platformKeysTable writes the platform keys, one a row.
func platformKeysTable(ks client.PlatformKeys) func(w io.Writer) error {
	type row struct {
		use string
		k   client.PlatformKey
	}
	var all []row
	for _, k := range ks.JWT {
		all = append(all, row{"jwt", k})
	}
	for _, k := range ks.Audit {
		all = append(all, row{"audit", k})
	}
	return rows([]string{"USE", "VERSION", "KEY-ID", "STATE", "CREATED", "RETIRED"}, all, func(r row) []string {
		return []string{r.use, strconv.FormatUint(uint64(r.k.Version), 10), r.k.ID, r.k.State, fmtTime(r.k.CreatedAt), fmtTime(r.k.RetiredAt)}
	})
}
