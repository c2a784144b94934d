package api

import (
	"net/http"
	"net/netip"

	"github.com/iotransit/iotransit/internal/fault"
)

// The tenant policy's apiAllowCIDRs (registry.Tenant.SourceAllowed): a
// tenant's credentials (API keys, OAuth2 clients and their tokens) are
// taken only from the networks it names. The source is the TCP peer
// (r.RemoteAddr): no forwarding header is trusted. The operator is not
// bound (its routes may have their own listener, Config.AdminAddr), nor
// are the gateways' mutual-TLS routes (enroll, reenroll, firmware): a
// gateway in the field connects from addresses its tenant does not
// choose (mobile networks, NAT), and its certificate, bound to the
// tenant's CA and revocable at once, is what identifies it.

// ErrSourceNotAllowed refuses a tenant credential used from an address
// outside the tenant's apiAllowCIDRs.
var ErrSourceNotAllowed = fault.Define("api.source_not_allowed", fault.PermissionDenied,
	"the tenant's policy does not accept its credentials from this address")

// allowSource passes p, a tenant credential that authenticated, when its
// tenant's policy accepts the request's source address; otherwise it
// refuses, naming the tenant (for its audit log) and p, as authenticate
// does.
func (s *Server) allowSource(r *http.Request, p *Principal) (*Principal, string, error) {
	if err := s.sourceAllowed(r, p.Tenant); err != nil {
		return p, p.Tenant, err
	}
	return p, "", nil
}

// sourceAllowed refuses a request of tenant's credential from an address
// outside its policy's apiAllowCIDRs (nil when it has none).
func (s *Server) sourceAllowed(r *http.Request, tenant string) error {
	t, ok := s.deps.Registry.Tenant(tenant)
	if !ok || len(t.Policy.APIAllowCIDRs) == 0 {
		return nil
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !t.SourceAllowed(ap.Addr()) {
		return ErrSourceNotAllowed.WithDetail("the address %s is not in the tenant's apiAllowCIDRs", clientIP(r))
	}
	return nil
}
