package main

import (
	"context"
	"io"
	"strconv"

	"github.com/iotransit/iotransit/client"
)

// tenantGroup is "iotransit tenant".
var tenantGroup = &group{
	name:    "tenant",
	summary: "create and list tenants (operator key), show one",
	cmds: []command{
		{name: "create", args: []string{"id"}, summary: "create a tenant with its CA, streams and audit log",
			run: func(ctx context.Context, e *env, args []string) error {
				t, err := e.api.CreateTenant(ctx, args[0])
				if err != nil {
					return err
				}
				return e.show(t, tenantTable(*t))
			}},
		{name: "list", summary: "list the tenants",
			run: func(ctx context.Context, e *env, _ []string) error {
				ts, err := e.api.ListTenants(ctx)
				if err != nil {
					return err
				}
				return e.show(client.List[client.Tenant]{Items: ts}, tenantTable(ts...))
			}},
		{name: "get", args: []string{"id"}, summary: "show a tenant",
			run: func(ctx context.Context, e *env, args []string) error {
				t, err := e.api.GetTenant(ctx, args[0])
				if err != nil {
					return err
				}
				return e.show(t, tenantTable(*t))
			}},
	},
}

// tenantTable writes tenants, one a row.
func tenantTable(ts ...client.Tenant) func(w io.Writer) error {
	return rows([]string{"ID", "CREATED", "REJECT-UNKNOWN-IDS"}, ts, func(t client.Tenant) []string {
		return []string{t.ID, fmtTime(&t.CreatedAt), strconv.FormatBool(t.RejectUnknownIDs)}
	})
}
