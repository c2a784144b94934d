// Rotation of the tenant CAs: a new version issues every new certificate,
// the previous ones stay trusted until their overlap ends, so that gateways
// renew onto the new CA without a moment in which they are refused.

package registry

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/kverr"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/retry"
)

// PreviousCA is a CA version a rotation replaced. Its key is dropped: it
// issues nothing more; its certificate verifies the gateway certificates
// it issued until TrustedUntil.
type PreviousCA struct {
	Version      int       `json:"version"`
	Cert         string    `json:"cert"`
	SupersededAt time.Time `json:"supersededAt"`
	TrustedUntil time.Time `json:"trustedUntil"`
}

// maxPreviousCAs bounds the previous versions a tenant record keeps (the
// oldest, long untrusted, are dropped).
const maxPreviousCAs = 8

// caDropGrace is how long a previous version stays in the record once it
// is no longer trusted, at least: every node's sweep (node/caretire.go)
// must see it untrusted to end its sessions, which it cannot once the
// version is forgotten.
const caDropGrace = time.Minute

var (
	// ErrCAVersionNotFound answers a retirement of a CA version the
	// tenant does not have among its previous ones.
	ErrCAVersionNotFound = fault.Define("registry.ca_version_not_found", fault.NotFound,
		"the tenant has no previous CA of this version")
	// ErrCACurrent answers a retirement of the current CA version.
	ErrCACurrent = fault.Define("registry.ca_current", fault.InvalidArgument,
		"the current CA version cannot be retired: rotate the CA first")
	// ErrCAVersionsTrusted answers a rotation that would make the tenant
	// forget a previous CA version still trusted (or retired just now,
	// its sessions not yet ended): retire older versions first.
	ErrCAVersionsTrusted = fault.Define("registry.ca_versions_trusted", fault.Conflict,
		"the tenant has as many previous CA versions still trusted as it keeps: retire the older ones, then rotate again a minute later")
)

// previousCA is a PreviousCA parsed, in memory.
type previousCA struct {
	version int
	cert    *x509.Certificate
	until   time.Time
}

// caVersion returns the record's current CA version.
func (t Tenant) caVersion() int { return max(t.CAVersion, 1) }

// setCAs takes the CA versions of a known tenant's record t, stored at
// revision rev, unless memory holds that revision or a newer one.
func (r *Registry) setCAs(te *tenantEntry, t Tenant, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.setCAsLocked(te, t, rev)
}

// setCAsLocked is setCAs with r.mu held. Every version's key id names the
// tenant (byCAKey): a certificate of a retired version is refused as such,
// after its chain verified, not as one of an unknown CA.
func (r *Registry) setCAsLocked(te *tenantEntry, t Tenant, rev uint64) {
	if rev <= te.caRev {
		return
	}
	te.caRev = rev
	if t.CACert != te.rec.CACert {
		cur, err := pki.ParseCertPEM([]byte(t.CACert))
		if err != nil {
			r.log.Error("parse tenant CA", "tenant_id", t.ID, "error", err)
			return
		}
		te.caCert, te.ca = cur, nil // the next issue opens the new key
	}
	te.rec.CACert, te.rec.CAKey, te.rec.CAVersion, te.rec.PreviousCAs = t.CACert, t.CAKey, t.CAVersion, t.PreviousCAs
	te.previous = te.previous[:0:0]
	for _, p := range t.PreviousCAs {
		c, err := pki.ParseCertPEM([]byte(p.Cert))
		if err != nil {
			r.log.Error("parse previous tenant CA", "tenant_id", t.ID, "version", p.Version, "error", err)
			continue
		}
		te.previous = append(te.previous, previousCA{version: p.Version, cert: c, until: p.TrustedUntil})
		r.byCAKey[hex.EncodeToString(c.SubjectKeyId)] = t.ID
	}
	r.byCAKey[hex.EncodeToString(te.caCert.SubjectKeyId)] = t.ID
}

// caFor returns the tenant whose CA version has the subject key id
// authorityKeyID, that CA's certificate, and until when it is trusted
// (zero: the current version, trusted).
func (r *Registry) caFor(authorityKeyID []byte) (string, *x509.Certificate, time.Time, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	key := hex.EncodeToString(authorityKeyID)
	id, ok := r.byCAKey[key]
	if !ok {
		return "", nil, time.Time{}, false
	}
	te, ok := r.tenants[id]
	if !ok {
		return "", nil, time.Time{}, false
	}
	if hex.EncodeToString(te.caCert.SubjectKeyId) == key {
		return id, te.caCert, time.Time{}, true
	}
	for _, p := range te.previous {
		if hex.EncodeToString(p.cert.SubjectKeyId) == key {
			return id, p.cert, p.until, true
		}
	}
	return "", nil, time.Time{}, false
}

// issuerPEM returns the PEM of the tenant's CA version that issued the
// certificate certPEM (the current one when it cannot tell).
func (r *Registry) issuerPEM(tenant string, certPEM []byte) []byte {
	r.mu.RLock()
	te, ok := r.tenants[tenant]
	if !ok {
		r.mu.RUnlock()
		return nil
	}
	cur, prev := te.rec.CACert, te.rec.PreviousCAs
	r.mu.RUnlock()
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return []byte(cur)
	}
	for _, p := range prev {
		if c, err := pki.ParseCertPEM([]byte(p.Cert)); err == nil && string(c.SubjectKeyId) == string(cert.AuthorityKeyId) {
			return []byte(p.Cert)
		}
	}
	return []byte(cur)
}

// RotateCA makes a new version of the tenant's CA: from then on every
// certificate is issued by it, on every node as soon as it applies the
// record; certificates of the version it replaces are accepted for
// overlap more (previous versions keep their own overlap). The record is
// changed with optimistic concurrency, so two nodes rotating at once make
// two versions in turn, never lose one.
func (r *Registry) RotateCA(ctx context.Context, tenant string, overlap time.Duration) (client.TenantCA, error) {
	return r.changeCAs(ctx, tenant, func(t *Tenant, now time.Time) error {
		v := t.caVersion() + 1
		prev := PreviousCA{Version: v - 1, Cert: t.CACert, SupersededAt: now, TrustedUntil: now.Add(overlap)}
		previous := append([]PreviousCA{prev}, t.PreviousCAs...)
		// Beyond the bound, the oldest versions untrusted for caDropGrace
		// go; a version still trusted is never dropped (its certificates
		// would be refused as of an unknown CA, its sessions never ended).
		for i := len(previous) - 1; i >= 0 && len(previous) > maxPreviousCAs; i-- {
			if now.Sub(previous[i].TrustedUntil) >= caDropGrace {
				previous = append(previous[:i], previous[i+1:]...)
			}
		}
		if len(previous) > maxPreviousCAs {
			return ErrCAVersionsTrusted.New()
		}
		ca, sealed, err := r.newCAVersion(ctx, tenant, v, now)
		if err != nil {
			return err
		}
		t.PreviousCAs = previous
		t.CACert, t.CAKey, t.CAVersion = string(ca.CertPEM), sealed, v
		return nil
	})
}

// RetireCA ends now the overlap of the tenant's previous CA version (every
// previous version when version is 0): the certificates it issued are
// refused from then on, on every node as soon as it applies the record.
func (r *Registry) RetireCA(ctx context.Context, tenant string, version int) (client.TenantCA, error) {
	return r.changeCAs(ctx, tenant, func(t *Tenant, now time.Time) error {
		if version != 0 && version == t.caVersion() {
			return ErrCACurrent.New()
		}
		found := version == 0
		for i := range t.PreviousCAs {
			p := &t.PreviousCAs[i]
			if version != 0 && p.Version != version {
				continue
			}
			found = true
			if p.TrustedUntil.After(now) {
				p.TrustedUntil = now
			}
		}
		if !found {
			return ErrCAVersionNotFound.New()
		}
		return nil
	})
}

// changeCAs applies change to the tenant's stored record with optimistic
// concurrency, applies the result here, and returns the tenant's CA state.
func (r *Registry) changeCAs(ctx context.Context, tenant string, change func(t *Tenant, now time.Time) error) (client.TenantCA, error) {
	te, err := r.entry(tenant)
	if err != nil {
		return client.TenantCA{}, err
	}
	for attempt := 1; attempt <= updateAttempts; attempt++ {
		if attempt > 1 && !retry.Sleep(ctx, updateBackoff.Delay(attempt-1)) {
			return client.TenantCA{}, ctx.Err()
		}
		t, rev, err := read[Tenant](ctx, r.tenKV, tenant, "tenant")
		if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && t.State != "") {
			// Gone, or being deleted: no new CA key for it.
			return client.TenantCA{}, ErrTenantNotFound.New()
		}
		if err != nil {
			return client.TenantCA{}, err
		}
		if err := change(&t, r.now().UTC()); err != nil {
			return client.TenantCA{}, err
		}
		b, err := json.Marshal(t)
		if err != nil {
			return client.TenantCA{}, err
		}
		stored, err := r.tenKV.Update(ctx, tenant, b, rev)
		if kverr.Conflict(err) {
			continue
		}
		if err != nil {
			return client.TenantCA{}, fmt.Errorf("registry: store tenant: %w", err)
		}
		r.setCAs(te, t, stored)
		return r.TenantCA(tenant)
	}
	return client.TenantCA{}, ErrTenantBusy.New()
}

// TenantCA returns the state of the tenant's CA versions, newest first.
func (r *Registry) TenantCA(tenant string) (client.TenantCA, error) {
	t, ok := r.Tenant(tenant)
	if !ok {
		return client.TenantCA{}, ErrTenantNotFound.New()
	}
	now := r.now().UTC()
	out := client.TenantCA{Tenant: tenant, CurrentVersion: t.caVersion(), Bundle: t.CACert}
	view := func(v int, certPEM, state string) client.CAVersion {
		cv := client.CAVersion{Version: v, State: state, Certificate: certPEM}
		if c, err := pki.ParseCertPEM([]byte(certPEM)); err == nil {
			cv.Fingerprint, cv.NotBefore, cv.NotAfter = pki.Fingerprint(c), c.NotBefore.UTC(), c.NotAfter.UTC()
		}
		return cv
	}
	out.Versions = append(out.Versions, view(t.caVersion(), t.CACert, client.KeyCurrent))
	for _, p := range t.PreviousCAs {
		state := client.KeyRetired
		if now.Before(p.TrustedUntil) {
			state = client.KeyOverlap
			out.Bundle += p.Cert
		}
		cv := view(p.Version, p.Cert, state)
		cv.SupersededAt, cv.TrustedUntil = &p.SupersededAt, &p.TrustedUntil
		out.Versions = append(out.Versions, cv)
	}
	return out, nil
}

// UntrustedCAs returns, by tenant, the subject key ids (hex) of the
// previous CA versions no longer trusted at now: their certificates' live
// sessions must end (node).
func (r *Registry) UntrustedCAs(now time.Time) map[string][]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := map[string][]string{}
	for id, te := range r.tenants {
		for _, p := range te.previous {
			if !now.Before(p.until) {
				out[id] = append(out[id], hex.EncodeToString(p.cert.SubjectKeyId))
			}
		}
	}
	return out
}

// IssuedBy reports whether the gateway's certificate certSerial was issued
// by the tenant's CA version with subject key id ski (hex). A certificate
// recorded before issuers were is the first version's.
func (r *Registry) IssuedBy(tenant, serial, certSerial, ski string) bool {
	g, ok := r.Gateway(tenant, serial)
	if !ok {
		return false
	}
	c, ok := g.Certificate(certSerial)
	if !ok {
		return false
	}
	if c.Issuer != "" {
		return c.Issuer == ski
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	te, ok := r.tenants[tenant]
	if !ok {
		return false
	}
	for _, p := range te.previous {
		if p.version <= 1 {
			return hex.EncodeToString(p.cert.SubjectKeyId) == ski
		}
	}
	return false
}
