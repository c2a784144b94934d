package ingest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
)

// Identity is who a gateway connection proved to be at the TLS handshake.
type Identity struct {
	Tenant     string
	Serial     string
	CertSerial string
	NotAfter   time.Time
}

// Directory is what the ingest reads of the registry.
type Directory interface {
	TenantByCA(authorityKeyID []byte) (tenant string, ca *x509.Certificate, ok bool)
	Tenant(id string) (registry.Tenant, bool)
	Gateway(tenant, serial string) (registry.Gateway, bool)
}

// RefusedError is why a connection's identity was refused. Reason is a
// stable label (metrics, audit); clients only see a TLS alert.
type RefusedError struct{ Reason string }

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
)

func refused(reason string) error { return &RefusedError{Reason: reason} }

// Authenticate decides whether a verified-or-not TLS peer is a registered,
// active gateway holding a current certificate of its tenant's CA.
func Authenticate(dir Directory, cs tls.ConnectionState, now time.Time) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, refused(ReasonNoCertificate)
	}
	leaf := cs.PeerCertificates[0]
	tenant, ca, ok := dir.TenantByCA(leaf.AuthorityKeyId)
	if !ok {
		return Identity{}, refused(ReasonUnknownCA)
	}
	switch err := pki.VerifyClient(leaf, cs.PeerCertificates[1:], ca, now); {
	case err == nil:
	case errors.Is(err, pki.ErrChainExpired):
		return Identity{}, refused(ReasonExpired)
	case errors.Is(err, pki.ErrChainNotYetValid):
		return Identity{}, refused(ReasonNotYetValid)
	case errors.Is(err, pki.ErrChainUsage):
		return Identity{}, refused(ReasonBadUsage)
	default:
		return Identity{}, refused(ReasonUnknownCA)
	}
	serial := leaf.Subject.CommonName
	gw, ok := dir.Gateway(tenant, serial)
	if !ok {
		return Identity{}, refused(ReasonUnregistered)
	}
	switch gw.State {
	case registry.StateActive:
	case registry.StateIsolated:
		return Identity{}, refused(ReasonIsolated)
	default:
		return Identity{}, refused(ReasonRevoked)
	}
	certSerial := pki.SerialHex(leaf)
	rec, ok := gw.Certificate(certSerial)
	if !ok {
		return Identity{}, refused(ReasonCertUnknown)
	}
	if rec.RevokedAt != nil {
		return Identity{}, refused(ReasonCertRevoked)
	}
	return Identity{Tenant: tenant, Serial: serial, CertSerial: certSerial, NotAfter: leaf.NotAfter}, nil
}
