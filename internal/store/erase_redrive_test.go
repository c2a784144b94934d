package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/store"
)

// TestStoreEraseDeviceCatchesARedriveDuringTheDeadLetters: a redrive of
// one of the sensor's dead letters that runs while the erasure walks the
// dead-letter streams (it copies the dead letter into the message stream,
// then deletes it) leaves no copy once the erasure answers complete.
func TestStoreEraseDeviceCatchesARedriveDuringTheDeadLetters(t *testing.T) {
	defer store.SetEraseBounds(store.SecureEraseMax, 1)()
	f := newErasureFixture(t)
	ctx := context.Background()
	deadLettersOfA := func() (n int, last *jetstream.RawStreamMsg, st jetstream.Stream) {
		for _, i := range []string{"i1", "i2"} {
			s, err := f.bb.JS.Stream(ctx, names.DeadLetterStream("acme", i))
			if err != nil {
				t.Error(err)
				return 0, nil, nil
			}
			for seq := uint64(1); seq <= 3; seq++ {
				m, err := s.GetMsg(ctx, seq)
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					continue
				}
				if err != nil {
					t.Error(err)
					return 0, nil, nil
				}
				if m.Header.Get("Iot-Tuid") == eraseA {
					n, last, st = n+1, m, s
				}
			}
		}
		return n, last, st
	}
	before, _, _ := deadLettersOfA()
	redriven := false
	defer store.SetEraseClock(func() time.Time {
		// Once the erasure deleted some of A's dead letters, and before
		// it deleted them all, one of those left is re-driven.
		if n, m, st := deadLettersOfA(); !redriven && n > 0 && n < before {
			redriven = true
			if err := f.s.Redrive(ctx, "acme", "i2", m.Header, m.Data); err != nil {
				t.Error(err)
			}
			if err := st.DeleteMsg(ctx, m.Sequence); err != nil {
				t.Error(err)
			}
		}
		return time.Now()
	})()

	// A deadline (far off) makes the erasure look at the clock.
	got, err := f.s.EraseDevice(ctx, "acme", eraseA, store.EraseOptions{Deadline: time.Now().Add(time.Hour)})
	if err != nil || !got.Complete {
		t.Fatalf("erasure %+v, %v", got, err)
	}
	if !redriven {
		t.Fatal("no redrive ran during the erasure: the test proves nothing")
	}
	sameCounts(t, "acme after", f.inventory(t, "acme"), wantInventory(true))
}
