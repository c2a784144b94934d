package client

import (
	"context"
	"time"
)

// KMSStatus is the state of a tenant's data keys: their versions, the one
// new data is sealed under, and the root key that wraps them. It never
// holds key material.
type KMSStatus struct {
	// CurrentVersion is the version new data is sealed under.
	CurrentVersion uint32 `json:"currentVersion"`
	// Versions are every version kept, oldest first; data sealed under any
	// of them opens.
	Versions []KMSKeyVersion `json:"versions"`
	// RootKeyID names the root key that wraps new data keys
	// ("file:…" or "pkcs11:…").
	RootKeyID string `json:"rootKeyId"`
	// Rotated is true in the answer of a rotation.
	Rotated bool `json:"rotated,omitempty"`
	// Reencryption is the tenant's latest re-encryption job (absent when
	// none was started): see ReencryptKMS.
	Reencryption *KMSReencryption `json:"reencryption,omitempty"`
}

// KMSKeyVersion is one version of a tenant's data key.
type KMSKeyVersion struct {
	Version   uint32    `json:"version"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
	// RootKeyID names the root key that wraps this version.
	RootKeyID string `json:"rootKeyId"`
}

// RotateKMSKey makes a new version of the tenant's data key: new data is
// sealed under it on every node within a second; data sealed under older
// versions still opens. Audited. Needs keys:write.
func (c *Client) RotateKMSKey(ctx context.Context, tenant string) (*KMSStatus, error) {
	return post[KMSStatus](ctx, c, path("tenants", tenant, "kms", "rotate"), nil)
}

// KMSStatus returns the tenant's data key versions, without key material.
// Needs keys:read.
func (c *Client) KMSStatus(ctx context.Context, tenant string) (*KMSStatus, error) {
	return get[KMSStatus](ctx, c, path("tenants", tenant, "kms"), nil)
}
