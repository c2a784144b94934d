// Package registry owns the records of tenants and gateways: each tenant's
// CA (its key sealed by kms), its gateways, their state and the
// certificates issued to them. Records live in JetStream KV buckets (one
// bucket of gateways per tenant); every node keeps an in-memory copy fed by
// KV watches, so identity checks at connect time read memory and changes
// made on one node reach the others within milliseconds.
package registry

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/thingsee"
)

// Faults a client can see.
var (
	ErrTenantInvalid    = fault.Define("registry.tenant_invalid", fault.InvalidArgument, "a tenant id is 2 to 32 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
	ErrTenantExists     = fault.Define("registry.tenant_exists", fault.Conflict, "the tenant exists")
	ErrTenantNotFound   = fault.Define("registry.tenant_not_found", fault.NotFound, "no such tenant")
	ErrSerialInvalid    = fault.Define("registry.serial_invalid", fault.InvalidArgument, "a gateway serial is 17 characters: 4 uppercase letters, 2 digits, then 11 of A-Z and 0-9")
	ErrGatewayExists    = fault.Define("registry.gateway_exists", fault.Conflict, "a gateway with this serial is registered")
	ErrGatewayNotFound  = fault.Define("registry.gateway_not_found", fault.NotFound, "no such gateway")
	ErrGatewayNotActive = fault.Define("registry.gateway_not_active", fault.PermissionDenied, "the gateway is not active")
	ErrStateInvalid     = fault.Define("registry.state_invalid", fault.InvalidArgument, "a gateway state is active, isolated or revoked")
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

// Tenant is one customer's isolated environment.
type Tenant struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"createdAt"`
	// CACert is the PEM of the tenant CA that issues its gateways' certificates.
	CACert string `json:"caCert"`
	// CAKey is the CA's PKCS#8 key sealed by kms under the tenant's data key.
	CAKey []byte `json:"caKey"`
	// RejectUnknownIDs refuses Thingsee messages whose tsmId has no schema
	// (default false: they are accepted with only the header checked).
	RejectUnknownIDs bool `json:"rejectUnknownIds"`
}

// GatewayState is the lifecycle state of a gateway.
type GatewayState string

// Gateway states.
const (
	// StateActive gateways may connect and publish.
	StateActive GatewayState = "active"
	// StateIsolated gateways are refused until made active again.
	StateIsolated GatewayState = "isolated"
	// StateRevoked gateways are refused for good; all their certificates are revoked.
	StateRevoked GatewayState = "revoked"
)

// Valid reports whether s is a known state.
func (s GatewayState) Valid() bool {
	return s == StateActive || s == StateIsolated || s == StateRevoked
}

// Certificate records one certificate issued to a gateway.
type Certificate struct {
	Serial      string     `json:"serial"`
	Fingerprint string     `json:"fingerprint"`
	NotBefore   time.Time  `json:"notBefore"`
	NotAfter    time.Time  `json:"notAfter"`
	IssuedAt    time.Time  `json:"issuedAt"`
	RevokedAt   *time.Time `json:"revokedAt,omitempty"`
	// RevocationReason says why RevokedAt is set: RevocationSuperseded or
	// RevocationGatewayRevoked (empty in records written before it existed).
	RevocationReason string `json:"revocationReason,omitempty"`
}

// Certificate revocation reasons.
const (
	// RevocationSuperseded: newer certificates were issued to the gateway
	// (at most MaxValidCertificates stay valid).
	RevocationSuperseded = "superseded"
	// RevocationGatewayRevoked: the gateway was revoked.
	RevocationGatewayRevoked = "gateway_revoked"
)

// Bounds of a gateway's certificate list. Issuing a certificate revokes
// (as superseded) every valid one but the newest MaxValidCertificates, so a
// gateway can move to its new certificate while the previous one still
// works; revoked or expired entries older than the newest
// keptCertificateRecords are dropped from the record, which would otherwise
// grow with every renewal until it no longer fits a KV message.
const (
	MaxValidCertificates   = 2
	keptCertificateRecords = 10
)

// CertificateValid reports whether the certificate with serial number
// certSerial was issued to g and is neither revoked nor expired at now.
func (g Gateway) CertificateValid(certSerial string, now time.Time) bool {
	c, ok := g.Certificate(certSerial)
	return ok && c.valid(now)
}

// valid reports whether c is neither revoked nor expired at now.
func (c *Certificate) valid(now time.Time) bool {
	return c.RevokedAt == nil && now.Before(c.NotAfter)
}

// boundCertificates supersedes all valid certificates of g but the newest
// MaxValidCertificates (the list is in issue order) and drops the revoked
// or expired entries that are not among the newest keptCertificateRecords.
func boundCertificates(g *Gateway, now time.Time) {
	valid := 0
	for i := len(g.Certificates) - 1; i >= 0; i-- {
		c := &g.Certificates[i]
		if !c.valid(now) {
			continue
		}
		if valid++; valid > MaxValidCertificates {
			at := now
			c.RevokedAt, c.RevocationReason = &at, RevocationSuperseded
		}
	}
	pruneCertificates(g, now)
}

// pruneCertificates drops the revoked or expired entries of g that are not
// among the newest keptCertificateRecords.
func pruneCertificates(g *Gateway, now time.Time) {
	if len(g.Certificates) <= keptCertificateRecords {
		return
	}
	old := len(g.Certificates) - keptCertificateRecords
	kept := make([]Certificate, 0, keptCertificateRecords+MaxValidCertificates)
	for i, c := range g.Certificates {
		if i >= old || c.valid(now) {
			kept = append(kept, c)
		}
	}
	g.Certificates = kept
}

// Gateway is a registered gateway.
type Gateway struct {
	Tenant string       `json:"tenant"`
	Serial string       `json:"serial"`
	State  GatewayState `json:"state"`
	// Incarnation is a random id given at registration: it tells a gateway
	// apart from an earlier one registered with the same serial and deleted
	// (enrollment tokens are bound to it). Empty in records written before
	// it existed.
	Incarnation       string            `json:"incarnation,omitempty"`
	CreatedAt         time.Time         `json:"createdAt"`
	UpdatedAt         time.Time         `json:"updatedAt"`
	Labels            map[string]string `json:"labels,omitempty"`
	DeploymentGroupID string            `json:"deploymentGroupId,omitempty"`
	Certificates      []Certificate     `json:"certificates,omitempty"`
}

// Certificate returns the record of the certificate with the given serial.
func (g *Gateway) Certificate(serial string) (Certificate, bool) {
	for _, c := range g.Certificates {
		if c.Serial == serial {
			return c, true
		}
	}
	return Certificate{}, false
}

// clone returns a copy sharing nothing with g.
func (g *Gateway) clone() Gateway {
	c := *g
	c.Certificates = slices.Clone(g.Certificates)
	c.Labels = maps.Clone(g.Labels)
	return c
}

// ValidTenantID reports whether id is a well-formed tenant id.
func ValidTenantID(id string) bool {
	if len(id) < 2 || len(id) > 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(id)-1:
		default:
			return false
		}
	}
	return true
}

// ValidSerial reports whether s is a well-formed gateway serial (the Thingsee
// TUID format: 4 uppercase letters, 2 digits, 11 of A-Z0-9).
func ValidSerial(s string) bool { return thingsee.ValidTUID(s) }

const (
	caValidity = 20 * 365 * 24 * time.Hour
	caKeyAAD   = "registry/ca-key"
)

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
}

type tenantEntry struct {
	rec      Tenant
	caCert   *x509.Certificate
	ca       *pki.CA // loaded on first issue
	kv       jetstream.KeyValue
	gateways map[string]*Gateway
	revs     map[string]uint64 // revision of each cached gateway record
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
		tenants: map[string]*tenantEntry{}, byCAKey: map[string]string{},
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
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer w.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					if err := r.applyTenant(wctx, e); err != nil {
						r.log.Error("apply tenant change", "error", err)
					}
				}
			}
		}
	}()
	return r, nil
}

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

// Close stops the watches.
func (r *Registry) Close() {
	r.stop()
	r.wg.Wait()
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
		return nil // tenant deletion is a later issue
	}
	var t Tenant
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return fmt.Errorf("registry: decode tenant %s: %w", e.Key(), err)
	}
	return r.addTenant(ctx, t)
}

func (r *Registry) addTenant(ctx context.Context, t Tenant) error {
	r.mu.RLock()
	_, known := r.tenants[t.ID]
	r.mu.RUnlock()
	if known {
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
	te := &tenantEntry{rec: t, caCert: caCert, kv: kv, gateways: map[string]*Gateway{}, revs: map[string]uint64{}}
	// Bound to the registry's context, not the caller's (CreateTenant's
	// request context used to end this tenant's watch on this node).
	w, err := kv.WatchAll(r.ctx)
	if err != nil {
		return fmt.Errorf("registry: watch gateways of %s: %w", t.ID, err)
	}
	if err := initialValues(ctx, w, func(e jetstream.KeyValueEntry) error {
		r.applyGateway(te, e, false)
		return nil
	}); err != nil {
		w.Stop()
		return err
	}
	r.mu.Lock()
	if _, known := r.tenants[t.ID]; known {
		r.mu.Unlock()
		w.Stop()
		return nil
	}
	r.tenants[t.ID] = te
	r.byCAKey[hex.EncodeToString(caCert.SubjectKeyId)] = t.ID
	added := slices.Clone(r.tenantWatchers)
	r.mu.Unlock()
	for _, fn := range added {
		fn(t)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer w.Stop()
		for {
			select {
			case <-r.ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					r.applyGateway(te, e, true)
				}
			}
		}
	}()
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
	r.mu.Lock()
	if e.Revision() <= te.revs[e.Key()] {
		r.mu.Unlock() // this node already wrote a newer revision through
		return
	}
	te.revs[e.Key()] = e.Revision()
	if e.Operation() == jetstream.KeyValuePut {
		te.gateways[e.Key()] = &g
	} else {
		delete(te.gateways, e.Key())
		g = Gateway{Tenant: te.rec.ID, Serial: e.Key(), State: StateRevoked}
	}
	r.mu.Unlock()
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

// CreateTenant creates a tenant with a new CA whose key is sealed by kms.
func (r *Registry) CreateTenant(ctx context.Context, id string) (Tenant, error) {
	if !ValidTenantID(id) {
		return Tenant{}, ErrTenantInvalid.New()
	}
	if _, ok := r.Tenant(id); ok {
		return Tenant{}, ErrTenantExists.New()
	}
	if err := r.keys.EnsureTenant(ctx, id); err != nil {
		return Tenant{}, fmt.Errorf("registry: tenant key: %w", err)
	}
	now := r.now().UTC()
	ca, err := pki.NewCA("iotransit tenant "+id+" CA", caValidity, now)
	if err != nil {
		return Tenant{}, err
	}
	der, err := ca.KeyDER()
	if err != nil {
		return Tenant{}, fmt.Errorf("registry: marshal CA key: %w", err)
	}
	sealed, err := r.keys.Seal(ctx, id, der, []byte(caKeyAAD))
	if err != nil {
		return Tenant{}, fmt.Errorf("registry: seal CA key: %w", err)
	}
	t := Tenant{ID: id, CreatedAt: now, CACert: string(ca.CertPEM), CAKey: sealed}
	b, err := json.Marshal(t)
	if err != nil {
		return Tenant{}, err
	}
	if _, err := r.tenKV.Create(ctx, id, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Tenant{}, ErrTenantExists.New()
		}
		return Tenant{}, fmt.Errorf("registry: store tenant: %w", err)
	}
	if err := r.addTenant(ctx, t); err != nil {
		return Tenant{}, err
	}
	r.mu.Lock()
	r.tenants[id].ca = ca
	r.mu.Unlock()
	return t, nil
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
	slices.SortFunc(out, func(a, b Tenant) int { return cmpString(a.ID, b.ID) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TenantByCA returns the tenant whose CA has the given subject key id (a
// client certificate's authority key id) and that CA's certificate.
func (r *Registry) TenantByCA(authorityKeyID []byte) (string, *x509.Certificate, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byCAKey[hex.EncodeToString(authorityKeyID)]
	if !ok {
		return "", nil, false
	}
	return id, r.tenants[id].caCert, true
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
	slices.SortFunc(out, func(a, b Gateway) int { return cmpString(a.Serial, b.Serial) })
	return out, nil
}

func (r *Registry) entry(tenant string) (*tenantEntry, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	te, ok := r.tenants[tenant]
	if !ok {
		return nil, ErrTenantNotFound.New()
	}
	return te, nil
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
	if _, err := r.serKV.Create(ctx, serial, []byte(tenant)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Gateway{}, ErrGatewayExists.New()
		}
		return Gateway{}, fmt.Errorf("registry: reserve serial: %w", err)
	}
	inc := make([]byte, 16)
	if _, err := rand.Read(inc); err != nil {
		_ = r.serKV.Delete(ctx, serial)
		return Gateway{}, fmt.Errorf("registry: random: %w", err)
	}
	now := r.now().UTC()
	g := Gateway{Tenant: tenant, Serial: serial, State: StateActive, Incarnation: hex.EncodeToString(inc), CreatedAt: now, UpdatedAt: now}
	b, err := json.Marshal(g)
	if err != nil {
		return Gateway{}, err
	}
	rev, err := te.kv.Create(ctx, serial, b)
	if err != nil {
		// Give the serial back, or it stays taken by a gateway that never was.
		_ = r.serKV.Delete(ctx, serial)
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
	for attempt := 0; attempt < 10; attempt++ {
		e, err := te.kv.Get(ctx, serial)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Gateway{}, ErrGatewayNotFound.New()
		}
		if err != nil {
			return Gateway{}, fmt.Errorf("registry: read gateway: %w", err)
		}
		var g Gateway
		if err := json.Unmarshal(e.Value(), &g); err != nil {
			return Gateway{}, fmt.Errorf("registry: decode gateway: %w", err)
		}
		if err := fn(&g); err != nil {
			return Gateway{}, err
		}
		g.UpdatedAt = r.now().UTC()
		b, err := json.Marshal(g)
		if err != nil {
			return Gateway{}, err
		}
		rev, err := te.kv.Update(ctx, serial, b, e.Revision())
		if errors.Is(err, jetstream.ErrKeyExists) { // revision conflict: retry
			continue
		}
		if err != nil {
			return Gateway{}, fmt.Errorf("registry: store gateway: %w", err)
		}
		r.cache(te, g, rev)
		return g, nil
	}
	return Gateway{}, errors.New("registry: gateway update kept conflicting")
}

// cache writes a record this node stored through to memory, unless the
// watch already delivered a newer revision.
func (r *Registry) cache(te *tenantEntry, g Gateway, rev uint64) {
	r.mu.Lock()
	if rev <= te.revs[g.Serial] {
		r.mu.Unlock()
		return
	}
	te.revs[g.Serial] = rev
	c := g
	te.gateways[g.Serial] = &c
	r.mu.Unlock()
	r.notify(te, g, rev)
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

// CA returns the tenant's certificate authority with its key opened.
func (r *Registry) CA(ctx context.Context, tenant string) (*pki.CA, error) {
	te, err := r.entry(tenant)
	if err != nil {
		return nil, err
	}
	return r.loadCA(ctx, te)
}

func (r *Registry) loadCA(ctx context.Context, te *tenantEntry) (*pki.CA, error) {
	r.mu.RLock()
	ca := te.ca
	r.mu.RUnlock()
	if ca != nil {
		return ca, nil
	}
	der, err := r.keys.Open(ctx, te.rec.ID, te.rec.CAKey, []byte(caKeyAAD))
	if err != nil {
		return nil, fmt.Errorf("registry: open CA key of %s: %w", te.rec.ID, err)
	}
	ca, err = pki.LoadCA([]byte(te.rec.CACert), der)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	te.ca = ca
	r.mu.Unlock()
	return ca, nil
}

// IssueCertificate signs a gateway certificate from a PEM CSR whose subject
// common name must be the gateway serial, records it, and returns the
// certificate PEM and its record. The gateway must be active. Older
// certificates beyond the newest MaxValidCertificates valid ones are revoked
// as superseded.
func (r *Registry) IssueCertificate(ctx context.Context, tenant, serial string, csrPEM []byte, validity time.Duration) ([]byte, Certificate, error) {
	return r.issue(ctx, tenant, serial, csrPEM, validity, nil)
}

// issue is IssueCertificate with check, if not nil, run on the gateway
// record before signing and again in the update that records the
// certificate, so what it checks cannot change in between.
func (r *Registry) issue(ctx context.Context, tenant, serial string, csrPEM []byte, validity time.Duration, check func(g *Gateway, now time.Time) error) ([]byte, Certificate, error) {
	te, err := r.entry(tenant)
	if err != nil {
		return nil, Certificate{}, err
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		return nil, Certificate{}, err
	}
	g, ok := r.Gateway(tenant, serial)
	if !ok {
		return nil, Certificate{}, ErrGatewayNotFound.New()
	}
	if check != nil {
		if err := check(&g, r.now().UTC()); err != nil {
			return nil, Certificate{}, err
		}
	}
	if g.State != StateActive {
		return nil, Certificate{}, ErrGatewayNotActive.New()
	}
	ca, err := r.loadCA(ctx, te)
	if err != nil {
		return nil, Certificate{}, err
	}
	now := r.now().UTC()
	cert, certPEM, err := ca.SignClient(csr, serial, validity, now)
	if err != nil {
		return nil, Certificate{}, err
	}
	rec := Certificate{
		Serial: pki.SerialHex(cert), Fingerprint: pki.Fingerprint(cert),
		NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), IssuedAt: now,
	}
	if _, err := r.update(ctx, tenant, serial, func(g *Gateway) error {
		if check != nil {
			if err := check(g, now); err != nil {
				return err
			}
		}
		if g.State != StateActive {
			return ErrGatewayNotActive.New()
		}
		g.Certificates = append(g.Certificates, rec)
		boundCertificates(g, now)
		return nil
	}); err != nil {
		return nil, Certificate{}, err
	}
	return certPEM, rec, nil
}

// ErrLabelsInvalid is returned for labels that break the rules.
var ErrLabelsInvalid = fault.Define("registry.labels_invalid", fault.InvalidArgument, "labels: at most 32, keys of 1 to 63 characters [a-z0-9._/-] starting with a letter or digit, values of at most 256 printable characters")

// ValidLabels reports whether labels keep the rules of ErrLabelsInvalid.
func ValidLabels(labels map[string]string) bool {
	if len(labels) > 32 {
		return false
	}
	for k, v := range labels {
		if len(k) == 0 || len(k) > 63 || len(v) > 256 {
			return false
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '/' || c == '-')
			if !ok {
				return false
			}
		}
		for _, r := range v {
			if r < 0x20 || r == 0x7f {
				return false
			}
		}
	}
	return true
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

// ErrDeploymentGroupInvalid is returned for a malformed deploymentGroupId.
var ErrDeploymentGroupInvalid = fault.Define("registry.deployment_group_invalid", fault.InvalidArgument, "a deploymentGroupId is {env}{country}00{customer part}: env un, pr, dm or rd; country an ISO 3166-1 alpha-2 code in lowercase or xx; customer part at most 32 of a-z and 0-9")

// iso3166 holds the ISO 3166-1 alpha-2 codes, lowercase, concatenated.
const iso3166 = "adaeafagaialamaoaqarasatauawaxazbabbbdbebfbgbhbibjblbmbnbobqbrbsbtbvbwbybzcacccdcfcgchcickclcmcncocrcucvcwcxcyczdedjdkdmdodzeceeegeheresetfifjfkfmfofrgagbgdgegfggghgiglgmgngpgqgrgsgtgugwgyhkhmhnhrhthuidieiliminioiqirisitjejmjojpkekgkhkikmknkpkrkwkykzlalblclilklrlsltlulvlymamcmdmemfmgmhmkmlmmmnmompmqmrmsmtmumvmwmxmymznancnenfngninlnonpnrnunzompapepfpgphpkplpmpnprpsptpwpyqarerorsrurwsasbscsdsesgshsisjskslsmsnsosrssstsvsxsysztctdtftgthtjtktltmtntotrtttvtwtzuaugumusuyuzvavcvevgvivnvuwfwsyeytzazmzw"

// ValidDeploymentGroupID reports whether id has Thingsee's deployment
// group form: {env 2}{country 2}{reserved 2}{customer part}.
func ValidDeploymentGroupID(id string) bool {
	if len(id) < 6 || len(id) > 38 {
		return false
	}
	switch id[:2] {
	case "un", "pr", "dm", "rd":
	default:
		return false
	}
	country := id[2:4]
	known := country == "xx"
	for i := 0; i+2 <= len(iso3166) && !known; i += 2 {
		known = iso3166[i:i+2] == country
	}
	if !known || id[4:6] != "00" {
		return false
	}
	for i := 6; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
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
