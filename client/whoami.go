package client

import (
	"context"
	"net/http"
	"time"
)

// Kinds of bearer credential (WhoAmI.Kind).
const (
	KindOperator = "operator"
	KindAPIKey   = "apikey"
	KindOAuth2   = "oauth2"
)

// WhoAmI is what the server says of the client's bearer credential, never
// its secret.
type WhoAmI struct {
	// Kind is KindOperator, KindAPIKey or KindOAuth2.
	Kind string `json:"kind"`
	// ID is the API key's id, the OAuth2 client's id or the named
	// operator's id; "operator" for the bootstrap operator key.
	ID string `json:"id"`
	// Name and Role are a named operator's ("" for the bootstrap key and
	// tenant credentials).
	Name string `json:"name,omitempty"`
	Role string `json:"role,omitempty"`
	// Tenant is the credential's tenant, "" for the operator.
	Tenant string `json:"tenant,omitempty"`
	// Scopes are the credential's scopes; nil for the operator, who holds
	// all.
	Scopes []string `json:"scopes,omitzero"`
	// ExpiresAt is when the credential stops working (an access token's
	// own expiry, or its client's when that is earlier); nil for never.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// WhoAmI asks the server who the client's bearer credential is
// (GET /v1/whoami): any valid credential may, with no scope. A tenant's
// API key or access token learns its tenant here.
func (c *Client) WhoAmI(ctx context.Context) (*WhoAmI, error) {
	return call[WhoAmI](ctx, c, request{method: http.MethodGet, path: "/v1/whoami", auth: true})
}
