// Package ingest is the gateway-facing front end of iotransit and the accept
// core behind it.
//
// The accept core (Core, accept.go) is what happens to an upload once its
// gateway is authenticated and its topic authorized: validation of the
// Thingsee messages, the payload size and per-gateway message rate limits,
// persistence of accepted and rejected messages, and the report of
// rejections. It returns an Outcome in terms no protocol owns, and only once
// JetStream acknowledged every write (persist-before-ack). It knows nothing
// of MQTT brokers: any front end (this one, or a narrower, faster MQTT
// server later) can call Core.Accept, or Core.Begin and Pending.Wait to
// keep several uploads of a connection in flight, and map its Outcome to
// its own answers.
//
// The MQTT front end is mochi-mqtt behind a TLS listener that requires and
// checks client certificates (listener.go), and a hook (hook.go) that binds
// the MQTT client id to the certificate, enforces the topic ACL and
// subscription bounds, refuses QoS 2, drops wills, keeps sessions apart, and
// maps the core's Outcome through one table to MQTT 5 reason codes and MQTT
// 3.1.1 behaviour: a QoS 1 publish is acknowledged only after JetStream has
// stored it. A connection's publishes are pipelined (pipeline.go): read and
// handed to JetStream while earlier ones are in flight, acknowledged in
// order, several PUBACKs in one write.
//
// See README.md in this directory for the acknowledgement path.
package ingest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/gwproto"
)

// Config configures the ingest.
type Config struct {
	// Addr is the MQTT over TLS listen address (default ":8883").
	Addr string
	// MaxPayload is the largest publish payload accepted, in bytes (default 256 KiB).
	MaxPayload int
	// MsgRate is the sustained Thingsee messages per second allowed per
	// gateway (default 500); MsgBurst the burst above it (default 5000).
	MsgRate  float64
	MsgBurst int
	// ConnectTimeout bounds the TLS handshake plus the CONNECT packet (default 10s).
	ConnectTimeout time.Duration
	// MaxConnsPerTenant bounds concurrent gateway connections of one tenant (default 10000).
	MaxConnsPerTenant int
	// MaxPendingHandshakes bounds connections not yet past their handshake (default 1024).
	MaxPendingHandshakes int
	// MaxPendingPerAddress bounds them per client address (default 128), so
	// that one host cannot hold every slot and lock all gateways out.
	MaxPendingPerAddress int
	// HandshakeRate bounds the TLS handshakes started per second (default
	// 1000, a burst of a tenth of a second's worth), and
	// HandshakeConcurrency those computing at once (0: half of GOMAXPROCS,
	// at least 1), so that a reconnect storm leaves CPU to the connected
	// gateways (gate.go). A connection past them waits, within
	// ConnectTimeout, as one of the MaxPendingHandshakes.
	HandshakeRate        float64
	HandshakeConcurrency int
	// MaxFutureSkew is how far ahead of the server clock a tsmTs may be (default 10m).
	MaxFutureSkew time.Duration
	// PersistTimeout bounds the wait for JetStream's acknowledgement (default 10s).
	PersistTimeout time.Duration
	// ReceiveMaximum is how many QoS 1 publishes of one connection may be
	// in flight, stored or not yet, before their PUBACKs (default 32,
	// announced in CONNACK): an MQTT 5 client that sends more is
	// disconnected (0x93), an MQTT 3.1.1 one is not read until the oldest
	// is answered.
	ReceiveMaximum int
	// MaxInFlight bounds the messages being written to JetStream across
	// all connections (default 16384); a publish past it waits. It stays
	// below the JetStream client's bound on pending asynchronous publishes
	// (backbone: 65536), past which publishes fail.
	MaxInFlight int
	// MaxKeepalive is the longest keepalive granted; 0 (none) is raised to it (default 20m).
	MaxKeepalive time.Duration
	// Events bounds the connection events recorded one by one (OnEvent and
	// the log); past it they are summarised (EventBudget).
	Events EventBudget
	// OnEvent, when set, is told of gateway connects, disconnects and
	// refused connections, and of summaries of those over the budget (for
	// the audit log). It must not block.
	OnEvent func(Event)
	// Presence, when set, is told of every gateway session, its uploads
	// and its status (gwproto.Status on its status topic), unbudgeted. It
	// must not block.
	Presence Presence
}

// Presence follows the gateways' sessions on this node: the cloud's view
// of when each was last seen and what it last said of itself. Its methods
// must not block (they run in the gateway's read loop).
type Presence interface {
	// Connected is called when a gateway's session is accepted.
	Connected(id Identity)
	// Seen is called for each publish of a gateway.
	Seen(id Identity)
	// Status is called with each valid status a gateway publishes.
	Status(id Identity, st gwproto.Status)
	// Disconnected is called when a gateway's session ends.
	Disconnected(id Identity)
}

// Event kinds.
const (
	EventConnect    = "connect"
	EventDisconnect = "disconnect"
	EventRefused    = "refused"
)

// Event is a gateway connection event, or a summary of several. Tenant and
// Serial are empty for a refused connection that cannot be attributed to a
// tenant: one whose certificate chain did not verify against a tenant's CA.
type Event struct {
	Kind   string
	Tenant string
	// Serial is the gateway (a summary of a tenant's events is always one
	// gateway's).
	Serial string
	// Remote is the peer's "ip:port"; in a summary its /24 or /64 network,
	// or "*" for several.
	Remote string
	// Reason is why a connection was refused or ended (for a session the
	// server ended, an End reason: EndRevoked, EndTakenOver, ...).
	Reason string
	// Count is how many events a summary stands for (0: a single event),
	// First and Last when the first and the last of them happened.
	Count       int
	First, Last time.Time
}

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = ":8883"
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 256 << 10
	}
	if c.MsgRate == 0 {
		c.MsgRate = 500
	}
	if c.MsgBurst == 0 {
		c.MsgBurst = 5000
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxConnsPerTenant == 0 {
		c.MaxConnsPerTenant = 10000
	}
	if c.MaxPendingHandshakes == 0 {
		c.MaxPendingHandshakes = 1024
	}
	if c.MaxPendingPerAddress == 0 {
		c.MaxPendingPerAddress = 128
	}
	if c.HandshakeRate == 0 {
		c.HandshakeRate = 1000
	}
	if c.MaxFutureSkew == 0 {
		c.MaxFutureSkew = 10 * time.Minute
	}
	if c.PersistTimeout == 0 {
		c.PersistTimeout = 10 * time.Second
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = 32
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 16384
	}
	if c.MaxKeepalive == 0 {
		c.MaxKeepalive = 20 * time.Minute
	}
	c.Events.defaults()
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxPayload < 0 || c.MaxPayload > 16<<20 {
		errs = append(errs, fmt.Errorf("ingest: max payload %d out of range 1..16MiB", c.MaxPayload))
	}
	if c.MsgRate < 0 || c.MsgBurst < 0 {
		errs = append(errs, errors.New("ingest: message rate and burst must not be negative"))
	}
	if c.ConnectTimeout < 0 || c.PersistTimeout < 0 {
		errs = append(errs, errors.New("ingest: timeouts must not be negative"))
	}
	if c.ReceiveMaximum < 0 || c.ReceiveMaximum > 65535 {
		errs = append(errs, fmt.Errorf("ingest: receive maximum %d out of range 1..65535", c.ReceiveMaximum))
	}
	if c.HandshakeRate != 0 && (c.HandshakeRate < 1 || c.HandshakeRate > 1e6) {
		errs = append(errs, fmt.Errorf("ingest: handshake rate %g out of range 1..1000000 per second", c.HandshakeRate))
	}
	if c.HandshakeConcurrency < 0 || c.HandshakeConcurrency > 1024 {
		errs = append(errs, fmt.Errorf("ingest: handshake concurrency %d out of range 1..1024 (0: half the CPUs)", c.HandshakeConcurrency))
	}
	if c.MaxInFlight < 0 || c.MaxInFlight > 1<<15 {
		errs = append(errs, fmt.Errorf("ingest: max in flight %d out of range 1..32768", c.MaxInFlight))
	}
	if err := c.Events.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

const (
	// maxInflightOut bounds the QoS 1 packets the server has sent a
	// gateway and not had acknowledged (mochi's MaximumInflight).
	maxInflightOut = 64
	// clientReadBuffer is the size of mochi's reader on a connection.
	clientReadBuffer = 512
)

// Server is the running ingest.
type Server struct {
	cfg    Config
	broker *mqtt.Server
	ln     *tlsListener
	hook   *hook
	events *recorder
	log    *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// New builds the ingest: the accept core (NewCore, which registers the
// metrics with reg) and the MQTT front end over it. base is the listener's
// TLS configuration from pki.GatewayTLSConfig without its verification,
// which the ingest adds.
func New(cfg Config, base *tls.Config, dir Directory, st Store, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	core, err := NewCore(cfg, dir, st, reg, log)
	if err != nil {
		return nil, err
	}
	log = log.With("component", "ingest")
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1 // gateways publish QoS 0 or 1 only
	// Retained messages are the cloud's own (the mesh keys and node list on
	// a gateway's down/ topics, published by the inline client): a
	// gateway's publishes never are (OnPublish clears their retain flag).
	caps.RetainAvailable = 1
	caps.SharedSubAvailable = 0
	caps.SubIDAvailable = 0
	// No topic aliases: gateways publish to one topic, so an alias would
	// save a few bytes, and mochi resolves it only after the ACL. CONNACK
	// carries no Topic Alias Maximum, which MQTT 5 reads as 0; with this
	// mochi enforces it (a publish with an alias: DISCONNECT 0x94).
	caps.TopicAliasMaximum = 0
	// A hard cap for the whole packet; payloads over MaxPayload but under it
	// get a reasoned refusal from the hook.
	caps.MaximumPacketSize = uint32(cfg.MaxPayload + 64<<10)
	caps.MaximumSessionExpiryInterval = 24 * 60 * 60
	// Error reports wait in a gateway's session until it acknowledges them:
	// at most this many (each at most maxReported rejections), so one
	// gateway that never acknowledges holds about a megabyte, not gigabytes.
	caps.MaximumInflight = maxInflightOut
	// mochi makes each connection a queue of this many packets for its
	// write loop, before anything is sent (8 bytes each). The server sends
	// gateways QoS 1 only, at most MaximumInflight of them unacknowledged
	// (mochi checks that before it queues), and its acknowledgements are
	// written directly: twice that leaves room and costs 1 KiB of the
	// connection, where mochi's 1024 took 8 (issue 11, 50k idle
	// connections).
	caps.MaximumClientWritesPending = 2 * maxInflightOut
	// The hook acknowledges publishes itself, in order, as their writes
	// complete (pipeline.go): mochi keeps no receive quota for them, and
	// the hook holds a connection to this announced maximum.
	caps.ReceiveMaximum = uint16(cfg.ReceiveMaximum)
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	broker := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true, // for reports on v1/gw/{serial}/down/errors and deliveries on down/
		// Every packet mochi writes goes to the connection at once, never
		// into its write buffer: the pipeline's acker writes PUBACKs
		// straight to the connection, and a refusal mochi holds back would
		// be overtaken by later PUBACKs (pipeline.go).
		ClientNetWriteBufferSize: 1,
		// tls.Conn holds the decrypted record already: mochi's reader only
		// copies from it, and its 2 KiB default would take 2 of an idle
		// connection's 30 KiB budget.
		ClientNetReadBufferSize: clientReadBuffer,
		Logger:                  slog.New(quietHandler{log.Handler()}),
	})
	events := newRecorder(cfg.Events, cfg.OnEvent, log, func(kind string) { core.m.eventsSummarized.WithLabelValues(kind).Inc() })
	h := newHook(cfg, broker, dir, core, events.record, log)
	if err := broker.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("ingest: add hook: %w", err)
	}
	tlsCfg := base.Clone()
	tlsCfg.ClientAuth = tls.RequireAnyClientCert
	// Full-size TLS records from the first byte: the acker writes several
	// PUBACKs in one Write, which must be one record and one syscall, not
	// the ~1 KB records of Go's slow start.
	tlsCfg.DynamicRecordSizingDisabled = true
	// No session tickets: a resumed session proves that the peer holds the
	// session's secret, not its certificate's key, on which the attribution
	// of a refusal rests (tlsListener.handshake); and the tickets sent so far
	// could never be redeemed (each connection had a clone of this
	// configuration, with ticket keys of its own), so a gateway loses
	// nothing, and the server saves writing one per handshake.
	tlsCfg.SessionTicketsDisabled = true
	ln := &tlsListener{
		id: "gateways", addr: cfg.Addr, base: tlsCfg,
		auth: func(cs tls.ConnectionState) (Identity, error) {
			return dir.Authenticate(cs.PeerCertificates, time.Now())
		},
		timeout: cfg.ConnectTimeout, pending: make(chan struct{}, cfg.MaxPendingHandshakes),
		perAddrMax: cfg.MaxPendingPerAddress, perAddr: map[string]int{},
		m: core.m, log: log, emit: events.record,
		// A session ends once its publish in progress has its answer.
		conns: map[net.Conn]*gatewayConn{}, drain: cfg.PersistTimeout + time.Second,
	}
	concurrency := cfg.HandshakeConcurrency
	if concurrency == 0 {
		concurrency = defaultHandshakeConcurrency()
	}
	ln.gate = newHandshakeGate(concurrency, cfg.HandshakeRate, ln.stopped(), reg)
	if err := broker.AddListener(ln); err != nil {
		return nil, fmt.Errorf("ingest: listen on %s: %w", cfg.Addr, err)
	}
	return &Server{cfg: cfg, broker: broker, ln: ln, hook: h, events: events, log: log}, nil
}

// Start starts serving gateways.
func (s *Server) Start() error {
	s.events.start()
	return s.broker.Serve()
}

// Addr returns the bound listen address.
func (s *Server) Addr() string { return s.ln.Address() }

// Close stops the listener, disconnects every gateway (MQTT 5: DISCONNECT
// 0x8B) and stops the broker. It does not go through mochi's own close of
// a listener's clients, which can deadlock (tlsListener). It may be called
// more than once (mochi's own Close may not: it closes a channel); every
// call returns the first one's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.broker.Close()
		s.events.close() // the summaries still gathering, after the last disconnects
	})
	return s.closeErr
}

// KickStale closes the gateway's live session on this node if stale names
// a reason (an End reason, see EndReason) why the session, on the
// certificate it authenticated with (by serial number), may no longer go
// on, and reports whether it did; stale returns "" when it may. The
// disconnect is recorded with that reason, and an MQTT 5 gateway gets a
// DISCONNECT saying it. It is called when a gateway is revoked or
// isolated, or a renewal supersedes its certificate; its reconnects on a
// certificate no longer good are refused at the handshake.
func (s *Server) KickStale(tenant, serial string, stale func(certSerial string) string) bool {
	return s.hook.kick(tenant, serial, stale)
}

// DropTenant closes every live session of the tenant's gateways on this
// node (EndTenantDeleted) and returns how many it closed. It is called when
// the tenant is deleted, after the registry forgot the tenant, so that the
// gateways' reconnects are refused at the handshake.
func (s *Server) DropTenant(tenant string) int {
	n := 0
	for _, serial := range s.hook.sessions(tenant) {
		if s.hook.kick(tenant, serial, func(string) string { return EndTenantDeleted }) {
			n++
		}
	}
	return n
}

// Connected reports whether the gateway has a live session here.
func (s *Server) Connected(tenant, serial string) bool {
	_, ok := s.hook.session(tenant, serial)
	return ok
}

// Deliver publishes payload to a gateway's down/ topic, retained and QoS 1:
// the gateway gets it now if it is subscribed on this node, and on its
// next subscription to this node otherwise. Only topics under the
// serial's down/ are accepted.
func (s *Server) Deliver(serial, topic string, payload []byte) error {
	if !strings.HasPrefix(topic, gwproto.DownTopic(serial)+"/") {
		return fmt.Errorf("ingest: %q is not a down topic of %s", topic, serial)
	}
	return s.broker.Publish(topic, payload, true, 1)
}

// DeliverFor is Deliver of a message of the tenant's gateway serial: what
// another tenant retained on the serial's down/ topics is dropped first, and
// a message left for a gateway that the serial no longer is (its last
// session here was another tenant's, and the tenant has no such gateway)
// is not published.
func (s *Server) DeliverFor(tenant, serial, topic string, payload []byte) error {
	if !s.hook.retainFor(tenant, serial) {
		return nil
	}
	return s.Deliver(serial, topic, payload)
}

// Sessions returns the serials of the tenant's gateways with a live
// session on this node.
func (s *Server) Sessions(tenant string) []string {
	return s.hook.sessions(tenant)
}
