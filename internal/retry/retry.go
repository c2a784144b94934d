// Package retry is iotransit's one way to wait between attempts:
// exponential backoff with full jitter (so that many parties that failed
// together do not retry together), and loops that run a task again until
// it succeeds or its context ends. Forwarding, the node's repair loops and
// the gateway agent's reconnects all use it.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with full jitter: the wait before attempt
// n (1, 2, …) is Base/2 plus a random part below min(Base·2^(n-1), Max).
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the wait after the attempt-th consecutive failure.
func (b Backoff) Delay(attempt int) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	// Double up to Max without ever shifting past it (a shift that
	// overflows can wrap to a small positive value).
	ceil := b.Base
	for i := 1; i < attempt && ceil < b.Max; i++ {
		if ceil > b.Max/2 {
			ceil = b.Max
			break
		}
		ceil *= 2
	}
	if ceil > b.Max {
		ceil = b.Max
	}
	if ceil <= 0 {
		return b.Base / 2
	}
	return b.Base/2 + time.Duration(rand.Int64N(int64(ceil)))
}

// Sleep waits d, or until ctx ends; it reports whether the whole wait passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Until runs fn until it returns nil or ctx ends, waiting b.Delay between
// failures; onError (optional) hears each failure with the wait that
// follows. It returns nil on success, or ctx's error.
func Until(ctx context.Context, b Backoff, fn func(context.Context) error, onError func(err error, wait time.Duration)) error {
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := b.Delay(attempt)
		if onError != nil {
			onError(err, wait)
		}
		if !Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// Forever runs fn again and again until ctx ends, for a task that must
// always be running (a watch, a delivery session): each time it returns,
// onEnd (optional) hears why and the wait before the next run. The waits
// grow as b says and start over after a run that lasted longer than
// b.Max (it was healthy).
func Forever(ctx context.Context, b Backoff, fn func(context.Context) error, onEnd func(err error, wait time.Duration)) {
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := fn(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > b.Max {
			attempt = 0
		}
		attempt++
		wait := b.Delay(attempt)
		if onEnd != nil {
			onEnd(err, wait)
		}
		if !Sleep(ctx, wait) {
			return
		}
	}
}
