package api

import (
	"net/http"

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

// ErrReadBudget refuses a read when its credential or tenant has spent its
// read budget.
var ErrReadBudget = fault.Define("api.read_budget_spent", fault.ResourceExhausted,
	"this credential or its tenant has read too much in a short time; retry after the time in Retry-After")

// metrics are the API's counters; the route label is a route of the
// table ("GET /v1/tenants/{tenant}/audit").
type metrics struct {
	reads        *prometheus.CounterVec
	readsRefused *prometheus.CounterVec
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
	}
	if reg != nil {
		reg.MustRegister(m.reads, m.readsRefused)
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

// settle records what the request read and gives back the rest.
func (l *readLoan) settle(used int) {
	l.s.limits.settleReads(l.cred, l.tenant, l.lent, used, nowFunc())
	l.s.counters.reads.WithLabelValues(l.route).Add(float64(used))
}
