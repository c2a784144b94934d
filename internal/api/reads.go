package api

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/fault"
)

// Reads that cost
//
// Some reads cost the server far more than others: a page of 1,000 sealed
// messages (each read, opened and decoded), a filter that matches nothing
// and so walks the whole stream, a resume that searches a sensor's
// messages and misses. The request limits count requests, not that; the
// read budget counts what requests read (Limits.ReadsPerCredential and
// ReadsPerTenant). A request that reads stored items is lent, up front,
// what it may read (at most MaxReadsPerRequest, and what its credential
// and its tenant have left); its walk stops there and answers a partial
// page whose cursor goes on; what it did not read is given back. A request
// that finds its credential or tenant with nothing left is refused with
// 429 api.read_budget_spent and Retry-After.
//
// Two reads cannot answer part of what they read. An audit verification
// reads and hashes the whole log: it is lent the log's size up front, and
// may start only when the credential and the tenant have that much left
// (their whole burst, for a log larger than that); it leaves them in debt
// for the rest, so the next reads wait it out, and otherwise it is refused
// with 429 and the time until they have. A WebSocket stream reads for as
// long as it is open (a resume from an old message replays the history):
// it pays for every message it reads and opens, also one the
// ?integration= filter then drops, and when the budget is spent it waits
// for it rather than failing, so a live stream goes on at the budget's
// rate.

// ErrReadBudget refuses a read when its credential or tenant has spent its
// read budget.
var ErrReadBudget = fault.Define("api.read_budget_spent", fault.ResourceExhausted,
	"this credential or its tenant has read too much in a short time; retry after the time in Retry-After")

// metrics are the API's counters; the route label is a route of the
// table ("GET /v1/tenants/{tenant}/audit").
type metrics struct {
	reads        *prometheus.CounterVec
	readsRefused *prometheus.CounterVec
	auditFailed  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_api_reads_total",
			Help: "Stored items read by API requests (messages, rejected messages, audit and index entries; sequences a filter steps over count one read per store.SeqsPerRead), by route.",
		}, []string{"route"}),
		readsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_api_reads_refused_total",
			Help: "API requests refused because their credential or tenant had spent its read budget (429 api.read_budget_spent), by route.",
		}, []string{"route"}),
		auditFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iotransit_api_audit_failed_total",
			Help: "Audit entries the API could not write: a change's write-ahead entry (stage=write_ahead: the change was refused, 503 audit.unavailable) or an entry written after the fact (stage=record: logged).",
		}, []string{"stage"}),
	}
	if reg != nil {
		reg.MustRegister(m.reads, m.readsRefused, m.auditFailed)
	}
	return m
}

// readLoan is what one request was lent to read.
type readLoan struct {
	s                   *Server
	cred, tenant, route string
	lent                int
}

// lendReads lends the request what it may read, or refuses it (429 with
// Retry-After) when its credential or tenant has nothing left.
func (s *Server) lendReads(w http.ResponseWriter, r *http.Request, p *Principal) (*readLoan, error) {
	l := &readLoan{s: s, cred: p.Actor(), tenant: r.PathValue("tenant"), route: r.Pattern}
	n, wait := s.limits.lendReads(l.cred, l.tenant, nowFunc())
	if n == 0 {
		s.counters.readsRefused.WithLabelValues(l.route).Inc()
		retryAfter(w, wait)
		return nil, ErrReadBudget.New()
	}
	l.lent = n
	return l, nil
}

// lendWhole lends a read that cannot stop part way what it will read
// (need), or refuses it (429 with Retry-After) until the credential and
// the tenant have that much left (limiter.lendWhole).
func (s *Server) lendWhole(w http.ResponseWriter, r *http.Request, p *Principal, need int) (*readLoan, error) {
	l := &readLoan{s: s, cred: p.Actor(), tenant: r.PathValue("tenant"), route: r.Pattern, lent: need}
	if ok, wait := s.limits.lendWhole(l.cred, l.tenant, need, nowFunc()); !ok {
		s.counters.readsRefused.WithLabelValues(l.route).Inc()
		retryAfter(w, wait)
		return nil, ErrReadBudget.WithDetail("this read cannot stop part way and reads %d stored items", need)
	}
	return l, nil
}

// pacer paces a reader that is not refused part way, a stream, by the
// read budget of its credential and tenant.
type pacer struct {
	s                   *Server
	cred, tenant, route string
}

func (s *Server) pacer(r *http.Request, p *Principal) *pacer {
	return &pacer{s: s, cred: p.Actor(), tenant: r.PathValue("tenant"), route: r.Pattern}
}

// next waits until the credential and the tenant may read again and
// returns how many items the next read may take, at most want.
func (pc *pacer) next(ctx context.Context, want int) (int, error) {
	for {
		n, wait := pc.s.limits.readsFor(pc.cred, pc.tenant, want, nowFunc())
		if n > 0 {
			return n, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// spend pays for what was read.
func (pc *pacer) spend(used int) {
	pc.s.limits.spendReads(pc.cred, pc.tenant, used, nowFunc())
	pc.s.counters.reads.WithLabelValues(pc.route).Add(float64(used))
}

// settle records what the request read and gives back the rest.
func (l *readLoan) settle(used int) {
	l.s.limits.settleReads(l.cred, l.tenant, l.lent, used, nowFunc())
	l.s.counters.reads.WithLabelValues(l.route).Add(float64(used))
}
