// Package registry owns the records of tenants and gateways: each tenant's
// CA (its key sealed by kms), its gateways, their state and the
// certificates issued to them. Records live in JetStream KV buckets (one
// bucket of gateways per tenant); every node keeps an in-memory copy fed by
// KV watches, so identity checks at connect time read memory and changes
// made on one node reach the others within milliseconds.
package registry

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/pki"
)

// Faults a client can see.
var (
	ErrTenantExists     = fault.Define("registry.tenant_exists", fault.Conflict, "the tenant exists")
	ErrTenantNotFound   = fault.Define("registry.tenant_not_found", fault.NotFound, "no such tenant")
	ErrGatewayExists    = fault.Define("registry.gateway_exists", fault.Conflict, "a gateway with this serial is registered")
	ErrGatewayNotFound  = fault.Define("registry.gateway_not_found", fault.NotFound, "no such gateway")
	ErrGatewayNotActive = fault.Define("registry.gateway_not_active", fault.PermissionDenied, "the gateway is not active")
)

// Sealer encrypts secrets under a tenant's data key (kms.Keyring).
type Sealer interface {
	EnsureTenant(ctx context.Context, tenant string) error
	Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, tenant string, sealed, aad []byte) ([]byte, error)
}

// KVProvider creates or opens KV buckets (backbone.Backbone).
type KVProvider interface {
	KV(ctx context.Context, bucket string, history uint8) (jetstream.KeyValue, error)
}

// Registry is the tenant and gateway registry with its in-memory copy.
type Registry struct {
	kvs   KVProvider
	keys  Sealer
	log   *slog.Logger
	now   func() time.Time
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	tenKV jetstream.KeyValue
	serKV jetstream.KeyValue

	// notifyMu serialises OnGatewayChange callbacks; it is taken before mu,
	// never while holding it.
	notifyMu sync.Mutex

	mu       sync.RWMutex
	tenants  map[string]*tenantEntry
	byCAKey  map[string]string // tenant CA subject key id (hex) -> tenant
	watchers []func(Gateway)
	// tenantWatchers are told of every tenant this node learns of.
	tenantWatchers []func(Tenant)
	// changeWatchers are told of every change of a known tenant's record.
	changeWatchers []func(Tenant)
	// gone holds the records of deleted tenants and of those being
	// deleted (delete.go), by id; deleteWatchers are told of each tenant
	// this node sees deleted.
	gone           map[string]Tenant
	deleteWatchers []func(Tenant)
}

type tenantEntry struct {
	rec      Tenant
	rev      uint64 // revision of rec in the tenants bucket
	caCert   *x509.Certificate
	ca       *pki.CA      // loaded on first issue
	previous []previousCA // the parsed PreviousCAs (carotation.go)
	caRev    uint64       // revision of the record they were taken from
	kv       jetstream.KeyValue
	gateways map[string]*Gateway
	revs     map[string]uint64 // revision of each cached gateway record
	// quotaMu holds the tenant's gateway creations on this node one at a
	// time while its policy bounds their number (admitGateway).
	quotaMu sync.Mutex
	// stop ends the watch of the tenant's gateways (at its deletion).
	stop context.CancelFunc
}

// Open opens the registry and starts watching for changes made anywhere.
func Open(ctx context.Context, kvs KVProvider, keys Sealer, log *slog.Logger) (*Registry, error) {
	tenKV, err := kvs.KV(ctx, names.TenantsBucket, 1)
	if err != nil {
		return nil, err
	}
	serKV, err := kvs.KV(ctx, names.SerialsBucket, 1)
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(context.Background())
	r := &Registry{
		kvs: kvs, keys: keys, log: log.With("component", "registry"), now: time.Now,
		ctx: wctx, stop: stop, tenKV: tenKV, serKV: serKV,
		tenants: map[string]*tenantEntry{}, byCAKey: map[string]string{}, gone: map[string]Tenant{},
	}
	// Load what exists, then follow changes. The watch lives as long as the
	// registry: it is bound to wctx, not to ctx, because nats.go unsubscribes
	// a watch when its context ends, and ctx is only the caller's (a start-up
	// timeout), which used to stop every later change from reaching this node.
	w, err := tenKV.WatchAll(wctx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("registry: watch tenants: %w", err)
	}
	if err := initialValues(ctx, w, func(e jetstream.KeyValueEntry) error { return r.applyTenant(ctx, e) }); err != nil {
		w.Stop()
		r.Close() // stops the gateway watches already started
		return nil, err
	}
	r.follow(w, func(e jetstream.KeyValueEntry) {
		if err := r.applyTenant(wctx, e); err != nil {
			r.log.Error("apply tenant change", "error", err)
		}
	})
	return r, nil
}

// Close stops the watches.
func (r *Registry) Close() {
	r.stop()
	r.wg.Wait()
}
