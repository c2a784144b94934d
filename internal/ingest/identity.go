package ingest

import (
	"crypto/x509"
	"time"

	"github.com/iotransit/iotransit/internal/registry"
)

// Identity is who a gateway connection proved to be at the TLS handshake.
type Identity = registry.Identity

// Lookup is what the accept core reads of the registry: the tenant's
// validation policy and the gateway's deployment group, both read at every
// upload so that a change applies to the next one.
type Lookup interface {
	Tenant(id string) (registry.Tenant, bool)
	// GatewayDeploymentGroup reads the deployment group without copying
	// the gateway's record (it is read at every upload).
	GatewayDeploymentGroup(tenant, serial string) (string, bool)
}

// Directory is what the ingest reads of the registry: the core's Lookup and,
// for the MQTT front end, gateways and certificate authentication.
type Directory interface {
	Lookup
	Gateway(tenant, serial string) (registry.Gateway, bool)
	Authenticate(chain []*x509.Certificate, now time.Time) (registry.Identity, error)
}
