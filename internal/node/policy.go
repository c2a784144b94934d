package node

import (
	"context"
	"sync"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/retry"
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
	n.st.SetTenantLimits(func(tenant string) (time.Duration, int64) {
		t, _ := n.reg.Tenant(tenant)
		return t.MessageRetention()
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
	maxAge, maxBytes := n.st.MessageLimits("") // no tenant: the node's
	age := client.Duration(maxAge)
	rt := client.Retention{MessagesMaxAge: &age}
	if maxBytes > 0 {
		rt.MessagesMaxBytes = &maxBytes
	}
	return client.Policy{Quotas: &q, Retention: &rt}
}
