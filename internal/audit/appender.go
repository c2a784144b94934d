package audit

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// AppenderQueue is how many events an Appender holds before Enqueue waits.
const AppenderQueue = 4096

// AppenderWait is the longest Enqueue waits for room in a full queue
// before it counts the event as left out: long enough to ride out a short
// stall of the log, short enough that a gateway's connection is never
// held for long.
const AppenderWait = 100 * time.Millisecond

// ActionEventsDropped is the action of the entry that says how many events
// of the tenant an Appender left out, between which times and of which
// actions.
const ActionEventsDropped = "audit.events_dropped"

// maxLeftOutActions bounds the actions a summary names one by one; the
// rest are counted under "other".
const maxLeftOutActions = 8

// summaryRetry is how often an Appender tries again to write the summaries
// it could not write yet (the log was unavailable).
const summaryRetry = time.Second

// Appender appends events to a Log in the background, for callers that
// must not wait on the log for long (a gateway's connection events).
//
// Nothing is left out silently. Enqueue waits at most AppenderWait for
// room in a full queue; an event that still does not fit, or whose append
// fails, is counted for its tenant (how many, the first and the last time,
// which actions), and as soon as the appender is free again it appends to
// that tenant's log one entry of action ActionEventsDropped saying "N
// events dropped between A and B" (written again later if the log is still
// unavailable). Close appends what is queued, and the summaries, and then
// stops; an event enqueued after Close is only counted (DroppedClosed):
// the node is shutting down.
type Appender struct {
	log    *Log
	logger *slog.Logger
	wait   time.Duration
	queue  chan queued
	done   chan struct{}

	mu            sync.RWMutex // guards closed against a concurrent Enqueue
	closed        bool
	dropped       atomic.Int64
	failed        atomic.Int64
	droppedClosed atomic.Int64

	lostMu sync.Mutex
	lost   map[string]*leftOut // by tenant: what waits to be summarised
}

// queued is an event waiting to be appended.
type queued struct {
	tenant string
	ev     Event
	at     time.Time
}

// leftOut is what an Appender could not append for one tenant since its
// last summary entry.
type leftOut struct {
	full, failed int // left out by a full queue, by a failed append
	first, last  time.Time
	actions      map[string]int
}

func (o *leftOut) add(action string, at time.Time, full bool, n int) {
	if full {
		o.full += n
	} else {
		o.failed += n
	}
	if o.first.IsZero() || at.Before(o.first) {
		o.first = at
	}
	if at.After(o.last) {
		o.last = at
	}
	if _, ok := o.actions[action]; !ok && len(o.actions) >= maxLeftOutActions {
		action = "other"
	}
	o.actions[action] += n
}

// merge adds what o2 counted to o.
func (o *leftOut) merge(o2 *leftOut) {
	o.full += o2.full
	o.failed += o2.failed
	if o.first.IsZero() || (!o2.first.IsZero() && o2.first.Before(o.first)) {
		o.first = o2.first
	}
	if o2.last.After(o.last) {
		o.last = o2.last
	}
	for a, n := range o2.actions {
		if _, ok := o.actions[a]; !ok && len(o.actions) >= maxLeftOutActions {
			a = "other"
		}
		o.actions[a] += n
	}
}

// event is the summary entry of what was left out.
func (o *leftOut) event() Event {
	n := o.full + o.failed
	first, last := o.first.UTC().Format(time.RFC3339Nano), o.last.UTC().Format(time.RFC3339Nano)
	acts := make([]string, 0, len(o.actions))
	for _, a := range slices.Sorted(maps.Keys(o.actions)) {
		acts = append(acts, a+"="+strconv.Itoa(o.actions[a]))
	}
	detail := map[string]string{
		"count":   strconv.Itoa(n),
		"first":   first,
		"last":    last,
		"actions": strings.Join(acts, " "),
		"summary": strconv.Itoa(n) + " events dropped between " + first + " and " + last,
	}
	if o.full > 0 {
		detail["queueFull"] = strconv.Itoa(o.full)
	}
	if o.failed > 0 {
		detail["appendFailed"] = strconv.Itoa(o.failed)
	}
	return Event{Actor: "system", Action: ActionEventsDropped, Target: "audit:queue", Outcome: "ok", Detail: detail}
}

// NewAppender starts an appender of AppenderQueue events to l.
func NewAppender(l *Log, logger *slog.Logger) *Appender {
	return newAppender(l, AppenderQueue, AppenderWait, logger)
}

func newAppender(l *Log, size int, wait time.Duration, logger *slog.Logger) *Appender {
	a := &Appender{log: l, logger: logger, wait: wait, queue: make(chan queued, size), done: make(chan struct{}), lost: map[string]*leftOut{}}
	go a.run()
	return a
}

// Enqueue queues ev for the tenant's log. When the queue is full it waits
// at most AppenderWait for room, then counts the event for the tenant's
// next ActionEventsDropped entry.
func (a *Appender) Enqueue(tenant string, ev Event) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed { // shutting down: what happens now is not audited, only counted
		a.droppedClosed.Add(1)
		return
	}
	q := queued{tenant: tenant, ev: ev, at: time.Now()}
	select {
	case a.queue <- q:
		return
	default:
	}
	t := time.NewTimer(a.wait)
	defer t.Stop()
	select {
	case a.queue <- q:
		return
	case <-t.C:
	}
	a.dropped.Add(1)
	if a.leaveOut(tenant, ev.Action, q.at, true) {
		a.logger.Error("audit queue full: events are counted and summarised in the tenant's log", "tenant_id", tenant, "action", ev.Action)
	}
}

// leaveOut counts an event that was not appended; it reports whether it
// is the first of the tenant since the last summary.
func (a *Appender) leaveOut(tenant, action string, at time.Time, full bool) bool {
	a.lostMu.Lock()
	defer a.lostMu.Unlock()
	o := a.lost[tenant]
	first := o == nil
	if first {
		o = &leftOut{actions: map[string]int{}}
		a.lost[tenant] = o
	}
	o.add(action, at, full, 1)
	return first
}

// Dropped returns how many events did not fit in the full queue within
// AppenderWait (each is counted in its tenant's ActionEventsDropped entry).
func (a *Appender) Dropped() int64 { return a.dropped.Load() }

// Failed returns how many queued events could not be appended (each is
// counted in its tenant's ActionEventsDropped entry).
func (a *Appender) Failed() int64 { return a.failed.Load() }

// DroppedClosed returns how many events came after Close and were not
// audited (connections ending while the node shuts down).
func (a *Appender) DroppedClosed() int64 { return a.droppedClosed.Load() }

// Close appends the events queued so far and the summaries of what was
// left out, and stops. It is safe to call more than once.
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
	retry := time.NewTicker(summaryRetry)
	defer retry.Stop()
	for {
		select {
		case q, ok := <-a.queue:
			if !ok {
				a.summarise()
				return
			}
			if a.append(q) {
				// The log moves and the queue has room again: what was
				// left out meanwhile is written now, before the events
				// queued after it.
				a.summarise()
			}
		case <-retry.C:
			a.summarise()
		}
	}
}

// append appends one queued event and reports whether it did; a failure
// is counted for the summary.
func (a *Appender) append(q queued) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.log.Append(ctx, q.tenant, q.ev); err != nil {
		a.failed.Add(1)
		a.leaveOut(q.tenant, q.ev.Action, q.at, false)
		a.logger.Error("audit append failed: the event is counted and summarised in the tenant's log", "tenant_id", q.tenant, "action", q.ev.Action, "error", err)
		return false
	}
	return true
}

// summarise appends each tenant's ActionEventsDropped entry; what cannot be
// written yet is kept (and merged with what is left out meanwhile) for
// the next try.
func (a *Appender) summarise() {
	a.lostMu.Lock()
	if len(a.lost) == 0 {
		a.lostMu.Unlock()
		return
	}
	lost := a.lost
	a.lost = map[string]*leftOut{}
	a.lostMu.Unlock()
	for tenant, o := range lost {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := a.log.Append(ctx, tenant, o.event())
		cancel()
		if err == nil {
			continue
		}
		if ErrNotFound.Is(err) || ErrTenantInvalid.Is(err) {
			// The tenant has no log to write to (it was deleted).
			a.logger.Error("audit events dropped for a tenant without a log", "tenant_id", tenant, "count", o.full+o.failed)
			continue
		}
		a.logger.Error("audit summary of dropped events not written yet", "tenant_id", tenant, "count", o.full+o.failed, "error", err)
		a.lostMu.Lock()
		if cur := a.lost[tenant]; cur != nil {
			o.merge(cur)
		}
		a.lost[tenant] = o
		a.lostMu.Unlock()
	}
}
