// Package mqttout delivers a tenant's messages to the customer's own MQTT
// broker: MQTT 3.1.1 over TLS (pinned CA, user name and password, or a
// client certificate), on topics built from a template, Thingsee's
// cloudext/json/{env}/{country}/{deploymentGroupId}/{tsmTuid}/{tsmId} by
// default. Each publish is QoS 1 and a batch counts as delivered only when
// every PUBACK has arrived.
//
// The connection is made lazily through the egress dialer (SSRF guard on
// every connect) and kept between deliveries; any failure closes it, so the
// engine's next attempt reconnects. Paho's own reconnect and retry are off:
// the engine owns retries. The Azure IoT Hub and AWS IoT Core targets are
// this target with their conventions.
package mqttout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
)

// window is how many QoS 1 publishes may await their PUBACK at once.
const window = 32

// keepAlive is the MQTT keep-alive interval.
const keepAlive = 60 * time.Second

// Target publishes batches to one MQTT broker.
type Target struct {
	cfg    Config
	broker broker
	tmpl   template
	tls    *tls.Config
	dialer *net.Dialer
	now    func() time.Time

	mu          sync.Mutex // one delivery at a time; guards what follows
	client      mqtt.Client
	connectedAt time.Time
	closed      bool
}

var _ forward.Target = (*Target)(nil)

// New returns a target for c. It checks c as Validate does except that it
// does not resolve the host: the dialer refuses internal addresses on every
// connection, so a host that resolves differently later fails its
// deliveries rather than the target's construction. It does not connect:
// the first Deliver does.
func New(_ context.Context, c Config) (*Target, error) {
	c = c.withDefaults()
	b, tmpl, errs := c.check()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	tc, err := egress.TLSConfig(c.TLS)
	if err != nil {
		return nil, err
	}
	if tc.ServerName == "" {
		tc.ServerName = b.host
	}
	return &Target{
		cfg:    c,
		broker: b,
		tmpl:   tmpl,
		tls:    tc,
		dialer: c.Policy.Dialer(c.ConnectTimeout),
		now:    time.Now,
	}, nil
}

// publication is one MQTT message to send.
type publication struct {
	topic   string
	payload []byte
}

// Deliver publishes the batch: one MQTT message per Thingsee object
// (PerMessage) or one holding the JSON array. It returns nil only when the
// broker has acknowledged every publish; otherwise a *forward.DeliveryError,
// and the connection is closed so the next attempt starts afresh.
func (t *Target) Deliver(ctx context.Context, b *forward.Batch) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return &forward.DeliveryError{Summary: "target closed", Err: errClosed}
	}
	if len(b.Messages) == 0 {
		return nil
	}
	pubs, err := t.prepare(b)
	if err != nil {
		return err
	}
	c, err := t.connection(ctx)
	if err != nil {
		return err
	}
	if err := t.publish(ctx, c, pubs); err != nil {
		t.disconnect(0)
		return err
	}
	return nil
}

var (
	errClosed         = errors.New("mqttout: target closed")
	errPublishTimeout = errors.New("mqttout: no PUBACK within the publish timeout")
	errConnectTimeout = errors.New("mqttout: no CONNACK within the connect timeout")
	errConnLost       = errors.New("mqttout: connection lost")
)

// prepare builds the MQTT messages of a batch: topics, sealed payloads.
func (t *Target) prepare(b *forward.Batch) ([]publication, error) {
	if !t.cfg.PerMessage {
		topic, err := t.tmpl.expand(b.Tenant, &b.Messages[0])
		if err != nil {
			return nil, &forward.DeliveryError{Summary: "topic invalid", Err: err}
		}
		payload, err := t.seal(b.JSON())
		if err != nil {
			return nil, err
		}
		return []publication{{topic, payload}}, nil
	}
	pubs := make([]publication, len(b.Messages))
	for i := range b.Messages {
		topic, err := t.tmpl.expand(b.Tenant, &b.Messages[i])
		if err != nil {
			return nil, &forward.DeliveryError{Summary: "topic invalid", Err: err}
		}
		payload, err := t.seal(b.Messages[i].Body)
		if err != nil {
			return nil, err
		}
		pubs[i] = publication{topic, payload}
	}
	return pubs, nil
}

func (t *Target) seal(p []byte) ([]byte, error) {
	if t.cfg.Sealer == nil {
		return p, nil
	}
	s, err := t.cfg.Sealer.Seal(p)
	if err != nil {
		return nil, &forward.DeliveryError{Summary: "payload encryption failed", Err: err}
	}
	return s, nil
}

// connection returns the live connection, making one when there is none,
// when it was lost, or when it is older than Reconnect.
func (t *Target) connection(ctx context.Context) (mqtt.Client, error) {
	if t.client != nil {
		stale := t.cfg.Reconnect > 0 && t.now().Sub(t.connectedAt) >= t.cfg.Reconnect
		if t.client.IsConnectionOpen() && !stale {
			return t.client, nil
		}
		// Say goodbye properly when the connection still works.
		t.disconnect(250 * time.Millisecond)
	}
	c, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	t.client, t.connectedAt = c, t.now()
	return c, nil
}

// connect dials the broker through the egress dialer, completes the TLS
// handshake, then hands the connection to paho for MQTT CONNECT.
func (t *Target) connect(ctx context.Context) (mqtt.Client, error) {
	var password string
	if t.cfg.Password != nil {
		p, err := t.cfg.Password()
		if err != nil {
			return nil, &forward.DeliveryError{Summary: "credentials unavailable", Err: err}
		}
		password = p
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ConnectTimeout)
	defer cancel()

	raw, err := t.dialer.DialContext(ctx, "tcp", t.broker.addr())
	if err != nil {
		return nil, &forward.DeliveryError{Summary: summarize(err, "connect"), Err: err}
	}
	conn := tls.Client(raw, t.tls)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, &forward.DeliveryError{Summary: summarize(err, "TLS handshake"), Err: err}
	}

	hc := &handoff{Conn: conn}
	hc.hold.Store(true)
	var handed bool
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + t.broker.addr()).
		SetClientID(t.cfg.ClientID).
		SetUsername(t.cfg.Username).
		SetPassword(password).
		SetProtocolVersion(4). // MQTT 3.1.1, and no silent fallback to 3.1
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(keepAlive).
		SetPingTimeout(t.cfg.PublishTimeout).
		SetConnectTimeout(t.cfg.ConnectTimeout).
		SetWriteTimeout(t.cfg.PublishTimeout).
		SetOrderMatters(true).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
			// Paho opens once per Connect; the connection is already
			// dialled and verified.
			if handed {
				return nil, errConnLost
			}
			handed = true
			return hc, nil
		})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		_ = hc.Conn.Close() // ends paho's CONNACK read
		<-tok.Done()
	}
	if err := tok.Error(); err != nil {
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = errors.Join(errConnectTimeout, err)
		case ctx.Err() != nil:
			err = errors.Join(ctx.Err(), err)
		case errors.Is(err, packets.ErrorNetworkError) && !isRemoteError(err):
			if alert := hc.alert(); alert != nil {
				err = errors.Join(alert, err)
			}
		}
		_ = hc.Conn.Close()
		return nil, &forward.DeliveryError{Summary: summarize(err, "connect"), Err: err}
	}
	hc.hold.Store(false)
	if hc.closed.Load() {
		_ = hc.Conn.Close()
	}
	return c, nil
}

// handoff is the connection paho gets. While hold is set (the MQTT
// handshake), paho's Close is put off, so that after a failed CONNECT a TLS
// alert the broker sent can still be read: with TLS 1.3 the broker checks
// our client certificate after the handshake has completed on our side,
// and its refusal arrives as an alert paho may never read (its CONNECT
// write fails first with a reset).
type handoff struct {
	net.Conn
	hold   atomic.Bool
	closed atomic.Bool
}

func (h *handoff) Close() error {
	if h.hold.Load() {
		h.closed.Store(true)
		return nil
	}
	return h.Conn.Close()
}

// alert returns the broker's TLS alert if one is waiting, else nil.
func (h *handoff) alert() error {
	_ = h.Conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := h.Conn.Read(make([]byte, 1))
	if isRemoteError(err) {
		return err
	}
	return nil
}

// isRemoteError reports whether err holds a TLS alert from the peer.
func isRemoteError(err error) bool { return remoteAlert(err) != "" }

// remoteAlert returns the description of a TLS alert from the peer in err's
// tree ("bad certificate"), or "".
func remoteAlert(err error) string {
	switch e := err.(type) {
	case nil:
		return ""
	case *net.OpError:
		if e.Op == "remote error" && e.Err != nil {
			return strings.TrimPrefix(e.Err.Error(), "tls: ")
		}
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			if a := remoteAlert(x); a != "" {
				return a
			}
		}
		return ""
	}
	return remoteAlert(errors.Unwrap(err))
}

// publish sends the messages in order, at most window unacknowledged at a
// time, and waits for every acknowledgement.
func (t *Target) publish(ctx context.Context, c mqtt.Client, pubs []publication) error {
	inflight := make([]mqtt.Token, 0, min(window, len(pubs)))
	for _, p := range pubs {
		if len(inflight) == window {
			if err := t.wait(ctx, c, inflight[0]); err != nil {
				return err
			}
			inflight = append(inflight[:0], inflight[1:]...)
		}
		inflight = append(inflight, c.Publish(p.topic, t.cfg.QoS, false, p.payload))
	}
	for _, tok := range inflight {
		if err := t.wait(ctx, c, tok); err != nil {
			return err
		}
	}
	return nil
}

// wait waits for a publish to be acknowledged.
func (t *Target) wait(ctx context.Context, c mqtt.Client, tok mqtt.Token) error {
	timer := time.NewTimer(t.cfg.PublishTimeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
	case <-timer.C:
		return &forward.DeliveryError{Summary: "publish timeout", Err: errPublishTimeout}
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &forward.DeliveryError{Summary: "publish timeout", Err: ctx.Err()}
		}
		return &forward.DeliveryError{Summary: "cancelled", Err: ctx.Err()}
	}
	if err := tok.Error(); err != nil {
		if !c.IsConnectionOpen() {
			return &forward.DeliveryError{Summary: "connection lost", Err: errors.Join(errConnLost, err)}
		}
		return &forward.DeliveryError{Summary: summarize(err, "publish"), Err: err}
	}
	return nil
}

// disconnect ends the connection, if any, waiting at most quiesce for the
// DISCONNECT to go out. Callers hold t.mu.
func (t *Target) disconnect(quiesce time.Duration) {
	if t.client == nil {
		return
	}
	t.client.Disconnect(uint(quiesce.Milliseconds()))
	t.client = nil
}

// Close disconnects from the broker. Deliver fails after Close.
func (t *Target) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.disconnect(250 * time.Millisecond)
	return nil
}

// summarize returns the public description of a connection failure: short,
// stable, without addresses, secrets or server text.
func summarize(err error, phase string) string {
	var (
		dnsErr   *net.DNSError
		unknown  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		recordEr tls.RecordHeaderError
	)
	switch {
	case egress.IsRefused(err):
		return "target address not allowed"
	case errors.Is(err, errConnectTimeout):
		return "connect timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return "connect refused: not authorized"
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return "connect refused: bad user name or password"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return "connect refused: client id rejected"
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return "connect refused: server unavailable"
	case errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return "connect refused: MQTT 3.1.1 not supported"
	case errors.As(err, &dnsErr):
		return "host name does not resolve"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.As(err, &unknown):
		return "TLS: certificate not trusted"
	case errors.As(err, &hostErr):
		return "TLS: certificate is not for this host"
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return "TLS: certificate expired or not yet valid"
		}
		return "TLS: certificate invalid"
	case errors.As(err, &verify):
		return "TLS: certificate not trusted"
	case remoteAlert(err) != "":
		// A TLS alert from the broker, e.g. it refused our client
		// certificate ("bad certificate", "unknown certificate authority").
		return "TLS: broker refused the handshake (" + remoteAlert(err) + ")"
	case errors.As(err, &recordEr):
		return "TLS: the broker does not speak TLS"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return phase + " timeout"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "connection closed by the broker"
	}
	return phase + " failed"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
