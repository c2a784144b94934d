package api

import "time"

// SetEraseBudget sets how long one erasure request works
// (eraseBudget) until restore is called.
func SetEraseBudget(d time.Duration) (restore func()) {
	old := eraseBudget
	eraseBudget = d
	return func() { eraseBudget = old }
}
