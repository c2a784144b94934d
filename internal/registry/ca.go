// The tenant CAs: their keys sealed by kms, opened on first use, and the
// certificates they issue to gateways from CSRs. A tenant's CA rotates
// (carotation.go): the current version issues, previous ones are trusted
// until their overlap ends.

package registry

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
)

const (
	caValidity = 20 * 365 * 24 * time.Hour
	caKeyAAD   = "registry/ca-key"
)

// newCA makes a CA for the tenant id, valid from now, and returns it with
// its key sealed under the tenant's data key (Tenant.CAKey).
func (r *Registry) newCA(ctx context.Context, id string, now time.Time) (*pki.CA, []byte, error) {
	return r.newCAVersion(ctx, id, 1, now)
}

// newCAVersion is newCA for version v of the tenant's CA (its name says
// the version from 2 on).
func (r *Registry) newCAVersion(ctx context.Context, id string, v int, now time.Time) (*pki.CA, []byte, error) {
	name := "iotransit tenant " + id + " CA"
	if v > 1 {
		name += " " + strconv.Itoa(v)
	}
	ca, err := pki.NewCA(name, caValidity, now)
	if err != nil {
		return nil, nil, err
	}
	der, err := ca.KeyDER()
	if err != nil {
		return nil, nil, fmt.Errorf("registry: marshal CA key: %w", err)
	}
	sealed, err := r.keys.Seal(ctx, id, der, []byte(caKeyAAD))
	if err != nil {
		return nil, nil, fmt.Errorf("registry: seal CA key: %w", err)
	}
	return ca, sealed, nil
}

// CA returns the tenant's current certificate authority with its key opened.
func (r *Registry) CA(ctx context.Context, tenant string) (*pki.CA, error) {
	te, err := r.entry(tenant)
	if err != nil {
		return nil, err
	}
	return r.loadCA(ctx, te)
}

func (r *Registry) loadCA(ctx context.Context, te *tenantEntry) (*pki.CA, error) {
	r.mu.RLock()
	ca, certPEM, sealed := te.ca, te.rec.CACert, te.rec.CAKey
	r.mu.RUnlock()
	if ca != nil {
		return ca, nil
	}
	der, err := r.keys.Open(ctx, te.rec.ID, sealed, []byte(caKeyAAD))
	if err != nil {
		return nil, fmt.Errorf("registry: open CA key of %s: %w", te.rec.ID, err)
	}
	ca, err = pki.LoadCA([]byte(certPEM), der)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if te.rec.CACert == certPEM { // not rotated meanwhile
		te.ca = ca
	}
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
	r.mu.RLock()
	validity = te.rec.CertificateValidity(validity) // the tenant's policy may shorten it
	r.mu.RUnlock()
	cert, certPEM, err := ca.SignClient(csr, serial, validity, now)
	if err != nil {
		return nil, Certificate{}, err
	}
	rec := Certificate{
		Serial: pki.SerialHex(cert), Fingerprint: pki.Fingerprint(cert),
		NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), IssuedAt: now,
		Issuer: hex.EncodeToString(cert.AuthorityKeyId),
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
