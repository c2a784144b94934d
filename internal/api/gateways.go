package api

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/internal/registry"
)

// tenantView is a tenant as the API shows it.
type tenantView struct {
	ID               string    `json:"id"`
	CreatedAt        time.Time `json:"createdAt"`
	CACert           string    `json:"caCert"`
	RejectUnknownIDs bool      `json:"rejectUnknownIds"`
}

func viewTenant(t registry.Tenant) tenantView {
	return tenantView{ID: t.ID, CreatedAt: t.CreatedAt, CACert: t.CACert, RejectUnknownIDs: t.RejectUnknownIDs}
}

// certView is a gateway certificate as the API shows it.
type certView struct {
	Serial      string     `json:"serial"`
	Fingerprint string     `json:"fingerprint"`
	NotBefore   time.Time  `json:"notBefore"`
	NotAfter    time.Time  `json:"notAfter"`
	IssuedAt    time.Time  `json:"issuedAt"`
	RevokedAt   *time.Time `json:"revokedAt,omitempty"`
	Status      string     `json:"status"` // valid, expired, revoked
}

func viewCert(c registry.Certificate, now time.Time) certView {
	st := "valid"
	switch {
	case c.RevokedAt != nil:
		st = "revoked"
	case !now.Before(c.NotAfter):
		st = "expired"
	}
	return certView{Serial: c.Serial, Fingerprint: c.Fingerprint, NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: c.IssuedAt, RevokedAt: c.RevokedAt, Status: st}
}

// gatewayView is a gateway as the API shows it.
type gatewayView struct {
	Tenant            string            `json:"tenant"`
	Serial            string            `json:"serial"`
	State             string            `json:"state"`
	Connected         bool              `json:"connected"`
	CreatedAt         time.Time         `json:"createdAt"`
	UpdatedAt         time.Time         `json:"updatedAt"`
	Labels            map[string]string `json:"labels"`
	DeploymentGroupID string            `json:"deploymentGroupId,omitempty"`
	CertificateExpiry *time.Time        `json:"certificateExpiry,omitempty"`
	Certificates      []certView        `json:"certificates"`
}

func (s *Server) viewGateway(g registry.Gateway) gatewayView {
	now := nowFunc()
	v := gatewayView{
		Tenant: g.Tenant, Serial: g.Serial, State: string(g.State), CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt,
		Labels: g.Labels, DeploymentGroupID: g.DeploymentGroupID, Certificates: []certView{},
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
		if cv.Status == "valid" && (v.CertificateExpiry == nil || c.NotAfter.After(*v.CertificateExpiry)) {
			na := c.NotAfter
			v.CertificateExpiry = &na
		}
	}
	return v
}

type createTenantRequest struct {
	ID string `json:"id"`
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req createTenantRequest
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
	items := []tenantView{}
	for _, t := range s.deps.Registry.Tenants() {
		items = append(items, viewTenant(t))
	}
	writeJSON(w, http.StatusOK, list[tenantView]{Items: items})
	return nil
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	t, _ := s.deps.Registry.Tenant(r.PathValue("tenant")) // authorize checked it exists
	writeJSON(w, http.StatusOK, viewTenant(t))
	return nil
}

type registerGatewayRequest struct {
	Serial string            `json:"serial"`
	Labels map[string]string `json:"labels,omitempty"`
}

func (s *Server) registerGateway(w http.ResponseWriter, r *http.Request, p *Principal) error {
	var req registerGatewayRequest
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
	limit = 100
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

// listPage is a page of a collection ordered by a string key; Next is the
// value to pass as ?after= for the next page.
type listPage[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
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
	out := listPage[gatewayView]{Items: []gatewayView{}}
	for _, g := range gws { // sorted by serial
		if g.Serial <= after || state != "" && string(g.State) != state {
			continue
		}
		if len(out.Items) == limit {
			out.Next = out.Items[len(out.Items)-1].Serial
			break
		}
		out.Items = append(out.Items, s.viewGateway(g))
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
	writeJSON(w, http.StatusOK, s.viewGateway(g))
	return nil
}

type updateGatewayRequest struct {
	Labels            *map[string]string `json:"labels"`
	DeploymentGroupID *string            `json:"deploymentGroupId"`
}

func (s *Server) updateGateway(w http.ResponseWriter, r *http.Request, p *Principal) error {
	g, err := s.gateway(r)
	if err != nil {
		return err
	}
	var req updateGatewayRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, false); err != nil {
		return err
	}
	if req.Labels != nil {
		g, err = s.deps.Registry.SetLabels(r.Context(), g.Tenant, g.Serial, *req.Labels)
		s.record(r.Context(), r, g.Tenant, p, "registry.gateway.update", "gateway:"+g.Serial, err, map[string]string{"field": "labels"})
		if err != nil {
			return err
		}
	}
	if req.DeploymentGroupID != nil {
		g, err = s.deps.Registry.SetDeploymentGroup(r.Context(), g.Tenant, g.Serial, *req.DeploymentGroupID)
		s.record(r.Context(), r, g.Tenant, p, "registry.gateway.update", "gateway:"+g.Serial, err, map[string]string{"field": "deploymentGroupId", "value": *req.DeploymentGroupID})
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
	items := make([]certView, 0, len(g.Certificates))
	for _, c := range g.Certificates {
		items = append(items, viewCert(c, now))
	}
	slices.Reverse(items) // newest first
	writeJSON(w, http.StatusOK, list[certView]{Items: items})
	return nil
}

type createTokenRequest struct {
	Serial string `json:"serial"`
	// TTL is a Go duration ("24h", "30m"); default 24h, at most 720h.
	TTL string `json:"ttl,omitempty"`
}

// tokenView is an enrollment token; Token is present only in the answer
// that creates it.
type tokenView struct {
	Token string `json:"token,omitempty"`
	registry.EnrollmentToken
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
	var req createTokenRequest
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
	writeJSON(w, http.StatusCreated, tokenView{Token: secret, EnrollmentToken: tok})
	return nil
}

func (s *Server) listEnrollmentTokens(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	toks, err := s.deps.Registry.EnrollmentTokens(r.Context(), r.PathValue("tenant"))
	if err != nil {
		return err
	}
	items := make([]tokenView, 0, len(toks))
	for _, t := range toks {
		items = append(items, tokenView{EnrollmentToken: t})
	}
	writeJSON(w, http.StatusOK, list[tokenView]{Items: items})
	return nil
}

// list is the envelope of list answers that are not paged.
type list[T any] struct {
	Items []T `json:"items"`
}

// MaxLimit is the largest page a list endpoint returns.
const MaxLimit = 1000
