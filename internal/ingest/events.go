package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Budget is a token bucket of recorded connection events: at most Burst
// at once, then PerMinute.
type Budget struct {
	PerMinute float64
	Burst     int
}

// EventBudget bounds how many connection events reach OnEvent (the audit
// log), and how many lines about a gateway reach the server log. Every
// event is counted in the metrics; past a budget, events are gathered into
// summaries ("N refused from 203.0.113.0/24 between T1 and T2 for reason
// R"), and a summary takes a token of the same budgets when it is written
// (its tenant's and its gateway's, or the listener's), so a budget bounds
// entries of both kinds. Nothing is dropped: a summary carries its count,
// and Close writes the summaries still gathering.
//
// The same budgets bound the server log's other lines about a gateway: a
// publish or subscription refused by the topic ACL ("topic refused") and a
// will message dropped at CONNECT. They are logged (never audited) one by
// one or in summaries like the connection events, and share their budgets:
// whatever a gateway makes the server write, its budget bounds it.
type EventBudget struct {
	// Unauthenticated is the budget of refusals that name no tenant (TLS
	// failures, unknown CAs, forged certificates, certificates whose key
	// the peer did not prove), shared by the whole listener: they go to
	// the _system log (default 10 a minute, burst 20, as the API's refused
	// authentications).
	Unauthenticated Budget
	// Tenant is each tenant's budget for what is written about its
	// gateways: connects, disconnects, attributed refusals, and the log
	// lines above (default 100 a minute, burst 1000: a fleet reconnecting
	// after an outage is recorded gateway by gateway up to the burst).
	Tenant Budget
	// Gateway is each gateway's own budget within its tenant's (default 10
	// a minute, burst 20), summaries included, so that one gateway in a
	// reconnect loop is summarised without using up its tenant's.
	Gateway Budget
	// Window is how long events past a budget are gathered into one
	// summary before it is due (default 1 minute).
	Window time.Duration
	// MaxGroups bounds the summaries by source network (/24 for IPv4, /64
	// for IPv6) that one log gathers at once (default 32); in a tenant's
	// log one gateway holds at most a quarter of them. An event that would
	// start another is counted in a catch-all summary of its kind and
	// reason whose source is "*": in a tenant's log, one per gateway, so
	// that a summary always names its gateway.
	MaxGroups int
}

func (b *EventBudget) defaults() {
	set := func(x *Budget, perMinute float64, burst int) {
		if x.PerMinute == 0 {
			x.PerMinute = perMinute
		}
		if x.Burst == 0 {
			x.Burst = burst
		}
	}
	set(&b.Unauthenticated, 10, 20)
	set(&b.Tenant, 100, 1000)
	set(&b.Gateway, 10, 20)
	if b.Window == 0 {
		b.Window = time.Minute
	}
	if b.MaxGroups == 0 {
		b.MaxGroups = 32
	}
}

func (b EventBudget) validate() error {
	var errs []error
	for _, x := range []struct {
		name string
		b    Budget
	}{{"unauthenticated", b.Unauthenticated}, {"tenant", b.Tenant}, {"gateway", b.Gateway}} {
		if x.b.PerMinute < 0 || x.b.Burst < 0 {
			errs = append(errs, fmt.Errorf("ingest: the %s event budget must not be negative", x.name))
		}
	}
	if b.Window < 0 || b.MaxGroups < 0 {
		errs = append(errs, errors.New("ingest: the event summary window and groups must not be negative"))
	}
	return errors.Join(errs...)
}

// anySource stands for the source of a catch-all summary.
const anySource = "*"

// Kinds of events that reach only the server log, never OnEvent: they are
// lines about a gateway, under its budgets (EventBudget).
const (
	// eventTopicRefused is a publish or a subscription the topic ACL
	// refused; Reason is publish_denied or subscribe_denied.
	eventTopicRefused = "topic_refused"
	// eventWillDropped is a will message dropped at CONNECT.
	eventWillDropped = "will_dropped"
)

// logOnly reports whether events of kind reach only the server log.
func logOnly(kind string) bool { return kind == eventTopicRefused || kind == eventWillDropped }

// recorder decides which events are recorded one by one and which only in
// a summary, and records them: OnEvent (connection events only) and one
// log line each. Its memory is bounded: per log at most MaxGroups summaries
// by source network, and catch-alls (one per kind and reason, and in a
// tenant's log per gateway: gateways that proved their key for a
// certificate of the tenant's CA), and buckets only for logs and gateways
// that spent tokens within the last refill.
//
// An event is recorded on its own only when its budget (the listener's,
// or its tenant's and its gateway's) has a token, its gateway (or, for
// unauthenticated refusals, the listener) has no summary gathering, and
// no due summary of its log waits for the log's token: due summaries take
// the tokens first, so a steady flood yields summaries, not samples that
// starve them. A due summary whose gateway's budget is spent waits for
// that budget without holding back the log's other summaries and events.
type recorder struct {
	cfg   EventBudget
	out   func(Event)
	log   *slog.Logger
	count func(kind string) // events gathered into a summary (metrics)

	mu      sync.Mutex
	closed  bool
	buckets map[string]*bucket
	logs    map[string]*gathering // by tenant, "" for unauthenticated
	stop    chan struct{}
	done    chan struct{}
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	at     time.Time
}

// gathering holds one log's summaries in the order they started.
type gathering struct {
	groups map[groupKey]*Event
	order  []groupKey
	byKey  map[string]int // summaries gathering per gateway ("" for the listener)
	// sourced counts the summaries by source network (not catch-alls), in
	// all and per gateway.
	sourced      int
	sourcedByKey map[string]int
}

type groupKey struct{ serial, kind, reason, source string }

func newRecorder(cfg EventBudget, out func(Event), log *slog.Logger, count func(string)) *recorder {
	return &recorder{cfg: cfg, out: out, log: log, count: count,
		buckets: map[string]*bucket{}, logs: map[string]*gathering{}}
}

// start writes due summaries in the background until close.
func (r *recorder) start() {
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	tick := max(r.cfg.Window/6, 10*time.Millisecond)
	go func() {
		defer close(r.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case now := <-t.C:
				r.flush(now, false)
			}
		}
	}()
}

// close stops the background writer and writes every summary still
// gathering, due or not, whatever the budget: they are bounded, and they
// are the only record of what they count. Events after close are recorded
// one by one.
func (r *recorder) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	if r.stop != nil {
		close(r.stop)
		<-r.done
	}
	r.flush(time.Now(), true)
}

// record records e, or gathers it into a summary.
func (r *recorder) record(e Event) { r.recordAt(e, time.Now()) }

func (r *recorder) recordAt(e Event, now time.Time) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.emit(e)
		return
	}
	g := r.gathering(e.Tenant)
	key := e.Serial
	if e.Tenant == "" {
		key = "" // an unauthenticated refusal names no gateway
	}
	keys := r.budgetKeys(e.Tenant, key)
	if g.byKey[key] == 0 && !r.waiting(e.Tenant, g, now) && r.take(now, keys...) {
		r.mu.Unlock()
		r.emit(e)
		return
	}
	r.gather(g, e, key, now)
	r.mu.Unlock()
	if r.count != nil {
		r.count(e.Kind)
	}
}

// budgetKeys names the buckets an event of tenant (and gateway serial)
// takes a token from: the listener's, or the tenant's and the gateway's.
func (r *recorder) budgetKeys(tenant, serial string) []string {
	if tenant == "" {
		return []string{"anon"}
	}
	if serial == "" || serial == anySource {
		return []string{"t/" + tenant}
	}
	return []string{"t/" + tenant, "g/" + tenant + "/" + serial}
}

func (r *recorder) budgetOf(key string) Budget {
	switch key[0] {
	case 'a':
		return r.cfg.Unauthenticated
	case 't':
		return r.cfg.Tenant
	}
	return r.cfg.Gateway
}

// level returns the tokens of the bucket key at now (a bucket not held is
// full).
func (r *recorder) level(key string, now time.Time) float64 {
	budget := r.budgetOf(key)
	b, ok := r.buckets[key]
	if !ok {
		return float64(budget.Burst)
	}
	return min(float64(budget.Burst), b.tokens+max(now.Sub(b.at), 0).Minutes()*budget.PerMinute)
}

// take takes one token from every bucket of keys, or none if one is empty.
func (r *recorder) take(now time.Time, keys ...string) bool {
	for _, k := range keys {
		if r.level(k, now) < 1 {
			return false
		}
	}
	for _, k := range keys {
		tokens := r.level(k, now)
		b, ok := r.buckets[k]
		if !ok {
			b = &bucket{}
			r.buckets[k] = b
		}
		b.tokens = tokens - 1
		if now.After(b.at) { // an event a moment older (taken under the lock late) refills nothing
			b.at = now
		}
	}
	return true
}

func (r *recorder) gathering(tenant string) *gathering {
	g, ok := r.logs[tenant]
	if !ok {
		g = &gathering{groups: map[groupKey]*Event{}, byKey: map[string]int{}, sourcedByKey: map[string]int{}}
		r.logs[tenant] = g
	}
	return g
}

// waiting reports whether a due summary of g waits for its log's token:
// one whose own gateway's budget (if it has one) is not spent. Fresh
// events of the log are then gathered, so that the log's tokens go to the
// summary first.
func (r *recorder) waiting(tenant string, g *gathering, now time.Time) bool {
	for _, k := range g.order {
		if now.Sub(g.groups[k].First) < r.cfg.Window {
			return false // summaries are in the order they started: the rest are not due either
		}
		keys := r.budgetKeys(tenant, k.serial)
		if len(keys) == 1 || r.level(keys[1], now) >= 1 {
			return true
		}
	}
	return false
}

// gather counts e in its summary, started if need be.
func (r *recorder) gather(g *gathering, e Event, key string, now time.Time) {
	k := groupKey{serial: key, kind: e.Kind, reason: e.Reason, source: network(e.Remote)}
	s, ok := g.groups[k]
	if !ok && k.source != anySource && !g.roomFor(key, r.cfg.MaxGroups) {
		k.source = anySource // the gateway stays named; only where it came from is merged
		s, ok = g.groups[k]
	}
	if ok {
		s.Count++
		s.Last = now
		return
	}
	g.groups[k] = &Event{Kind: e.Kind, Tenant: e.Tenant, Serial: k.serial, Remote: k.source, Reason: e.Reason, Count: 1, First: now, Last: now}
	g.order = append(g.order, k)
	g.byKey[k.serial]++
	if k.source != anySource {
		g.sourced++
		g.sourcedByKey[k.serial]++
	}
}

// roomFor reports whether a summary by source network may start for key
// (a gateway's serial, "" for the listener): at most maxGroups in the log,
// and a quarter of them for one gateway, so that a gateway connecting from
// many networks does not take every slot of its tenant's log.
func (g *gathering) roomFor(key string, maxGroups int) bool {
	return g.sourced < maxGroups && (key == "" || g.sourcedByKey[key] < max(1, maxGroups/4))
}

// forget removes the summary k (not from order).
func (g *gathering) forget(k groupKey) {
	delete(g.groups, k)
	if g.byKey[k.serial]--; g.byKey[k.serial] == 0 {
		delete(g.byKey, k.serial)
	}
	if k.source != anySource {
		g.sourced--
		if g.sourcedByKey[k.serial]--; g.sourcedByKey[k.serial] == 0 {
			delete(g.sourcedByKey, k.serial)
		}
	}
}

// flush records the due summaries that their budgets allow (all of them
// when final), oldest first, and forgets idle buckets and logs.
func (r *recorder) flush(now time.Time, final bool) {
	var out []Event
	r.mu.Lock()
	for tenant, g := range r.logs {
		out = append(out, r.flushLog(tenant, g, now, final)...)
		if len(g.order) == 0 {
			delete(r.logs, tenant)
		}
	}
	for k, b := range r.buckets { // a full bucket is a new one
		budget := r.budgetOf(k)
		if b.tokens+now.Sub(b.at).Minutes()*budget.PerMinute >= float64(budget.Burst) {
			delete(r.buckets, k)
		}
	}
	r.mu.Unlock()
	for _, e := range out {
		r.emit(e)
	}
}

// flushLog takes the due summaries of one log, oldest first, each with a
// token of the log's budget and of its gateway's: it stops when the log's
// budget is spent, and a summary whose gateway's budget is spent waits
// while the ones after it go on. When final it takes every summary.
func (r *recorder) flushLog(tenant string, g *gathering, now time.Time, final bool) []Event {
	var out []Event
	var waiting []groupKey
	i := 0
	for ; i < len(g.order); i++ {
		k := g.order[i]
		if !final {
			if now.Sub(g.groups[k].First) < r.cfg.Window {
				break
			}
			keys := r.budgetKeys(tenant, k.serial)
			if r.level(keys[0], now) < 1 {
				break // the log's budget is spent
			}
			if !r.take(now, keys...) {
				waiting = append(waiting, k) // its gateway's budget is spent
				continue
			}
		}
		out = append(out, *g.groups[k])
		g.forget(k)
	}
	g.order = append(waiting, g.order[i:]...)
	return out
}

// messages are the log lines of each kind of event.
var messages = map[string]string{
	EventConnect: "gateway connected", EventDisconnect: "gateway disconnected", EventRefused: "gateway connection refused",
	eventTopicRefused: "topic refused", eventWillDropped: "will message dropped",
}

// emit records one event or summary: OnEvent (connection events only),
// and one log line.
func (r *recorder) emit(e Event) {
	if r.out != nil && !logOnly(e.Kind) {
		r.out(e)
	}
	attrs := []any{"remote", e.Remote}
	if e.Tenant != "" {
		attrs = append(attrs, "tenant_id", e.Tenant, "gateway_id", e.Serial)
	}
	if e.Reason != "" {
		attrs = append(attrs, "reason", e.Reason)
	}
	if e.Count > 0 {
		attrs = append(attrs, "count", e.Count, "first", e.First, "last", e.Last)
	}
	msg := messages[e.Kind]
	if e.Count > 0 {
		msg += " (summary)"
	}
	r.log.Info(msg, attrs...)
}

// network is the /24 (IPv4) or /64 (IPv6) network of a remote address, the
// source of a summary: one host, or one customer's NAT, is one source.
func network(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return anySource
	}
	ip = ip.Unmap().WithZone("")
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return anySource
	}
	return p.String()
}
