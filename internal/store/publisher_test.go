package store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// ghostStore is a store whose tenant "ghost" has keys but no streams, and
// whose tenant "acme" has both.
func ghostStore(t *testing.T) (*store.Store, *backbone.Backbone) {
	t.Helper()
	bb, keys := storetest.Backbone(t, "acme", "ghost")
	s := store.New(store.Config{}, bb, bb.JS, keys)
	if err := s.EnsureTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	return s, bb
}

// silence makes a tenant without streams swallow its writes: a core
// subscriber takes them, so nobody answers "no stream", and nobody
// acknowledges them either.
func silence(t *testing.T, nc *nats.Conn, tenant string) {
	t.Helper()
	sub, err := nc.Subscribe("iot."+tenant+".>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestStoreWriteWithoutAcknowledgementFails: a write that JetStream never
// acknowledges is never reported stored; it fails once its time is up.
func TestStoreWriteWithoutAcknowledgementFails(t *testing.T) {
	s, bb := ghostStore(t)
	defer store.SetPublishTimeout(300 * time.Millisecond)()
	silence(t, bb.JS.Conn(), "ghost")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name  string
		write func() (store.Waiter, error)
	}{
		{name: "message", write: func() (store.Waiter, error) {
			return s.AppendAsync(ctx, "ghost", []store.Record{rec("g1", `{"n":1}`)})
		}},
		{name: "rejected", write: func() (store.Waiter, error) {
			return s.AppendRejectedAsync(ctx, "ghost", []store.Rejected{{Gateway: "TSGW06ACM00000001", ReceivedAt: time.Now(), Code: "c", Reason: "r", Raw: []byte("{}")}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := tc.write()
			if err != nil {
				t.Fatal(err)
			}
			if w.Ready() {
				t.Fatal("ready before any acknowledgement")
			}
			res, err := w.Wait(ctx)
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("wait: %v, want a failure for the missing acknowledgement", err)
			}
			if res.Stored != 0 || res.Duplicates != 0 {
				t.Errorf("result %+v, want nothing counted", res)
			}
		})
	}
}

// TestStoreWritesFailWhenTheConnectionCloses: writes in flight when the
// connection to JetStream closes fail (they do not wait out their timeout,
// nor hang), and later writes fail at once.
func TestStoreWritesFailWhenTheConnectionCloses(t *testing.T) {
	s, bb := ghostStore(t)
	nc := bb.JS.Conn()
	silence(t, nc, "ghost")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second) // under the 10 s timeout
	defer cancel()
	w, err := s.AppendAsync(ctx, "ghost", []store.Record{rec("g1", `{"n":1}`), rec("g2", `{"n":2}`)})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if _, err := w.Wait(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait: %v, want the closed connection's failure", err)
	}
	if _, err := s.AppendAsync(ctx, "acme", []store.Record{rec("g3", `{"n":3}`)}); err == nil {
		t.Fatal("a write after the close was accepted")
	}
}

// TestStoreCloseEndsThePublisher: Close fails the writes still waiting for
// JetStream's acknowledgement (at once, not after their timeout), later
// writes fail with ErrClosed, and the acknowledgements' subscription (and
// the goroutine that times writes out) ends although the connection stays
// open.
func TestStoreCloseEndsThePublisher(t *testing.T) {
	s, bb := ghostStore(t)
	nc := bb.JS.Conn()
	silence(t, nc, "ghost")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second) // under the 10 s timeout
	defer cancel()
	subs := nc.NumSubscriptions()
	w, err := s.AppendAsync(ctx, "ghost", []store.Record{rec("g1", `{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := nc.NumSubscriptions(); got != subs+1 {
		t.Fatalf("%d subscriptions after a write, want %d (the acknowledgements')", got, subs+1)
	}
	s.Close()
	tu.Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
		if !w.Ready() {
			return errors.New("the write in flight is not settled")
		}
		return nil
	})
	if _, err := w.Wait(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("write in flight at Close: %v, want ErrClosed", err)
	}
	if _, err := s.AppendAsync(ctx, "acme", []store.Record{rec("g2", `{"n":2}`)}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("write after Close: %v, want ErrClosed", err)
	}
	if got := nc.NumSubscriptions(); got != subs {
		t.Errorf("%d subscriptions after Close, want %d", got, subs)
	}
}

// startExternal starts a NATS JetStream server listening on port, storing
// in dir: what --nats-url connects to.
func startExternal(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{ServerName: "external", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("external NATS not ready")
	}
	return srv
}

// TestStoreWritesAcrossAReconnect: writes keep going while an external
// NATS server (--nats-url) restarts. Those in flight across the reconnect
// settle (stored, or failed within the publish timeout: none hangs), every
// write reported stored is in the stream once, and writes are stored
// again after the reconnect.
func TestStoreWritesAcrossAReconnect(t *testing.T) {
	defer store.SetPublishTimeout(2 * time.Second)()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	var srv atomic.Pointer[server.Server]
	srv.Store(startExternal(t, dir, port))
	t.Cleanup(func() { srv.Load().Shutdown() }) // after the backbone's close
	bb, keys := storetest.BackboneWith(t, backbone.Config{URLs: []string{fmt.Sprintf("nats://127.0.0.1:%d", port)}, Replicas: 1}, "acme")
	s := storetest.StoreOn(t, bb, keys, store.Config{}, "acme")
	t.Cleanup(s.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ta tally
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("r%d-%05d", g, i)
				stored, problem := appendOne(ctx, s, id, 15*time.Second)
				ta.add(id, stored, problem)
				if !stored {
					time.Sleep(50 * time.Millisecond) // not a spin while disconnected
				}
			}
		})
	}
	tu.Eventually(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := ta.stored(); n < 200 {
			return fmt.Errorf("%d stored before the restart", n)
		}
		return nil
	})
	srv.Load().Shutdown()
	srv.Load().WaitForShutdown()
	before := ta.stored()
	srv.Store(startExternal(t, dir, port))
	tu.Eventually(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := ta.stored() - before; n < 200 {
			return fmt.Errorf("%d stored after the restart", n)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	ta.check(t, streamMessages(t, s, bb))
}
