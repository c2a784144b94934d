package kms

import (
	"context"
	"time"
)

// SetRefresh sets how long a keyring trusts the newest version it knows,
// until the returned func restores it.
func SetRefresh(d time.Duration) (restore func()) {
	old := refresh
	refresh = d
	return func() { refresh = old }
}

// DataKey returns the tenant's raw data key of version v, for tests that
// look for it where it must not be.
func (k *Keyring) DataKey(ctx context.Context, tenant string, v uint32) ([]byte, error) {
	return k.dek(ctx, tenant, v)
}
