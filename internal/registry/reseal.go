// Re-encryption after a data key rotation: a tenant's sealed CA key
// re-sealed under the newest version.

package registry

import "github.com/iotransit/iotransit/internal/kms"

// ResealTenant re-seals the CA key in a stored tenant record (key: the
// tenant id in names.TenantsBucket) with reseal (the same aad); it returns
// the record to store and true when it changed. The registry follows the
// change through its watch; the key inside is the same.
func ResealTenant(stored []byte, reseal kms.ResealFunc) ([]byte, bool, error) {
	return kms.ResealJSON(stored, reseal, func(t *Tenant) (*[]byte, []byte) { return &t.CAKey, []byte(caKeyAAD) })
}
