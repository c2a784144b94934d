package ingest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/store"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/storetest"
)

// gatedStore is the real store (embedded JetStream) behind a gate: while
// holding, the acknowledgements of its writes are released only when the
// test says so, in any order, and the write of one chosen AppendAsync call
// fails (it is never written).
type gatedStore struct {
	st *store.Store

	mu      sync.Mutex
	hold    bool
	failAt  int // the AppendAsync call (1-based) whose writes fail; 0: none
	calls   int
	waiters []*gatedWaiter // of AppendAsync, in call order
	begun   chan struct{}  // one token per AppendAsync call
}

type gatedWaiter struct {
	inner   store.Waiter // nil: the write fails
	release chan struct{}
	once    sync.Once
}

func (w *gatedWaiter) open() { w.once.Do(func() { close(w.release) }) }

func (w *gatedWaiter) Ready() bool {
	select {
	case <-w.release:
		return w.inner == nil || w.inner.Ready()
	default:
		return false
	}
}

func (w *gatedWaiter) Wait(ctx context.Context) (store.AppendResult, error) {
	select {
	case <-w.release:
	case <-ctx.Done():
		return store.AppendResult{}, ctx.Err()
	}
	if w.inner == nil {
		return store.AppendResult{}, errors.New("injected store failure")
	}
	return w.inner.Wait(ctx)
}

func (g *gatedStore) AppendAsync(ctx context.Context, tenant string, recs []store.Record) (store.Waiter, error) {
	g.mu.Lock()
	g.calls++
	w := &gatedWaiter{release: make(chan struct{})}
	fail, hold := g.calls == g.failAt, g.hold
	g.waiters = append(g.waiters, w)
	g.mu.Unlock()
	defer func() { g.begun <- struct{}{} }()
	if !hold {
		w.open()
	}
	if fail {
		return w, nil
	}
	inner, err := g.st.AppendAsync(ctx, tenant, recs)
	if err != nil {
		return nil, err
	}
	w.inner = inner
	return w, nil
}

func (g *gatedStore) AppendRejectedAsync(ctx context.Context, tenant string, recs []store.Rejected) (store.Waiter, error) {
	return g.st.AppendRejectedAsync(ctx, tenant, recs)
}

// waiter returns the i-th (0-based) AppendAsync call's waiter.
func (g *gatedStore) waiter(i int) *gatedWaiter {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiters[i]
}

// pipeEnv is an ingest over a gatedStore and a real JetStream, whose
// gateway connections are attached directly (TLS over loopback TCP, no
// certificate check: the hook's identity is given).
type pipeEnv struct {
	srv   *Server
	gated *gatedStore
	st    *store.Store
}

const (
	pipeTenant = "acme"
	pipeSerial = "TSGW06ACM00000001"
	pipeSensor = "TSEN01ABC12345678"
)

func newPipeEnv(t *testing.T, cfg Config) *pipeEnv {
	t.Helper()
	st, _, _ := storetest.Store(t, pipeTenant)
	dir := &oneGateway{g: registry.Gateway{Tenant: pipeTenant, Serial: pipeSerial, State: registry.StateActive, Incarnation: "i1",
		Certificates: []registry.Certificate{{Serial: "c1", NotAfter: time.Now().Add(time.Hour)}}}}
	gated := &gatedStore{st: st, begun: make(chan struct{}, 1024)}
	cfg.Addr = "127.0.0.1:0"
	if cfg.PersistTimeout == 0 {
		cfg.PersistTimeout = 10 * time.Second * tu.Slowdown()
	}
	srv, err := New(cfg, &tls.Config{}, dir, gated, prometheus.NewRegistry(), tu.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &pipeEnv{srv: srv, gated: gated, st: st}
}

// rawClient speaks MQTT bytes to the ingest: what it sends is encoded by
// mochi's packets, what it gets is decoded into got, in order.
type rawClient struct {
	t       *testing.T
	conn    *tls.Conn
	version byte
	got     chan packets.Packet
	gc      *gatewayConn // the server's side
}

// dial attaches a gateway connection of pipeSerial to the broker and
// connects it with MQTT version (4 or 5).
func (e *pipeEnv) dial(t *testing.T, version byte) (*rawClient, packets.Packet) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srvRaw, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	server := tls.Server(srvRaw, &tls.Config{Certificates: []tls.Certificate{*tu.SelfSigned(t, "localhost")}})
	client := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	done := make(chan error, 1)
	go func() { done <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	gc := &gatewayConn{Conn: server, id: Identity{Tenant: pipeTenant, Serial: pipeSerial, CertSerial: "c1"}}
	go func() { _ = e.srv.broker.EstablishConnection("gateways", gc) }()

	c := &rawClient{t: t, conn: client, version: version, got: make(chan packets.Packet, 4096), gc: gc}
	go c.read()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: pipeSerial}})
	ack := c.next(t)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("CONNECT answered %+v", ack.FixedHeader)
	}
	return c, ack
}

// read decodes what the server sends until the connection closes (then
// got is closed).
func (c *rawClient) read() {
	defer close(c.got)
	r := bufio.NewReader(c.conn)
	for {
		b, err := r.ReadByte()
		if err != nil {
			return
		}
		var pk packets.Packet
		if err := pk.FixedHeader.Decode(b); err != nil {
			return
		}
		n, _, err := packets.DecodeLength(r)
		if err != nil {
			return
		}
		pk.FixedHeader.Remaining = n
		pk.ProtocolVersion = c.version
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Connack:
			err = pk.ConnackDecode(body)
		case packets.Puback:
			err = pk.PubackDecode(body)
		case packets.Disconnect:
			err = pk.DisconnectDecode(body)
		}
		if err != nil {
			return
		}
		c.got <- pk
	}
}

// send writes packets in one write (several PUBLISHes in one TLS record:
// a client that does not wait).
func (c *rawClient) send(pks ...packets.Packet) {
	c.t.Helper()
	var buf bytes.Buffer
	for _, pk := range pks {
		pk.ProtocolVersion = c.version
		var err error
		switch pk.FixedHeader.Type {
		case packets.Connect:
			err = pk.ConnectEncode(&buf)
		case packets.Publish:
			err = pk.PublishEncode(&buf)
		case packets.Subscribe:
			err = pk.SubscribeEncode(&buf)
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next packet from the server, failing the test if none
// comes or the connection closed.
func (c *rawClient) next(t *testing.T) packets.Packet {
	t.Helper()
	select {
	case pk, ok := <-c.got:
		if !ok {
			t.Fatal("connection closed")
		}
		return pk
	case <-time.After(10 * time.Second * tu.Slowdown()):
		t.Fatal("nothing from the server")
	}
	return packets.Packet{}
}

// rest returns what the server sends until it closes the connection.
func (c *rawClient) rest(t *testing.T) []packets.Packet {
	t.Helper()
	var out []packets.Packet
	timeout := time.After(15 * time.Second * tu.Slowdown())
	for {
		select {
		case pk, ok := <-c.got:
			if !ok {
				return out
			}
			out = append(out, pk)
		case <-timeout:
			t.Fatalf("connection not closed; got %d packets", len(out))
		}
	}
}

// publishes returns n QoS 1 publishes of distinct valid messages, packet
// ids from first.
func publishes(first uint16, n int) []packets.Packet {
	out := make([]packets.Packet, n)
	for i := range out {
		id := first + uint16(i)
		out[i] = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id,
			TopicName: UpTopic(pipeSerial), Payload: []byte(tu.Thingsee(pipeSensor, 1700000000+int64(id), 20))}
	}
	return out
}

// waitBegun waits until n more AppendAsync calls began.
func (g *gatedStore) waitBegun(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-g.begun:
		case <-time.After(10 * time.Second * tu.Slowdown()):
			t.Fatalf("%d of %d writes began", i, n)
		}
	}
}

// ackIDs are the packet ids of PUBACKs, and whether each was a success.
func ackIDs(t *testing.T, pks []packets.Packet) []uint16 {
	t.Helper()
	var ids []uint16
	for _, pk := range pks {
		if pk.FixedHeader.Type == packets.Puback {
			if pk.ReasonCode != 0 {
				t.Errorf("PUBACK %d: reason 0x%02x", pk.PacketID, pk.ReasonCode)
			}
			ids = append(ids, pk.PacketID)
		}
	}
	return ids
}

func seq(first uint16, n int) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = first + uint16(i)
	}
	return out
}

// TestIngestPipelineAcksInPublishOrder: W publishes sent without waiting
// are all in flight at once (every write begins before any completes), and
// though JetStream's acknowledgements are released last to first, the
// PUBACKs come back in publish order, each only after its message is
// stored; MQTT 5 and 3.1.1.
func TestIngestPipelineAcksInPublishOrder(t *testing.T) {
	for _, version := range []byte{5, 4} {
		t.Run(fmt.Sprintf("MQTT version %d", version), func(t *testing.T) {
			e := newPipeEnv(t, Config{})
			e.gated.hold = true
			c, connack := e.dial(t, version)
			const w = 32
			if version == 5 && connack.Properties.ReceiveMaximum != w {
				t.Errorf("CONNACK announces Receive Maximum %d, want %d", connack.Properties.ReceiveMaximum, w)
			}
			c.send(publishes(1, w)...)
			e.gated.waitBegun(t, w) // all W in flight: none acknowledged yet
			for i := w - 1; i >= 0; i-- {
				e.gated.waiter(i).open()
				if i == w/2 {
					// The later half is stored: still nothing may be
					// acknowledged ahead of the first publish.
					select {
					case pk := <-c.got:
						t.Fatalf("answered %v (id %d) before the first publish was stored", pk.FixedHeader.Type, pk.PacketID)
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
			var acks []packets.Packet
			for range w {
				acks = append(acks, c.next(t))
			}
			if got, want := ackIDs(t, acks), seq(1, w); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("PUBACK ids %v, want %v", got, want)
			}
			msgs, err := e.st.Messages(context.Background(), pipeTenant, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != w {
				t.Errorf("stored %d, want %d", len(msgs), w)
			}
		})
	}
}

// TestIngestPipelineStoreFailureAcksNothingAfter: the k-th of n publishes
// in flight is not stored (its write fails) while every later one is:
// exactly the publishes before k are acknowledged, in order, and then the
// connection ends (MQTT 5: DISCONNECT 0x89; 3.1.1: closed), nothing at or
// after k acknowledged.
func TestIngestPipelineStoreFailureAcksNothingAfter(t *testing.T) {
	const n, k = 12, 5
	for _, version := range []byte{5, 4} {
		t.Run(fmt.Sprintf("MQTT version %d", version), func(t *testing.T) {
			e := newPipeEnv(t, Config{})
			e.gated.hold, e.gated.failAt = true, k
			c, _ := e.dial(t, version)
			c.send(publishes(1, n)...)
			e.gated.waitBegun(t, n)
			for i := n - 1; i >= 0; i-- { // the later ones are stored first
				e.gated.waiter(i).open()
			}
			got := c.rest(t)
			if ids, want := ackIDs(t, got), seq(1, k-1); fmt.Sprint(ids) != fmt.Sprint(want) {
				t.Errorf("PUBACK ids %v, want %v", ids, want)
			}
			var disconnect *packets.Packet
			for i := range got {
				if got[i].FixedHeader.Type == packets.Disconnect {
					disconnect = &got[i]
					if i != len(got)-1 {
						t.Errorf("packets after the DISCONNECT: %d", len(got)-1-i)
					}
				}
			}
			if version == 5 && (disconnect == nil || disconnect.ReasonCode != packets.ErrServerBusy.Code) {
				t.Errorf("ended with %+v, want DISCONNECT 0x89", disconnect)
			}
		})
	}
}

// TestIngestPipelineReceiveMaximum: an MQTT 5 client with W publishes
// unacknowledged that sends one more is disconnected with 0x93, and none
// is acknowledged; an MQTT 3.1.1 client, told no maximum, is not read
// beyond W until the oldest is answered, and then every publish is.
func TestIngestPipelineReceiveMaximum(t *testing.T) {
	const w = 4
	t.Run("MQTT 5", func(t *testing.T) {
		e := newPipeEnv(t, Config{ReceiveMaximum: w})
		e.gated.hold = true
		c, connack := e.dial(t, 5)
		if connack.Properties.ReceiveMaximum != w {
			t.Errorf("CONNACK announces Receive Maximum %d, want %d", connack.Properties.ReceiveMaximum, w)
		}
		c.send(publishes(1, w+1)...)
		got := c.rest(t)
		if len(got) != 1 || got[0].FixedHeader.Type != packets.Disconnect || got[0].ReasonCode != packets.ErrReceiveMaximum.Code {
			t.Fatalf("got %+v, want only DISCONNECT 0x93", got)
		}
	})
	t.Run("MQTT 3.1.1", func(t *testing.T) {
		e := newPipeEnv(t, Config{ReceiveMaximum: w})
		e.gated.hold = true
		c, _ := e.dial(t, 4)
		c.send(publishes(1, w+3)...)
		e.gated.waitBegun(t, w)
		select {
		case <-e.gated.begun:
			t.Fatalf("more than %d publishes in flight", w)
		case <-time.After(200 * time.Millisecond):
		}
		e.gated.waiter(0).open() // one answered: one more is read
		if pk := c.next(t); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 1 {
			t.Fatalf("got %v id %d, want PUBACK 1", pk.FixedHeader.Type, pk.PacketID)
		}
		e.gated.waitBegun(t, 1)
		e.gated.mu.Lock()
		e.gated.hold = false
		e.gated.mu.Unlock()
		for i := 1; i < w+1; i++ {
			e.gated.waiter(i).open()
		}
		var acks []packets.Packet
		for range w + 2 {
			acks = append(acks, c.next(t))
		}
		if got, want := ackIDs(t, acks), seq(2, w+2); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("PUBACK ids %v, want %v", got, want)
		}
	})
}

// TestIngestPipelineShutdownAnswersWhatItRead: the listener shuts a
// connection down (as tlsListener.Close does each one) while publishes are
// in flight: each gets its PUBACK once stored, and only then does an MQTT 5
// gateway get DISCONNECT 0x8B.
func TestIngestPipelineShutdownAnswersWhatItRead(t *testing.T) {
	const n = 6
	e := newPipeEnv(t, Config{})
	e.gated.hold = true
	c, _ := e.dial(t, 5)
	c.send(publishes(1, n)...)
	e.gated.waitBegun(t, n)
	closed := make(chan struct{})
	go func() {
		c.gc.shutdown(time.Now().Add(5 * time.Second))
		close(closed)
	}()
	sess, ok := e.srv.hook.session(pipeTenant, pipeSerial)
	if !ok {
		t.Fatal("no session")
	}
	tu.Eventually(t, 5*time.Second, time.Millisecond, func() error { // the goodbye waits for the pipeline
		sess.pipe.mu.Lock()
		defer sess.pipe.mu.Unlock()
		if !sess.pipe.closing {
			return errors.New("not closing")
		}
		return nil
	})
	for i := n - 1; i >= 0; i-- {
		e.gated.waiter(i).open()
	}
	got := c.rest(t)
	if ids, want := ackIDs(t, got), seq(1, n); fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("PUBACK ids %v, want %v", ids, want)
	}
	if last := got[len(got)-1]; last.FixedHeader.Type != packets.Disconnect || last.ReasonCode != packets.ErrServerShuttingDown.Code {
		t.Errorf("last packet %v 0x%02x, want DISCONNECT 0x8B", last.FixedHeader.Type, last.ReasonCode)
	}
	<-closed
}

// TestIngestPipelineRefusalsKeepTheirPlace: a publish the ACL refuses
// (0x87, which mochi writes itself) and an invalid status (0x99) between
// uploads in flight are answered in their place, with their reason
// strings, and the uploads after them go on.
func TestIngestPipelineRefusalsKeepTheirPlace(t *testing.T) {
	e := newPipeEnv(t, Config{})
	e.gated.hold = true
	c, _ := e.dial(t, 5)
	pks := publishes(1, 6)
	pks[2].TopicName = UpTopic("TSGW06ACM00000002")
	pks[4].TopicName, pks[4].Payload = "v1/gw/"+pipeSerial+"/status", []byte("not a status")
	c.send(pks...)
	e.gated.waitBegun(t, 2) // publishes 1 and 2; the ACL's refusal of 3 waits for their answers
	e.gated.waiter(1).open()
	e.gated.waiter(0).open()
	e.gated.waitBegun(t, 2) // publishes 4 and 6
	e.gated.waiter(3).open()
	e.gated.waiter(2).open()
	want := []struct {
		id     uint16
		code   byte
		reason string
	}{{1, 0, ""}, {2, 0, ""}, {3, 0x87, "may publish only to"}, {4, 0, ""}, {5, 0x99, ""}, {6, 0, ""}}
	for _, w := range want {
		pk := c.next(t)
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != w.id || pk.ReasonCode != w.code {
			t.Fatalf("got %v id %d 0x%02x, want PUBACK %d 0x%02x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, w.id, w.code)
		}
		if w.code != 0 && !bytes.Contains([]byte(pk.Properties.ReasonString), []byte(w.reason)) || w.code != 0 && pk.Properties.ReasonString == "" {
			t.Errorf("PUBACK %d reason %q, want one with %q", w.id, pk.Properties.ReasonString, w.reason)
		}
	}
}

// TestIngestPipelineRefusalsStayInOrderWithDownTraffic: a gateway
// subscribed to its errors topic, with deliveries queued for it on down/
// (each invalid upload's report is one), alternates uploads that are
// refused (0x99) and stored: every PUBACK comes in publish order. A refusal
// written while mochi's writer had deliveries queued went to mochi's write
// buffer, and the next stored upload's PUBACK, written straight to the
// connection, overtook it.
func TestIngestPipelineRefusalsStayInOrderWithDownTraffic(t *testing.T) {
	e := newPipeEnv(t, Config{})
	c, _ := e.dial(t, 5)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: ErrorsTopic(pipeSerial)}}})
	if pk := c.next(t); pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBSCRIBE answered %v", pk.FixedHeader.Type)
	}
	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() { // deliveries keep mochi's writer busy
		defer close(flooded)
		big := bytes.Repeat([]byte("x"), 4096)
		for i := 0; i < 400; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = e.srv.broker.Publish(ErrorsTopic(pipeSerial), big, false, 0)
		}
	}()
	const n = 32 // Receive Maximum
	pks := publishes(1, n)
	for i := 0; i < n; i += 2 {
		pks[i].Payload = []byte(`{"not":"thingsee"}`)
	}
	c.send(pks...)
	var got []string
	timeout := time.After(20 * time.Second * tu.Slowdown())
	for len(got) < n {
		select {
		case pk, ok := <-c.got:
			if !ok {
				t.Fatalf("connection closed after %d PUBACKs: %v", len(got), got)
			}
			if pk.FixedHeader.Type == packets.Puback {
				got = append(got, fmt.Sprintf("%d:%#x", pk.PacketID, pk.ReasonCode))
			}
		case <-timeout:
			t.Fatalf("%d of %d PUBACKs: %v", len(got), n, got)
		}
	}
	close(stop)
	<-flooded
	var want []string
	for i := 1; i <= n; i++ {
		code := byte(0)
		if i%2 == 1 {
			code = packets.ErrPayloadFormatInvalid.Code
		}
		want = append(want, fmt.Sprintf("%d:%#x", i, code))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("PUBACKs\n got %v\nwant %v", got, want)
	}
}
