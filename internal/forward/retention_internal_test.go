package forward

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestApplyDeadLetterRetentionReportsALookupFailure: only a dead-letter
// stream not made yet may be skipped; a lookup that fails (here a
// cancelled request) is an error, so that the caller retries instead of
// counting the retention as applied.
func TestApplyDeadLetterRetentionReportsALookupFailure(t *testing.T) {
	srv, err := server.NewServer(&server.Options{DontListen: true, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{js: js}
	if err := e.ApplyDeadLetterRetention(context.Background(), "acme", []string{"int1"}); err != nil {
		t.Errorf("a stream not made yet: %v, want skipped", err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.ApplyDeadLetterRetention(cancelled, "acme", []string{"int1"}); err == nil {
		t.Error("a failed lookup counted as applied")
	}
}
