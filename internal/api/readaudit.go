package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/iotransit/iotransit/internal/audit"
)

// Audit of reads of customer data
//
// Every read of a tenant's customer data through the API (a page of
// messages, of rejected messages, of an integration's dead letters, and
// the opening of the WebSocket stream) is audited in the tenant's log as
// action "data.read", per credential, coalesced so that a busy reader does
// not flood the log: at most one entry per credential per resource per
// window (readAuditWindow, 60 s). The first read of a window is written at
// once (detail: resource, reads 1, items returned, the request id); later
// reads in the window are summed and written as one entry when the window
// ends, or when the server shuts down (detail: reads, items, first and
// last time). A stream adds the messages it sent when it ends. A read is
// never refused because its entry cannot be written: the entry is kept and
// written with the window's summary (and logged and counted when that
// fails too).

// actionDataRead is the action of read entries.
const actionDataRead = "data.read"

// readAuditWindow is how long the reads of one credential of one resource
// are summed into one entry (tests shorten it before a server starts).
var readAuditWindow = 60 * time.Second

// readKey names what a window sums: who read which resource of which
// tenant.
type readKey struct {
	tenant, actor, resource, target string
}

// readWindow is the reads of one key since its window started that are
// not written yet.
type readWindow struct {
	start       time.Time
	reads       int
	items       int
	first, last time.Time
	source      string
}

// readAudit sums reads per window and writes their entries.
type readAudit struct {
	s      *Server
	window time.Duration
	mu     sync.Mutex
	open   map[readKey]*readWindow
	closed bool // after close, each read is written at once
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func newReadAudit(s *Server) *readAudit {
	a := &readAudit{s: s, window: readAuditWindow, open: map[readKey]*readWindow{}, stop: make(chan struct{}), done: make(chan struct{})}
	go a.loop()
	return a
}

// read records that p read resource (target names it in the entry) of the
// request's tenant: reads requests answering items items. The first read of
// a window is written at once; the others are summed.
func (a *readAudit) read(r *http.Request, p *Principal, resource, target string, reads, items int) {
	if a == nil || a.s.deps.Audit == nil {
		return
	}
	tenant := r.PathValue("tenant")
	if tenant == "" {
		return
	}
	k := readKey{tenant: tenant, actor: p.Actor(), resource: resource, target: target}
	now := nowFunc()
	a.mu.Lock()
	if a.closed { // shutting down (a stream ending late): nothing sums any more
		a.mu.Unlock()
		if reads > 0 || items > 0 {
			a.write(k, r.RemoteAddr, readDetail(resource, reads, items, now, now, "requestId", requestID(r)))
		}
		return
	}
	w := a.open[k]
	if w != nil && now.Sub(w.start) >= a.window {
		a.mu.Unlock()
		a.flush(k, now, true) // the window ended before the loop saw it
		a.mu.Lock()
		w = a.open[k]
	}
	if w == nil {
		w = &readWindow{start: now}
		a.open[k] = w
		if reads > 0 {
			a.mu.Unlock()
			if a.write(k, r.RemoteAddr, readDetail(resource, reads, items, now, now, "requestId", requestID(r))) {
				return
			}
			a.mu.Lock() // not written: summed into the window's entry
			if cur := a.open[k]; cur != nil {
				w = cur
			} else {
				a.open[k] = w
			}
		}
	}
	w.add(reads, items, now, r.RemoteAddr)
	a.mu.Unlock()
}

func (w *readWindow) add(reads, items int, at time.Time, source string) {
	if w.reads == 0 && w.items == 0 {
		w.first = at
	}
	w.reads += reads
	w.items += items
	w.last = at
	w.source = source
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// readDetail is the detail of a data.read entry, with one more pair
// (the request id of a read written at once, the window of a sum).
func readDetail(resource string, reads, items int, first, last time.Time, key, value string) map[string]string {
	return map[string]string{
		"resource": resource, "reads": strconv.Itoa(reads), "items": strconv.Itoa(items),
		"first": stamp(first), "last": stamp(last), key: value,
	}
}

// write appends one data.read entry and reports whether it did.
func (a *readAudit) write(k readKey, source string, detail map[string]string) bool {
	ev := audit.Event{Actor: k.actor, Action: actionDataRead, Target: k.target, Source: source, Outcome: "ok", Detail: detail}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.s.deps.Audit.Append(ctx, k.tenant, ev); err != nil {
		a.s.counters.auditFailed.WithLabelValues("read").Inc()
		a.s.log.Error("audit of a read failed", "tenant_id", k.tenant, "resource", k.resource, "error", err)
		return false
	}
	return true
}

// flush writes the sum of k's window if it ended (or if all is set) and
// closes the window; a sum that cannot be written stays for the next try.
func (a *readAudit) flush(k readKey, now time.Time, all bool) {
	a.mu.Lock()
	w := a.open[k]
	if w == nil || (!all && now.Sub(w.start) < a.window) {
		a.mu.Unlock()
		return
	}
	delete(a.open, k)
	a.mu.Unlock()
	if w.reads == 0 && w.items == 0 {
		return
	}
	if a.write(k, w.source, readDetail(k.resource, w.reads, w.items, w.first, w.last, "window", a.window.String())) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur := a.open[k]; cur != nil {
		cur.reads += w.reads
		cur.items += w.items
		if w.first.Before(cur.first) || cur.first.IsZero() {
			cur.first = w.first
		}
		return
	}
	w.start = now // tried again when this new window ends
	a.open[k] = w
}

// flushEnded writes every window that has ended (all: every window).
func (a *readAudit) flushEnded(all bool) {
	now := nowFunc()
	a.mu.Lock()
	keys := make([]readKey, 0, len(a.open))
	for k, w := range a.open {
		if all || now.Sub(w.start) >= a.window {
			keys = append(keys, k)
		}
	}
	a.mu.Unlock()
	for _, k := range keys {
		a.flush(k, now, all)
	}
}

func (a *readAudit) loop() {
	defer close(a.done)
	t := time.NewTicker(min(max(a.window/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.flushEnded(false)
		}
	}
}

// close stops the loop and writes every open window's sum (shutdown).
func (a *readAudit) close() {
	a.once.Do(func() {
		close(a.stop)
		<-a.done
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		a.flushEnded(true)
	})
}
