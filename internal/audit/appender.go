package audit

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// AppenderQueue is how many events an Appender holds before it drops.
const AppenderQueue = 4096

// Appender appends events to a Log in the background, for callers that
// must not wait on the log (a gateway's connection events). Enqueue never
// blocks: when the queue is full the event is dropped, counted and logged.
// Close appends what is queued and then stops; an event enqueued after
// Close is not appended.
type Appender struct {
	log    *Log
	logger *slog.Logger
	queue  chan queued
	done   chan struct{}

	mu            sync.RWMutex // guards closed against a concurrent Enqueue
	closed        bool
	dropped       atomic.Int64
	droppedClosed atomic.Int64
}

// queued is an event waiting to be appended.
type queued struct {
	tenant string
	ev     Event
}

// NewAppender starts an appender of AppenderQueue events to l.
func NewAppender(l *Log, logger *slog.Logger) *Appender { return newAppender(l, AppenderQueue, logger) }

func newAppender(l *Log, size int, logger *slog.Logger) *Appender {
	a := &Appender{log: l, logger: logger, queue: make(chan queued, size), done: make(chan struct{})}
	go a.run()
	return a
}

// Enqueue queues ev for the tenant's log without blocking.
func (a *Appender) Enqueue(tenant string, ev Event) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed { // shutting down: what happens now is not audited, only counted
		a.droppedClosed.Add(1)
		return
	}
	select {
	case a.queue <- queued{tenant: tenant, ev: ev}:
	default:
		a.dropped.Add(1)
		a.logger.Error("audit queue full: event dropped", "tenant_id", tenant, "action", ev.Action)
	}
}

// Dropped returns how many events were dropped because the queue was full.
func (a *Appender) Dropped() int64 { return a.dropped.Load() }

// DroppedClosed returns how many events came after Close and were not
// audited (connections ending while the node shuts down).
func (a *Appender) DroppedClosed() int64 { return a.droppedClosed.Load() }

// Close appends the events queued so far and stops. It is safe to call
// more than once.
func (a *Appender) Close() {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.queue)
	}
	a.mu.Unlock()
	<-a.done
}

func (a *Appender) run() {
	defer close(a.done)
	for q := range a.queue {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := a.log.Append(ctx, q.tenant, q.ev); err != nil {
			a.logger.Error("audit append failed", "tenant_id", q.tenant, "action", q.ev.Action, "error", err)
		}
		cancel()
	}
}
