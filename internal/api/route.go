package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
)

// Access says who may call a route.
type Access int

// Access levels.
const (
	// Public routes need no credential (health, the spec, enrollment, the token endpoint).
	Public Access = iota
	// Operator routes need the operator key.
	Operator
	// Tenant routes need a credential of the path's tenant (or the operator)
	// holding the route's scope.
	Tenant
	// Gateway routes need a gateway client certificate (mutual TLS).
	Gateway
	// Credential routes need any valid bearer credential (operator key,
	// API key or OAuth2 access token) and no scope: what a credential may
	// learn about itself (GET /v1/whoami). A gateway certificate is not one.
	Credential
)

// Route is one entry of the API: method, path pattern, who may call it and
// with which scope. Every route declares its scope; the route table is
// checked against the OpenAPI document by a test.
type Route struct {
	Method  string
	Pattern string
	Access  Access
	Scope   string
	// Also is a second scope the route needs when what it does sends the
	// tenant's messages somewhere (creating an integration that delivers,
	// pointing one elsewhere, re-driving dead letters): the handler asks
	// for it then (needAlso), and the OpenAPI document says when.
	Also string
	// System lets the operator name the reserved tenant "_system"
	// (audit.SystemTenant, the platform's audit log) as the path's tenant;
	// no tenant credential reaches it.
	System bool
	handle handlerFunc
}

// Routes returns the route table.
func (s *Server) Routes() []Route { return slices.Clone(s.routes) }

// handlerFunc is a handler that returns its error; one place turns errors
// into responses.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *Principal) error

// Principal is an authenticated caller.
type Principal struct {
	// Kind is "operator", "apikey", "oauth2" or "gateway".
	Kind string
	// ID is the key id, OAuth2 client id, gateway serial or named
	// operator's id ("" for the bootstrap operator key).
	ID string
	// Name and Role are a named operator's ("" for the bootstrap key,
	// which may do what credential.RoleAdmin may).
	Name, Role string
	// Tenant is the credential's tenant, "" for the operator.
	Tenant string
	// Scopes are the credential's scopes, nil for the operator (all).
	Scopes []string
	// Identity is the gateway identity for Kind "gateway".
	Identity registry.Identity
	// ExpiresAt is when the credential expires (an API key's expiry, an
	// OAuth2 token's client's); zero: never. Credentials it creates expire
	// then at the latest.
	ExpiresAt time.Time
	// TokenExpiresAt is when an OAuth2 access token itself expires (zero
	// for other kinds); it stops working then or at ExpiresAt, whichever
	// comes first.
	TokenExpiresAt time.Time
}

// until is when the credential stops working, zero for never.
func (p *Principal) until() time.Time {
	t := p.ExpiresAt
	if !p.TokenExpiresAt.IsZero() && (t.IsZero() || p.TokenExpiresAt.Before(t)) {
		t = p.TokenExpiresAt
	}
	return t
}

// Actor names the principal in audit entries.
func (p *Principal) Actor() string {
	if p == nil {
		return "anonymous"
	}
	if p.Kind == "operator" {
		if p.Name != "" {
			return "operator:" + p.Name
		}
		return "operator"
	}
	return p.Kind + ":" + p.ID
}

// held returns the scopes the principal may delegate (nil: all).
func (p *Principal) held() []string { return p.Scopes }

// can reports whether the principal holds scope.
func (p *Principal) can(scope string) bool {
	return p.Scopes == nil || slices.Contains(p.Scopes, scope)
}

// needAlso refuses a principal without scope, which what it asks for
// needs besides the route's own scope.
func needAlso(p *Principal, scope, what string) error {
	if p.can(scope) {
		return nil
	}
	return ErrScopeMissing.WithDetail("%s needs %s as well", what, scope)
}

// Faults of authentication and authorisation.
var (
	ErrScopeMissing = fault.Define("api.scope_missing", fault.PermissionDenied, "the credential lacks the scope this route needs")
	ErrOperatorOnly = fault.Define("api.operator_only", fault.PermissionDenied, "only the operator may do this")
	ErrRoleDenied   = fault.Define("api.operator_role", fault.PermissionDenied, "the operator's role does not allow this")
	ErrRateLimited  = fault.Define("api.rate_limited", fault.ResourceExhausted, "too many requests; retry after the time in Retry-After")
	ErrAuthThrottle = fault.Define("api.auth_throttled", fault.ResourceExhausted, "too many failed authentications from this address; retry after the time in Retry-After")
	ErrClientCert   = fault.Define("api.client_certificate_required", fault.Unauthenticated, "a valid gateway client certificate is required")
)

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// bearer returns the bearer token of the request, "" if none.
func bearer(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) <= len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(auth[len(prefix):])
}

// authenticate resolves the request's credential. A failure names, where it
// can, the tenant the credential belongs to (for that tenant's audit log)
// and, for a named operator's refused key, a principal that only names the
// operator tried in that entry: it is never to be authorised.
func (s *Server) authenticate(r *http.Request) (*Principal, string, error) {
	tok := bearer(r)
	if tok == "" {
		return nil, "", ErrUnauthenticated.New()
	}
	got := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(got[:], s.opKey[:]) == 1 {
		if s.deps.Operators != nil && s.deps.Operators.BootstrapRetired() {
			// Audited under the key tried (the bootstrap operator); the
			// principal holds no scope and is never authorised.
			return &Principal{Kind: "operator", Scopes: []string{}}, audit.SystemTenant,
				ErrUnauthenticated.WithDetail("the bootstrap operator key is retired")
		}
		return &Principal{Kind: "operator"}, "", nil
	}
	ctx := r.Context()
	switch {
	case credential.IsOperatorToken(tok) && s.deps.Operators != nil:
		op, err := s.deps.Operators.Verify(ctx, tok)
		if err != nil {
			if fault.From(err).Kind() == fault.Unauthenticated {
				// A refused operator that exists is audited in _system
				// under the name it tried.
				if op.ID == "" {
					return nil, "", ErrUnauthenticated.Wrap(err)
				}
				return refusedOperator(op), audit.SystemTenant, ErrUnauthenticated.Wrap(err)
			}
			return nil, "", err
		}
		return operatorPrincipal(op), "", nil
	case credential.IsAPIKeyToken(tok):
		k, err := s.deps.Credentials.VerifyAPIKey(ctx, tok)
		if err != nil {
			if fault.From(err).Kind() == fault.Unauthenticated {
				return nil, k.Tenant, ErrUnauthenticated.Wrap(err)
			}
			return nil, "", err
		}
		if s.tenantGone(k.Tenant) {
			return nil, "", ErrUnauthenticated.WithDetail("the key's tenant does not exist")
		}
		p := &Principal{Kind: "apikey", ID: k.ID, Tenant: k.Tenant, Scopes: k.Scopes}
		if k.ExpiresAt != nil {
			p.ExpiresAt = *k.ExpiresAt
		}
		return s.allowSource(r, p)
	case credential.IsJWT(tok):
		c, err := s.deps.Tokens.Verify(tok)
		if err != nil {
			return nil, "", ErrUnauthenticated.Wrap(err)
		}
		// A deleted tenant's tokens stop at once (and its deleted
		// buckets are not read, which would make them again).
		if _, ok := s.deps.Registry.Tenant(c.Tenant); !ok {
			return nil, "", ErrUnauthenticated.WithDetail("the token's tenant does not exist")
		}
		// A revoked client's tokens stop working at once.
		cl, err := s.deps.Credentials.ActiveClient(ctx, c.Tenant, c.Subject)
		if err != nil {
			return nil, c.Tenant, ErrUnauthenticated.Wrap(err)
		}
		p := &Principal{Kind: "oauth2", ID: c.Subject, Tenant: c.Tenant, Scopes: c.Scopes()}
		if c.ExpiresAt != nil {
			p.TokenExpiresAt = c.ExpiresAt.Time
		}
		if cl.ExpiresAt != nil {
			p.ExpiresAt = *cl.ExpiresAt
		}
		return s.allowSource(r, p)
	}
	return nil, "", ErrUnauthenticated.New()
}

// authenticateGateway resolves a gateway client certificate.
func (s *Server) authenticateGateway(r *http.Request) (*Principal, string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, "", ErrClientCert.New()
	}
	id, err := s.deps.Registry.Authenticate(r.TLS.PeerCertificates, nowFunc())
	if err != nil {
		tenant := ""
		if re, ok := err.(*registry.RefusedError); ok {
			tenant = re.Tenant
		}
		return nil, tenant, ErrClientCert.Wrap(err)
	}
	return &Principal{Kind: "gateway", ID: id.Serial, Tenant: id.Tenant, Identity: id}, "", nil
}

// authorize applies a route's access rule to the principal. A tenant
// credential asking for another tenant gets the same 404 as for a tenant
// that does not exist, so existence does not leak.
func (s *Server) authorize(rt Route, p *Principal, r *http.Request) error {
	switch rt.Access {
	case Operator:
		if p.Kind != "operator" {
			return ErrOperatorOnly.New()
		}
		if !p.allows(rt) {
			return ErrRoleDenied.WithDetail("%s may not %s %s", p.Role, rt.Method, rt.Pattern)
		}
	case Credential:
		// authenticate resolves bearer credentials only; a gateway's
		// certificate never reaches a credential route.
		if p.Kind == "gateway" {
			return ErrUnauthenticated.New()
		}
	case Tenant:
		t := r.PathValue("tenant")
		if rt.System && t == audit.SystemTenant && p.Kind == "operator" {
			if !p.allows(rt) {
				return ErrRoleDenied.WithDetail("%s may not %s %s", p.Role, rt.Method, rt.Pattern)
			}
			return nil // the operator holds every scope
		}
		if p.Kind != "operator" && p.Tenant != t {
			return registry.ErrTenantNotFound.New()
		}
		// A role's refusal comes before the tenant is looked up: it does
		// not tell which tenants exist.
		if p.Kind == "operator" && !p.allows(rt) {
			return ErrRoleDenied.WithDetail("%s may not %s %s", p.Role, rt.Method, rt.Pattern)
		}
		if !registry.ValidTenantID(t) {
			return registry.ErrTenantNotFound.New()
		}
		if _, ok := s.deps.Registry.Tenant(t); !ok {
			return registry.ErrTenantNotFound.New()
		}
		if !p.can(rt.Scope) {
			return ErrScopeMissing.WithDetail("this route needs %s", rt.Scope)
		}
	}
	return nil
}
