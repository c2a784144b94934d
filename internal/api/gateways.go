package api

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/registry"
)

// viewTenant is a tenant as the API shows it: without its sealed CA key.
func viewTenant(t registry.Tenant) client.Tenant {
	return client.Tenant{ID: t.ID, CreatedAt: t.CreatedAt, CACert: t.CACert, RejectUnknownIDs: t.RejectUnknownIDs}
}

// viewCert is a gateway certificate as the API shows it, with its status
// at now.
func viewCert(c registry.Certificate, now time.Time) client.Certificate {
	st := client.CertificateValid
	switch {
	case c.RevokedAt != nil:
		st = client.CertificateRevoked
	case !now.Before(c.NotAfter):
		st = client.CertificateExpired
	}
	return client.Certificate{Serial: c.Serial, Fingerprint: c.Fingerprint, NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: c.IssuedAt, RevokedAt: c.RevokedAt, Status: st}
}

// viewGateway is a gateway as the API shows it: whether it is connected
// here, its certificates and their latest valid expiry.
func (s *Server) viewGateway(g registry.Gateway) client.Gateway {
	now := nowFunc()
	v := client.Gateway{
		Tenant: g.Tenant, Serial: g.Serial, State: string(g.State), CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt,
		Labels: g.Labels, DeploymentGroupID: g.DeploymentGroupID, Certificates: []client.Certificate{},
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if s.deps.Connected != nil {
		v.Connected = s.deps.Connected(g.Tenant, g.Serial)
	}
	for _, c := range g.Certificates {
		cv := viewCert(c, now)
		v.Certificates = append(v.Certificates, cv)
		if cv.Status == client.CertificateValid && (v.CertificateExpiry == nil || c.NotAfter.After(*v.CertificateExpiry)) {
			na := c.NotAfter
			v.CertificateExpiry = &na
		}
	}
	return v
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req client.CreateTenantRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	t, err := s.deps.CreateTenant(r.Context(), req.ID)
	if registry.ValidTenantID(req.ID) {
		s.record(r.Context(), r, "_system", p, "registry.tenant.create", "tenant:"+req.ID, err, nil)
	}
	if err != nil {
		return err
	}
	s.record(r.Context(), r, t.ID, p, "registry.tenant.create", "tenant:"+t.ID, nil, nil)
	writeJSON(w, http.StatusCreated, viewTenant(t))
	return nil
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	if r.URL.Query().Get("state") == registry.TenantDeleted {
		s.listDeletedTenants(w)
		return nil
	}
	writeList(w, s.deps.Registry.Tenants(), viewTenant)
	return nil
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	t, _ := s.deps.Registry.Tenant(r.PathValue("tenant")) // authorize checked it exists
	writeJSON(w, http.StatusOK, viewTenant(t))
	return nil
}

// registerGateway registers a serial directly: the operator's way (an
// Operator route: serials are unique across tenants, so its 409 says a
// serial is held somewhere). A tenant credential is refused before the
// serial is read, whatever it is, so that it learns nothing of other
// tenants' serials and cannot reserve (squat) one it does not own: a
// tenant adds a gateway by claiming it with the code on its label
// (claimGateway, docs/SECURITY.md).
func (s *Server) registerGateway(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req client.RegisterGatewayRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	if req.Labels != nil && !registry.ValidLabels(req.Labels) {
		return registry.ErrLabelsInvalid.New()
	}
	g, err := s.deps.Registry.RegisterGateway(r.Context(), tenant, req.Serial)
	if err == nil && len(req.Labels) > 0 {
		g, err = s.deps.Registry.SetLabels(r.Context(), tenant, req.Serial, req.Labels)
	}
	if registry.ValidSerial(req.Serial) {
		s.record(r.Context(), r, tenant, p, "registry.gateway.register", "gateway:"+req.Serial, err, nil)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, s.viewGateway(g))
	return nil
}

// page parameters of list routes over small collections.
func pageParams(r *http.Request) (limit int, after string, err error) {
	limit = DefaultLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			return 0, "", ErrBadParameter.WithDetail("limit must be an integer from 1 to %d", MaxLimit)
		}
		limit = n
	}
	after = r.URL.Query().Get("after")
	if len(after) > 128 {
		return 0, "", ErrBadParameter.WithDetail("after is too long")
	}
	return limit, after, nil
}

func (s *Server) listGateways(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	limit, after, err := pageParams(r)
	if err != nil {
		return err
	}
	state := r.URL.Query().Get("state")
	if state != "" && !registry.GatewayState(state).Valid() {
		return ErrBadParameter.WithDetail("state must be active, isolated or revoked")
	}
	gws, err := s.deps.Registry.Gateways(r.PathValue("tenant"))
	if err != nil {
		return err
	}
	out := client.Page[client.Gateway]{Items: []client.Gateway{}}
	for _, g := range gws { // sorted by serial
		if g.Serial <= after || state != "" && string(g.State) != state {
			continue
		}
		if len(out.Items) == limit {
			out.Next = out.Items[len(out.Items)-1].Serial
			break
		}
		v := s.viewGateway(g)
		s.withState(r.Context(), &v)
		out.Items = append(out.Items, v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) gateway(r *http.Request) (registry.Gateway, error) {
	serial := r.PathValue("serial")
	if !registry.ValidSerial(serial) {
		return registry.Gateway{}, registry.ErrGatewayNotFound.New()
	}
	g, ok := s.deps.Registry.Gateway(r.PathValue("tenant"), serial)
	if !ok {
		return registry.Gateway{}, registry.ErrGatewayNotFound.New()
	}
	return g, nil
}

func (s *Server) getGateway(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	g, err := s.gateway(r)
	if err != nil {
		return err
	}
	v := s.viewGateway(g)
	s.withState(r.Context(), &v)
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) updateGateway(w http.ResponseWriter, r *http.Request, p *Principal) error {
	g, err := s.gateway(r)
	if err != nil {
		return err
	}
	var req client.UpdateGatewayRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	if req.Labels != nil && (req.SetLabels != nil || req.RemoveLabels != nil) {
		return registry.ErrLabelsInvalid.WithDetail("give labels, or setLabels and removeLabels, not both")
	}
	for _, k := range req.RemoveLabels {
		if _, ok := req.SetLabels[k]; ok {
			return registry.ErrLabelsInvalid.WithDetail("label %q is both in setLabels and in removeLabels", k)
		}
	}
	// A refused change answers a zero gateway: audit it by the names read
	// before, so that it is recorded with its outcome.
	tenant, target := g.Tenant, "gateway:"+g.Serial
	if req.Labels != nil || req.SetLabels != nil || req.RemoveLabels != nil {
		if req.Labels != nil {
			g, err = s.deps.Registry.SetLabels(r.Context(), g.Tenant, g.Serial, *req.Labels)
		} else {
			g, err = s.deps.Registry.ChangeLabels(r.Context(), g.Tenant, g.Serial, req.SetLabels, req.RemoveLabels)
		}
		s.record(r.Context(), r, tenant, p, "registry.gateway.update", target, err, map[string]string{"field": "labels"})
		if err != nil {
			return err
		}
	}
	if req.DeploymentGroupID != nil {
		g, err = s.deps.Registry.SetDeploymentGroup(r.Context(), g.Tenant, g.Serial, *req.DeploymentGroupID)
		s.record(r.Context(), r, tenant, p, "registry.gateway.update", target, err, map[string]string{"field": "deploymentGroupId", "value": *req.DeploymentGroupID})
		if err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, s.viewGateway(g))
	return nil
}

func (s *Server) deleteGateway(w http.ResponseWriter, r *http.Request, p *Principal) error {
	g, err := s.gateway(r)
	if err != nil {
		return err
	}
	err = s.deps.Registry.DeleteGateway(r.Context(), g.Tenant, g.Serial)
	s.record(r.Context(), r, g.Tenant, p, "registry.gateway.delete", "gateway:"+g.Serial, err, nil)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// gatewayState changes a gateway's state; isolation and revocation take
// effect on new connections at once and drop live sessions through the
// registry's change watch.
func (s *Server) gatewayState(verb string) handlerFunc {
	state := map[string]registry.GatewayState{"isolate": registry.StateIsolated, "activate": registry.StateActive, "revoke": registry.StateRevoked}[verb]
	return func(w http.ResponseWriter, r *http.Request, p *Principal) error {
		g, err := s.gateway(r)
		if err != nil {
			return err
		}
		if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
			return err
		}
		g, err = s.deps.Registry.SetGatewayState(r.Context(), g.Tenant, g.Serial, state)
		s.record(r.Context(), r, r.PathValue("tenant"), p, "registry.gateway."+verb, "gateway:"+r.PathValue("serial"), err, nil)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, s.viewGateway(g))
		return nil
	}
}

func (s *Server) listCertificates(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	g, err := s.gateway(r)
	if err != nil {
		return err
	}
	now := nowFunc()
	items := make([]client.Certificate, 0, len(g.Certificates))
	for _, c := range g.Certificates {
		items = append(items, viewCert(c, now))
	}
	slices.Reverse(items) // newest first
	writeJSON(w, http.StatusOK, client.List[client.Certificate]{Items: items})
	return nil
}

// viewToken is an enrollment token as the API shows it, with its state
// now; secret is given only in the answer that creates it.
func viewToken(t registry.EnrollmentToken, secret string) client.EnrollmentToken {
	st := client.TokenValid
	switch {
	case t.RevokedAt != nil:
		st = client.TokenRevoked
	case t.UsedAt != nil:
		st = client.TokenUsed
	case !nowFunc().Before(t.ExpiresAt):
		st = client.TokenExpired
	}
	return client.EnrollmentToken{
		Token: secret, ID: t.ID, Tenant: t.Tenant, Serial: t.Serial, CreatedAt: t.CreatedAt,
		CreatedBy: t.CreatedBy, ExpiresAt: t.ExpiresAt, UsedAt: t.UsedAt, RevokedAt: t.RevokedAt, State: st,
	}
}

func parseTTL(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, ErrBadParameter.WithDetail("ttl must be a duration such as \"24h\" or \"30m\"")
	}
	return d, nil
}

func (s *Server) createEnrollmentToken(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req client.CreateEnrollmentTokenRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		return err
	}
	tenant := r.PathValue("tenant")
	tok, secret, err := s.deps.Registry.CreateEnrollmentToken(r.Context(), tenant, req.Serial, ttl, p.Actor())
	if registry.ValidSerial(req.Serial) {
		s.record(r.Context(), r, tenant, p, "registry.token.create", "gateway:"+req.Serial, err, map[string]string{"token_id": tok.ID})
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, viewToken(tok, secret))
	return nil
}

func (s *Server) listEnrollmentTokens(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	toks, err := s.deps.Registry.EnrollmentTokens(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	writeList(w, toks, func(t registry.EnrollmentToken) client.EnrollmentToken { return viewToken(t, "") })
	return nil
}

// revokeEnrollmentToken revokes a token; like an API key's revocation it
// is idempotent, and an unknown token is a 404 that is not audited.
func (s *Server) revokeEnrollmentToken(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if err := decodeJSON(w, r, s.cfg.MaxBody, &struct{}{}, true); err != nil {
		return err
	}
	tenant, id := r.PathValue("tenant"), r.PathValue("id")
	tok, err := s.deps.Registry.RevokeEnrollmentToken(r.Context(), tenant, id)
	if !registry.ErrTokenNotFound.Is(err) {
		target := "token:" + id
		if tok.Serial != "" {
			target = "gateway:" + tok.Serial
		}
		s.record(r.Context(), r, tenant, p, "registry.token.revoke", target, err, map[string]string{"token_id": id})
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewToken(tok, ""))
	return nil
}

// Page sizes of the list endpoints: the size of a page when the request
// gives no limit, and the largest.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)
