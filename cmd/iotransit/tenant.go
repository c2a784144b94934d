package main

import (
	"context"
	"flag"
	"io"
	"strconv"

	"github.com/iotransit/iotransit/client"
)

// tenantGroup is "iotransit tenant".
var tenantGroup = &group{
	name:    "tenant",
	summary: "create, list and delete tenants (operator key), show one",
	cmds: []command{
		{name: "create", args: []string{"id"}, summary: "create a tenant with its CA, streams and audit log",
			run: func(ctx context.Context, e *env, args []string) error {
				t, err := e.api.CreateTenant(ctx, args[0])
				if err != nil {
					return err
				}
				return e.show(t, tenantTable(*t))
			}},
		{name: "list", synopsis: "[--deleted]", summary: "list the tenants (--deleted: the deleted ones)",
			flags: func(fs *flag.FlagSet) action {
				deleted := fs.Bool("deleted", false, "list the deleted tenants (and those being deleted) instead")
				return func(ctx context.Context, e *env, _ []string) error {
					if *deleted {
						ts, err := e.api.ListDeletedTenants(ctx)
						if err != nil {
							return err
						}
						return e.show(client.List[client.Tenant]{Items: ts}, deletedTenantTable(ts...))
					}
					ts, err := e.api.ListTenants(ctx)
					if err != nil {
						return err
					}
					return e.show(client.List[client.Tenant]{Items: ts}, tenantTable(ts...))
				}
			}},
		{name: "get", args: []string{"id"}, summary: "show a tenant",
			run: func(ctx context.Context, e *env, args []string) error {
				t, err := e.api.GetTenant(ctx, args[0])
				if err != nil {
					return err
				}
				return e.show(t, tenantTable(*t))
			}},
		{name: "delete", synopsis: "--tenant T --confirm T", tenant: true,
			summary: "delete a tenant for good (operator:admin): its keys are destroyed, then its data; run again to finish one cut short",
			flags: func(fs *flag.FlagSet) action {
				confirm := fs.String("confirm", "", "the tenant's id again (required): nothing is deleted without it")
				return func(ctx context.Context, e *env, _ []string) error {
					if *confirm == "" {
						return usageError("tenant delete needs --confirm with the tenant's id")
					}
					t, err := e.api.DeleteTenant(ctx, e.tenant, *confirm)
					if err != nil {
						return err
					}
					return e.show(t, deletedTenantTable(*t))
				}
			}},
	},
}

// tenantTable writes tenants, one a row.
func tenantTable(ts ...client.Tenant) func(w io.Writer) error {
	return rows([]string{"ID", "CREATED", "REJECT-UNKNOWN-IDS"}, ts, func(t client.Tenant) []string {
		return []string{t.ID, fmtTime(&t.CreatedAt), strconv.FormatBool(t.RejectUnknownIDs)}
	})
}

// deletedTenantTable writes deleted tenants (or tenants being deleted),
// one a row.
func deletedTenantTable(ts ...client.Tenant) func(w io.Writer) error {
	return rows([]string{"ID", "STATE", "DELETED-BY", "DELETED-AT"}, ts, func(t client.Tenant) []string {
		return []string{t.ID, t.State, t.DeletedBy, fmtTime(t.DeletedAt)}
	})
}
