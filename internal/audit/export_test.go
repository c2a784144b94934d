package audit

import "log/slog"

// Test hooks: an attacker who knows the algorithm can recompute hashes and
// sign with a key of their own.
var (
	HashEntry      = hashEntry
	SignCheckpoint = signCheckpoint
)

// NewAppenderOf is NewAppender with a queue of size events.
func NewAppenderOf(l *Log, size int, logger *slog.Logger) *Appender {
	return newAppender(l, size, AppenderWait, logger)
}

// Queued returns how many events wait in the appender's queue.
func (a *Appender) Queued() int { return len(a.queue) }

// HoldTenant blocks appends to the tenant until release is called.
func HoldTenant(l *Log, tenant string) (release func()) {
	ts, err := l.state(tenant)
	if err != nil {
		panic(err)
	}
	ts.mu.Lock()
	return ts.mu.Unlock
}

// IndexKey is the subject token of an indexed value.
var IndexKey = indexKey
