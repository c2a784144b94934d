package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

type apiKeyJSON struct {
	Key        string     `json:"key"`
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"createdAt"`
	ExpiresAt  *time.Time `json:"expiresAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
}

// apikeyGroup is "iotransit apikey".
var apikeyGroup = &adminGroup{
	name:    "apikey",
	summary: "create, list and revoke a tenant's API keys",
	cmds: []adminCmd{
		{name: "create", synopsis: "--scope S [--scope S ...] [--name N] [--ttl 720h]", summary: "create an API key holding the given scopes", tenant: true,
			flags: func(fs *flag.FlagSet) adminAction {
				var scopes multiFlag
				fs.Var(&scopes, "scope", "scope the key holds (repeatable, or comma-separated): gateways:read, gateways:write, messages:read, keys:read, keys:write, audit:read, integrations:read, integrations:write")
				name := fs.String("name", "", "a name to recognise the key by")
				ttl := fs.Duration("ttl", 0, "the key expires after this long (default: never)")
				return func(ctx context.Context, e *adminEnv, _ []string) error {
					if len(scopes) == 0 {
						return usageError("apikey create needs at least one --scope")
					}
					if *ttl < 0 {
						return usageError("--ttl must be positive")
					}
					body := map[string]any{"scopes": []string(scopes)}
					if *name != "" {
						body["name"] = *name
					}
					if *ttl > 0 {
						body["ttl"] = ttl.String()
					}
					a, err := e.api.call(ctx, "POST", e.tenantPath("api-keys"), nil, body, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var k apiKeyJSON
					if err := a.decode(&k); err != nil {
						return err
					}
					if err := e.apiKeyTable(k); err != nil {
						return err
					}
					printSecret(e.stdout, "API key", k.Key)
					return nil
				}
			}},
		{name: "list", summary: "list the tenant's API keys (never their secrets)", tenant: true,
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, _ []string) error {
					a, err := e.api.call(ctx, "GET", e.tenantPath("api-keys"), nil, nil, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var l struct{ Items []apiKeyJSON }
					if err := a.decode(&l); err != nil {
						return err
					}
					return e.apiKeyTable(l.Items...)
				}
			}},
		{name: "get", args: []string{"id"}, summary: "show an API key", tenant: true,
			flags: func(*flag.FlagSet) adminAction { return apiKeyAction("GET", "") }},
		{name: "revoke", args: []string{"id"}, summary: "revoke an API key at once", tenant: true,
			flags: func(*flag.FlagSet) adminAction { return apiKeyAction("POST", "revoke") }},
	},
}

func apiKeyAction(method, verb string) adminAction {
	return func(ctx context.Context, e *adminEnv, args []string) error {
		segs := []string{"api-keys", seg(args[0])}
		if verb != "" {
			segs = append(segs, verb)
		}
		a, err := e.api.call(ctx, method, e.tenantPath(segs...), nil, nil, true)
		if err != nil {
			return err
		}
		if e.json {
			return printJSON(e.stdout, a.Body)
		}
		var k apiKeyJSON
		if err := a.decode(&k); err != nil {
			return err
		}
		return e.apiKeyTable(k)
	}
}

func (e *adminEnv) apiKeyTable(keys ...apiKeyJSON) error {
	t := newTable(e.stdout, "ID", "NAME", "SCOPES", "EXPIRES", "LAST-USED", "REVOKED")
	for _, k := range keys {
		exp := fmtTime(k.ExpiresAt)
		if k.ExpiresAt == nil {
			exp = "never"
		}
		t.row(k.ID, k.Name, strings.Join(k.Scopes, ","), exp, fmtTime(k.LastUsedAt), fmtTime(k.RevokedAt))
	}
	return t.flush()
}

type auditEntryJSON struct {
	Seq     uint64            `json:"seq"`
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`
	Action  string            `json:"action"`
	Target  string            `json:"target"`
	Source  string            `json:"source"`
	Outcome string            `json:"outcome"`
	Detail  map[string]string `json:"detail"`
}

type auditReportJSON struct {
	OK            bool   `json:"ok"`
	Tenant        string `json:"tenant"`
	Entries       uint64 `json:"entries"`
	Checkpoints   int    `json:"checkpoints"`
	LastSignedSeq uint64 `json:"lastSignedSeq"`
	Unsigned      uint64 `json:"unsigned"`
	FirstBroken   uint64 `json:"firstBroken"`
	Problem       string `json:"problem"`
}

// errAuditBroken is returned by audit verify when the log does not verify.
var errAuditBroken = errors.New("the audit log does not verify")

// auditGroup is "iotransit audit".
var auditGroup = &adminGroup{
	name:    "audit",
	summary: "read and verify a tenant's hash-chained audit log",
	cmds: []adminCmd{
		{name: "list", synopsis: "[--action A] [--actor A] [--target T] [--outcome O] [--from T] [--to T] [--limit N] [--order newest|oldest] [--cursor C]",
			summary: "list audit entries, newest first", tenant: true,
			flags: func(fs *flag.FlagSet) adminAction {
				action := fs.String("action", "", "only this action, e.g. registry.gateway.revoke")
				actor := fs.String("actor", "", "only this actor, e.g. operator or apikey:ID")
				target := fs.String("target", "", "only this target, e.g. gateway:SERIAL")
				outcome := fs.String("outcome", "", "only this outcome: ok or an error code")
				from := fs.String("from", "", "only entries at or after this time: RFC 3339, or a duration ago such as 24h")
				to := fs.String("to", "", "only entries before this time: RFC 3339, or a duration ago")
				limit := fs.Int("limit", 0, "at most this many entries (server default 100, at most 1000)")
				order := fs.String("order", "newest", "newest or oldest first")
				cursor := fs.String("cursor", "", "the next page, as printed after the previous one")
				return func(ctx context.Context, e *adminEnv, _ []string) error {
					q := url.Values{}
					setQuery(q, "action", *action)
					setQuery(q, "actor", *actor)
					setQuery(q, "target", *target)
					setQuery(q, "outcome", *outcome)
					setQuery(q, "cursor", *cursor)
					if *order != "newest" && *order != "oldest" {
						return usageError("--order %q: want newest or oldest", *order)
					}
					setQuery(q, "order", *order)
					for name, v := range map[string]string{"from": *from, "to": *to} {
						t, err := parseWhen(v, time.Now())
						if err != nil {
							return usageError("--%s: %v", name, err)
						}
						if !t.IsZero() {
							q.Set(name, t.UTC().Format(time.RFC3339Nano))
						}
					}
					if *limit != 0 {
						q.Set("limit", strconv.Itoa(*limit))
					}
					a, err := e.api.call(ctx, "GET", e.tenantPath("audit"), q, nil, true)
					if err != nil {
						return err
					}
					if e.json {
						return printJSON(e.stdout, a.Body)
					}
					var l struct {
						Items []auditEntryJSON
						Next  string
					}
					if err := a.decode(&l); err != nil {
						return err
					}
					t := newTable(e.stdout, "SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME")
					for _, it := range l.Items {
						t.row(strconv.FormatUint(it.Seq, 10), it.Time.UTC().Format(time.RFC3339), it.Actor, it.Action, it.Target, it.Outcome)
					}
					if err := t.flush(); err != nil {
						return err
					}
					if l.Next != "" {
						fmt.Fprintf(e.stderr, "more entries: add --cursor %s\n", l.Next)
					}
					return nil
				}
			}},
		{name: "verify", summary: "check the hash chain and the signed checkpoints; fails when the log is broken", tenant: true,
			flags: func(*flag.FlagSet) adminAction {
				return func(ctx context.Context, e *adminEnv, _ []string) error {
					a, err := e.api.call(ctx, "GET", e.tenantPath("audit", "verify"), nil, nil, true)
					if err != nil {
						return err
					}
					var r auditReportJSON
					if err := a.decode(&r); err != nil {
						return err
					}
					if e.json {
						if err := printJSON(e.stdout, a.Body); err != nil {
							return err
						}
					} else {
						printReport(e, r)
					}
					if !r.OK {
						return fmt.Errorf("%w: tenant %s, first broken entry %d", errAuditBroken, e.tenant, r.FirstBroken)
					}
					return nil
				}
			}},
	},
}

func printReport(e *adminEnv, r auditReportJSON) {
	w := e.stdout
	if r.OK {
		fmt.Fprintf(w, "OK: the audit log of tenant %s verifies\n", e.tenant)
	} else {
		fmt.Fprintf(w, "BROKEN: the audit log of tenant %s does not verify\n", e.tenant)
	}
	t := newTable(w, "  entries:", strconv.FormatUint(r.Entries, 10))
	t.row("  checkpoints:", strconv.Itoa(r.Checkpoints))
	t.row("  last signed entry:", strconv.FormatUint(r.LastSignedSeq, 10))
	t.row("  unsigned entries:", strconv.FormatUint(r.Unsigned, 10))
	if !r.OK {
		t.row("  first broken entry:", strconv.FormatUint(r.FirstBroken, 10))
	}
	switch {
	case r.Problem != "" && r.OK:
		t.row("  note:", r.Problem)
	case r.Problem != "":
		t.row("  problem:", r.Problem)
	}
	_ = t.flush()
}

// parseWhen reads an RFC 3339 time or a duration before now; "" is the
// zero time.
func parseWhen(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration ago (24h)", v)
}
