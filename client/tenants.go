package client

import (
	"context"
	"time"
)

// Tenant is one customer's isolated environment: its CA, streams,
// credentials and audit log.
type Tenant struct {
	// ID is 2 to 32 characters of a-z, 0-9 and '-'.
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"createdAt"`
	// CACert is the PEM of the tenant CA that issues its gateways'
	// certificates.
	CACert string `json:"caCert"`
	// RejectUnknownIDs says whether Thingsee messages whose tsmId has no
	// schema are refused.
	RejectUnknownIDs bool `json:"rejectUnknownIds"`
}

// CreateTenantRequest is the body of POST /v1/tenants.
type CreateTenantRequest struct {
	ID string `json:"id"`
}

// CreateTenant provisions a tenant: its CA, streams and audit log
// (operator only).
func (c *Client) CreateTenant(ctx context.Context, id string) (*Tenant, error) {
	return post[Tenant](ctx, c, path("tenants"), CreateTenantRequest{ID: id})
}

// ListTenants lists every tenant (operator only).
func (c *Client) ListTenants(ctx context.Context) ([]Tenant, error) {
	return items(get[List[Tenant]](ctx, c, path("tenants"), nil))
}

// GetTenant returns a tenant. A tenant credential sees only its own; any
// other answers 404 (registry.tenant_not_found), as if it did not exist.
func (c *Client) GetTenant(ctx context.Context, id string) (*Tenant, error) {
	return get[Tenant](ctx, c, path("tenants", id), nil)
}
