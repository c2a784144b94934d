// The tenant's security policy: kept in the tenant record, so that it
// reaches every node through the tenants bucket's watch with the record,
// and the rules the registry itself applies (gateway count, certificate
// validity).

package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/retry"
)

// Faults of the policy.
var (
	// ErrPolicyInvalid is a policy that cannot be set; the detail names
	// the member.
	ErrPolicyInvalid = fault.Define("policy.invalid", fault.InvalidArgument, "the policy is not valid")
	// ErrQuotaExceeded refuses creating what the tenant holds as many of as
	// its policy allows; the detail names the quota and its limit.
	ErrQuotaExceeded = fault.Define("policy.quota_exceeded", fault.Conflict, "the tenant's policy allows no more of these")
	// ErrPolicyViolation refuses what the tenant's policy forbids; the
	// detail names the rule.
	ErrPolicyViolation = fault.Define("policy.violation", fault.PermissionDenied, "the tenant's security policy does not allow this")
	// ErrTenantBusy is a policy change that kept losing to concurrent
	// changes of the tenant's record.
	ErrTenantBusy = fault.Define("registry.tenant_busy", fault.Unavailable, "the tenant is being changed by others at this moment; try again")
)

// StrictValidation reports whether the tenant's Thingsee messages whose
// tsmId has no schema are refused: the policy's strictValidation, else
// the record's own switch (set before policies existed; not the value a
// former policy kept in RejectUnknownIDs).
func (t Tenant) StrictValidation() bool {
	if v := t.Policy.StrictValidation; v != nil {
		return *v
	}
	if t.OwnRejectUnknownIDs != nil {
		return *t.OwnRejectUnknownIDs
	}
	return t.RejectUnknownIDs
}

// CertificateValidity is the lifetime of a certificate issued to the
// tenant's gateways: max (the node's), or the policy's if shorter.
func (t Tenant) CertificateValidity(max time.Duration) time.Duration {
	if v := t.Policy.CertificateValidity; v != nil && time.Duration(*v) < max {
		return time.Duration(*v)
	}
	return max
}

// Quota returns a count quota of the tenant's policy (nil: none) by
// selecting it from the policy's quotas, and whether it is set.
func (t Tenant) Quota(sel func(*client.Quotas) *int) (int, bool) {
	if t.Policy.Quotas == nil {
		return 0, false
	}
	if v := sel(t.Policy.Quotas); v != nil {
		return *v, true
	}
	return 0, false
}

// CheckQuota refuses one more of what the tenant holds held of when its
// quota (named name in the detail) is set and reached.
func CheckQuota(t Tenant, name string, sel func(*client.Quotas) *int, held int) error {
	if limit, ok := t.Quota(sel); ok && held >= limit {
		return ErrQuotaExceeded.WithDetail("quotas.%s is %d and the tenant holds %d", name, limit, held)
	}
	return nil
}

// PolicyLimits are the node's bounds of a policy.
type PolicyLimits struct {
	// MaxCertificateValidity is the node's --cert-validity.
	MaxCertificateValidity time.Duration
	// AuditRetention is how long the node keeps audit entries (0: for
	// ever): the least a policy's retention.auditMinAge may be.
	AuditRetention time.Duration
}

// ValidatePolicy checks a policy against the rules and the node's limits;
// the error names the member at fault.
func ValidatePolicy(p client.Policy, lim PolicyLimits) error {
	bad := func(field, format string, args ...any) error {
		return ErrPolicyInvalid.WithDetail("%s: %s", field, fmt.Sprintf(format, args...))
	}
	if q := p.Quotas; q != nil {
		if v := q.IngestMsgsPerSecond; v != nil && !(*v > 0 && *v <= 1e9) {
			return bad("quotas.ingestMsgsPerSecond", "must be more than 0 and at most 1e9")
		}
		counts := []struct {
			name string
			v    *int
			min  int
		}{
			{"ingestBurst", q.IngestBurst, 1}, {"concurrentConnections", q.ConcurrentConnections, 0},
			{"gateways", q.Gateways, 0}, {"integrations", q.Integrations, 0}, {"apiKeys", q.APIKeys, 0},
		}
		for _, c := range counts {
			if c.v != nil && (*c.v < c.min || *c.v > 1e9) {
				return bad("quotas."+c.name, "must be an integer from %d to 1000000000", c.min)
			}
		}
		if v := q.StoredBytes; v != nil {
			if *v < 1<<20 {
				return bad("quotas.storedBytes", "must be at least 1048576 (1 MiB)")
			}
			if p.Retention != nil && p.Retention.MessagesMaxBytes != nil {
				return bad("quotas.storedBytes", "not with retention.messagesMaxBytes: a full message stream either refuses new messages (the quota) or discards its oldest (retention), not both")
			}
		}
	}
	if ip := p.Integrations; ip != nil {
		for _, typ := range ip.AllowedTypes {
			if !slices.Contains(client.IntegrationTypes, typ) {
				return bad("integrations.allowedTypes", "%q is not an integration type (%s)", typ, strings.Join(client.IntegrationTypes, ", "))
			}
		}
		for _, h := range ip.AllowedHosts {
			if !validHostPattern(h) {
				return bad("integrations.allowedHosts", "%q is not a host or *.domain pattern (no scheme, port or path)", h)
			}
		}
	}
	if v := p.CertificateValidity; v != nil {
		if d := time.Duration(*v); d < time.Hour || d > lim.MaxCertificateValidity {
			return bad("certificateValidity", "must be from 1h to the node's --cert-validity (%s)", lim.MaxCertificateValidity)
		}
	}
	if v := p.APIKeyMaxLifetime; v != nil && time.Duration(*v) < time.Minute {
		return bad("apiKeyMaxLifetime", "must be at least 1m")
	}
	if len(p.APIAllowCIDRs) > MaxAllowCIDRs {
		return bad("apiAllowCIDRs", "at most %d networks", MaxAllowCIDRs)
	}
	for _, c := range p.APIAllowCIDRs {
		pf, err := netip.ParsePrefix(c)
		if err != nil {
			return bad("apiAllowCIDRs", "%q is not a network in CIDR notation (e.g. 10.0.0.0/8, 2001:db8::/32)", c)
		}
		if pf != pf.Masked() {
			return bad("apiAllowCIDRs", "%q has host bits set (the network is %s)", c, pf.Masked())
		}
	}
	if rt := p.Retention; rt != nil {
		if v := rt.MessagesMaxAge; v != nil && time.Duration(*v) < time.Hour {
			return bad("retention.messagesMaxAge", "must be at least 1h")
		}
		if v := rt.MessagesMaxBytes; v != nil && *v < 1<<20 {
			return bad("retention.messagesMaxBytes", "must be at least 1048576 (1 MiB)")
		}
		for _, a := range []struct {
			name string
			v    *client.Duration
		}{{"rejectedMaxAge", rt.RejectedMaxAge}, {"deadLettersMaxAge", rt.DeadLettersMaxAge}} {
			if a.v != nil && time.Duration(*a.v) < time.Hour {
				return bad("retention."+a.name, "must be at least 1h")
			}
		}
		if v := rt.AuditMinAge; v != nil {
			if lim.AuditRetention == 0 {
				return bad("retention.auditMinAge", "the node keeps audit entries for ever: a tenant's audit is never kept shorter than the platform's")
			}
			if time.Duration(*v) < lim.AuditRetention {
				return bad("retention.auditMinAge", "must be at least the node's audit retention %s: a tenant's audit is never kept shorter than the platform's", lim.AuditRetention)
			}
		}
	}
	return nil
}

// MaxAllowCIDRs bounds a policy's apiAllowCIDRs.
const MaxAllowCIDRs = 100

// SourceAllowed reports whether the tenant's credentials are taken from
// addr: its policy's apiAllowCIDRs is empty, or one of them holds addr (an
// IPv4-mapped IPv6 address, and a network written as one, as its IPv4
// one). The policy was validated (ValidatePolicy); a network that does
// not parse holds nothing.
func (t Tenant) SourceAllowed(addr netip.Addr) bool {
	if len(t.Policy.APIAllowCIDRs) == 0 {
		return true
	}
	addr = addr.Unmap().WithZone("")
	for _, c := range t.Policy.APIAllowCIDRs {
		pf, err := netip.ParsePrefix(c)
		if err != nil {
			continue
		}
		if pf.Addr().Is4In6() && pf.Bits() >= 96 {
			pf = netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()-96)
		}
		if pf.Contains(addr) {
			return true
		}
	}
	return false
}

// MessageRetention is the tenant's policy's bounds of its message stream:
// its maximum age and bytes, each 0 when the policy leaves it to the node.
func (t Tenant) MessageRetention() (maxAge time.Duration, maxBytes int64) {
	if rt := t.Policy.Retention; rt != nil {
		if rt.MessagesMaxAge != nil {
			maxAge = time.Duration(*rt.MessagesMaxAge)
		}
		if rt.MessagesMaxBytes != nil {
			maxBytes = *rt.MessagesMaxBytes
		}
	}
	return maxAge, maxBytes
}

// RetentionAges are the ages the tenant's policy sets for its rejected
// messages, its integrations' dead letters and its audit entries, each 0
// when the policy leaves it to the node.
func (t Tenant) RetentionAges() (rejected, deadLetters, audit time.Duration) {
	rt := t.Policy.Retention
	if rt == nil {
		return 0, 0, 0
	}
	age := func(d *client.Duration) time.Duration {
		if d == nil {
			return 0
		}
		return time.Duration(*d)
	}
	return age(rt.RejectedMaxAge), age(rt.DeadLettersMaxAge), age(rt.AuditMinAge)
}

// validHostPattern reports whether h is a host name, an IP address, or
// "*." followed by a host name (matching ignores case).
func validHostPattern(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if net.ParseIP(h) != nil {
		return true
	}
	name := strings.TrimPrefix(h, "*.")
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// HostAllowed reports whether host matches one of the patterns (an exact
// host, or "*.domain" for any name under domain), ignoring case and a
// trailing dot. An IP address matches only an address pattern equal to it
// (in any form, an IPv4-mapped IPv6 address as its IPv4 one), never a
// name or a wildcard, and never with a zone: "2001:db8::1%.example.com"
// is an address with a zone, and dials 2001:db8::1. A host that is
// neither an address nor a host name (letters, digits, '-', '_' and dots;
// an international name in its xn-- form) matches nothing.
func HostAllowed(patterns []string, host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return false
		}
		for _, p := range patterns {
			if pa, err := netip.ParseAddr(p); err == nil && pa.Unmap() == a.Unmap() {
				return true
			}
		}
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || strings.ContainsFunc(host, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) {
		return false
	}
	for _, p := range patterns {
		p = strings.ToLower(p)
		if suffix, ok := strings.CutPrefix(p, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		} else if host == p {
			return true
		}
	}
	return false
}

// SetPolicy replaces a tenant's policy and returns the record before and
// after. The record is changed with optimistic concurrency; every node
// applies it from the tenants bucket's watch. The caller validates p
// (ValidatePolicy).
func (r *Registry) SetPolicy(ctx context.Context, tenant string, p client.Policy) (before, after Tenant, err error) {
	te, err := r.entry(tenant)
	if err != nil {
		return Tenant{}, Tenant{}, err
	}
	for attempt := 1; attempt <= updateAttempts; attempt++ {
		if attempt > 1 && !retry.Sleep(ctx, updateBackoff.Delay(attempt-1)) {
			return Tenant{}, Tenant{}, ctx.Err()
		}
		t, rev, err := read[Tenant](ctx, r.tenKV, tenant, "tenant")
		if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && t.State != "") {
			// Gone, or marked for deletion since this node looked: a
			// change must not be written into its record.
			return Tenant{}, Tenant{}, ErrTenantNotFound.New()
		}
		if err != nil {
			return Tenant{}, Tenant{}, err
		}
		before, after = t, t
		after.Policy = p
		// Nodes that predate policies read the record's switch: it is
		// kept in step, and its own value kept apart as the default.
		if after.OwnRejectUnknownIDs == nil {
			own := t.RejectUnknownIDs
			after.OwnRejectUnknownIDs = &own
		}
		after.RejectUnknownIDs = after.StrictValidation()
		b, err := json.Marshal(after)
		if err != nil {
			return Tenant{}, Tenant{}, err
		}
		stored, err := r.tenKV.Update(ctx, tenant, b, rev)
		if kverr.Conflict(err) {
			continue
		}
		if err != nil {
			return Tenant{}, Tenant{}, fmt.Errorf("registry: store tenant: %w", err)
		}
		r.setTenant(te, after, stored)
		return before, after, nil
	}
	return Tenant{}, Tenant{}, ErrTenantBusy.New()
}

// setTenant sets the record of a known tenant in memory to t, stored at
// revision rev, unless memory holds that revision or a newer one, and
// tells the OnTenantChange callbacks. Only what may change is taken: the
// policy (and the switch it replaces).
func (r *Registry) setTenant(te *tenantEntry, t Tenant, rev uint64) {
	r.mu.Lock()
	if rev <= te.rev {
		r.mu.Unlock()
		return
	}
	te.rev = rev
	te.rec.Policy, te.rec.RejectUnknownIDs, te.rec.OwnRejectUnknownIDs = t.Policy, t.RejectUnknownIDs, t.OwnRejectUnknownIDs
	rec, watchers := te.rec, slices.Clone(r.changeWatchers)
	r.mu.Unlock()
	for _, fn := range watchers {
		fn(rec)
	}
}

// OnTenantChange registers fn to be called with a known tenant's record
// each time this node applies a change of it (its policy), made here or on
// another node. fn runs in the registry's watch or in the writer: it must
// not block or change the registry; calls may come in any order, so fn
// should read the newest record (Tenant) when it acts.
func (r *Registry) OnTenantChange(fn func(Tenant)) {
	r.mu.Lock()
	r.changeWatchers = append(r.changeWatchers, fn)
	r.mu.Unlock()
}

// admitGateway refuses one more gateway of te's tenant when its policy's
// gateway quota is reached. While the quota is set, the tenant's gateway
// creations on this node are one at a time from this count to the
// gateway in memory: the caller calls release once it created the gateway
// (or failed to). Nodes count on their own: two nodes registering at the
// same moment may each let one through.
func (r *Registry) admitGateway(te *tenantEntry) (release func(), err error) {
	sel := func(q *client.Quotas) *int { return q.Gateways }
	r.mu.RLock()
	_, bounded := te.rec.Quota(sel)
	r.mu.RUnlock()
	if !bounded {
		return func() {}, nil
	}
	te.quotaMu.Lock()
	r.mu.RLock()
	t, held := te.rec, len(te.gateways)
	r.mu.RUnlock()
	if err := CheckQuota(t, "gateways", sel, held); err != nil {
		te.quotaMu.Unlock()
		return nil, err
	}
	return te.quotaMu.Unlock, nil
}
