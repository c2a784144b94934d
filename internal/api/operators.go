package api

import (
	"context"
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/fault"
)

// Operator roles, decided over the route table (docs/ARCHITECTURE.md,
// "Operator roles"):
//
//   - operator:admin, like the bootstrap key, may do everything.
//   - operator:provisioning does factory work: POST /v1/factory/gateways,
//     creating and listing tenants, registering gateways in a tenant, making,
//     listing and revoking their enrollment tokens, and reading the tenant's
//     gateway metadata (the tenant routes of scope gateways:read). Never a
//     gateway's state change or deletion, credentials, integrations,
//     customer data or operators.
//   - operator:readonly may GET every operator route but /v1/operators
//     (tenants, /metrics) and every tenant GET route except those that read
//     customer data (customerData): messages, rejected, the stream and dead
//     letters stay closed to it, for privacy. It reads the _system audit log.
//   - operator:metrics may GET /metrics only.
//
// A named operator outside its role is refused 403 api.operator_role.

// provisioningRoutes are the routes operator:provisioning may call besides
// the tenant GET routes of scope gateways:read.
var provisioningRoutes = []string{
	"POST /v1/tenants",
	"GET /v1/tenants",
	"POST /v1/tenants/{tenant}/gateways",
	"POST /v1/factory/gateways",
	"POST /v1/tenants/{tenant}/enrollment-tokens",
	"POST /v1/tenants/{tenant}/enrollment-tokens/{id}/revoke",
}

// customerData reports whether a tenant route reads the tenant's customer
// data: stored and rejected messages, the live stream, dead letters.
func customerData(rt Route) bool {
	return rt.Scope == credential.ScopeMessagesRead || strings.HasSuffix(rt.Pattern, "/dead-letters")
}

// allows reports whether an operator principal's role lets it call rt.
// The bootstrap key (no role) may do what operator:admin may.
func (p *Principal) allows(rt Route) bool {
	switch p.Role {
	case "", credential.RoleAdmin:
		return true
	case credential.RoleMetrics:
		return rt.Method == http.MethodGet && rt.Pattern == "/metrics"
	case credential.RoleReadonly:
		if rt.Method != http.MethodGet || strings.HasPrefix(rt.Pattern, "/v1/operators") {
			return false
		}
		return rt.Access != Tenant || !customerData(rt)
	case credential.RoleProvisioning:
		if slices.Contains(provisioningRoutes, rt.Method+" "+rt.Pattern) {
			return true
		}
		return rt.Access == Tenant && !rt.System && rt.Method == http.MethodGet && rt.Scope == credential.ScopeGatewaysRead
	}
	return false
}

// roleScopes are the tenant scopes a named operator's role holds (nil:
// all); authorize checks the role's routes (allows) first.
func roleScopes(role string) []string {
	switch role {
	case credential.RoleAdmin:
		return nil
	case credential.RoleProvisioning:
		return []string{credential.ScopeGatewaysRead, credential.ScopeGatewaysWrite}
	case credential.RoleReadonly:
		var out []string
		for _, sc := range credential.TenantScopes {
			if strings.HasSuffix(sc, ":read") && sc != credential.ScopeMessagesRead {
				out = append(out, sc)
			}
		}
		return out
	}
	return []string{}
}

// operatorPrincipal is the principal of a verified named operator.
func operatorPrincipal(op credential.Operator) *Principal {
	p := &Principal{Kind: "operator", ID: op.ID, Name: op.Name, Role: op.Role, Scopes: roleScopes(op.Role)}
	if op.ExpiresAt != nil {
		p.ExpiresAt = *op.ExpiresAt
	}
	return p
}

// refusedOperator names, for the audit entry of a refusal, the existing
// operator whose key was refused (by name, or by id when the name is not
// known). It holds no scope and no role, and never the secret tried.
func refusedOperator(op credential.Operator) *Principal {
	name := op.Name
	if name == "" {
		name = op.ID
	}
	return &Principal{Kind: "operator", ID: op.ID, Name: name, Scopes: []string{}}
}

// viewOperator is a named operator as the API shows it, never with its
// hash; the key is given only in the answers that create or rotate it.
func viewOperator(op credential.Operator, token string) client.Operator {
	v := op.Operator
	v.Key = token
	return v
}

// operators returns the named operators, or ErrNotFound when the server
// has none (the routes then do not exist).
func (s *Server) operators() (Operators, error) {
	if s.deps.Operators == nil {
		return nil, ErrNotFound.New()
	}
	return s.deps.Operators, nil
}

func (s *Server) createOperator(w http.ResponseWriter, r *http.Request, p *Principal) error {
	ops, err := s.operators()
	if err != nil {
		return err
	}
	var req client.CreateOperatorRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		return err
	}
	op, token, err := ops.Create(r.Context(), req.Name, req.Role, ttl, p.Actor())
	s.record(r.Context(), r, audit.SystemTenant, p, "operator.create", "operator:"+op.ID, err, map[string]string{"name": req.Name, "role": req.Role})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, viewOperator(op, token))
	return nil
}

func (s *Server) listOperators(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	ops, err := s.operators()
	if err != nil {
		return err
	}
	list, err := ops.List(r.Context())
	if err != nil {
		return err
	}
	writeList(w, list, func(op credential.Operator) client.Operator { return viewOperator(op, "") })
	return nil
}

func (s *Server) getOperator(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	ops, err := s.operators()
	if err != nil {
		return err
	}
	op, err := ops.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewOperator(op, ""))
	return nil
}

func (s *Server) rotateOperator(w http.ResponseWriter, r *http.Request, p *Principal) error {
	return s.changeOperator(w, r, p, "operator.rotate", Operators.Rotate)
}

func (s *Server) revokeOperator(w http.ResponseWriter, r *http.Request, p *Principal) error {
	return s.changeOperator(w, r, p, "operator.revoke", func(ops Operators, ctx context.Context, id string) (credential.Operator, string, error) {
		op, err := ops.Revoke(ctx, id)
		return op, "", err
	})
}

// changeOperator applies change to the operator of the path (an empty
// body), audits it in _system as action unless there is no such operator,
// and answers the operator with the key change made ("" for none).
func (s *Server) changeOperator(w http.ResponseWriter, r *http.Request, p *Principal, action string,
	change func(ops Operators, ctx context.Context, id string) (credential.Operator, string, error)) error {
	ops, err := s.operators()
	if err != nil {
		return err
	}
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	id := r.PathValue("id")
	op, token, err := change(ops, r.Context(), id)
	if !credential.ErrNotFound.Is(err) {
		s.record(r.Context(), r, audit.SystemTenant, p, action, "operator:"+id, err, map[string]string{"name": op.Name})
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewOperator(op, token))
	return nil
}

func (s *Server) retireBootstrap(w http.ResponseWriter, r *http.Request, p *Principal) error {
	ops, err := s.operators()
	if err != nil {
		return err
	}
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	b, err := ops.RetireBootstrap(r.Context(), p.Actor())
	s.record(r.Context(), r, audit.SystemTenant, p, "operator.bootstrap.retire", "operator", err, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

// Faults of the operators' second factor (Config.AdminClientCAs).
var (
	ErrOperatorCertRequired = fault.Define("api.operator_certificate_required", fault.Unauthenticated,
		"an operator key works only on the admin listener, with a client certificate of the operators' CA")
	ErrOperatorCertMismatch = fault.Define("api.operator_certificate_mismatch", fault.Unauthenticated,
		"the client certificate was not issued to the operator whose key was sent")
)

// operatorCertificate is the operators' second factor: with
// Config.AdminClientCAs, an operator principal must come with a client
// certificate those CAs verified (only the admin listener verifies one),
// and a named operator's certificate must name it (common name = the
// operator's name). The bootstrap key takes any certificate of the CAs.
func (s *Server) operatorCertificate(r *http.Request, p *Principal) error {
	if s.cfg.AdminClientCAs == nil || p == nil || p.Kind != "operator" {
		return nil
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ErrOperatorCertRequired.New()
	}
	if cn := r.TLS.VerifiedChains[0][0].Subject.CommonName; p.Name != "" && subtle.ConstantTimeCompare([]byte(cn), []byte(p.Name)) != 1 {
		return ErrOperatorCertMismatch.New()
	}
	return nil
}
