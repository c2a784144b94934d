package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iotransit/iotransit/client"
)

// policyGroup is "iotransit policy".
var policyGroup = &group{
	name:    "policy",
	summary: "a tenant's security policy: quotas, integration rules, lifetimes (set by the operator)",
	cmds: []command{
		{name: "show", summary: "show the tenant's policy and what the node applies (defaults marked)", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				v, err := e.api.GetPolicy(ctx, e.tenant)
				if err != nil {
					return err
				}
				return e.show(v, policyTable(*v))
			}},
		{name: "set", synopsis: "--file policy.json | [--strict-validation] [--msg-rate N] [--gateways N] ...",
			summary: "replace the tenant's policy (operator key): from a JSON file, or from flags; what is not given takes the node's default", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				file := fs.String("file", "", "the policy as JSON (the body of PUT /v1/tenants/{tenant}/policy); not with the other flags")
				strict := fs.Bool("strict-validation", false, "refuse Thingsee messages whose tsmId has no schema")
				rate := fs.Float64("msg-rate", 0, "messages per second allowed per gateway")
				burst := fs.Int("msg-burst", 0, "burst of messages allowed above --msg-rate")
				counts := map[string]*int{}
				for _, c := range []struct{ name, usage string }{
					{"max-conns", "concurrent gateway connections of the tenant on each node"},
					{"gateways", "gateways the tenant may hold"},
					{"integrations", "integrations the tenant may hold"},
					{"api-keys", "API keys and OAuth2 clients the tenant may hold"},
				} {
					counts[c.name] = fs.Int(c.name, 0, c.usage)
				}
				var types, hosts []string
				fs.Var(listFlag{list: &types, repeatable: true}, "allow-type", "an integration type allowed (repeatable): "+strings.Join(client.IntegrationTypes, ", "))
				fs.Var(listFlag{list: &hosts, repeatable: true}, "allow-host", "a host integrations may deliver to, or *.domain (repeatable)")
				var cidrs []string
				fs.Var(listFlag{list: &cidrs, repeatable: true}, "allow-cidr", "a network (CIDR) from which the tenant's API keys and OAuth2 tokens are taken (repeatable); none: any")
				auth := fs.Bool("require-auth", false, "integrations must authenticate to their endpoint")
				validity := fs.Duration("cert-validity", 0, "longest lifetime of a gateway certificate")
				keyLife := fs.Duration("api-key-max-lifetime", 0, "longest lifetime of an API key or OAuth2 client")
				keep := fs.Duration("retention", 0, "how long the tenant's messages are kept; lowering it discards the older ones at once, delivered by the integrations or not")
				stored := fs.Int64("stored-bytes", 0, "stored-bytes quota of the tenant's message and rejected streams, each: when full, new messages are refused (PUBACK 0x97), nothing stored is discarded")
				rejKeep := fs.Duration("rejected-retention", 0, "how long the tenant's rejected messages are kept")
				dlqKeep := fs.Duration("dead-letter-retention", 0, "how long the dead letters of the tenant's integrations are kept, re-driven or not")
				auditKeep := fs.Duration("audit-retention", 0, "how long the tenant's audit entries are kept: at least the node's --audit-retention")
				maxBytes := fs.Int64("max-bytes", 0, "how many bytes of the tenant's messages are kept; lowering it discards the oldest at once, delivered or not")
				return func(ctx context.Context, e *env, _ []string) error {
					var p client.Policy
					given := map[string]bool{}
					fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
					if *file != "" {
						for _, name := range policyFlags {
							if given[name] {
								return usageError("--file replaces the whole policy: give no other policy flag with it (--%s)", name)
							}
						}
						var err error
						if p, err = readPolicy(*file); err != nil {
							return err
						}
					} else {
						p = policyFromFlags(given, *strict, *rate, *burst, counts, types, hosts, *auth, *validity, *keyLife)
						p.APIAllowCIDRs = cidrs
						if given["stored-bytes"] {
							if p.Quotas == nil {
								p.Quotas = &client.Quotas{}
							}
							p.Quotas.StoredBytes = stored
						}
						if given["retention"] || given["max-bytes"] || given["rejected-retention"] || given["dead-letter-retention"] || given["audit-retention"] {
							p.Retention = &client.Retention{}
							for name, dst := range map[string]struct {
								v   time.Duration
								dst **client.Duration
							}{"retention": {*keep, &p.Retention.MessagesMaxAge}, "rejected-retention": {*rejKeep, &p.Retention.RejectedMaxAge},
								"dead-letter-retention": {*dlqKeep, &p.Retention.DeadLettersMaxAge}, "audit-retention": {*auditKeep, &p.Retention.AuditMinAge}} {
								if given[name] {
									d := client.Duration(dst.v)
									*dst.dst = &d
								}
							}
							if given["max-bytes"] {
								p.Retention.MessagesMaxBytes = maxBytes
							}
						}
					}
					v, err := e.api.SetPolicy(ctx, e.tenant, p)
					if err != nil {
						return err
					}
					return e.show(v, policyTable(*v))
				}
			}},
	},
}

// policyFlags are the flags of policy set that make a policy.
var policyFlags = []string{"strict-validation", "msg-rate", "msg-burst", "max-conns", "gateways", "integrations", "api-keys",
	"allow-type", "allow-host", "require-auth", "cert-validity", "api-key-max-lifetime", "retention", "max-bytes", "allow-cidr", "stored-bytes",
	"rejected-retention", "dead-letter-retention", "audit-retention"}

// readPolicy reads a policy from a JSON file, refusing members it does
// not know, as the server does.
func readPolicy(path string) (client.Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return client.Policy{}, fmt.Errorf("--file: %w", err)
	}
	var p client.Policy
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return client.Policy{}, fmt.Errorf("--file %s: %w", path, err)
	}
	return p, nil
}

// policyFromFlags builds a policy of the flags given.
func policyFromFlags(given map[string]bool, strict bool, rate float64, burst int, counts map[string]*int,
	types, hosts []string, auth bool, validity, keyLife time.Duration) client.Policy {
	var p client.Policy
	if given["strict-validation"] {
		p.StrictValidation = &strict
	}
	q := client.Quotas{}
	if given["msg-rate"] {
		q.IngestMsgsPerSecond = &rate
	}
	if given["msg-burst"] {
		q.IngestBurst = &burst
	}
	for name, dst := range map[string]**int{"max-conns": &q.ConcurrentConnections, "gateways": &q.Gateways,
		"integrations": &q.Integrations, "api-keys": &q.APIKeys} {
		if given[name] {
			*dst = counts[name]
		}
	}
	if q != (client.Quotas{}) {
		p.Quotas = &q
	}
	if len(types) > 0 || len(hosts) > 0 || given["require-auth"] {
		p.Integrations = &client.IntegrationPolicy{AllowedTypes: types, AllowedHosts: hosts}
		if given["require-auth"] {
			p.Integrations.RequireAuth = &auth
		}
	}
	if given["cert-validity"] {
		d := client.Duration(validity)
		p.CertificateValidity = &d
	}
	if given["api-key-max-lifetime"] {
		d := client.Duration(keyLife)
		p.APIKeyMaxLifetime = &d
	}
	return p
}

// policyTable writes what the node applies, a member a row, marking the
// node's defaults.
func policyTable(v client.PolicyView) func(w io.Writer) error {
	type member struct{ name, value string }
	eff := v.Effective
	q := eff.Quotas
	if q == nil {
		q = &client.Quotas{}
	}
	ip := eff.Integrations
	if ip == nil {
		ip = &client.IntegrationPolicy{}
	}
	count := func(n *int) string {
		if n == nil {
			return "no bound"
		}
		return strconv.Itoa(*n)
	}
	list := func(l []string) string {
		if len(l) == 0 {
			return "all"
		}
		return strings.Join(l, ",")
	}
	dur := func(d *client.Duration) string {
		if d == nil {
			return "no bound"
		}
		return time.Duration(*d).String()
	}
	flag := func(b *bool) string { return strconv.FormatBool(b != nil && *b) }
	rate := "-"
	if q.IngestMsgsPerSecond != nil {
		rate = strconv.FormatFloat(*q.IngestMsgsPerSecond, 'g', -1, 64)
	}
	members := []member{
		{"strictValidation", flag(eff.StrictValidation)},
		{"quotas.ingestMsgsPerSecond", rate},
		{"quotas.ingestBurst", count(q.IngestBurst)},
		{"quotas.concurrentConnections", count(q.ConcurrentConnections)},
		{"quotas.gateways", count(q.Gateways)},
		{"quotas.integrations", count(q.Integrations)},
		{"quotas.apiKeys", count(q.APIKeys)},
		{"quotas.storedBytes", bytesOrNone(q.StoredBytes)},
		{"integrations.allowedTypes", list(ip.AllowedTypes)},
		{"integrations.allowedHosts", list(ip.AllowedHosts)},
		{"integrations.requireAuth", flag(ip.RequireAuth)},
		{"certificateValidity", dur(eff.CertificateValidity)},
		{"apiKeyMaxLifetime", dur(eff.APIKeyMaxLifetime)},
		{"apiAllowCIDRs", list(eff.APIAllowCIDRs)},
	}
	rt := eff.Retention
	if rt == nil {
		rt = &client.Retention{}
	}
	members = append(members, member{"retention.messagesMaxAge", dur(rt.MessagesMaxAge)}, member{"retention.messagesMaxBytes", bytesOrNone(rt.MessagesMaxBytes)},
		member{"retention.rejectedMaxAge", dur(rt.RejectedMaxAge)}, member{"retention.deadLettersMaxAge", dur(rt.DeadLettersMaxAge)},
		member{"retention.auditMinAge", dur(rt.AuditMinAge)})
	return rows([]string{"MEMBER", "VALUE", "SOURCE"}, members, func(m member) []string {
		src := "tenant policy"
		if slices.Contains(v.Defaults, m.name) {
			src = "node default"
		}
		return []string{m.name, m.value, src}
	})
}

// bytesOrNone is a byte bound as the policy table shows it.
func bytesOrNone(n *int64) string {
	if n == nil {
		return "no bound"
	}
	return strconv.FormatInt(*n, 10)
}
