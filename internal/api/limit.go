package api

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the API's rate limits.
type Limits struct {
	// PerCredential is the sustained requests per second of one credential
	// (default 50), with burst CredentialBurst (default 100).
	PerCredential   float64
	CredentialBurst int
	// PerIP is the sustained requests per second of one client address
	// (default 100), with burst IPBurst (default 200).
	PerIP   float64
	IPBurst int
	// AuthFailures is how many failed authentications one address may make
	// per AuthWindow (default 20 per minute) before it is refused until the
	// window ends.
	AuthFailures int
	AuthWindow   time.Duration
	// AuditRefusals is how many refused authentications per minute (bearer
	// credentials and token requests of the token endpoint alike) are
	// written to one tenant's audit log (default 10, burst AuditBurst,
	// default 20); the rest are counted, and the next entry written says
	// how many were left out. Anyone who knows a key id can cause a
	// refusal; they must not be able to flood the tenant's log.
	AuditRefusals float64
	AuditBurst    int
	// ReadsPerCredential is how many stored items (messages, rejected
	// messages, dead letters, audit entries, index entries; a message is
	// one read, and so are SeqsPerRead sequences a filter steps over) the
	// requests and streams of one credential may read per second (default
	// 2000), with burst ReadBurst (default 10000). ReadsPerTenant and
	// TenantReadBurst bound those of all credentials on one tenant
	// together (defaults 5000 and 20000), so that one tenant cannot take
	// the server from the others. A request that would read more than is
	// left, or more than MaxReadsPerRequest (default 2000), answers a
	// partial page with a cursor to go on; one that finds nothing left is
	// refused with 429 and Retry-After. An audit verification reads the
	// whole log at once (it starts when the log's size, or the whole
	// burst, is left, and may leave a debt); a WebSocket stream pays for
	// each message it reads and waits while the budget is spent.
	ReadsPerCredential float64
	ReadBurst          int
	ReadsPerTenant     float64
	TenantReadBurst    int
	MaxReadsPerRequest int
	// ClaimFailures is how many failed gateway claims (wrong serial or
	// code) one tenant may make in a burst (default 10); one more is
	// allowed every ClaimRefill (default 1 minute). With none left every
	// claim of the tenant answers 429 with Retry-After.
	ClaimFailures int
	ClaimRefill   time.Duration
}

func (l *Limits) defaults() {
	if l.PerCredential == 0 {
		l.PerCredential = 50
	}
	if l.CredentialBurst == 0 {
		l.CredentialBurst = 100
	}
	if l.PerIP == 0 {
		l.PerIP = 100
	}
	if l.IPBurst == 0 {
		l.IPBurst = 200
	}
	if l.AuthFailures == 0 {
		l.AuthFailures = 20
	}
	if l.AuthWindow == 0 {
		l.AuthWindow = time.Minute
	}
	if l.AuditRefusals == 0 {
		l.AuditRefusals = 10
	}
	if l.AuditBurst == 0 {
		l.AuditBurst = 20
	}
	if l.ReadsPerCredential == 0 {
		l.ReadsPerCredential = 2000
	}
	if l.ReadBurst == 0 {
		l.ReadBurst = 10000
	}
	if l.ReadsPerTenant == 0 {
		l.ReadsPerTenant = 5000
	}
	if l.TenantReadBurst == 0 {
		l.TenantReadBurst = 20000
	}
	if l.MaxReadsPerRequest == 0 {
		l.MaxReadsPerRequest = 2000
	}
	if l.ClaimFailures == 0 {
		l.ClaimFailures = 10
	}
	if l.ClaimRefill == 0 {
		l.ClaimRefill = time.Minute
	}
}

// limiter holds token buckets per credential and per address, and failed
// authentication counts per address. Idle entries are swept.
type limiter struct {
	cfg Limits

	mu         sync.Mutex
	buckets    map[string]*bucket
	reads      map[string]*readBucket
	failures   map[string]*window
	suppressed map[string]int // refusals left out of a tenant's audit log
	swept      time.Time

	// claims are the failed gateway claims per tenant (factory.go).
	claims map[string]*readBucket
}

// readBucket is a token bucket of reads that lends: a request takes up
// front what it may read and gives back what it did not read; one that
// read more than it was lent leaves the bucket in debt.
type readBucket struct {
	tokens float64
	at     time.Time // of tokens
}

// refill brings the bucket to now.
func (b *readBucket) refill(now time.Time, perSecond float64, burst int) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(b.tokens+d.Seconds()*perSecond, float64(burst))
		b.at = now
	}
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

type window struct {
	start time.Time
	n     int
}

func newLimiter(cfg Limits) *limiter {
	cfg.defaults()
	return &limiter{cfg: cfg, buckets: map[string]*bucket{}, reads: map[string]*readBucket{}, failures: map[string]*window{}, suppressed: map[string]int{}}
}

// auditRefusal reports whether a refused authentication naming tenant is
// written to its audit log, and then how many earlier ones were left out.
func (l *limiter) auditRefusal(tenant string, now time.Time) (write bool, leftOut int) {
	if ok, _ := l.allow("audit:"+tenant, l.cfg.AuditRefusals/60, l.cfg.AuditBurst, now); !ok {
		l.mu.Lock()
		l.suppressed[tenant]++
		l.mu.Unlock()
		return false, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	leftOut = l.suppressed[tenant]
	delete(l.suppressed, tenant)
	return true, leftOut
}

// allow takes a token from the bucket key (made with r and burst if new);
// when none is left it returns how long to wait.
func (l *limiter) allow(key string, r float64, burst int, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{l: rate.NewLimiter(rate.Limit(r), burst)}
		l.buckets[key] = b
	}
	b.seen = now
	res := b.l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// readLimit is a read bucket with its rate and burst.
type readLimit struct {
	b     *readBucket
	rate  float64
	burst int
}

// readLimits returns the read buckets of a credential and of a tenant
// (l.mu held).
func (l *limiter) readLimits(cred, tenant string, now time.Time) []readLimit {
	l.sweep(now)
	get := func(key string, rate float64, burst int) readLimit {
		b, ok := l.reads[key]
		if !ok {
			b = &readBucket{tokens: float64(burst), at: now}
			l.reads[key] = b
		}
		return readLimit{b, rate, burst}
	}
	return []readLimit{
		get("cred:"+cred, l.cfg.ReadsPerCredential, l.cfg.ReadBurst),
		get("tenant:"+tenant, l.cfg.ReadsPerTenant, l.cfg.TenantReadBurst),
	}
}

// shortfall refills the read buckets bs (l.mu held) and reports whether
// any holds less than want asks of it, and then how long until all hold
// that much; held is the least any holds.
func shortfall(bs []readLimit, now time.Time, want func(readLimit) float64) (short bool, wait time.Duration, held float64) {
	held = math.Inf(1)
	for _, rb := range bs {
		rb.b.refill(now, rb.rate, rb.burst)
		held = min(held, rb.b.tokens)
		if w := want(rb); rb.b.tokens < w {
			short = true
			wait = max(wait, time.Duration((w-rb.b.tokens)/rb.rate*float64(time.Second)))
		}
	}
	return short, wait, held
}

// take takes n reads from each of the buckets bs (l.mu held).
func take(bs []readLimit, n int) {
	for _, rb := range bs {
		rb.b.tokens -= float64(n)
	}
}

// lendReads lends a request of credential cred on tenant what it may read:
// at most MaxReadsPerRequest and what both buckets hold. When either holds
// less than one read, it lends nothing and says how long to wait.
func (l *limiter) lendReads(cred, tenant string, now time.Time) (int, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bs := l.readLimits(cred, tenant, now)
	short, wait, held := shortfall(bs, now, func(readLimit) float64 { return 1 })
	if short {
		return 0, wait
	}
	lent := int(min(float64(l.cfg.MaxReadsPerRequest), held))
	take(bs, lent)
	return lent, 0
}

// lendWhole lends a read that cannot stop part way (an audit
// verification reads the whole log): it may start when both buckets hold
// need reads, or their whole burst when need is more than that, and it
// takes all of need, leaving them in debt for the rest, which later reads
// wait out. Otherwise it lends nothing and says how long to wait. It is
// not bounded by MaxReadsPerRequest.
func (l *limiter) lendWhole(cred, tenant string, need int, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bs := l.readLimits(cred, tenant, now)
	if short, wait, _ := shortfall(bs, now, func(rb readLimit) float64 { return float64(min(need, rb.burst)) }); short {
		return false, wait
	}
	take(bs, need)
	return true, 0
}

// readsFor says how many reads a paced reader (a WebSocket stream) of
// credential cred on tenant may make now, at most want, without taking
// them: the reader reads, then pays with spendReads. When either bucket
// holds less than a step (want reads, or a quarter second of the bucket's
// rate when that is less, at least one read) it says how long to wait
// instead, so that a paced reader goes on in steps of useful size rather
// than one read at a time.
func (l *limiter) readsFor(cred, tenant string, want int, now time.Time) (int, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	step := func(rb readLimit) float64 { return float64(min(want, rb.burst, max(1, int(rb.rate/4)))) }
	short, wait, held := shortfall(l.readLimits(cred, tenant, now), now, step)
	if short {
		return 0, max(wait, time.Millisecond)
	}
	return int(min(float64(want), held)), 0
}

// spendReads takes what a paced reader read (it may leave the buckets in
// debt).
func (l *limiter) spendReads(cred, tenant string, used int, now time.Time) {
	l.settleReads(cred, tenant, 0, used, now)
}

// settleReads gives back what a request that was lent reads did not use
// (or takes what it read beyond them).
func (l *limiter) settleReads(cred, tenant string, lent, used int, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, rb := range l.readLimits(cred, tenant, now) {
		rb.b.refill(now, rb.rate, rb.burst)
		rb.b.tokens = min(rb.b.tokens+float64(lent-used), float64(rb.burst))
	}
}

func (l *limiter) allowIP(ip string, now time.Time) (bool, time.Duration) {
	return l.allow("ip:"+ip, l.cfg.PerIP, l.cfg.IPBurst, now)
}

func (l *limiter) allowCredential(id string, now time.Time) (bool, time.Duration) {
	return l.allow("cred:"+id, l.cfg.PerCredential, l.cfg.CredentialBurst, now)
}

// throttled reports whether ip is locked out after failed authentications.
func (l *limiter) throttled(ip string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.failures[ip]
	if !ok || now.Sub(w.start) >= l.cfg.AuthWindow {
		return false, 0
	}
	if w.n >= l.cfg.AuthFailures {
		return true, l.cfg.AuthWindow - now.Sub(w.start)
	}
	return false, 0
}

// failed counts a failed authentication from ip.
func (l *limiter) failed(ip string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.failures[ip]
	if !ok || now.Sub(w.start) >= l.cfg.AuthWindow {
		w = &window{start: now}
		l.failures[ip] = w
	}
	w.n++
}

func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if now.Sub(b.seen) > 10*time.Minute {
			delete(l.buckets, k)
		}
	}
	for k, w := range l.failures {
		if now.Sub(w.start) > l.cfg.AuthWindow {
			delete(l.failures, k)
		}
	}
	for k, b := range l.reads {
		// Full again and idle: a new bucket would be the same.
		if now.Sub(b.at) > 10*time.Minute {
			delete(l.reads, k)
		}
	}
}

// retryAfter sets Retry-After in whole seconds, rounded up, at least 1.
func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds())))))
}
