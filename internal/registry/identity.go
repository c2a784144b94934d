package registry

import (
	"crypto/x509"
	"errors"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
)

// Identity is who a client certificate proves to be.
type Identity struct {
	Tenant     string
	Serial     string
	CertSerial string
	NotAfter   time.Time
}

// RefusedError is why a certificate was refused. Reason is a stable label
// (metrics, audit outcome); Tenant and Serial are set only when the chain
// verified against that tenant's CA: a certificate that merely names a
// tenant's CA (its key id is public) is an unauthenticated refusal without
// either. Even then the refusal is about a certificate, which is no
// secret: it belongs in the tenant's audit log only once the peer proved it
// holds the certificate's key (the ingest records it after the TLS
// handshake succeeded, and as unauthenticated if it failed). Clients are
// told none of it.
type RefusedError struct {
	Reason string
	Tenant string
	Serial string
}

func (e *RefusedError) Error() string { return "gateway refused: " + e.Reason }

// Refusal reasons.
const (
	ReasonNoCertificate = "no_certificate"
	ReasonUnknownCA     = "unknown_ca"
	ReasonExpired       = "expired"
	ReasonNotYetValid   = "not_yet_valid"
	ReasonBadUsage      = "bad_usage"
	ReasonUnregistered  = "unregistered"
	ReasonRevoked       = "revoked"
	ReasonIsolated      = "isolated"
	ReasonCertUnknown   = "cert_unknown"
	ReasonCertRevoked   = "cert_revoked"
	ReasonCARetired     = "ca_retired"
)

// Authenticate decides whether a presented chain (leaf first) belongs to a
// registered, active gateway holding a current certificate that its
// tenant's CA issued and the registry recorded and did not revoke. The
// tenant is chosen by the leaf's authority key id, and the chain is
// verified against that tenant's CA only (the current version, or a previous
// one until its overlap ends), signatures first
// (pki.VerifyClient): until it verifies, a refusal names no tenant. It
// checks a chain, not its holder: the caller must see the peer prove it
// holds the leaf's key before it attributes a refusal (RefusedError).
func (r *Registry) Authenticate(chain []*x509.Certificate, now time.Time) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, &RefusedError{Reason: ReasonNoCertificate}
	}
	leaf := chain[0]
	tenant, ca, trustedUntil, ok := r.caFor(leaf.AuthorityKeyId)
	if !ok {
		return Identity{}, &RefusedError{Reason: ReasonUnknownCA}
	}
	refuse := func(reason string) (Identity, error) {
		return Identity{}, &RefusedError{Reason: reason, Tenant: tenant, Serial: leaf.Subject.CommonName}
	}
	switch err := pki.VerifyClient(leaf, chain[1:], ca, now); {
	case err == nil:
	case errors.Is(err, pki.ErrChainExpired):
		return refuse(ReasonExpired)
	case errors.Is(err, pki.ErrChainNotYetValid):
		return refuse(ReasonNotYetValid)
	case errors.Is(err, pki.ErrChainUsage):
		return refuse(ReasonBadUsage)
	default: // a key id that names the tenant CA without its signature
		return Identity{}, &RefusedError{Reason: ReasonUnknownCA}
	}
	if !trustedUntil.IsZero() && !now.Before(trustedUntil) {
		return refuse(ReasonCARetired) // a previous CA version past its overlap
	}
	serial := leaf.Subject.CommonName
	gw, ok := r.Gateway(tenant, serial)
	if !ok {
		return refuse(ReasonUnregistered)
	}
	switch gw.State {
	case StateActive:
	case StateIsolated:
		return refuse(ReasonIsolated)
	default:
		return refuse(ReasonRevoked)
	}
	certSerial := pki.SerialHex(leaf)
	rec, ok := gw.Certificate(certSerial)
	if !ok {
		return refuse(ReasonCertUnknown)
	}
	if rec.RevokedAt != nil {
		return refuse(ReasonCertRevoked)
	}
	return Identity{Tenant: tenant, Serial: serial, CertSerial: certSerial, NotAfter: leaf.NotAfter}, nil
}
