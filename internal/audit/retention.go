package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
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
// (Retention): after a change of the tenant's policy. Its index stream,
// when made, takes the same retention at once: an index kept shorter than
// its log would lose, for good, the entries a filtered listing finds. It
// is idempotent.
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
	if err := l.EnsureTenant(ctx, tenant); err != nil {
		return err
	}
	return l.applyIndexRetention(ctx, tenant)
}

// applyIndexRetention gives the tenant's index stream, when it exists, the
// retention of its log.
func (l *Log) applyIndexRetention(ctx context.Context, tenant string) error {
	is := l.idx.state(tenant)
	is.mu.Lock()
	defer is.mu.Unlock()
	st, err := l.js.Stream(ctx, names.AuditIndexStream(tenant))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // made with the log's retention when first needed
	}
	if err != nil {
		return ErrUnavailable.Wrap(fmt.Errorf("audit: index stream of %s: %w", tenant, err))
	}
	cfg := st.CachedInfo().Config
	if want := l.Retention(tenant); cfg.MaxAge != want {
		cfg.MaxAge = want
		if st, err = l.streams.Stream(ctx, cfg); err != nil {
			return ErrUnavailable.Wrap(fmt.Errorf("audit: index retention of %s: %w", tenant, err))
		}
	}
	is.st = st
	return nil
}
