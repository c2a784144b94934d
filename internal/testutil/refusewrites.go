package testutil

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// RefuseWrites makes a JetStream stream refuse every new message, as a
// full stream does (its message limit reached, discarding new), until
// restore is called (also at the test's end); what it holds stays. It
// stands for a stream that cannot be written, and heals without a restart.
func RefuseWrites(t testing.TB, js jetstream.JetStream, stream string) (restore func()) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	full := cfg
	full.MaxMsgs, full.Discard = int64(max(info.State.Msgs, 1)), jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatalf("make stream %s full: %v", stream, err)
	}
	restored := false
	restore = func() {
		t.Helper()
		if restored {
			return
		}
		restored = true
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("restore stream %s: %v", stream, err)
		}
	}
	t.Cleanup(restore)
	return restore
}
