package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/iotransit/iotransit/client"
)

// gatewayGroup is "iotransit gateway".
var gatewayGroup = &group{
	name:    "gateway",
	summary: "register gateways and manage their lifecycle",
	cmds: []command{
		{name: "register", args: []string{"serial"}, synopsis: "[--label k=v ...]", summary: "register a gateway", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				labels := labelFlag{}
				fs.Var(labels, "label", "label key=value (repeatable)")
				return func(ctx context.Context, e *env, args []string) error {
					req := client.RegisterGatewayRequest{Serial: args[0]}
					if len(labels) > 0 {
						req.Labels = labels
					}
					g, err := e.api.RegisterGateway(ctx, e.tenant, req)
					if err != nil {
						return err
					}
					return e.show(g, gatewayTable(*g))
				}
			}},
		claimCmd,
		{name: "list", synopsis: "[--state active|isolated|revoked] [--limit N] [--after SERIAL]", summary: "list gateways, by serial", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var q client.GatewayQuery
				fs.StringVar(&q.State, "state", "", "only gateways in this state: "+client.GatewayActive+", "+client.GatewayIsolated+" or "+client.GatewayRevoked)
				fs.IntVar(&q.Limit, "limit", 0, "at most this many ("+pageDefault+")")
				fs.StringVar(&q.After, "after", "", "start after this serial (the next page)")
				return func(ctx context.Context, e *env, _ []string) error {
					p, err := e.api.ListGateways(ctx, e.tenant, q)
					if err != nil {
						return err
					}
					if err := e.show(p, gatewayTable(p.Items...)); err != nil {
						return err
					}
					e.nextPage("gateways", "--after", p.Next)
					return nil
				}
			}},
		{name: "get", args: []string{"serial"}, summary: "show a gateway and its certificates", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				g, err := e.api.GetGateway(ctx, e.tenant, args[0])
				if err != nil {
					return err
				}
				return e.show(g, func(w io.Writer) error { return printGateway(w, g) })
			}},
		itemCmd("isolate", "serial", "refuse the gateway until it is activated again; drops its live session", (*client.Client).IsolateGateway, gatewayTable),
		itemCmd("activate", "serial", "let an isolated gateway connect again", (*client.Client).ActivateGateway, gatewayTable),
		itemCmd("revoke", "serial", "refuse the gateway for good and revoke all its certificates", (*client.Client).RevokeGateway, gatewayTable),
		gatewayRunCmd,
		{name: "delete", args: []string{"serial"}, summary: "delete a gateway's record and release its serial", tenant: true,
			run: func(ctx context.Context, e *env, args []string) error {
				if err := e.api.DeleteGateway(ctx, e.tenant, args[0]); err != nil {
					return err
				}
				e.done("gateway %s deleted", args[0])
				return nil
			}},
	},
}

// gatewayTable writes gateways, one a row.
func gatewayTable(gs ...client.Gateway) func(w io.Writer) error {
	return rows([]string{"SERIAL", "STATE", "CONNECTED", "CERT-EXPIRY", "LABELS"}, gs, func(g client.Gateway) []string {
		return []string{g.Serial, g.State, yesNo(g.Connected), fmtTime(g.CertificateExpiry), fmtLabels(g.Labels)}
	})
}

// printGateway writes a gateway and its certificates.
func printGateway(w io.Writer, g *client.Gateway) error {
	t := newTable(w, "SERIAL:", g.Serial)
	t.row("TENANT:", g.Tenant)
	t.row("STATE:", g.State)
	t.row("CONNECTED:", yesNo(g.Connected))
	t.row("CREATED:", fmtTime(&g.CreatedAt))
	t.row("UPDATED:", fmtTime(&g.UpdatedAt))
	t.row("LABELS:", fmtLabels(g.Labels))
	t.row("CERT-EXPIRY:", fmtTime(g.CertificateExpiry))
	gatewayStatusRows(t, g)
	if err := t.flush(); err != nil {
		return err
	}
	if len(g.Certificates) == 0 {
		fmt.Fprintln(w, "\nno certificates issued")
		return nil
	}
	fmt.Fprintln(w)
	return rows([]string{"CERT-SERIAL", "STATUS", "NOT-BEFORE", "NOT-AFTER", "REVOKED", "FINGERPRINT"}, g.Certificates, func(c client.Certificate) []string {
		return []string{c.Serial, c.Status, fmtTime(&c.NotBefore), fmtTime(&c.NotAfter), fmtTime(c.RevokedAt), c.Fingerprint}
	})(w)
}

// fmtLabels writes labels as k=v,k=v, by key.
func fmtLabels(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}
