package ingest

import (
	"crypto/x509"
	"time"

	"github.com/iotransit/iotransit/internal/registry"
)

// Identity is who a gateway connection proved to be at the TLS handshake.
type Identity = registry.Identity

// Directory is what the ingest reads of the registry.
type Directory interface {
	Authenticate(chain []*x509.Certificate, now time.Time) (registry.Identity, error)
	Tenant(id string) (registry.Tenant, bool)
	Gateway(tenant, serial string) (registry.Gateway, bool)
}
