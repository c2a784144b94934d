// Tenant deletion as the registry sees it: the tenant's record becomes a
// tombstone (deleting, then deleted) that every node follows through the
// tenants bucket's watch, and the registry's own buckets forget the tenant.
// The node runs the whole deletion in order (internal/node, tenantdelete.go).

package registry

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/retry"
)

// Tenant states besides live ("").
const (
	// TenantDeleting: the tenant's deletion started. Every node refuses
	// its gateways and credentials; its data is being destroyed.
	TenantDeleting = "deleting"
	// TenantDeleted: the tenant is gone; its record is a tombstone that
	// keeps the id reserved.
	TenantDeleted = "deleted"
)

// ErrTenantDeleted is a tenant id that belonged to a deleted tenant: it
// stays reserved, and the tenant cannot be deleted again.
var ErrTenantDeleted = fault.Define("registry.tenant_deleted", fault.Conflict, "the tenant id belonged to a deleted tenant; it stays reserved")

// OnTenantDeleted registers fn to be called once with the record of every
// tenant this node sees marked for deletion after the call (here or on
// another node), right after the registry forgot it: its gateways no
// longer authenticate. fn runs in the registry's watch or in the writer;
// it must not block or change the registry.
func (r *Registry) OnTenantDeleted(fn func(Tenant)) {
	r.mu.Lock()
	r.deleteWatchers = append(r.deleteWatchers, fn)
	r.mu.Unlock()
}

// DeletedTenants returns the tombstones of deleted tenants and the records
// of tenants being deleted, sorted by id.
func (r *Registry) DeletedTenants() []Tenant {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Tenant, 0, len(r.gone))
	for _, t := range r.gone {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// DeletedTenant returns the tombstone (or deletion record) of a tenant.
func (r *Registry) DeletedTenant(id string) (Tenant, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.gone[id]
	return t, ok
}

// dropTenant applies a tenant record whose State is set: the tenant leaves
// memory (its gateways no longer authenticate, its CA is no longer known,
// the watch of its gateways ends) and its record is kept among the gone.
// The OnTenantDeleted callbacks are called the first time.
func (r *Registry) dropTenant(t Tenant) {
	t.CAKey = nil // sealed under a key that is (being) destroyed
	r.mu.Lock()
	_, seen := r.gone[t.ID]
	r.gone[t.ID] = t
	te, live := r.tenants[t.ID]
	if live {
		delete(r.tenants, t.ID)
		delete(r.byCAKey, hex.EncodeToString(te.caCert.SubjectKeyId))
		for _, p := range te.previous { // every CA version of the tenant
			delete(r.byCAKey, hex.EncodeToString(p.cert.SubjectKeyId))
		}
	}
	watchers := slices.Clone(r.deleteWatchers)
	r.mu.Unlock()
	if live && te.stop != nil {
		te.stop()
	}
	if seen {
		return
	}
	for _, fn := range watchers {
		fn(t)
	}
}

// MarkTenantDeleting starts a tenant's deletion: its record's State becomes
// TenantDeleting (who, when), so that every node forgets the tenant at
// once. A tenant already being deleted is returned as it is (the deletion
// resumes); a deleted one is ErrTenantDeleted.
func (r *Registry) MarkTenantDeleting(ctx context.Context, id, by string) (Tenant, error) {
	return r.changeState(ctx, id, func(t *Tenant) (bool, error) {
		switch t.State {
		case TenantDeleted:
			return false, ErrTenantDeleted.New()
		case TenantDeleting:
			return false, nil
		}
		now := r.now().UTC()
		t.State, t.DeletedBy, t.DeletedAt = TenantDeleting, by, &now
		return true, nil
	})
}

// MarkTenantDeleted ends a tenant's deletion: its record becomes a
// tombstone (State TenantDeleted, its CA and policy dropped, who deleted
// it and when it ended kept).
func (r *Registry) MarkTenantDeleted(ctx context.Context, id string) (Tenant, error) {
	return r.changeState(ctx, id, func(t *Tenant) (bool, error) {
		if t.State == TenantDeleted {
			return false, nil
		}
		now := r.now().UTC()
		*t = Tenant{ID: t.ID, CreatedAt: t.CreatedAt, State: TenantDeleted, DeletedBy: t.DeletedBy, DeletedAt: &now}
		return true, nil
	})
}

// changeState applies fn to the stored record of tenant id with optimistic
// concurrency; fn reports whether it changed the record. The result is
// applied to memory at once (the watch brings it to the other nodes).
func (r *Registry) changeState(ctx context.Context, id string, fn func(*Tenant) (bool, error)) (Tenant, error) {
	if !ValidTenantID(id) {
		return Tenant{}, ErrTenantNotFound.New()
	}
	for attempt := 1; attempt <= updateAttempts; attempt++ {
		if attempt > 1 && !retry.Sleep(ctx, updateBackoff.Delay(attempt-1)) {
			return Tenant{}, ctx.Err()
		}
		t, rev, err := read[Tenant](ctx, r.tenKV, id, "tenant")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Tenant{}, ErrTenantNotFound.New()
		}
		if err != nil {
			return Tenant{}, err
		}
		changed, err := fn(&t)
		if err != nil {
			return Tenant{}, err
		}
		if changed {
			b, err := json.Marshal(t)
			if err != nil {
				return Tenant{}, err
			}
			if _, err := r.tenKV.Update(ctx, id, b, rev); kverr.Conflict(err) {
				continue
			} else if err != nil {
				return Tenant{}, fmt.Errorf("registry: store tenant: %w", err)
			}
		}
		if t.State != "" {
			r.dropTenant(t)
			r.mu.Lock()
			r.gone[t.ID] = t // the newest, also when dropTenant saw it before
			r.mu.Unlock()
		}
		t.CAKey = nil
		return t, nil
	}
	return Tenant{}, ErrTenantBusy.New()
}

// EraseTenant removes what the registry keeps of a tenant being deleted in
// the deployment's shared buckets: the serials it holds (released), its enrollment
// tokens, and the factory records of the gateways it claimed (their
// serials are retired with them: a claimed gateway's code is spent). It
// may be called again after a failure; what is gone stays gone. A tenant
// already deleted is fine too: another run of its deletion (a DELETE sent
// again, another node's start-up sweep) may have finished meanwhile.
func (r *Registry) EraseTenant(ctx context.Context, tenant string) error {
	if t, ok := r.DeletedTenant(tenant); !ok || (t.State != TenantDeleting && t.State != TenantDeleted) {
		return fmt.Errorf("registry: tenant %s is not being deleted", tenant)
	}
	if err := purgeWhere(ctx, r.serKV, func(_ string, v []byte) bool { return string(v) == tenant }); err != nil {
		return fmt.Errorf("registry: release serials of %s: %w", tenant, err)
	}
	tokens, err := r.tokens(ctx)
	if err != nil {
		return err
	}
	if err := purgeWhere(ctx, tokens, func(_ string, v []byte) bool {
		var t EnrollmentToken
		return json.Unmarshal(v, &t) == nil && t.Tenant == tenant
	}); err != nil {
		return fmt.Errorf("registry: enrollment tokens of %s: %w", tenant, err)
	}
	factory, err := r.factory(ctx)
	if err != nil {
		return err
	}
	if err := purgeWhere(ctx, factory, func(_ string, v []byte) bool {
		var g FactoryGateway
		return json.Unmarshal(v, &g) == nil && g.ClaimedBy == tenant
	}); err != nil {
		return fmt.Errorf("registry: factory gateways of %s: %w", tenant, err)
	}
	return nil
}

// purgeWhere purges (value and history) every key of kv whose value
// matches.
func purgeWhere(ctx context.Context, kv jetstream.KeyValue, match func(key string, value []byte) bool) error {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if match(k, e.Value()) {
			if err := kv.Purge(ctx, k); err != nil {
				return err
			}
		}
	}
	return nil
}
