package ingest

import (
	"sync/atomic"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/registry"
)

// The tenant's security policy at the ingest (registry.Tenant.Policy):
// its message rate and burst per gateway and its concurrent connections
// replace the node's (Config.MsgRate, MsgBurst, MaxConnsPerTenant) for
// that tenant only, and strictValidation picks the validator. Each is read
// from the registry's copy at every upload or CONNECT, so that a change
// applies to the next one on every node.

// PolicyDefaults returns the node's values of cfg (its defaults filled)
// that a tenant's policy may replace, as the policy names them.
func PolicyDefaults(cfg Config) client.Quotas {
	cfg.defaults()
	return client.Quotas{IngestMsgsPerSecond: &cfg.MsgRate, IngestBurst: &cfg.MsgBurst, ConcurrentConnections: &cfg.MaxConnsPerTenant}
}

// msgRate returns the message rate and burst of each of t's gateways.
func (c *Config) msgRate(t registry.Tenant) (float64, int) {
	r, b := c.MsgRate, c.MsgBurst
	if q := t.Policy.Quotas; q != nil {
		if q.IngestMsgsPerSecond != nil {
			r = *q.IngestMsgsPerSecond
		}
		if q.IngestBurst != nil {
			b = *q.IngestBurst
		}
	}
	return r, b
}

// maxConns returns how many connections of t the node takes at once.
func (c *Config) maxConns(t registry.Tenant) int {
	if q := t.Policy.Quotas; q != nil && q.ConcurrentConnections != nil {
		return *q.ConcurrentConnections
	}
	return c.MaxConnsPerTenant
}

// quotaRefused counts an upload of tenant refused because a stream of the
// tenant holds its stored-bytes quota (store.Full).
func (c *Core) quotaRefused(tenant string) {
	c.m.publishRefused.WithLabelValues("stored_bytes").Inc()
	c.m.quotaRefused.WithLabelValues(tenant, "stored_bytes").Inc()
	n, _ := c.storedBytesRefused.LoadOrStore(tenant, new(atomic.Uint64))
	n.(*atomic.Uint64).Add(1)
}

// StoredBytesRefused returns how many uploads of tenant this node refused
// because a stream of the tenant held its stored-bytes quota, since it
// started.
func (c *Core) StoredBytesRefused(tenant string) uint64 {
	if n, ok := c.storedBytesRefused.Load(tenant); ok {
		return n.(*atomic.Uint64).Load()
	}
	return 0
}

// StoredBytesRefused returns how many uploads of tenant this node refused
// because a stream of the tenant held its stored-bytes quota, since it
// started.
func (s *Server) StoredBytesRefused(tenant string) uint64 {
	return s.hook.core.StoredBytesRefused(tenant)
}
