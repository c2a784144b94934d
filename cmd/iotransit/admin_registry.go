package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The shapes below are the API's JSON, as much of it as the tables show;
// -o json prints the answer itself.

type tenantJSON struct {
	ID               string    `json:"id"`
	CreatedAt        time.Time `json:"createdAt"`
	RejectUnknownIDs bool      `json:"rejectUnknownIds"`
}

type certJSON struct {
	Serial      string     `json:"serial"`
	Fingerprint string     `json:"fingerprint"`
	NotBefore   time.Time  `json:"notBefore"`
	NotAfter    time.Time  `json:"notAfter"`
	RevokedAt   *time.Time `json:"revokedAt"`
	Status      string     `json:"status"`
}

type gatewayJSON struct {
	Tenant            string            `json:"tenant"`
	Serial            string            `json:"serial"`
	State             string            `json:"state"`
	Connected         bool              `json:"connected"`
	CreatedAt         time.Time         `json:"createdAt"`
	UpdatedAt         time.Time         `json:"updatedAt"`
	Labels            map[string]string `json:"labels"`
	CertificateExpiry *time.Time        `json:"certificateExpiry"`
	Certificates      []certJSON        `json:"certificates"`
}

type tokenJSON struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Serial    string    `json:"serial"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// tenantGroup is "iotransit tenant".
var tenantGroup = &adminGroup{
	name:    "tenant",
	summary: "create and list tenants (operator key), show one",
	cmds: []adminCmd{
		{name: "create", args: []string{"id"}, summary: "create a tenant with its CA, streams and audit log",
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, args []string) error {
					a, err := e.api.call(ctx, "POST", "/v1/tenants", nil, map[string]string{"id": args[0]}, true)
					if err != nil {
						return err
					}
					return e.tenants(a, true)
				}
			}},
		{name: "list", summary: "list the tenants",
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, _ []string) error {
					a, err := e.api.call(ctx, "GET", "/v1/tenants", nil, nil, true)
					if err != nil {
						return err
					}
					return e.tenants(a, false)
				}
			}},
		{name: "get", args: []string{"id"}, summary: "show a tenant",
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, args []string) error {
					a, err := e.api.call(ctx, "GET", "/v1/tenants/"+seg(args[0]), nil, nil, true)
					if err != nil {
						return err
					}
					return e.tenants(a, true)
				}
			}},
	},
}

func (e *adminEnv) tenants(a *apiAnswer, one bool) error {
	if e.json {
		return printJSON(e.stdout, a.Body)
	}
	var items []tenantJSON
	if one {
		var t tenantJSON
		if err := a.decode(&t); err != nil {
			return err
		}
		items = append(items, t)
	} else {
		var l struct{ Items []tenantJSON }
		if err := a.decode(&l); err != nil {
			return err
		}
		items = l.Items
	}
	t := newTable(e.stdout, "ID", "CREATED", "REJECT-UNKNOWN-IDS")
	for _, it := range items {
		t.row(it.ID, fmtTime(&it.CreatedAt), strconv.FormatBool(it.RejectUnknownIDs))
	}
	return t.flush()
}

// gatewayGroup is "iotransit gateway".
var gatewayGroup = &adminGroup{
	name:    "gateway",
	summary: "register gateways and manage their lifecycle",
	cmds: []adminCmd{
		{name: "register", args: []string{"serial"}, synopsis: "[--label k=v ...]", summary: "register a gateway", tenant: true,
			flags: func(fs *flag.FlagSet) adminAction {
				labels := labelFlag{}
				fs.Var(labels, "label", "label key=value (repeatable)")
				return func(ctx context.Context, e *adminEnv, args []string) error {
					body := map[string]any{"serial": args[0]}
					if len(labels) > 0 {
						body["labels"] = map[string]string(labels)
					}
					a, err := e.api.call(ctx, "POST", e.tenantPath("gateways"), nil, body, true)
					if err != nil {
						return err
					}
					return e.gateways(a, true)
				}
			}},
		{name: "list", synopsis: "[--state active|isolated|revoked] [--limit N] [--after SERIAL]", summary: "list gateways, by serial", tenant: true,
			flags: func(fs *flag.FlagSet) adminAction {
				state := fs.String("state", "", "only gateways in this state: active, isolated or revoked")
				limit := fs.Int("limit", 0, "at most this many (server default 100)")
				after := fs.String("after", "", "start after this serial (the next page)")
				return func(ctx context.Context, e *adminEnv, _ []string) error {
					q := url.Values{}
					setQuery(q, "state", *state)
					setQuery(q, "after", *after)
					if *limit != 0 {
						q.Set("limit", strconv.Itoa(*limit))
					}
					a, err := e.api.call(ctx, "GET", e.tenantPath("gateways"), q, nil, true)
					if err != nil {
						return err
					}
					return e.gateways(a, false)
				}
			}},
		{name: "get", args: []string{"serial"}, summary: "show a gateway and its certificates", tenant: true,
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, args []string) error {
					a, err := e.api.call(ctx, "GET", e.tenantPath("gateways", seg(args[0])), nil, nil, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var g gatewayJSON
					if err := a.decode(&g); err != nil {
						return err
					}
					return printGateway(e.stdout, g)
				}
			}},
		gatewayStateCmd("isolate", "refuse the gateway until it is activated again; drops its live session"),
		gatewayStateCmd("activate", "let an isolated gateway connect again"),
		gatewayStateCmd("revoke", "refuse the gateway for good and revoke all its certificates"),
		{name: "delete", args: []string{"serial"}, summary: "delete a gateway's record and release its serial", tenant: true,
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, args []string) error {
					if _, err := e.api.call(ctx, "DELETE", e.tenantPath("gateways", seg(args[0])), nil, nil, true); err != nil {
						return err
					}
					if !e.json {
						fmt.Fprintf(e.stdout, "gateway %s deleted\n", args[0])
					}
					return nil
				}
			}},
	},
}

func gatewayStateCmd(verb, summary string) adminCmd {
	return adminCmd{name: verb, args: []string{"serial"}, summary: summary, tenant: true,
		flags: func(*flag.FlagSet) adminAction {
			return func(ctx context.Context, e *adminEnv, args []string) error {
				a, err := e.api.call(ctx, "POST", e.tenantPath("gateways", seg(args[0]), verb), nil, nil, true)
				if err != nil {
					return err
				}
				return e.gateways(a, true)
			}
		}}
}

func setQuery(q url.Values, name, v string) {
	if v != "" {
		q.Set(name, v)
	}
}

func (e *adminEnv) gateways(a *apiAnswer, one bool) error {
	if e.json {
		return printJSON(e.stdout, a.Body)
	}
	var items []gatewayJSON
	var next string
	if one {
		var g gatewayJSON
		if err := a.decode(&g); err != nil {
			return err
		}
		items = append(items, g)
	} else {
		var l struct {
			Items []gatewayJSON
			Next  string
		}
		if err := a.decode(&l); err != nil {
			return err
		}
		items, next = l.Items, l.Next
	}
	t := newTable(e.stdout, "SERIAL", "STATE", "CONNECTED", "CERT-EXPIRY", "LABELS")
	for _, g := range items {
		t.row(g.Serial, g.State, yesNo(g.Connected), fmtTime(g.CertificateExpiry), fmtLabels(g.Labels))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(e.stderr, "more gateways: add --after %s\n", next)
	}
	return nil
}

func printGateway(w io.Writer, g gatewayJSON) error {
	t := newTable(w, "SERIAL:", g.Serial)
	t.row("TENANT:", g.Tenant)
	t.row("STATE:", g.State)
	t.row("CONNECTED:", yesNo(g.Connected))
	t.row("CREATED:", fmtTime(&g.CreatedAt))
	t.row("UPDATED:", fmtTime(&g.UpdatedAt))
	t.row("LABELS:", fmtLabels(g.Labels))
	t.row("CERT-EXPIRY:", fmtTime(g.CertificateExpiry))
	if err := t.flush(); err != nil {
		return err
	}
	if len(g.Certificates) == 0 {
		fmt.Fprintln(w, "\nno certificates issued")
		return nil
	}
	fmt.Fprintln(w)
	t = newTable(w, "CERT-SERIAL", "STATUS", "NOT-BEFORE", "NOT-AFTER", "REVOKED", "FINGERPRINT")
	for _, c := range g.Certificates {
		t.row(c.Serial, c.Status, fmtTime(&c.NotBefore), fmtTime(&c.NotAfter), fmtTime(c.RevokedAt), c.Fingerprint)
	}
	return t.flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func fmtLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

// tokenGroup is "iotransit token".
var tokenGroup = &adminGroup{
	name:    "token",
	summary: "create enrollment tokens for gateways",
	cmds: []adminCmd{
		{name: "create", args: []string{"serial"}, synopsis: "[--ttl 24h]", summary: "create a one-time enrollment token for a registered, active gateway", tenant: true,
			flags: func(fs *flag.FlagSet) adminAction {
				ttl := fs.Duration("ttl", 0, "how long the token is valid (server default 24h, at most 720h)")
				return func(ctx context.Context, e *adminEnv, args []string) error {
					if *ttl < 0 {
						return usageError("--ttl must be positive")
					}
					body := map[string]string{"serial": args[0]}
					if *ttl > 0 {
						body["ttl"] = ttl.String()
					}
					a, err := e.api.call(ctx, "POST", e.tenantPath("enrollment-tokens"), nil, body, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var tok tokenJSON
					if err := a.decode(&tok); err != nil {
						return err
					}
					t := newTable(e.stdout, "TOKEN-ID", "SERIAL", "EXPIRES")
					t.row(tok.ID, tok.Serial, fmtTime(&tok.ExpiresAt))
					if err := t.flush(); err != nil {
						return err
					}
					printSecret(e.stdout, "enrollment token", tok.Token)
					ca := ""
					if e.caFile != "" {
						ca = " --ca " + e.caFile
					}
					fmt.Fprintf(e.stdout, "Enroll the gateway with it (the private key is made on the gateway and never leaves it):\n  iotransit enroll --server %s%s --serial %s --token-file FILE --out DIR\n", e.api.base, ca, tok.Serial)
					return nil
				}
			}},
	},
}

// printSecret shows a secret the API returns only once.
func printSecret(w io.Writer, what, secret string) {
	fmt.Fprintf(w, "\n%s (shown only once; store it now, it cannot be shown again):\n\n  %s\n\n", what, secret)
}
