package ingest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	tu "github.com/iotransit/iotransit/internal/testutil"
)

// abandonConn closes its connection at its second read: a TLS client on it
// sends its ClientHello, reads the server's first flight and goes away in
// the middle of the handshake.
type abandonConn struct {
	net.Conn
	reads int
}

func (c *abandonConn) Read(p []byte) (int, error) {
	if c.reads++; c.reads > 1 {
		_ = c.Conn.Close()
		return 0, net.ErrClosed
	}
	return c.Conn.Read(p)
}

// gateIdle reports what the gate and the listener still hold: nil once no
// connection waits, computes, or counts as pending (in all or per address),
// and no connection is tracked.
func gateIdle(e *gateEnv) error {
	l := e.l
	l.perAddrMu.Lock()
	perAddr := len(l.perAddr)
	l.perAddrMu.Unlock()
	l.connsMu.Lock()
	conns := len(l.conns)
	l.connsMu.Unlock()
	if w, r, s, p := l.gate.waiting.Load(), l.gate.running.Load(), len(l.gate.slots), len(l.pending); w != 0 || r != 0 || s != 0 || p != 0 || perAddr != 0 || conns != 0 {
		return fmt.Errorf("waiting %d, running %d, slots held %d, pending %d, addresses pending %d, tracked %d", w, r, s, p, perAddr, conns)
	}
	return nil
}

// Connections abandoned in every way the handshake can end (the peer
// closes before a byte, sends garbage, stalls in a record, goes away after
// the server's flight, has no certificate, stays silent past the connect
// timeout, waits at the gate past it, completes and leaves) give back every
// slot, token wait and pending count; each is counted once (a handshake
// ok or failed, or a refusal at the gate); and a gateway still connects.
func TestIngestGateAbandonedConnectionsLeakNothing(t *testing.T) {
	const timeout = 700 * time.Millisecond
	e := newGateEnv(t, 1, 200, timeout, 0)
	dialRaw := func() (net.Conn, error) { return net.DialTimeout("tcp", e.addr, 5*time.Second) }
	// sendAndHold sends b and keeps the connection open past the timeout.
	sendAndHold := func(b []byte) error {
		c, err := dialRaw()
		if err != nil {
			return err
		}
		time.AfterFunc(2*timeout, func() { c.Close() })
		_, err = c.Write(b)
		return err
	}
	gw := tu.SelfSigned(t, "TSGW06ACM00000001")
	ways := []struct {
		name string
		run  func() error
	}{
		{name: "closes at once", run: func() error {
			c, err := dialRaw()
			if err != nil {
				return err
			}
			return c.Close()
		}},
		{name: "sends garbage", run: func() error {
			c, err := dialRaw()
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			return err
		}},
		{name: "stalls inside a record", run: func() error {
			return sendAndHold([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}) // a handshake record of 512 bytes, one sent
		}},
		{name: "silent past the timeout", run: func() error { return sendAndHold(nil) }},
		{name: "leaves after the server's flight", run: func() error {
			c, err := dialRaw()
			if err != nil {
				return err
			}
			tc := tls.Client(&abandonConn{Conn: c}, &tls.Config{Certificates: []tls.Certificate{*gw}, InsecureSkipVerify: true})
			if err := tc.Handshake(); err == nil {
				return errors.New("handshake completed on a connection closed in its middle")
			}
			return nil
		}},
		{name: "no certificate", run: func() error {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.addr, &tls.Config{InsecureSkipVerify: true})
			if err == nil {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Read(make([]byte, 1)) // TLS 1.3: the refusal comes after the client's flight
				c.Close()
			}
			return nil
		}},
		{name: "completes and leaves", run: func() error {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.addr, &tls.Config{Certificates: []tls.Certificate{*gw}, InsecureSkipVerify: true})
			if err == nil { // else it waited past its connect timeout
				c.Close()
			}
			return nil
		}},
	}
	const rounds = 4
	// The only slot held a while: the first connections wait at the gate,
	// some past their connect timeout.
	if err := e.l.gate.enter(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(timeout+200*time.Millisecond, e.l.gate.leave)
	var wg sync.WaitGroup
	errs := make(chan error, rounds*len(ways))
	for r := range rounds {
		for _, w := range ways {
			wg.Go(func() {
				if err := w.run(); err != nil {
					errs <- fmt.Errorf("round %d, %s: %w", r, w.name, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tu.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error { return gateIdle(e) })

	// Each connection ends once: established, or one refusal recorded and
	// counted under its reason.
	total := rounds * len(ways)
	reasons := map[string]int{}
	established, refused := 0, 0
	for drained := false; !drained; {
		select {
		case <-e.established:
			established++
		case ev := <-e.refusals:
			refused++
			reasons[ev.Reason]++
		default:
			drained = true
		}
	}
	if established+refused != total {
		t.Errorf("%d established + %d refused (%v), want each of the %d connections once", established, refused, reasons, total)
	}
	for reason, n := range reasons {
		if got := tu.Counter(t, e.reg, "iotransit_ingest_connections_refused_total", map[string]string{"reason": reason}); got != float64(n) {
			t.Errorf("refusals %s counted %v, recorded %d", reason, got, n)
		}
	}
	if reasons[reasonHandshakeWait] == 0 {
		t.Errorf("no connection refused at the gate (%v): the test did not make any wait past its connect timeout", reasons)
	}
	ok := tu.Counter(t, e.reg, "iotransit_ingest_handshakes_total", map[string]string{"result": "ok"})
	if int(ok) != established {
		t.Errorf("handshakes ok %v, established %d", ok, established)
	}

	if err := e.dial(tu.SelfSigned(t, "TSGW06ACM00000002")); err != nil {
		t.Fatalf("a gateway after the abandoned connections: %v", err)
	}
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error { return gateIdle(e) })
}

// Closing the listener while connections wait at the gate (for a slot,
// and for a token of the rate) ends every wait at once: Close returns
// promptly, and nothing stays waiting or pending.
func TestIngestGateCloseEndsWaits(t *testing.T) {
	tests := []struct {
		name      string
		perSecond float64
		holdSlot  bool
	}{
		{name: "waiting for a slot", holdSlot: true},
		{name: "waiting for a token", perSecond: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newGateEnv(t, 1, tc.perSecond, 30*time.Second, 0)
			if tc.holdSlot {
				if err := e.l.gate.enter(time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			const n = 6
			for range n {
				c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			want := int64(n)
			if !tc.holdSlot {
				want = n - 1 // the burst of one goes through (and reads, holding no slot)
			}
			tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
				if w := e.l.gate.waiting.Load(); w != want {
					return fmt.Errorf("%d waiting at the gate, want %d", w, want)
				}
				return nil
			})
			closed := make(chan struct{})
			go func() { e.l.Close(nil); close(closed) }()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not return with connections waiting at the gate")
			}
			if tc.holdSlot {
				e.l.gate.leave()
			}
			tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error { return gateIdle(e) })
			if got := tu.Counter(t, e.reg, "iotransit_ingest_connections_refused_total", map[string]string{"reason": reasonHandshakeWait}); got != 0 {
				t.Errorf("%v connections refused as waiting past their timeout at shutdown, want 0", got)
			}
		})
	}
}

// A handshake whose connect timeout passes while it waits to take a slot
// again, its peer's message read, is the gate's refusal: counted and
// recorded as handshake_wait_timeout, as one that waited before its first
// byte, not as a peer too slow for its handshake (handshake_timeout).
func TestIngestGateWaitMidHandshakeIsTheGates(t *testing.T) {
	e := newGateEnv(t, 1, 0, 500*time.Millisecond, 0)
	raw, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// Its first slot taken and given back: the handshake reads.
	tu.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		e.l.connsMu.Lock()
		n := len(e.l.conns)
		e.l.connsMu.Unlock()
		if w, r := e.l.gate.waiting.Load(), e.l.gate.running.Load(); n != 1 || w != 0 || r != 0 {
			return fmt.Errorf("tracked %d, waiting %d, running %d", n, w, r)
		}
		return nil
	})
	if err := e.l.gate.enter(time.Now().Add(time.Second)); err != nil { // the only slot, held past the timeout
		t.Fatal(err)
	}
	defer e.l.gate.leave()
	tc := tls.Client(raw, &tls.Config{Certificates: []tls.Certificate{*tu.SelfSigned(t, "TSGW06ACM00000001")}, InsecureSkipVerify: true})
	if err := tc.Handshake(); err == nil {
		t.Fatal("a handshake that could not take a slot completed")
	}
	select {
	case ev := <-e.refusals:
		if ev.Reason != reasonHandshakeWait || ev.Tenant != "" {
			t.Errorf("recorded %+v, want an unattributed refusal %s", ev, reasonHandshakeWait)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no refusal recorded")
	}
	if got := tu.Counter(t, e.reg, "iotransit_ingest_connections_refused_total", map[string]string{"reason": reasonHandshakeWait}); got != 1 {
		t.Errorf("refusals %s = %v, want 1", reasonHandshakeWait, got)
	}
}

// A connection refused at the gate waited too: its wait is in
// iotransit_ingest_handshake_wait_seconds, so that during a storm the
// histogram shows the waits that ran out, not only those that got through.
func TestIngestGateWaitHistogramKeepsRefusedWaits(t *testing.T) {
	e := newGateEnv(t, 1, 0, 300*time.Millisecond, 0)
	if err := e.l.gate.enter(time.Now().Add(time.Second)); err != nil { // the only slot, held
		t.Fatal(err)
	}
	defer e.l.gate.leave()
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case ev := <-e.refusals:
		if ev.Reason != reasonHandshakeWait {
			t.Fatalf("recorded %+v, want %s", ev, reasonHandshakeWait)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no refusal recorded")
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "iotransit_ingest_handshake_wait_seconds" {
			for _, m := range mf.GetMetric() {
				count, sum = count+m.GetHistogram().GetSampleCount(), sum+m.GetHistogram().GetSampleSum()
			}
		}
	}
	if count != 1 || sum < 0.25 {
		t.Errorf("wait histogram has %d samples summing %gs, want the refused one's wait of about 0.3s", count, sum)
	}
}
