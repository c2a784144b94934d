// Re-encryption after a data key rotation: an integration record's sealed
// secrets re-sealed under the newest version.

package forward

import "github.com/iotransit/iotransit/internal/kms"

// ResealRecord re-seals the secrets of the integration record stored under
// key in a tenant's integrations bucket with reseal (the same aad); it
// returns the record to store and true when they changed. Keys that hold no
// integration (name claims) and records without secrets are left as they
// are.
func ResealRecord(key string, stored []byte, reseal kms.ResealFunc) ([]byte, bool, error) {
	if !validID(key) {
		return nil, false, nil
	}
	return kms.ResealJSON(stored, reseal, func(r *record) (*[]byte, []byte) { return &r.Sealed, secretsAAD(r.ID) })
}
