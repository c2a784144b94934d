// Re-encryption after a data key rotation: a network's sealed keys
// re-sealed under the newest version.

package meshnet

import (
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/kms"
)

// NetworkKey is the key of the tenant's network record (its sealed keys) in
// names.MeshBucket.
func NetworkKey(tenant string) string { return names.MeshKey(tenant, partNetwork) }

// ResealNetwork re-seals the keys in the tenant's stored network record
// with reseal (the same aad); it returns the record to store and true when
// they changed.
func ResealNetwork(tenant string, stored []byte, reseal kms.ResealFunc) ([]byte, bool, error) {
	return kms.ResealJSON(stored, reseal, func(r *record) (*[]byte, []byte) { return &r.Sealed, keysAAD(tenant, r.NetworkID) })
}
