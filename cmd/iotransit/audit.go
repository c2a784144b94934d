package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/registry"
)

// errAuditBroken is returned by audit verify when the log does not verify.
var errAuditBroken = errors.New("the audit log does not verify")

// auditGroup is "iotransit audit".
var auditGroup = &group{
	name:    "audit",
	summary: "read and verify a tenant's hash-chained audit log (the operator also --tenant " + audit.SystemTenant + ", the platform's)",
	cmds: []command{
		{name: "list", synopsis: "[--action A] [--actor A] [--target T] [--outcome O] [--from T] [--to T] [--limit N] [--order newest|oldest] [--cursor C]",
			summary: "list audit entries, newest first", tenant: true,
			flags: func(fs *flag.FlagSet) action {
				var q client.AuditQuery
				fs.StringVar(&q.Action, "action", "", "only this action, e.g. registry.gateway.revoke")
				fs.StringVar(&q.Actor, "actor", "", "only this actor, e.g. operator or apikey:ID")
				fs.StringVar(&q.Target, "target", "", "only this target, e.g. gateway:SERIAL")
				fs.StringVar(&q.Outcome, "outcome", "", "only this outcome: ok or an error code")
				from := fs.String("from", "", "only entries at or after this time: RFC 3339, or a duration ago such as 24h")
				to := fs.String("to", "", "only entries before this time: RFC 3339, or a duration ago")
				fs.IntVar(&q.Limit, "limit", 0, "at most this many entries ("+pageLimits+")")
				order := fs.String("order", "newest", "newest or oldest first")
				fs.StringVar(&q.Cursor, "cursor", "", "the next page, as printed after the previous one")
				return func(ctx context.Context, e *env, _ []string) error {
					if *order != "newest" && *order != "oldest" {
						return usageError("--order %q: want newest or oldest", *order)
					}
					q.Oldest = *order == "oldest"
					if err := parseWindow(*from, *to, &q.From, &q.To); err != nil {
						return err
					}
					p, err := e.api.ListAudit(ctx, e.tenant, q)
					if err != nil {
						return systemHint(e, err)
					}
					err = e.show(p, rows([]string{"SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"}, p.Items, func(a client.AuditEntry) []string {
						return []string{strconv.FormatUint(a.Seq, 10), a.Time.UTC().Format(time.RFC3339), a.Actor, a.Action, a.Target, a.Outcome}
					}))
					if err != nil {
						return err
					}
					e.nextPage("entries", "--cursor", p.Next)
					return nil
				}
			}},
		{name: "verify", summary: "check the hash chain and the signed checkpoints; fails when the log is broken", tenant: true,
			run: func(ctx context.Context, e *env, _ []string) error {
				r, err := e.api.VerifyAudit(ctx, e.tenant)
				if err != nil {
					return systemHint(e, err)
				}
				if err := e.show(r, func(w io.Writer) error { return printReport(w, e.tenant, r) }); err != nil {
					return err
				}
				if !r.OK {
					return fmt.Errorf("%w: tenant %s, first broken entry %d", errAuditBroken, e.tenant, r.FirstBroken)
				}
				return nil
			}},
	},
}

// systemHint adds to the refusal of the platform's log (--tenant _system)
// to a tenant credential who may read it.
func systemHint(e *env, err error) error {
	var p *client.Problem
	if e.tenant != audit.SystemTenant || !errors.As(err, &p) || p.Code != registry.ErrTenantNotFound.Code() {
		return err
	}
	return &hinted{err: err, hint: "(" + audit.SystemTenant + " is the platform's audit log: only the operator key reads it)"}
}

// printReport writes the verification report of tenant's audit log.
func printReport(w io.Writer, tenant string, r *client.AuditReport) error {
	if r.OK {
		fmt.Fprintf(w, "OK: the audit log of tenant %s verifies\n", tenant)
	} else {
		fmt.Fprintf(w, "BROKEN: the audit log of tenant %s does not verify\n", tenant)
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
	return t.flush()
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
