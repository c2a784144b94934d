package store

import "time"

// SetBudgets lowers the per-page scan and span budgets (0 keeps one) and
// returns a function that restores them.
func SetBudgets(scan int, span uint64) (restore func()) {
	oldScan, oldSpan := scanBudget, spanBudget
	if scan > 0 {
		scanBudget = scan
	}
	if span > 0 {
		spanBudget = span
	}
	return func() { scanBudget, spanBudget = oldScan, oldSpan }
}

// SetPublishTimeout sets how long a write waits for its acknowledgement and
// returns a function that restores it.
func SetPublishTimeout(d time.Duration) (restore func()) {
	old := publishTimeout
	publishTimeout = d
	return func() { publishTimeout = old }
}
