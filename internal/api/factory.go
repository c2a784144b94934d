package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
)

// Faults of factory provisioning and claims.
var (
	ErrClaimThrottled = fault.Define("api.claim_throttled", fault.ResourceExhausted, "too many failed claims for this tenant; retry after the time in Retry-After")
)

// provisionGateways makes unclaimed gateways with their claim codes
// (operator). The codes are in the answer only: the audit entry (in
// _system) names the batch, the model and the count.
func (s *Server) provisionGateways(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req client.ProvisionGatewaysRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	now := nowFunc().UTC()
	batch, made, err := s.deps.Registry.Provision(r.Context(), req.Model, req.Count)
	detail := map[string]string{"count": strconv.Itoa(len(made))}
	if registry.ValidModel(req.Model) {
		detail["model"] = req.Model
	}
	target := "batch:" + batch
	if batch == "" {
		target = "batch:-"
	}
	s.record(r.Context(), r, "_system", p, "registry.factory.provision", target, err, detail)
	if err != nil {
		return err
	}
	out := client.ProvisionedBatch{Batch: batch, Model: req.Model, CreatedAt: now, Gateways: make([]client.ProvisionedGateway, 0, len(made))}
	for _, g := range made {
		out.Gateways = append(out.Gateways, client.ProvisionedGateway{Serial: g.Serial, Model: g.Model, ClaimCode: g.ClaimCode})
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// claimGateway binds an unclaimed gateway to the path's tenant with its
// claim code. Every failure that is not the server's answers alike
// (registry.ErrClaimInvalid) and costs the tenant one of its failed claims
// (Limits.ClaimFailures); none left answers 429 whatever the request, so
// that guessing stops there. The code is never logged or audited.
func (s *Server) claimGateway(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req client.ClaimGatewayRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	if ok, wait := s.limits.takeClaim(tenant, nowFunc()); !ok {
		retryAfter(w, wait)
		return ErrClaimThrottled.New()
	}
	g, err := s.deps.Registry.Claim(r.Context(), tenant, req.Serial, req.ClaimCode)
	if !registry.ErrClaimInvalid.Is(err) {
		s.limits.giveClaim(tenant, nowFunc()) // a success or the server's failure: not a guess
	}
	target := "gateway:-"
	if registry.ValidSerial(req.Serial) {
		target = "gateway:" + req.Serial
	}
	s.record(r.Context(), r, tenant, p, "registry.gateway.claim", target, err, nil)
	if err != nil {
		return err
	}
	s.record(r.Context(), r, "_system", p, "registry.gateway.claim", target, nil, map[string]string{"tenant": tenant})
	writeJSON(w, http.StatusCreated, s.viewGateway(g))
	return nil
}

// takeClaim takes one failed claim of tenant's budget up front (given back
// by giveClaim when the claim was not a failure); when none is left it
// says how long until one is.
func (l *limiter) takeClaim(tenant string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.claimBucket(tenant, now)
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.cfg.ClaimRefill))
	}
	b.tokens--
	return true, 0
}

// giveClaim gives back what takeClaim took.
func (l *limiter) giveClaim(tenant string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.claimBucket(tenant, now)
	b.tokens = min(b.tokens+1, float64(l.cfg.ClaimFailures))
}

// claimBucket returns tenant's bucket of failed claims, refilled to now
// (l.mu held). There is one per tenant that claimed, never swept.
func (l *limiter) claimBucket(tenant string, now time.Time) *readBucket {
	if l.claims == nil {
		l.claims = map[string]*readBucket{}
	}
	b, ok := l.claims[tenant]
	if !ok {
		b = &readBucket{tokens: float64(l.cfg.ClaimFailures), at: now}
		l.claims[tenant] = b
	}
	b.refill(now, float64(time.Second)/float64(l.cfg.ClaimRefill), l.cfg.ClaimFailures)
	return b
}
