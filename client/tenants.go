package client

import (
	"context"
	"net/http"
	"net/url"
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
	// State is empty for a live tenant, TenantDeleting while its deletion
	// runs and TenantDeleted after (shown only by DeleteTenant and
	// ListDeletedTenants); DeletedBy and DeletedAt say who deleted it and
	// when the deletion started or ended.
	State     string     `json:"state,omitempty"`
	DeletedBy string     `json:"deletedBy,omitempty"`
	DeletedAt *time.Time `json:"deletedAt,omitempty"`
}

// States of a tenant being deleted or deleted.
const (
	TenantDeleting = "deleting"
	TenantDeleted  = "deleted"
)

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

// DeleteTenantRequest is the body of DELETE /v1/tenants/{tenant}: Confirm
// must repeat the tenant's id.
type DeleteTenantRequest struct {
	Confirm string `json:"confirm"`
}

// DeleteTenant deletes a tenant for good (operator:admin only): its keys
// are destroyed first, then its streams, buckets and credentials; its
// gateways are disconnected on every node. confirm must repeat id. It
// returns the tenant's tombstone; the id stays reserved. A deletion cut
// short is finished by calling it again.
func (c *Client) DeleteTenant(ctx context.Context, id, confirm string) (*Tenant, error) {
	return call[Tenant](ctx, c, request{method: http.MethodDelete, path: path("tenants", id), body: DeleteTenantRequest{Confirm: confirm}, auth: true})
}

// ListDeletedTenants lists the tombstones of deleted tenants and the
// tenants being deleted (operator only).
func (c *Client) ListDeletedTenants(ctx context.Context) ([]Tenant, error) {
	return items(get[List[Tenant]](ctx, c, path("tenants"), url.Values{"state": {TenantDeleted}}))
}
