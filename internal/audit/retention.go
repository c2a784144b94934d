package audit

import (
	"context"
	"time"
)

// A tenant's audit retention: the node's (Config.Retention, the platform's
// minimum), or longer when the tenant's security policy says so
// (retention.auditMinAge). It is never shorter than the node's: a longer
// one only keeps entries longer, and the stream's age limit is the only
// thing that removes entries (the stream denies delete and purge).

// SetTenantRetention sets where the log reads a tenant's own retention
// (0: the node's); EnsureTenant and ApplyRetention apply it.
func (l *Log) SetTenantRetention(fn func(tenant string) time.Duration) {
	l.tenantRetention.Store(&fn)
}

// Retention is how long tenant's entries are kept (0: for ever): the
// node's, or the tenant's own when that is longer; never shorter than the
// node's.
func (l *Log) Retention(tenant string) time.Duration {
	r := l.cfg.Retention
	if r == 0 {
		return 0 // for ever: nothing is longer
	}
	if fn := l.tenantRetention.Load(); fn != nil {
		if own := (*fn)(tenant); own > r {
			return own
		}
	}
	return r
}

// ApplyRetention updates the tenant's audit stream to its retention now
// (Retention): after a change of the tenant's policy. It is idempotent.
func (l *Log) ApplyRetention(ctx context.Context, tenant string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	ts, err := l.state(tenant)
	if err != nil {
		return err
	}
	ts.mu.Lock()
	ts.ensured = false
	ts.mu.Unlock()
	return l.EnsureTenant(ctx, tenant)
}
