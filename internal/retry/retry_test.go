package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/retry"
)

func TestBackoffDelayStaysInItsBounds(t *testing.T) {
	b := retry.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for attempt := 1; attempt <= 40; attempt++ {
		ceil := min(b.Base<<min(attempt-1, 30), b.Max)
		for range 200 {
			d := b.Delay(attempt)
			if d < b.Base/2 || d >= b.Base/2+ceil {
				t.Fatalf("attempt %d: delay %v outside [%v, %v)", attempt, d, b.Base/2, b.Base/2+ceil)
			}
		}
	}
}

func TestBackoffDelayIsJittered(t *testing.T) {
	b := retry.Backoff{Base: time.Second, Max: time.Minute}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[b.Delay(5)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 delays gave only %d values: not jittered", len(seen))
	}
}

func TestUntilRetriesUntilSuccess(t *testing.T) {
	calls, failures := 0, 0
	err := retry.Until(context.Background(), retry.Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond},
		func(context.Context) error {
			calls++
			if calls < 4 {
				return errors.New("not yet")
			}
			return nil
		}, func(error, time.Duration) { failures++ })
	if err != nil || calls != 4 || failures != 3 {
		t.Fatalf("err %v, calls %d, failures %d; want nil, 4, 3", err, calls, failures)
	}
}

func TestUntilStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := retry.Until(ctx, retry.Backoff{Base: time.Hour, Max: time.Hour}, func(context.Context) error {
		calls++
		cancel()
		return errors.New("down")
	}, nil)
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("err %v after %d calls; want context.Canceled after 1", err, calls)
	}
}

func TestForeverRunsAgainUntilCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	retry.Forever(ctx, retry.Backoff{Base: time.Millisecond, Max: time.Millisecond}, func(context.Context) error {
		runs++
		if runs == 5 {
			cancel()
		}
		return nil
	}, nil)
	if runs != 5 {
		t.Fatalf("ran %d times, want 5", runs)
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if retry.Sleep(ctx, time.Hour) {
		t.Fatal("Sleep reported a full wait on a canceled context")
	}
	if !retry.Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep did not report a full wait")
	}
}
