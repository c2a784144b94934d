package kms

import "time"

// SetRefresh sets how long a keyring trusts the newest version it knows,
// until the returned func restores it.
func SetRefresh(d time.Duration) (restore func()) {
	old := refresh
	refresh = d
	return func() { refresh = old }
}
