//go:build race

package testutil

// RaceEnabled reports whether the race detector is on: tests that count
// allocations skip then (it allocates, and sync.Pool drops objects at
// random under it).
const RaceEnabled = true
