package client

import (
	"context"
	"time"
)

// Key states of a tenant CA version or a platform signing key.
const (
	// KeyCurrent: the key in use (issues certificates, signs tokens or
	// checkpoints).
	KeyCurrent = "current"
	// KeyOverlap: a previous CA version whose certificates are still
	// trusted until its TrustedUntil.
	KeyOverlap = "overlap"
	// KeyRetired: a CA version no longer trusted, or a platform key that
	// only verifies what it signed before it was replaced.
	KeyRetired = "retired"
)

// TenantCA is the state of a tenant's certificate authorities: the current
// version, which issues every new certificate, and the previous ones with
// their overlap, during which the certificates they issued are still
// accepted. It never holds key material.
type TenantCA struct {
	Tenant string `json:"tenant"`
	// CurrentVersion is the version that issues new certificates.
	CurrentVersion int `json:"currentVersion"`
	// Versions are the versions known, newest first.
	Versions []CAVersion `json:"versions"`
	// Bundle is the PEM of every CA still trusted (current first): what a
	// peer verifying the tenant's gateway certificates needs.
	Bundle string `json:"bundle"`
	// Rotated is true in the answer of a rotation, Retired in that of a
	// retirement.
	Rotated bool `json:"rotated,omitempty"`
	Retired bool `json:"retired,omitempty"`
}

// CAVersion is one version of a tenant CA.
type CAVersion struct {
	Version int `json:"version"`
	// State is KeyCurrent, KeyOverlap or KeyRetired.
	State string `json:"state"`
	// Fingerprint is the SHA-256 of the CA certificate (hex).
	Fingerprint string    `json:"fingerprint"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	// SupersededAt is when a newer version replaced it.
	SupersededAt *time.Time `json:"supersededAt,omitempty"`
	// TrustedUntil is when the certificates it issued stop being accepted.
	TrustedUntil *time.Time `json:"trustedUntil,omitempty"`
	Certificate  string     `json:"certificate"`
}

// RotateCARequest asks for a new tenant CA version.
type RotateCARequest struct {
	// Overlap is how long the certificates of the previous version stay
	// accepted, as a Go duration ("720h"); empty: 30 days.
	Overlap string `json:"overlap,omitempty"`
}

// RetireCARequest ends the overlap of previous CA versions now.
type RetireCARequest struct {
	// Version is the version to retire; 0: every previous version.
	Version int `json:"version,omitempty"`
}

// PlatformKeys are the public parts of the platform's signing keys: the
// access-token (JWT) keys and the audit checkpoint keys, current and
// retired, so that an offline verifier can check what they signed.
type PlatformKeys struct {
	JWT   []PlatformKey `json:"jwt"`
	Audit []PlatformKey `json:"audit"`
}

// PlatformKey is the public part of one platform signing key.
type PlatformKey struct {
	// ID is the key id: a token's "kid", a checkpoint's "keyId".
	ID      string `json:"id"`
	Version uint32 `json:"version"`
	// Algorithm is "Ed25519".
	Algorithm string `json:"algorithm"`
	// PublicKey is the raw 32-byte Ed25519 public key, base64.
	PublicKey []byte `json:"publicKey"`
	// State is KeyCurrent or KeyRetired.
	State string `json:"state"`
	// CreatedAt is when it was made (absent for the first key, made before
	// keys had versions); RetiredAt when the next version replaced it.
	CreatedAt *time.Time `json:"createdAt,omitempty"`
	RetiredAt *time.Time `json:"retiredAt,omitempty"`
}

// TenantCA returns the state of the tenant's CA versions. Needs keys:read.
func (c *Client) TenantCA(ctx context.Context, tenant string) (*TenantCA, error) {
	return get[TenantCA](ctx, c, path("tenants", tenant, "ca"), nil)
}

// RotateCA makes a new version of the tenant's CA: new certificates
// (enrollment, renewal) are issued by it, and those of the previous
// version stay accepted for the overlap. Needs keys:write.
func (c *Client) RotateCA(ctx context.Context, tenant string, req RotateCARequest) (*TenantCA, error) {
	return post[TenantCA](ctx, c, path("tenants", tenant, "ca", "rotate"), req)
}

// RetireCA ends the overlap of a previous CA version (or of all of them):
// the certificates it issued are refused from now on. Needs keys:write.
func (c *Client) RetireCA(ctx context.Context, tenant string, req RetireCARequest) (*TenantCA, error) {
	return post[TenantCA](ctx, c, path("tenants", tenant, "ca", "retire"), req)
}

// PlatformKeys lists the public parts of the platform's signing keys.
// Operator only.
func (c *Client) PlatformKeys(ctx context.Context) (*PlatformKeys, error) {
	return get[PlatformKeys](ctx, c, path("system", "keys"), nil)
}

// RotateJWTKey makes a new access-token signing key; tokens signed by the
// previous one stay valid until they expire. Operator only.
func (c *Client) RotateJWTKey(ctx context.Context) (*PlatformKeys, error) {
	return post[PlatformKeys](ctx, c, path("system", "jwt", "rotate"), nil)
}

// RotateAuditKey makes a new audit checkpoint signing key; checkpoints
// signed by the previous one still verify. Operator only.
func (c *Client) RotateAuditKey(ctx context.Context) (*PlatformKeys, error) {
	return post[PlatformKeys](ctx, c, path("system", "audit-key", "rotate"), nil)
}
