package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/store"
)

// TestStoreEraseDeviceRefusesAnotherSensorsContinuation: a continuation
// an erasure of one sensor returned does not position the erasure of
// another, nor of the same sensor of another tenant (it would skip that
// sensor's dead letters and answer complete): it is refused, and the
// other sensor's erasure from the start is whole.
func TestStoreEraseDeviceRefusesAnotherSensorsContinuation(t *testing.T) {
	defer store.SetEraseBounds(store.SecureEraseMax, 1)()
	// Each look at the clock is a second later.
	now := time.Unix(1_800_000_000, 0)
	defer store.SetEraseClock(func() time.Time { now = now.Add(time.Second); return now })()
	f := newErasureFixture(t)
	ctx := context.Background()

	// Erase A until its continuation is past the dead letters.
	next := ""
	for calls := 0; ; calls++ {
		got, err := f.s.EraseDevice(ctx, "acme", eraseA, store.EraseOptions{Next: next, Deadline: now.Add(3 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if got.Complete || calls == 100 {
			t.Fatal("the erasure of A ended before its continuation was past the dead letters")
		}
		next = got.Next
		if got.Rejected > 0 {
			break
		}
	}
	_, err := f.s.EraseDevice(ctx, "acme", eraseB, store.EraseOptions{Next: next})
	if !store.ErrEraseCursor.Is(err) {
		t.Errorf("erasing B with A's continuation: %v, want %s", err, store.ErrEraseCursor.Code())
	}
	_, err = f.s.EraseDevice(ctx, "beta", eraseA, store.EraseOptions{Next: next})
	if !store.ErrEraseCursor.Is(err) {
		t.Errorf("erasing A of another tenant with acme's continuation: %v, want %s", err, store.ErrEraseCursor.Code())
	}
	got, err := f.s.EraseDevice(ctx, "acme", eraseB, store.EraseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.DeadLetters != 2 || !got.Complete {
		t.Errorf("erasing B from the start: %+v, want its 2 dead letters and complete", got)
	}
}
