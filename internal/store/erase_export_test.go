package store

import "time"

// SetEraseBounds sets how many records of a part an erasure overwrites in
// place and how many records a scan fetches at once, and returns a
// function that restores them.
func SetEraseBounds(secureMax, batch int) (restore func()) {
	oldMax, oldBatch := secureEraseMax, scanBatch
	secureEraseMax, scanBatch = secureMax, batch
	return func() { secureEraseMax, scanBatch = oldMax, oldBatch }
}

// SetEraseClock sets the clock an erasure compares its deadline with and
// returns a function that restores it.
func SetEraseClock(now func() time.Time) (restore func()) {
	old := eraseClock
	eraseClock = now
	return func() { eraseClock = old }
}
