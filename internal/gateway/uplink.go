// Package gateway is the gateway side of iotransit: the uplink that speaks
// MQTT 5 over mutual TLS to the ingest (used by the agent, the demo, the
// load generator and the tests). The mesh receiver, store-and-forward buffer
// and firmware updater join it in later issues.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// UplinkConfig is how a gateway reaches the ingest.
type UplinkConfig struct {
	// Addr is the ingest's host:port.
	Addr string
	// Serial is the gateway serial (the certificate CN and MQTT client id).
	Serial string
	// TLS holds the client certificate and the CA that verifies the server.
	TLS *tls.Config
	// KeepAlive in seconds (default 30).
	KeepAlive uint16
	// OnReport is called with each payload received on the gateway's
	// down/errors topic (subscribed when non-nil).
	OnReport func([]byte)
	// OnMessage, when non-nil, is called with each message received on
	// the topics of Subscribe (instead of OnReport), with its topic.
	OnMessage func(topic string, payload []byte)
	// Subscribe lists the topic filters subscribed to (QoS 1) after the
	// connect when OnMessage is set.
	Subscribe []string
	// OnDisconnect is called when the server ends the session with a
	// DISCONNECT packet (its reason code) or the connection drops.
	OnDisconnect func(reason byte, err error)
	// LocalAddr, when set, is the local address the connection is made
	// from (nil: the system picks): a load generator spreads many
	// connections over several loopback source addresses with it.
	LocalAddr net.Addr
}

// TLSFiles builds the client TLS configuration from PEM files: the
// gateway's certificate and key, and the CA that verifies the server.
func TLSFiles(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("gateway: load certificate: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("gateway: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("gateway: no certificate in CA file")
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}

// Uplink is a connected gateway session.
type Uplink struct {
	c       *paho.Client
	sess    *state.State
	serial  string
	connack *paho.Connack
	once    sync.Once
}

// ConnectError is a CONNACK refusal.
type ConnectError struct {
	ReasonCode byte
	Reason     string
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("gateway: connect refused: reason 0x%02x %s", e.ReasonCode, e.Reason)
}

// Dial connects and sends CONNECT with the serial as client id.
func Dial(ctx context.Context, cfg UplinkConfig) (*Uplink, error) {
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 30
	}
	d := tls.Dialer{Config: cfg.TLS, NetDialer: &net.Dialer{Timeout: 10 * time.Second, LocalAddr: cfg.LocalAddr}}
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: dial %s: %w", cfg.Addr, err)
	}
	u := &Uplink{serial: cfg.Serial, sess: state.NewInMemory()}
	pc := paho.ClientConfig{
		ClientID: cfg.Serial,
		Conn:     packets.NewThreadSafeConn(conn),
		Session:  sendSession{u.sess},
	}
	switch {
	case cfg.OnMessage != nil:
		pc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				cfg.OnMessage(pr.Packet.Topic, pr.Packet.Payload)
				return true, nil
			},
		}
	case cfg.OnReport != nil:
		pc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				cfg.OnReport(pr.Packet.Payload)
				return true, nil
			},
		}
	}
	if cfg.OnDisconnect != nil {
		pc.OnServerDisconnect = func(d *paho.Disconnect) {
			u.once.Do(func() { cfg.OnDisconnect(d.ReasonCode, nil) })
		}
		pc.OnClientError = func(err error) {
			u.once.Do(func() { cfg.OnDisconnect(0, err) })
		}
	}
	u.c = paho.NewClient(pc)
	ca, err := u.c.Connect(ctx, &paho.Connect{ClientID: cfg.Serial, KeepAlive: cfg.KeepAlive, CleanStart: true})
	if ca != nil && ca.ReasonCode != 0 {
		conn.Close()
		u.sess.Close()
		reason := ""
		if ca.Properties != nil {
			reason = ca.Properties.ReasonString
		}
		return nil, &ConnectError{ReasonCode: ca.ReasonCode, Reason: reason}
	}
	if err != nil {
		conn.Close()
		u.sess.Close()
		return nil, fmt.Errorf("gateway: connect: %w", err)
	}
	u.connack = ca
	subs := []paho.SubscribeOptions{{Topic: "v1/gw/" + cfg.Serial + "/down/errors", QoS: 1}}
	if cfg.OnMessage != nil {
		subs = subs[:0]
		for _, t := range cfg.Subscribe {
			subs = append(subs, paho.SubscribeOptions{Topic: t, QoS: 1})
		}
	}
	if (cfg.OnReport != nil || cfg.OnMessage != nil) && len(subs) > 0 {
		if _, err := u.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			u.Close()
			return nil, fmt.Errorf("gateway: subscribe to reports: %w", err)
		}
	}
	return u, nil
}

// Connack returns the server's CONNACK.
func (u *Uplink) Connack() *paho.Connack { return u.connack }

// Client returns the underlying paho client (for tests of the MQTT contract).
func (u *Uplink) Client() *paho.Client { return u.c }

// PublishResult is the server's answer to a QoS 1 publish.
type PublishResult struct {
	ReasonCode byte
	Reason     string
}

// Publish sends payload to the gateway's up topic with qos (0 or 1) and, for
// QoS 1, waits for the PUBACK.
func (u *Uplink) Publish(ctx context.Context, payload []byte, qos byte) (PublishResult, error) {
	return u.PublishTo(ctx, "v1/gw/"+u.serial+"/up", payload, qos)
}

// PublishTo is Publish to any topic (tests of the ACL use it).
func (u *Uplink) PublishTo(ctx context.Context, topic string, payload []byte, qos byte) (PublishResult, error) {
	pr, err := u.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	if pr == nil {
		return PublishResult{}, err
	}
	res := PublishResult{ReasonCode: pr.ReasonCode}
	if pr.Properties != nil {
		res.Reason = pr.Properties.ReasonString
	}
	if err != nil && pr.ReasonCode < 0x80 {
		return res, err
	}
	return res, nil
}

// Done is closed when the connection ends.
func (u *Uplink) Done() <-chan struct{} { return u.c.Done() }

// Close sends DISCONNECT and closes the connection.
func (u *Uplink) Close() error {
	err := u.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	u.sess.Close()
	return err
}

// sendKey carries, in a publish's context, the channel that is to receive
// its PUBACK (Send).
type sendKey struct{}

// sendSession is paho's in-memory session, except that a publish of Send
// has its acknowledgement delivered to Send's channel (paho's own
// asynchronous send discards it).
type sendSession struct{ *state.State }

func (s sendSession) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	if ch, ok := ctx.Value(sendKey{}).(chan packets.ControlPacket); ok {
		resp = ch
	}
	return s.State.AddToSession(ctx, p, resp)
}

// Pending is a QoS 1 publish written and waiting for its PUBACK.
type Pending struct {
	u  *Uplink
	ch chan packets.ControlPacket
}

// Send publishes payload to the gateway's up topic with QoS 1 and returns
// once the publish is written, without waiting for its PUBACK: publishes
// sent one after the other from one goroutine leave in that order (a
// window of publishes in flight that keeps their order, which concurrent
// Publish calls do not). It blocks while the server's receive maximum of
// publishes is in flight.
func (u *Uplink) Send(ctx context.Context, payload []byte) (*Pending, error) {
	ch := make(chan packets.ControlPacket, 1)
	_, err := u.c.PublishWithOptions(context.WithValue(ctx, sendKey{}, ch),
		&paho.Publish{Topic: "v1/gw/" + u.serial + "/up", QoS: 1, Payload: payload},
		paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	if err != nil && !errors.Is(err, paho.ErrNetworkErrorAfterStored) {
		return nil, err
	}
	return &Pending{u: u, ch: ch}, nil
}

// ErrNoAck reports a publish whose session ended before its PUBACK: it may
// or may not have been taken.
var ErrNoAck = errors.New("gateway: the session ended before the PUBACK")

// Wait returns the publish's PUBACK, or ErrNoAck when the connection ends
// first, or ctx's error.
func (p *Pending) Wait(ctx context.Context) (PublishResult, error) {
	select {
	case cp := <-p.ch:
		ack, ok := cp.Content.(*packets.Puback)
		if !ok {
			return PublishResult{}, ErrNoAck
		}
		res := PublishResult{ReasonCode: ack.ReasonCode}
		if ack.Properties != nil {
			res.Reason = ack.Properties.ReasonString
		}
		return res, nil
	case <-p.u.Done():
		select {
		case cp := <-p.ch:
			p.ch <- cp
			return p.Wait(ctx)
		default:
		}
		return PublishResult{}, ErrNoAck
	case <-ctx.Done():
		return PublishResult{}, ctx.Err()
	}
}
