package client

import (
	"context"
	"iter"
	"net/url"
	"time"
)

// AuditEntry is one hash-chained entry of a tenant's audit log. Its JSON
// form is also what the audit stream holds.
type AuditEntry struct {
	// Tenant is the tenant whose log holds the entry.
	Tenant string `json:"tenant"`
	// Seq numbers the tenant's entries 1, 2, 3 ... without gaps.
	Seq uint64 `json:"seq"`
	// Time is when the entry was recorded, in UTC.
	Time time.Time `json:"time"`
	// Actor is who acted: "operator", "apikey:<id>", "oauth2:<clientId>",
	// "gateway:<serial>" or "system".
	Actor string `json:"actor"`
	// Action is what was done, component.entity.verb, e.g.
	// "registry.gateway.register".
	Action string `json:"action"`
	// Target is what was acted on, e.g. "gateway:TSGW06DEV00000001"; it
	// may be empty.
	Target string `json:"target"`
	// Source is the client address "ip:port", or "" for internal actions.
	Source string `json:"source"`
	// Outcome is "ok" or the error code of the failure.
	Outcome string `json:"outcome"`
	// Detail is small context, never secrets: at most 16 keys of at most
	// 64 bytes, with values of at most 256 bytes.
	Detail map[string]string `json:"detail,omitempty"`
	// Prev is the Hash of the previous entry (64 zeros for entry 1).
	Prev string `json:"prev"`
	// Hash is the lowercase hex SHA-256 of the canonical encoding of every
	// other member.
	Hash string `json:"hash"`
}

// AuditReport is the result of verifying a tenant's audit log.
type AuditReport struct {
	// OK is true when no entry is missing, altered or out of place and
	// every checkpoint is authentic and matches the chain.
	OK bool `json:"ok"`
	// Tenant is the tenant whose log was verified.
	Tenant string `json:"tenant"`
	// Entries is how many entries were read.
	Entries uint64 `json:"entries"`
	// Checkpoints is how many checkpoints were read, good or bad.
	Checkpoints int `json:"checkpoints"`
	// LastSignedSeq is the last entry covered by an authentic checkpoint
	// that matches the chain (0 if none).
	LastSignedSeq uint64 `json:"lastSignedSeq"`
	// Unsigned is, when OK, how many entries follow LastSignedSeq: they are
	// protected by the chain alone until the next checkpoint. It is a
	// warning, not a failure.
	Unsigned uint64 `json:"unsigned"`
	// FirstBroken is the seq of the first entry that is missing, altered or
	// out of place, or the first entry that a failed checkpoint leaves in
	// doubt. It is 0 when OK.
	FirstBroken uint64 `json:"firstBroken,omitempty"`
	// Problem is one sentence about the first problem when not OK, or about
	// the unsigned entries when OK and Unsigned > 0.
	Problem string `json:"problem,omitempty"`
}

// AuditQuery selects a page of audit entries. Zero members mean any.
type AuditQuery struct {
	// Action, Actor, Target and Outcome keep the entries with exactly
	// these values.
	Action, Actor, Target, Outcome string
	// From and To bound the entries' time: [From, To).
	From, To time.Time
	// Limit is the page size, 1 to 1000 (0: the server's default, 100).
	Limit int
	// Oldest walks oldest first; the default is newest first.
	Oldest bool
	// Cursor is a previous page's Next (with the same order).
	Cursor string
}

func (q AuditQuery) values() url.Values {
	v := url.Values{}
	setString(v, "action", q.Action)
	setString(v, "actor", q.Actor)
	setString(v, "target", q.Target)
	setString(v, "outcome", q.Outcome)
	setWindow(v, q.From, q.To, q.Limit, q.Oldest)
	setString(v, "cursor", q.Cursor)
	return v
}

// ListAudit returns a page of a tenant's audit log.
func (c *Client) ListAudit(ctx context.Context, tenant string, q AuditQuery) (*Page[AuditEntry], error) {
	return get[Page[AuditEntry]](ctx, c, path("tenants", tenant, "audit"), q.values())
}

// AllAudit walks every page of a tenant's audit log from q.Cursor on.
func (c *Client) AllAudit(ctx context.Context, tenant string, q AuditQuery) iter.Seq2[AuditEntry, error] {
	return walk(ctx, q.Cursor, func(ctx context.Context, cursor string) (*Page[AuditEntry], error) {
		q.Cursor = cursor
		return c.ListAudit(ctx, tenant, q)
	})
}

// VerifyAudit verifies a tenant's audit log: its hash chain and signed
// checkpoints. It reads the whole log, one read of the credential's read
// budget per stored entry, and is refused (api.read_budget_spent, with
// Retry-After) until the credential and its tenant have that much left.
func (c *Client) VerifyAudit(ctx context.Context, tenant string) (*AuditReport, error) {
	return get[AuditReport](ctx, c, path("tenants", tenant, "audit", "verify"), nil)
}
