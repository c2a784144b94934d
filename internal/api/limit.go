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
}

// limiter holds token buckets per credential and per address, and failed
// authentication counts per address. Idle entries are swept.
type limiter struct {
	cfg Limits

	mu         sync.Mutex
	buckets    map[string]*bucket
	failures   map[string]*window
	suppressed map[string]int // refusals left out of a tenant's audit log
	swept      time.Time
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
	return &limiter{cfg: cfg, buckets: map[string]*bucket{}, failures: map[string]*window{}, suppressed: map[string]int{}}
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
}

// retryAfter sets Retry-After in whole seconds, rounded up, at least 1.
func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds())))))
}
