package node

import (
	"context"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/iotransit/iotransit/internal/store"
)

// The tenant's security policy where the node wires it: the ingest and the
// API read it from the registry themselves; the tenant's streams (message,
// rejected, audit, its integrations' dead letters) take the policy's
// retention and stored-bytes quota when they are made, again at every
// change of the policy.

// followPolicies makes the store read each tenant's retention and
// stored-bytes quota from its policy (the audit log and the forwarder read
// theirs through auditRetention and deadLetterRetention) and re-applies
// them to the tenant's streams whenever the tenant's record changes (on
// every node: a stream's configuration is the cluster's, and every node
// writes the same newest one).
func (n *Node) followPolicies() {
	n.st.SetTenantLimits(func(tenant string) store.TenantLimits {
		t, _ := n.reg.Tenant(tenant)
		return tenantLimits(t)
	})
	var mu sync.Mutex // one update of the stream at a time, each reading the newest policy
	n.reg.OnTenantChange(func(t registry.Tenant) {
		go func() {
			mu.Lock()
			defer mu.Unlock()
			_ = retry.Until(n.ctx, retry.Backoff{Base: time.Second, Max: time.Minute}, func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				return n.applyRetention(ctx, t.ID)
			}, func(err error, wait time.Duration) {
				n.log.Warn("tenant retention not applied; retrying", "tenant_id", t.ID, "error", err, "retry_in", wait.String())
			})
		}()
	})
}

// policyDefaults are the node's values that a tenant's policy may replace,
// shown by the API next to a tenant's policy.
func (n *Node) policyDefaults(cfg Config) client.Policy {
	q := ingest.PolicyDefaults(cfg.Ingest)
	l := n.st.Limits("") // no tenant: the node's
	age := client.Duration(l.Messages.MaxAge)
	rt := client.Retention{MessagesMaxAge: &age}
	if l.Messages.MaxBytes > 0 && !l.Messages.Quota {
		rt.MessagesMaxBytes = &l.Messages.MaxBytes
	}
	if l.Rejected.Quota {
		q.StoredBytes = &l.Rejected.MaxBytes
	}
	rejected := client.Duration(l.Rejected.MaxAge)
	rt.RejectedMaxAge = &rejected
	if d := cfg.Forward.DeadLetterRetention; d > 0 {
		dlq := client.Duration(d)
		rt.DeadLettersMaxAge = &dlq
	}
	if d := cfg.Audit.Retention; d > 0 {
		audit := client.Duration(d)
		rt.AuditMinAge = &audit
	}
	return client.Policy{Quotas: &q, Retention: &rt}
}

// applyRetention applies the tenant's policy, as the registry holds it
// now, to the limits of its streams; it is idempotent. A tenant the
// registry no longer knows (being deleted, or deleted) has nothing to
// apply: making its streams would bring back what its deletion removed.
func (n *Node) applyRetention(ctx context.Context, tenant string) error {
	if _, ok := n.reg.Tenant(tenant); !ok {
		return nil
	}
	if err := n.st.EnsureTenant(ctx, tenant); err != nil {
		return err
	}
	// Before the node has made its audit log and forwarder, they are still
	// to make the tenant's streams, reading the newest policy then.
	if !n.retentionParts.Load() {
		return nil
	}
	if err := n.audit.ApplyRetention(ctx, tenant); err != nil {
		return err
	}
	ins, err := n.fwdReg.List(ctx, tenant)
	if err != nil {
		return err
	}
	ids := make([]string, len(ins))
	for i, in := range ins {
		ids[i] = in.ID
	}
	return n.fwd.ApplyDeadLetterRetention(ctx, tenant, ids)
}

// auditRetention is the audit retention the tenant's policy asks for (0:
// the node's; the audit log keeps the longer).
func (n *Node) auditRetention(tenant string) time.Duration {
	t, _ := n.reg.Tenant(tenant)
	_, _, audit := t.RetentionAges()
	return audit
}

// deadLetterRetention is the dead-letter retention the tenant's policy
// sets (0: the node's).
func (n *Node) deadLetterRetention(tenant string) time.Duration {
	t, _ := n.reg.Tenant(tenant)
	_, dlq, _ := t.RetentionAges()
	return dlq
}

// tenantLimits are the bounds of t's streams that its policy sets.
func tenantLimits(t registry.Tenant) store.TenantLimits {
	var l store.TenantLimits
	l.MessagesMaxAge, l.MessagesMaxBytes = t.MessageRetention()
	l.RejectedMaxAge, _, _ = t.RetentionAges()
	if q := t.Policy.Quotas; q != nil && q.StoredBytes != nil {
		l.StoredBytes = *q.StoredBytes
	}
	return l
}

// storedBytes is what the API shows of a tenant's stored-bytes quota:
// its limit, what its streams hold, and the uploads this node refused.
func (n *Node) storedBytes(ctx context.Context, tenant string) (client.StoredBytesUsage, error) {
	u, err := n.st.Usage(ctx, tenant)
	if err != nil {
		return client.StoredBytesUsage{}, err
	}
	v := client.StoredBytesUsage{Used: u.MessagesBytes, RejectedUsed: u.RejectedBytes, Refused: n.ing.StoredBytesRefused(tenant)}
	if l := n.st.Limits(tenant); l.Messages.Quota || l.Rejected.Quota {
		v.Limit = l.Rejected.MaxBytes // the quota bounds both streams, each
	}
	return v, nil
}
