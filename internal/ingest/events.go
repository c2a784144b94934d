package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
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
// log) and the server log one by one. Every event is counted in the
// metrics; past a budget, events are gathered into summaries ("N refused
// from 203.0.113.0/24 between T1 and T2 for reason R"), and a summary
// takes a token of the same budget when it is written, so a budget bounds
// entries of both kinds. Nothing is dropped: a summary carries its count,
// and Close writes the summaries still gathering.
type EventBudget struct {
	// Unauthenticated is the budget of refusals that name no tenant (TLS
	// failures, unknown CAs, forged certificates), shared by the whole
	// listener: they go to the _system log (default 10 a minute, burst 20,
	// as the API's refused authentications).
	Unauthenticated Budget
	// Tenant is each tenant's budget for its gateways' connects,
	// disconnects and attributed refusals (default 100 a minute, burst
	// 1000: a fleet reconnecting after an outage is recorded gateway by
	// gateway up to the burst).
	Tenant Budget
	// Gateway is each gateway's own budget within its tenant's (default 10
	// a minute, burst 20), so that one gateway in a reconnect loop is
	// summarised without using up its tenant's.
	Gateway Budget
	// Window is how long events past a budget are gathered into one
	// summary before it is due (default 1 minute).
	Window time.Duration
	// MaxGroups bounds the summaries one log gathers at once (default 32);
	// events that would start another are counted in a catch-all summary
	// per kind and reason (source "*", and gateway "*" in a tenant's log).
	// Summaries are per /24 (IPv4) or /64 (IPv6) source network.
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

// anySource stands for the source and gateway of a catch-all summary.
const anySource = "*"

// recorder decides which connection events are recorded one by one and
// which only in a summary, and records them: OnEvent and one log line
// each. Its memory is bounded: at most MaxGroups summaries (plus the
// catch-alls, one per kind and reason) per log, and buckets only for logs
// and gateways that spent tokens within the last refill.
//
// An event is recorded on its own only when its budget (the listener's,
// or its tenant's and its gateway's) has a token, its gateway (or, for
// unauthenticated refusals, the listener) has no summary gathering, and
// no summary of its log is due: due summaries take the tokens first, so
// a steady flood yields summaries, not samples that starve them.
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
	if g.byKey[key] == 0 && !g.due(now, r.cfg.Window) && r.take(now, keys...) {
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

// take takes one token from every bucket of keys, or none if one is empty.
func (r *recorder) take(now time.Time, keys ...string) bool {
	bs := make([]*bucket, len(keys))
	for i, k := range keys {
		b, ok := r.buckets[k]
		budget := r.budgetOf(k)
		if !ok {
			b = &bucket{tokens: float64(budget.Burst), at: now}
			r.buckets[k] = b
		}
		if d := now.Sub(b.at); d > 0 {
			b.tokens = min(float64(budget.Burst), b.tokens+d.Minutes()*budget.PerMinute)
			b.at = now
		}
		if b.tokens < 1 {
			return false
		}
		bs[i] = b
	}
	for _, b := range bs {
		b.tokens--
	}
	return true
}

func (r *recorder) gathering(tenant string) *gathering {
	g, ok := r.logs[tenant]
	if !ok {
		g = &gathering{groups: map[groupKey]*Event{}, byKey: map[string]int{}}
		r.logs[tenant] = g
	}
	return g
}

// due reports whether the oldest summary of g is due.
func (g *gathering) due(now time.Time, window time.Duration) bool {
	return len(g.order) > 0 && now.Sub(g.groups[g.order[0]].First) >= window
}

// gather counts e in its summary, started if need be.
func (r *recorder) gather(g *gathering, e Event, key string, now time.Time) {
	k := groupKey{serial: key, kind: e.Kind, reason: e.Reason, source: network(e.Remote)}
	s, ok := g.groups[k]
	if !ok && len(g.order) >= r.cfg.MaxGroups {
		if k.serial != "" {
			k.serial = anySource
		}
		k.source = anySource
		s, ok = g.groups[k]
	}
	if ok {
		s.Count++
		s.Last = now
		return
	}
	serial := k.serial
	g.groups[k] = &Event{Kind: e.Kind, Tenant: e.Tenant, Serial: serial, Remote: k.source, Reason: e.Reason, Count: 1, First: now, Last: now}
	g.order = append(g.order, k)
	g.byKey[k.serial]++
}

// flush records the due summaries that their log's budget allows (all of
// them when final), oldest first, and forgets idle buckets and logs.
func (r *recorder) flush(now time.Time, final bool) {
	var out []Event
	r.mu.Lock()
	for tenant, g := range r.logs {
		key := r.budgetKeys(tenant, "")[0]
		for len(g.order) > 0 && (final || g.due(now, r.cfg.Window) && r.take(now, key)) {
			k := g.order[0]
			out = append(out, *g.groups[k])
			delete(g.groups, k)
			g.order = slices.Delete(g.order, 0, 1)
			if g.byKey[k.serial]--; g.byKey[k.serial] == 0 {
				delete(g.byKey, k.serial)
			}
		}
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

// emit records one event or summary: OnEvent, and one log line.
func (r *recorder) emit(e Event) {
	if r.out != nil {
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
	msg := map[string]string{
		EventConnect: "gateway connected", EventDisconnect: "gateway disconnected", EventRefused: "gateway connection refused",
	}[e.Kind]
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
