package ingest

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	tu "github.com/iotransit/iotransit/internal/testutil"
)

// failingAccept is a listener whose first Accept fails as it does when the
// process is out of file descriptors.
type failingAccept struct {
	net.Listener
	failed atomic.Bool
}

func (f *failingAccept) Accept() (net.Conn, error) {
	if !f.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return f.Listener.Accept()
}

// TestIngestListenerSurvivesAcceptErrors (security review of issue 8,
// review3): Serve returns for good on any Accept error that is not a
// timeout. Running out of file descriptors (EMFILE, ENFILE: anyone can
// open connections to the API port, or to this one) is such an error and
// passes: after it, no gateway can connect until the process restarts.
// net/http's Server waits and accepts again; the ingest must go on too.
func TestIngestListenerSurvivesAcceptErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	l := &tlsListener{
		id: "review", base: &tls.Config{}, timeout: time.Second,
		pending: make(chan struct{}, 8), perAddr: map[string]int{}, perAddrMax: 8,
		m: newMetrics(prometheus.NewRegistry()), log: slog.New(tu.Logger(t).Handler()),
		emit:  func(Event) { refused.Add(1) },
		conns: map[net.Conn]*gatewayConn{}, drain: time.Second,
		ln: &failingAccept{Listener: inner},
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		l.Serve(func(string, net.Conn) error { return nil })
	}()
	defer func() { l.Close(nil); <-served }()
	// A bare connect after the failure: accepted, handshake refused, recorded.
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-served:
			return nil
		default:
		}
		if refused.Load() == 0 {
			return errors.New("the connection is not handled yet")
		}
		return nil
	})
	select {
	case <-served:
		t.Fatal("Serve returned after one failed Accept (EMFILE): the listener no longer accepts gateways")
	default:
	}
}
