package api

import (
	"net/http"

	"github.com/iotransit/iotransit/client"
)

// whoami answers who the bearer credential of the request is (client.WhoAmI),
// never its secret: a client (the CLI) learns its API key's tenant from it
// instead of being told. The operator has no tenant and no scope list (it
// holds all); a tenant credential always has its list.
func (s *Server) whoami(w http.ResponseWriter, _ *http.Request, p *Principal) error {
	v := client.WhoAmI{Kind: p.Kind, ID: p.ID, Tenant: p.Tenant}
	if p.Kind == "operator" {
		// A named operator by its id, name and role; the bootstrap key
		// has none of them.
		v.Name, v.Role = p.Name, p.Role
		if v.ID == "" {
			v.ID = "operator"
		}
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
