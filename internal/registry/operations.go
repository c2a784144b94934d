// The writes: tenants created, gateways registered (their serials reserved
// across tenants), changed and deleted.

package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/nats-io/nats.go/jetstream"
)

// CreateTenant creates a tenant with a new CA whose key is sealed by kms.
func (r *Registry) CreateTenant(ctx context.Context, id string) (Tenant, error) {
	if !ValidTenantID(id) {
		return Tenant{}, ErrTenantInvalid.New()
	}
	if _, gone := r.DeletedTenant(id); gone { // its id stays reserved
		return Tenant{}, ErrTenantDeleted.New()
	}
	if _, ok := r.Tenant(id); ok {
		return Tenant{}, ErrTenantExists.New()
	}
	if err := r.keys.EnsureTenant(ctx, id); err != nil {
		return Tenant{}, fmt.Errorf("registry: tenant key: %w", err)
	}
	now := r.now().UTC()
	ca, sealed, err := r.newCA(ctx, id, now)
	if err != nil {
		return Tenant{}, err
	}
	t := Tenant{ID: id, CreatedAt: now, CACert: string(ca.CertPEM), CAKey: sealed}
	b, err := json.Marshal(t)
	if err != nil {
		return Tenant{}, err
	}
	rev, err := r.tenKV.Create(ctx, id, b)
	if err != nil {
		if kverr.Conflict(err) {
			if cur, _, rerr := read[Tenant](ctx, r.tenKV, id, "tenant"); rerr == nil && cur.State != "" {
				return Tenant{}, ErrTenantDeleted.New()
			}
			return Tenant{}, ErrTenantExists.New()
		}
		return Tenant{}, fmt.Errorf("registry: store tenant: %w", err)
	}
	if err := r.addTenant(ctx, t, rev); err != nil {
		return Tenant{}, err
	}
	r.mu.Lock()
	r.tenants[id].ca = ca
	r.mu.Unlock()
	return t, nil
}

// RegisterGateway registers a gateway serial with a tenant. Serials are
// unique across all tenants.
func (r *Registry) RegisterGateway(ctx context.Context, tenant, serial string) (Gateway, error) {
	if !ValidSerial(serial) {
		return Gateway{}, ErrSerialInvalid.New()
	}
	te, err := r.entry(tenant)
	if err != nil {
		return Gateway{}, err
	}
	release, err := r.admitGateway(te)
	if err != nil {
		return Gateway{}, err
	}
	defer release()
	if _, err := r.serKV.Create(ctx, serial, []byte(tenant)); err != nil {
		if kverr.Conflict(err) {
			return Gateway{}, ErrGatewayExists.New()
		}
		return Gateway{}, fmt.Errorf("registry: reserve serial: %w", err)
	}
	g, err := r.createGateway(ctx, te, serial)
	if err != nil {
		// Give the serial back, or it stays taken by a gateway that never was.
		_ = r.serKV.Delete(ctx, serial)
		return Gateway{}, err
	}
	return g, nil
}

// createGateway stores a new, active gateway record with serial (reserved
// for the tenant by the caller) in the tenant's bucket.
func (r *Registry) createGateway(ctx context.Context, te *tenantEntry, serial string) (Gateway, error) {
	inc := make([]byte, 16)
	if _, err := rand.Read(inc); err != nil {
		return Gateway{}, fmt.Errorf("registry: random: %w", err)
	}
	now := r.now().UTC()
	g := Gateway{Tenant: te.rec.ID, Serial: serial, State: StateActive, Incarnation: hex.EncodeToString(inc), CreatedAt: now, UpdatedAt: now}
	b, err := json.Marshal(g)
	if err != nil {
		return Gateway{}, err
	}
	rev, err := te.kv.Create(ctx, serial, b)
	if err != nil {
		return Gateway{}, fmt.Errorf("registry: store gateway: %w", err)
	}
	r.cache(te, g, rev)
	return g, nil
}

// update applies fn to the stored gateway record with optimistic concurrency
// and returns the new record.
func (r *Registry) update(ctx context.Context, tenant, serial string, fn func(*Gateway) error) (Gateway, error) {
	te, err := r.entry(tenant)
	if err != nil {
		return Gateway{}, err
	}
	for attempt := 1; attempt <= updateAttempts; attempt++ {
		if attempt > 1 && !retry.Sleep(ctx, updateBackoff.Delay(attempt-1)) {
			return Gateway{}, ctx.Err()
		}
		g, rev, err := read[Gateway](ctx, te.kv, serial, "gateway")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Gateway{}, ErrGatewayNotFound.New()
		}
		if err != nil {
			return Gateway{}, err
		}
		if err := fn(&g); err != nil {
			return Gateway{}, err
		}
		g.UpdatedAt = r.now().UTC()
		b, err := json.Marshal(g)
		if err != nil {
			return Gateway{}, err
		}
		stored, err := te.kv.Update(ctx, serial, b, rev)
		if kverr.Conflict(err) { // revision conflict: retry
			continue
		}
		if err != nil {
			return Gateway{}, fmt.Errorf("registry: store gateway: %w", err)
		}
		r.cache(te, g, stored)
		return g, nil
	}
	return Gateway{}, ErrBusy.New()
}

// SetGatewayState changes a gateway's state. Revoking also revokes every
// certificate of the gateway.
func (r *Registry) SetGatewayState(ctx context.Context, tenant, serial string, state GatewayState) (Gateway, error) {
	if !state.Valid() {
		return Gateway{}, ErrStateInvalid.New()
	}
	return r.update(ctx, tenant, serial, func(g *Gateway) error {
		if g.State == StateRevoked && state != StateRevoked {
			return ErrGatewayNotActive.WithDetail("a revoked gateway cannot be reactivated; delete it and register it again")
		}
		g.State = state
		if state == StateRevoked {
			now := r.now().UTC()
			for i := range g.Certificates {
				if g.Certificates[i].RevokedAt == nil {
					g.Certificates[i].RevokedAt = &now
					g.Certificates[i].RevocationReason = RevocationGatewayRevoked
				}
			}
			// Keep the record small (one bloated before the list was
			// bounded could otherwise be too large to store revoked).
			pruneCertificates(g, now)
		}
		return nil
	})
}

// SetLabels replaces a gateway's labels.
func (r *Registry) SetLabels(ctx context.Context, tenant, serial string, labels map[string]string) (Gateway, error) {
	if !ValidLabels(labels) {
		return Gateway{}, ErrLabelsInvalid.New()
	}
	return r.update(ctx, tenant, serial, func(g *Gateway) error {
		g.Labels = maps.Clone(labels)
		return nil
	})
}

// ChangeLabels sets the labels of set and removes those of remove (a
// label the gateway does not have is no error), keeping the others, in
// one update: a change made at the same time by another caller is not
// lost. The result must still follow the rules (ValidLabels).
func (r *Registry) ChangeLabels(ctx context.Context, tenant, serial string, set map[string]string, remove []string) (Gateway, error) {
	return r.update(ctx, tenant, serial, func(g *Gateway) error {
		labels := maps.Clone(g.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, set)
		for _, k := range remove {
			delete(labels, k)
		}
		if !ValidLabels(labels) {
			return ErrLabelsInvalid.New()
		}
		g.Labels = labels
		return nil
	})
}

// SetDeploymentGroup sets (or with "" clears) a gateway's Thingsee
// deployment group, added by the cloud to the messages it uploads.
func (r *Registry) SetDeploymentGroup(ctx context.Context, tenant, serial, id string) (Gateway, error) {
	if id != "" && !ValidDeploymentGroupID(id) {
		return Gateway{}, ErrDeploymentGroupInvalid.New()
	}
	return r.update(ctx, tenant, serial, func(g *Gateway) error {
		g.DeploymentGroupID = id
		return nil
	})
}

// DeleteGateway removes a gateway: its certificates stop working at once
// (its live session is dropped through the change watch) and its serial
// may be registered again.
func (r *Registry) DeleteGateway(ctx context.Context, tenant, serial string) error {
	te, err := r.entry(tenant)
	if err != nil {
		return err
	}
	if _, ok := r.Gateway(tenant, serial); !ok {
		return ErrGatewayNotFound.New()
	}
	if err := te.kv.Delete(ctx, serial); err != nil {
		return fmt.Errorf("registry: delete gateway: %w", err)
	}
	r.mu.Lock()
	delete(te.gateways, serial)
	r.mu.Unlock()
	if err := r.serKV.Delete(ctx, serial); err != nil {
		return fmt.Errorf("registry: release serial: %w", err)
	}
	return nil
}

// read reads the JSON record under key (what it holds, for errors) and its
// revision; a missing record is an error wrapping jetstream.ErrKeyNotFound.
func read[T any](ctx context.Context, kv jetstream.KeyValue, key, what string) (T, uint64, error) {
	var v T
	e, err := kv.Get(ctx, key)
	if err != nil {
		return v, 0, fmt.Errorf("registry: read %s: %w", what, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("registry: decode %s: %w", what, err)
	}
	return v, e.Revision(), nil
}

// Concurrent changes of one gateway (several API requests, several nodes)
// conflict on its KV revision; each retries after a jittered wait, so that
// the writers spread out, and gives up only after updateAttempts.
const updateAttempts = 64

var updateBackoff = retry.Backoff{Base: time.Millisecond, Max: 100 * time.Millisecond}

// ErrBusy is a change that kept losing to concurrent changes of the same
// gateway.
var ErrBusy = fault.Define("registry.busy", fault.Unavailable, "the gateway is being changed by others at this moment; try again")
