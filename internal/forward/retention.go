package forward

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
)

// The retention of dead letters: each integration's dead-letter stream
// keeps its messages for the tenant's retention.deadLettersMaxAge, else
// the node's Config.DeadLetterRetention (0: until re-driven or deleted),
// so that an integration that keeps failing cannot fill the disk with
// dead letters for ever.

// SetDeadLetterRetention sets where the engine reads a tenant's own
// dead-letter retention (0: the node's); the dead-letter streams made
// from then on take it, and ApplyDeadLetterRetention updates those made.
func (e *Engine) SetDeadLetterRetention(fn func(tenant string) time.Duration) {
	e.dlqRetention.Store(&fn)
}

// deadLetterMaxAge is how long the tenant's dead letters are kept (0: for
// ever).
func (e *Engine) deadLetterMaxAge(tenant string) time.Duration {
	if fn := e.dlqRetention.Load(); fn != nil {
		if d := (*fn)(tenant); d > 0 {
			return d
		}
	}
	return e.cfg.DeadLetterRetention
}

// deadLetterStream is the configuration of an integration's dead-letter
// stream.
func (e *Engine) deadLetterStream(tenant, id string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        names.DeadLetterStream(tenant, id),
		Description: "dead letters of integration " + id + " of tenant " + tenant,
		Subjects:    []string{names.DeadLetter(tenant, id)},
		Duplicates:  time.Hour,
		MaxAge:      e.deadLetterMaxAge(tenant),
	}
}

// ApplyDeadLetterRetention updates the dead-letter streams of the tenant's
// integrations (ids) that exist to its retention now; it is idempotent.
func (e *Engine) ApplyDeadLetterRetention(ctx context.Context, tenant string, ids []string) error {
	for _, id := range ids {
		st, err := e.js.Stream(ctx, names.DeadLetterStream(tenant, id))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // not made yet: its worker makes it with the retention
		}
		if err != nil {
			return fmt.Errorf("forward: dead-letter stream of %s: %w", id, err)
		}
		want := e.deadLetterMaxAge(tenant)
		if st.CachedInfo().Config.MaxAge == want {
			continue
		}
		if _, err := e.streams.Stream(ctx, e.deadLetterStream(tenant, id)); err != nil {
			return fmt.Errorf("forward: dead-letter retention of %s: %w", id, err)
		}
	}
	return nil
}
