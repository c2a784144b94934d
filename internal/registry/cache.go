// The registry's in-memory copy: fed by KV watches, read at connect time,
// and the callbacks that tell the node of changes in order.

package registry

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/pki"
)

// initialValues applies the values a new watch delivers before its nil
// marker, giving up when ctx ends.
func initialValues(ctx context.Context, w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry) error) error {
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("registry: initial values: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				return nil // initial values done
			}
			if err := apply(e); err != nil {
				return err
			}
		}
	}
}

// follow applies, in a goroutine, every change w delivers after its initial
// values until the registry closes, then stops w.
func (r *Registry) follow(w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry)) {
	r.followUntil(r.ctx, w, apply)
}

// followUntil is follow until ctx ends (a deleted tenant's gateway watch
// ends with the tenant).
func (r *Registry) followUntil(ctx context.Context, w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry)) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					apply(e)
				}
			}
		}
	}()
}

// OnTenantAdded registers fn to be called with every tenant this node
// learns of after the call (created here or on another node). fn runs in
// the registry's watch; it must not block or change the registry.
func (r *Registry) OnTenantAdded(fn func(Tenant)) {
	r.mu.Lock()
	r.tenantWatchers = append(r.tenantWatchers, fn)
	r.mu.Unlock()
}

// OnGatewayChange registers fn to be called with every gateway record change
// seen by this node (from any node), for example to drop live sessions of a
// revoked gateway. Calls are serialised and never go back in time: a change
// superseded by a newer one before its call may be skipped, and the newest
// state of a gateway is always the last one reported. fn must not change the
// registry.
func (r *Registry) OnGatewayChange(fn func(Gateway)) {
	r.mu.Lock()
	r.watchers = append(r.watchers, fn)
	r.mu.Unlock()
}

func (r *Registry) applyTenant(ctx context.Context, e jetstream.KeyValueEntry) error {
	if e.Operation() != jetstream.KeyValuePut {
		return nil // a tenant's record stays (a tombstone once deleted)
	}
	var t Tenant
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return fmt.Errorf("registry: decode tenant %s: %w", e.Key(), err)
	}
	if t.State != "" {
		r.dropTenant(t)
		return nil
	}
	return r.addTenant(ctx, t, e.Revision())
}

// addTenant adds tenant t, stored at revision rev, to memory and starts
// watching its gateways; a known tenant's record is updated (its policy).
func (r *Registry) addTenant(ctx context.Context, t Tenant, rev uint64) error {
	r.mu.RLock()
	te, known := r.tenants[t.ID]
	r.mu.RUnlock()
	if known {
		r.setCAs(te, t, rev)
		r.setTenant(te, t, rev)
		return nil
	}
	caCert, err := pki.ParseCertPEM([]byte(t.CACert))
	if err != nil {
		return fmt.Errorf("registry: tenant %s CA: %w", t.ID, err)
	}
	kv, err := r.kvs.KV(ctx, names.GatewaysBucket(t.ID), 1)
	if err != nil {
		return err
	}
	te = &tenantEntry{rec: t, rev: rev, caCert: caCert, kv: kv, gateways: map[string]*Gateway{}, revs: map[string]uint64{}}
	// Bound to the registry's context, not the caller's (CreateTenant's
	// request context used to end this tenant's watch on this node), and
	// ended when the tenant is deleted.
	wctx, stop := context.WithCancel(r.ctx)
	w, err := kv.WatchAll(wctx)
	if err != nil {
		stop()
		return fmt.Errorf("registry: watch gateways of %s: %w", t.ID, err)
	}
	if err := initialValues(ctx, w, func(e jetstream.KeyValueEntry) error {
		r.applyGateway(te, e, false)
		return nil
	}); err != nil {
		w.Stop()
		stop()
		return err
	}
	te.stop = stop
	r.mu.Lock()
	if _, gone := r.gone[t.ID]; gone { // deleted meanwhile
		r.mu.Unlock()
		w.Stop()
		stop()
		return nil
	}
	if cur, known := r.tenants[t.ID]; known {
		r.mu.Unlock()
		w.Stop()
		stop()
		r.setCAs(cur, t, rev)
		r.setTenant(cur, t, rev)
		return nil
	}
	r.tenants[t.ID] = te
	r.setCAsLocked(te, t, rev)
	added := slices.Clone(r.tenantWatchers)
	r.mu.Unlock()
	for _, fn := range added {
		fn(t)
	}
	r.followUntil(wctx, w, func(e jetstream.KeyValueEntry) { r.applyGateway(te, e, true) })
	return nil
}

func (r *Registry) applyGateway(te *tenantEntry, e jetstream.KeyValueEntry, notify bool) {
	var g Gateway
	if e.Operation() == jetstream.KeyValuePut {
		if err := json.Unmarshal(e.Value(), &g); err != nil {
			r.log.Error("decode gateway", "tenant_id", te.rec.ID, "gateway_id", e.Key(), "error", err)
			return
		}
	}
	var rec *Gateway // nil: deleted
	if e.Operation() == jetstream.KeyValuePut {
		rec = &g
	}
	if !r.record(te, e.Key(), rec, e.Revision()) {
		return // this node already wrote a newer revision through
	}
	if rec == nil {
		g = Gateway{Tenant: te.rec.ID, Serial: e.Key(), State: StateRevoked}
	}
	if notify {
		r.notify(te, g, e.Revision())
	}
}

// notify calls the OnGatewayChange callbacks with g, stored at revision rev,
// unless a newer revision of the gateway has been applied meanwhile (its own
// call reports the newer state). Callbacks used to run unordered outside the
// lock, so a slow call with an older state could land after a newer one.
func (r *Registry) notify(te *tenantEntry, g Gateway, rev uint64) {
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	r.mu.RLock()
	stale := rev < te.revs[g.Serial]
	watchers := slices.Clone(r.watchers)
	r.mu.RUnlock()
	if stale {
		return
	}
	for _, fn := range watchers {
		fn(g)
	}
}

// cache writes a record this node stored through to memory, unless the
// watch already delivered a newer revision.
func (r *Registry) cache(te *tenantEntry, g Gateway, rev uint64) {
	if r.record(te, g.Serial, &g, rev) {
		r.notify(te, g, rev)
	}
}

// record sets the gateway with serial in memory to g (nil: deleted), stored
// at revision rev, unless memory holds that revision or a newer one, and
// reports whether it did.
func (r *Registry) record(te *tenantEntry, serial string, g *Gateway, rev uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev <= te.revs[serial] {
		return false
	}
	te.revs[serial] = rev
	if g == nil {
		delete(te.gateways, serial)
	} else {
		te.gateways[serial] = g
	}
	return true
}

// Tenant returns a tenant by id.
func (r *Registry) Tenant(id string) (Tenant, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	te, ok := r.tenants[id]
	if !ok {
		return Tenant{}, false
	}
	return te.rec, true
}

// Tenants returns every tenant, sorted by id.
func (r *Registry) Tenants() []Tenant {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Tenant, 0, len(r.tenants))
	for _, te := range r.tenants {
		out = append(out, te.rec)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// TenantByCA returns the tenant whose CA (any version) has the given
// subject key id (a client certificate's authority key id) and that CA's
// certificate.
func (r *Registry) TenantByCA(authorityKeyID []byte) (string, *x509.Certificate, bool) {
	id, ca, _, ok := r.caFor(authorityKeyID)
	return id, ca, ok
}

// Gateway returns a copy of a gateway record from memory.
func (r *Registry) Gateway(tenant, serial string) (Gateway, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	te, ok := r.tenants[tenant]
	if !ok {
		return Gateway{}, false
	}
	g, ok := te.gateways[serial]
	if !ok {
		return Gateway{}, false
	}
	return g.clone(), true
}

// GatewayDeploymentGroup returns a gateway's deployment group id ("" when
// it has none) from memory, and whether the gateway exists. Unlike Gateway
// it copies nothing: the ingest reads it for every upload, and a gateway
// record holds its certificates and labels.
func (r *Registry) GatewayDeploymentGroup(tenant, serial string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	te, ok := r.tenants[tenant]
	if !ok {
		return "", false
	}
	g, ok := te.gateways[serial]
	if !ok {
		return "", false
	}
	return g.DeploymentGroupID, true
}

// Gateways returns a tenant's gateways sorted by serial.
func (r *Registry) Gateways(tenant string) ([]Gateway, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	te, ok := r.tenants[tenant]
	if !ok {
		return nil, ErrTenantNotFound.New()
	}
	out := make([]Gateway, 0, len(te.gateways))
	for _, g := range te.gateways {
		out = append(out, g.clone())
	}
	slices.SortFunc(out, func(a, b Gateway) int { return strings.Compare(a.Serial, b.Serial) })
	return out, nil
}

// entry returns a tenant's entry in memory.
func (r *Registry) entry(tenant string) (*tenantEntry, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	te, ok := r.tenants[tenant]
	if !ok {
		return nil, ErrTenantNotFound.New()
	}
	return te, nil
}
