package retry_test

import (
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/retry"
)

// TestBackoffCeilingNeverShrinksOnOverflow: once Base·2^(n-1) no longer fits
// in a time.Duration the ceiling must stay at Max. Base<<30 can wrap around
// to a small positive value (here 2^34+1 ns << 30 wraps to 2^30 ns, about
// 1.07s), which the `ceil <= 0` guard does not catch: after 31 failures
// the wait would fall from up to an hour back to about Base/2 + 1s.
// (forward's worker capped the shift at 20 before issue 7, so the wrap
// needed a RetryBase of hours; at 30 it needs about 17s.)
func TestBackoffCeilingNeverShrinksOnOverflow(t *testing.T) {
	b := retry.Backoff{Base: 1<<34 + 1, Max: time.Hour}
	limit := b.Base/2 + 2*time.Second
	for range 200 {
		if b.Delay(31) > limit {
			return // the ceiling is Max: some waits are long
		}
	}
	t.Fatalf("200 delays after 31 failures all below %v: the ceiling wrapped around instead of staying at Max %v", limit, b.Max)
}
