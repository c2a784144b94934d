// The records: tenants, gateways, their states and certificates.

package registry

import (
	"maps"
	"slices"
	"time"

	"github.com/iotransit/iotransit/client"
)

// Tenant is one customer's isolated environment.
type Tenant struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"createdAt"`
	// CACert is the PEM of the tenant CA that issues its gateways' certificates.
	CACert string `json:"caCert"`
	// CAKey is the CA's PKCS#8 key sealed by kms under the tenant's data key.
	CAKey []byte `json:"caKey"`
	// CAVersion is the version of CACert (0 in records made before CAs
	// rotated: version 1), and PreviousCAs the versions it replaced, newest
	// first, with how long their certificates stay accepted (ca.go).
	CAVersion   int          `json:"caVersion,omitempty"`
	PreviousCAs []PreviousCA `json:"previousCAs,omitempty"`
	// RejectUnknownIDs refuses Thingsee messages whose tsmId has no schema
	// (default false: they are accepted with only the header checked).
	// SetPolicy keeps it equal to the policy's strictValidation, for nodes
	// that predate policies (read StrictValidation).
	RejectUnknownIDs bool `json:"rejectUnknownIds"`
	// OwnRejectUnknownIDs is RejectUnknownIDs as it was before the first
	// policy kept it in step (nil: no policy was set since): the default
	// of a policy's strictValidation.
	OwnRejectUnknownIDs *bool `json:"ownRejectUnknownIds,omitempty"`
	// Policy is the tenant's security policy (policy.go); members left out
	// take the node's defaults.
	Policy client.Policy `json:"policy,omitzero"`
	// State is "" for a live tenant, TenantDeleting while its deletion
	// runs and TenantDeleted once it is done (delete.go): the record
	// stays as a tombstone, so that its id is never given again.
	State string `json:"state,omitempty"`
	// DeletedBy names who deleted the tenant (an audit actor); DeletedAt
	// is when the deletion started (TenantDeleting) or ended
	// (TenantDeleted).
	DeletedBy string     `json:"deletedBy,omitempty"`
	DeletedAt *time.Time `json:"deletedAt,omitempty"`
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
	// Issuer is the subject key id (hex) of the CA version that issued it
	// (empty in records written before CAs rotated: the first version).
	Issuer string `json:"issuer,omitempty"`
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
