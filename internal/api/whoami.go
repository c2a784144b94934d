package api

import (
	"net/http"
	"time"
)

// whoAmIView is the answer of GET /v1/whoami: what the request's bearer
// credential is, never its secret.
type whoAmIView struct {
	// Kind is "operator", "apikey" or "oauth2".
	Kind string `json:"kind"`
	// ID is the API key id or the OAuth2 client id; "operator" for the
	// operator key.
	ID string `json:"id"`
	// Tenant is the credential's tenant, absent for the operator.
	Tenant string `json:"tenant,omitempty"`
	// Scopes are the credential's scopes, absent for the operator (who
	// holds all); a tenant credential always has the list.
	Scopes []string `json:"scopes,omitzero"`
	// ExpiresAt is when the credential stops working (an access token's
	// own expiry, or its client's when that is earlier), absent when it
	// does not expire.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// whoami answers who the bearer credential of the request is: a client (the
// CLI) learns its API key's tenant from it instead of being told.
func (s *Server) whoami(w http.ResponseWriter, _ *http.Request, p *Principal) error {
	v := whoAmIView{Kind: p.Kind, ID: p.ID, Tenant: p.Tenant}
	if p.Kind == "operator" {
		v.ID = "operator"
	} else {
		v.Scopes = append([]string{}, p.Scopes...)
	}
	if until := p.until(); !until.IsZero() {
		at := until.UTC()
		v.ExpiresAt = &at
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
