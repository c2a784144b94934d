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
// API read it from the registry themselves; the store's message stream
// takes the policy's retention when the stream is ensured, again at every
// change of the policy.

// followPolicies makes the store read each tenant's retention from its
// policy and re-applies it to the tenant's message stream whenever the
// tenant's record changes (on every node: the stream's configuration is
// the cluster's, and every node writes the same newest one).
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
				return n.st.EnsureTenant(ctx, t.ID)
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
	return client.Policy{Quotas: &q, Retention: &rt}
}

// tenantLimits are the bounds of t's streams that its policy sets.
func tenantLimits(t registry.Tenant) store.TenantLimits {
	var l store.TenantLimits
	l.MessagesMaxAge, l.MessagesMaxBytes = t.MessageRetention()
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
