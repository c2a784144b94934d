package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// Walk calls fn with every message stored in stream, in order, read
// directly from JetStream (deleted ones are stepped over); a read that
// fails fails the test.
func Walk(tb testing.TB, js jetstream.JetStream, stream string, fn func(*jetstream.RawStreamMsg)) {
	tb.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return
		}
		if err != nil {
			tb.Fatal(err)
		}
		fn(m)
		seq = m.Sequence + 1
	}
}
