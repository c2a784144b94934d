package api

import (
	"context"
	"net/http"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
)

// TenantDeletion deletes tenants and lists the deleted (node.Node: the
// deletion spans the registry, kms, store, forwarding and ingest).
type TenantDeletion interface {
	DeleteTenant(ctx context.Context, id, by string) (registry.Tenant, error)
	DeletedTenants() []registry.Tenant
}

// Faults of tenant deletion.
var (
	ErrDeleteUnconfirmed = fault.Define("api.tenant_delete_unconfirmed", fault.InvalidArgument, "deleting a tenant needs its id repeated in the body's confirm field")
	ErrDeleteSystem      = fault.Define("api.tenant_delete_system", fault.PermissionDenied, "the platform's tenant _system cannot be deleted")
)

// routeDeleteTenant is the pattern of DELETE /v1/tenants/{tenant}.
const routeDeleteTenant = "/v1/tenants/{tenant}"

// changeInSystemLog reports whether a change route is written ahead to the
// platform's audit log whatever tenant its path names: a tenant's deletion
// destroys the tenant's own log.
func changeInSystemLog(rt Route) bool {
	return rt.Method == http.MethodDelete && rt.Pattern == routeDeleteTenant
}

// deleteTenant deletes a tenant (operator:admin; the body's confirm
// repeats its id), audited in _system before (write-ahead) and after, and
// answers its tombstone.
func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request, p *Principal) error {
	id := r.PathValue("tenant")
	var req client.DeleteTenantRequest
	if err := decodeJSON(w, r, s.cfg.MaxBody, &req, true); err != nil {
		return err
	}
	if id == audit.SystemTenant {
		return ErrDeleteSystem.New()
	}
	if !registry.ValidTenantID(id) || s.deps.TenantDeletion == nil {
		return registry.ErrTenantNotFound.New()
	}
	if req.Confirm != id {
		return ErrDeleteUnconfirmed.New()
	}
	t, err := s.deps.TenantDeletion.DeleteTenant(r.Context(), id, p.Actor())
	s.record(r.Context(), r, audit.SystemTenant, p, "registry.tenant.delete", "tenant:"+id, err, nil)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewDeletedTenant(t))
	return nil
}

// listDeletedTenants answers GET /v1/tenants?state=deleted: the tombstones
// of deleted tenants and the tenants being deleted.
func (s *Server) listDeletedTenants(w http.ResponseWriter) {
	var gone []registry.Tenant
	if s.deps.TenantDeletion != nil {
		gone = s.deps.TenantDeletion.DeletedTenants()
	}
	writeList(w, gone, viewDeletedTenant)
}

// viewDeletedTenant is a deleted tenant (or one being deleted) as the API
// shows it: its id, state, and who deleted it when.
func viewDeletedTenant(t registry.Tenant) client.Tenant {
	return client.Tenant{ID: t.ID, CreatedAt: t.CreatedAt, State: t.State, DeletedBy: t.DeletedBy, DeletedAt: t.DeletedAt}
}

// tenantGone reports whether a credential's tenant is no longer known here:
// deleted, or being deleted (its record marked before its credentials are
// purged, and a deletion cut short leaves them until it is finished). Its
// API keys and OAuth2 clients are refused from the mark on, as its tokens
// and gateways are.
func (s *Server) tenantGone(tenant string) bool {
	_, ok := s.deps.Registry.Tenant(tenant)
	return !ok
}
