// Re-encryption after a data key rotation: a tenant's online TUF keys
// re-sealed under the newest version.

package firmware

import (
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/iotransit/iotransit/internal/kms"
)

// onlineRoles are the roles whose keys the server holds (onlineKey).
var onlineRoles = []string{metadata.SNAPSHOT, metadata.TIMESTAMP}

// onlineKeyName is the key of a tenant's online key of role in
// names.FirmwareKeysBucket.
func onlineKeyName(tenant, role string) string { return tenant + "." + role }

// onlineKeyAAD binds a sealed online key to its tenant and role.
func onlineKeyAAD(tenant, role string) []byte {
	return []byte("firmware/online-key/" + tenant + "/" + role)
}

// OnlineKeyNames lists the keys of the tenant's online keys in
// names.FirmwareKeysBucket (they exist once the tenant used firmware).
func OnlineKeyNames(tenant string) []string {
	out := make([]string, len(onlineRoles))
	for i, role := range onlineRoles {
		out[i] = onlineKeyName(tenant, role)
	}
	return out
}

// ResealOnlineKey re-seals the tenant's online key stored under key (one of
// OnlineKeyNames) with reseal (the same aad); it returns the value to store
// and true when it changed.
func ResealOnlineKey(tenant, key string, stored []byte, reseal kms.ResealFunc) ([]byte, bool, error) {
	for _, role := range onlineRoles {
		if key == onlineKeyName(tenant, role) {
			return reseal(stored, onlineKeyAAD(tenant, role))
		}
	}
	return nil, false, nil
}
