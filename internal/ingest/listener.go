package ingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/retry"
)

// gatewayConn is a TLS connection whose peer proved its identity.
type gatewayConn struct {
	*tls.Conn
	id Identity

	closeOnce  sync.Once
	mu         sync.Mutex
	onClose    func() // set by the hook once CONNECT is accepted
	onShutdown func() // likewise: how to say goodbye to the session
}

// Close closes the connection and runs the hook's cleanup once.
func (c *gatewayConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.mu.Lock()
		f := c.onClose
		c.mu.Unlock()
		if f != nil {
			f()
		}
	})
	return err
}

// setHooks sets what the hook does when the connection closes and when the
// server shuts down.
func (c *gatewayConn) setHooks(onClose, onShutdown func()) {
	c.mu.Lock()
	c.onClose, c.onShutdown = onClose, onShutdown
	c.mu.Unlock()
}

// shutdown ends the connection because the listener closes: through the
// hook's goodbye once CONNECT was accepted, else by closing it. A peer that
// does not read cannot hold the goodbye beyond the write deadline.
func (c *gatewayConn) shutdown(deadline time.Time) {
	c.mu.Lock()
	f := c.onShutdown
	c.mu.Unlock()
	if f == nil {
		_ = c.Close()
		return
	}
	_ = c.SetWriteDeadline(deadline)
	f()
}

// tlsListener is a mochi listener that owns the TLS handshake: each accepted
// connection gets one deadline for its handshake and its CONNECT packet
// (mochi applies none before CONNECT), identity is decided during the
// handshake and a refusal is a tenant's only once the peer proved its key
// (handshake), refusals are counted by reason, and a failed Accept is
// retried, never the end of the listener.
//
// It also owns its connections' end. mochi's way to close a listener's
// clients (the CloseFn given to Close: Clients.GetByListener) takes the
// clients' read lock twice, and a client disconnecting in between
// (Clients.Delete waiting for the write lock) deadlocks both: mochi-mqtt
// issue #488, unfixed in v2.7.9. So Close never calls it: the listener
// tracks every connection it accepted and ends them itself.
type tlsListener struct {
	id      string
	addr    string
	base    *tls.Config
	auth    func(tls.ConnectionState) (Identity, error)
	timeout time.Duration
	pending chan struct{} // bounds connections not yet past CONNECT
	// perAddr counts pending handshakes per client IP (bounded by perAddrMax).
	perAddrMu  sync.Mutex
	perAddr    map[string]int
	perAddrMax int
	m          *metrics
	log        *slog.Logger
	emit       func(Event)
	// gate paces the handshakes (gate.go); nil: unpaced.
	gate *handshakeGate

	// config is base with the listener's verification, built once and
	// shared by every handshake: a tls.Conn keeps its configuration for
	// its lifetime, so a clone per connection (to hold a closure over its
	// verdict) would cost each idle connection ~0.6 KiB (issue 11).
	// verdicts holds what VerifyConnection decided of a handshake,
	// under its client's leaf certificate (a *x509.Certificate that
	// crypto/tls parsed for that handshake alone), until the handshake
	// takes it.
	configOnce sync.Once
	config     *tls.Config
	verdicts   sync.Map // *x509.Certificate → clientVerdict

	mu     sync.Mutex
	ln     net.Listener
	stop   chan struct{} // closed by Close (made by stopped)
	closed atomic.Bool

	// conns are the open connections, nil until the handshake proved who
	// they are; active counts them for Close's wait, bounded by drain.
	connsMu sync.Mutex
	conns   map[net.Conn]*gatewayConn
	active  sync.WaitGroup
	drain   time.Duration
}

var _ listeners.Listener = (*tlsListener)(nil)

func (l *tlsListener) ID() string       { return l.id }
func (l *tlsListener) Protocol() string { return "mqtts" }

// Address returns the bound address once Init has run.
func (l *tlsListener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init opens the network address.
func (l *tlsListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return nil
}

// acceptBackoff is the wait after a failed Accept (out of file
// descriptors, for one): from 5 ms doubling to 1 s, as net/http's Server
// waits, until an Accept succeeds or the listener is closed.
var acceptBackoff = retry.Backoff{Base: 5 * time.Millisecond, Max: time.Second}

// Serve accepts connections until Close. A failed Accept is counted,
// logged and retried after acceptBackoff: running out of file descriptors
// for a moment must not stop the gateway listener for good.
func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	failures := 0
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() {
				return
			}
			failures++
			wait := acceptBackoff.Delay(failures)
			l.m.acceptErrors.Inc()
			l.log.Error("accept failed; retrying", "error", err, "retry_in", wait.String())
			if !l.sleep(wait) {
				return
			}
			continue
		}
		failures = 0
		ip := addrIP(conn.RemoteAddr())
		if !l.takeAddr(ip) {
			l.overloaded(conn, "overload_address")
			continue
		}
		select {
		case l.pending <- struct{}{}:
		default:
			l.releaseAddr(ip)
			l.overloaded(conn, "overload")
			continue
		}
		go l.handle(conn, ip, establish)
	}
}

// overloaded refuses a connection before its handshake: too many are
// pending (from its address, or in all). Like any unauthenticated refusal
// it is counted and recorded within the budget.
func (l *tlsListener) overloaded(conn net.Conn, reason string) {
	l.m.connRefused.WithLabelValues(reason).Inc()
	l.emit(Event{Kind: EventRefused, Remote: conn.RemoteAddr().String(), Reason: reason})
	_ = conn.Close()
}

// addrIP is the IP of a remote address (the whole address if it has no port).
func addrIP(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// sleep waits d, or until the listener is closed; it reports whether the
// listener is still open.
func (l *tlsListener) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !l.closed.Load()
	case <-l.stopped():
		return false
	}
}

// stopped returns the channel that Close closes.
func (l *tlsListener) stopped() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop == nil {
		l.stop = make(chan struct{})
	}
	return l.stop
}

// takeAddr counts a pending handshake of ip, or reports false when ip has
// perAddrMax already.
func (l *tlsListener) takeAddr(ip string) bool {
	l.perAddrMu.Lock()
	defer l.perAddrMu.Unlock()
	if l.perAddrMax > 0 && l.perAddr[ip] >= l.perAddrMax {
		return false
	}
	l.perAddr[ip]++
	return true
}

func (l *tlsListener) releaseAddr(ip string) {
	l.perAddrMu.Lock()
	defer l.perAddrMu.Unlock()
	if l.perAddr[ip]--; l.perAddr[ip] <= 0 {
		delete(l.perAddr, ip)
	}
}

// track adds an accepted connection to the open ones, unless the listener
// is closed.
func (l *tlsListener) track(raw net.Conn) bool {
	l.connsMu.Lock()
	defer l.connsMu.Unlock()
	if l.closed.Load() { // Close took its list of connections: this one is not on it
		return false
	}
	l.conns[raw] = nil
	l.active.Add(1)
	return true
}

// adopt records the gateway connection of raw once its handshake
// succeeded, unless the listener is closed.
func (l *tlsListener) adopt(raw net.Conn, gc *gatewayConn) bool {
	l.connsMu.Lock()
	defer l.connsMu.Unlock()
	if l.closed.Load() {
		return false
	}
	l.conns[raw] = gc
	return true
}

func (l *tlsListener) untrack(raw net.Conn) {
	l.connsMu.Lock()
	delete(l.conns, raw)
	l.connsMu.Unlock()
	l.active.Done()
}

// handle runs the handshake of an accepted connection, at the gate's
// pace, and hands a gateway that proved who it is to mochi on a fresh
// goroutine: the handshake's deep stack (crypto, certificate parsing) ends
// with this one, and the connection's long-lived read loop starts small.
func (l *tlsListener) handle(raw net.Conn, ip string, establish listeners.EstablishFn) {
	released := false
	release := func() {
		if !released {
			released = true
			<-l.pending
			l.releaseAddr(ip)
		}
	}
	defer release()
	if !l.track(raw) {
		_ = raw.Close()
		return
	}
	handed := false
	defer func() {
		if !handed {
			l.untrack(raw)
		}
	}()
	// One deadline for the handshake and the CONNECT packet; mochi replaces
	// it with the keepalive deadline once CONNECT is processed.
	deadline := time.Now().Add(l.timeout)
	_ = raw.SetDeadline(deadline)

	conn := raw
	var gated *gatedConn
	if l.gate != nil {
		gated = &gatedConn{Conn: raw, g: l.gate, deadline: deadline}
		if err := gated.start(); err != nil {
			if !errors.Is(err, errGateClosed) {
				l.overloaded(raw, reasonHandshakeWait)
			}
			_ = raw.Close()
			return
		}
		conn = gated
	}
	tc, id, refusal := l.handshake(conn, deadline)
	if gated != nil {
		gated.done(refusal == nil)
		if refusal != nil && gated.waitedOut {
			refusal.Reason = reasonHandshakeWait // mid-handshake: the gate's wait, not the peer's
		}
	}
	if refusal != nil {
		l.m.connRefused.WithLabelValues(refusal.Reason).Inc()
		l.emit(*refusal) // recorded within the budget, and logged with it
		// Closed before any MQTT byte is read: a refused gateway never
		// reaches mochi (after a completed handshake, with close_notify).
		_ = tc.Close()
		return
	}
	release() // past the handshake; mochi's CONNECT deadline still applies
	gc := &gatewayConn{Conn: tc, id: id}
	if !l.adopt(raw, gc) {
		_ = tc.Close()
		return
	}
	handed = true
	go l.serve(raw, gc, establish)
}

// serve runs a gateway's MQTT session (mochi's read loop) until it ends.
func (l *tlsListener) serve(raw net.Conn, gc *gatewayConn, establish listeners.EstablishFn) {
	defer l.untrack(raw)
	if err := establish(l.id, gc); err != nil && !l.closed.Load() {
		l.log.Debug("gateway connection ended", "gateway_id", gc.id.Serial, "tenant_id", gc.id.Tenant, "error", err)
	}
}

// handshake runs the TLS handshake of raw and decides who the peer is: its
// identity, or the refusal to record.
//
// Go's TLS server asks VerifyConnection about the client's certificate
// before it reads the client's CertificateVerify, the proof that the peer
// holds the certificate's key. Certificates are not secret (TLS 1.2 sends
// them in clear, an expired one stays on the gateway after its renewal), so
// what Authenticate says then is about a certificate, not yet about a
// peer. A refusal that names no tenant (no certificate, an unknown CA, a
// forgery) ends the handshake at once with bad_certificate. A refusal of a
// chain that verified against a tenant's CA (the gateway is revoked,
// isolated, unregistered; the certificate expired, superseded, revoked) is
// kept aside and the handshake goes on: only once it succeeded, so the peer
// proved it holds the key, is the refusal attributed to the tenant and its
// gateway (the caller closes the connection before reading any MQTT byte).
// A handshake that fails is an unauthenticated refusal, whatever the
// certificate named: so a copy of a gateway's certificate without its key
// writes nothing to the tenant's log, and learns nothing of the gateway's
// state either (active or refused, it ends in the same decrypt_error).
func (l *tlsListener) handshake(raw net.Conn, deadline time.Time) (*tls.Conn, Identity, *Event) {
	tc := tls.Server(raw, l.tlsConfig())
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := tc.HandshakeContext(ctx)
	cancel()
	cs := tc.ConnectionState()
	v := l.takeVerdict(cs)
	remote := raw.RemoteAddr().String()
	switch {
	case err != nil: // unauthenticated: never a tenant's, whatever the certificate named
		return tc, Identity{}, &Event{Kind: EventRefused, Remote: remote, Reason: handshakeReason(err)}
	case v.refused != nil: // the peer proved it holds the key of the tenant's certificate
		return tc, Identity{}, &Event{Kind: EventRefused, Tenant: v.refused.Tenant, Serial: v.refused.Serial, Remote: remote, Reason: v.refused.Reason}
	case v.id.Tenant == "": // VerifyConnection always runs with a required certificate; never trust its absence
		return tc, Identity{}, &Event{Kind: EventRefused, Remote: remote, Reason: "handshake_failed"}
	}
	releaseCertificates(cs)
	return tc, v.id, nil
}

// clientVerdict is what VerifyConnection decided of a handshake's client: its
// identity, or the refusal of a chain that verified against a tenant's CA
// (attributed once the peer proved it holds the key).
type clientVerdict struct {
	id      Identity
	refused *registry.RefusedError
}

// tlsConfig returns the configuration every handshake shares: base, with
// verify as its VerifyConnection.
func (l *tlsListener) tlsConfig() *tls.Config {
	l.configOnce.Do(func() {
		l.config = l.base.Clone()
		l.config.VerifyConnection = l.verify
	})
	return l.config
}

// verify is the listener's VerifyConnection: it authenticates the chain
// and keeps the verdict for the handshake (takeVerdict). A refusal that
// names no tenant ends the handshake; a tenant's refusal lets it go on,
// to be attributed once the peer proved its key (handshake).
func (l *tlsListener) verify(cs tls.ConnectionState) error {
	got, err := l.auth(cs)
	var re *registry.RefusedError
	switch {
	case errors.As(err, &re) && re.Tenant != "":
		l.keepVerdict(cs, clientVerdict{refused: re})
		return nil
	case err != nil:
		return err
	}
	l.keepVerdict(cs, clientVerdict{id: got})
	return nil
}

func (l *tlsListener) keepVerdict(cs tls.ConnectionState, v clientVerdict) {
	if len(cs.PeerCertificates) > 0 { // else none is taken: the handshake is refused
		l.verdicts.Store(cs.PeerCertificates[0], v)
	}
}

// takeVerdict returns the verdict of the handshake whose state is cs (a
// zero verdict if VerifyConnection did not decide one) and forgets it. It
// is called once after every handshake, failed or not: a handshake that
// failed after its verification (an invalid CertificateVerify) leaves
// nothing behind.
func (l *tlsListener) takeVerdict(cs tls.ConnectionState) clientVerdict {
	if len(cs.PeerCertificates) == 0 {
		return clientVerdict{}
	}
	v, _ := l.verdicts.LoadAndDelete(cs.PeerCertificates[0])
	got, _ := v.(clientVerdict)
	return got
}

// releaseCertificates empties the client's certificates that a tls.Conn
// keeps for its lifetime (cs is its state), once the handshake decided who
// the peer is: the Identity holds all that is read of them later (the
// session, the kick by certificate serial, the audit events). An idle
// connection would otherwise hold its parsed chain and the handshake
// message it was parsed from: ~6 KiB, of which the emptied structures
// keep ~1.5 KiB per certificate (issue 11). The connection's
// ConnectionState then shows empty certificates. A resumed session's
// certificates come from crypto/tls's cache, shared with other
// connections: they are left alone (the gateway listener sends no session
// tickets, see New, but a listener may).
func releaseCertificates(cs tls.ConnectionState) {
	if cs.DidResume {
		return
	}
	for _, c := range cs.PeerCertificates {
		*c = x509.Certificate{}
	}
}

// reasonKeyNotProven is the refusal of a peer that presented a certificate
// without proving it holds its key (an invalid CertificateVerify).
const reasonKeyNotProven = "key_not_proven"

// handshakeReason classifies a failed handshake for metrics and the
// unauthenticated refusal's record.
func handshakeReason(err error) string {
	var re *registry.RefusedError
	if errors.As(err, &re) {
		return re.Reason
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return "handshake_timeout"
	}
	// crypto/tls exports no sentinel errors for these; the text is only a
	// label here, never a decision.
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"):
		return registry.ReasonNoCertificate
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"):
		return "tls_version"
	case strings.Contains(msg, "invalid signature by the client certificate"),
		strings.Contains(msg, "client certificate used with invalid signature algorithm"):
		return reasonKeyNotProven
	}
	return "handshake_failed"
}

// Close stops accepting, ends every open connection (a gateway session
// through the hook's goodbye: MQTT 5 gets DISCONNECT 0x8B, as mochi's own
// close sends, within a second) and waits, at most drain, for them to
// finish; then it closes what is left. It never calls mochi's CloseFn (see
// tlsListener). A connection whose handshake or CONNECT is still under way
// when Close takes its list is closed too, and one that gets further than
// that finds the listener closed.
func (l *tlsListener) Close(listeners.CloseFn) {
	if !l.closed.CompareAndSwap(false, true) {
		return
	}
	stop := l.stopped()
	l.mu.Lock()
	if l.ln != nil {
		_ = l.ln.Close()
	}
	l.mu.Unlock()
	close(stop)
	open := l.open()
	deadline := time.Now().Add(time.Second)
	for raw, gc := range open {
		if gc != nil {
			go gc.shutdown(deadline)
		} else {
			_ = raw.Close()
		}
	}
	done := make(chan struct{})
	go func() {
		l.active.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(l.drain):
		left := l.open()
		l.log.Warn("gateway connections still open after the listener closed: closing them", "connections", len(left), "waited", l.drain.String())
		for raw := range left {
			_ = raw.Close()
		}
	}
}

// open returns the open connections.
func (l *tlsListener) open() map[net.Conn]*gatewayConn {
	l.connsMu.Lock()
	defer l.connsMu.Unlock()
	return maps.Clone(l.conns)
}
