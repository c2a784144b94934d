// Package agent is the gateway agent (`iotransit gateway run`): it keeps
// the gateway's identity (a key made in its key store that never leaves
// it, enrolled once with a token, renewed over mutual TLS at two thirds of
// the certificate's life), receives the sensor mesh's frames on one UDP
// socket and checks them (internal/mesh), appends what it accepts to the
// encrypted store-and-forward queue together with the replay windows
// (internal/gateway/queue), and uploads the queue in order over MQTT 5 with
// mutual TLS, with a window of QoS 1 publishes in flight; it tells the
// cloud its status and takes the mesh keys, the node list and firmware
// notices from its down topics (internal/gwproto).
//
// It talks to the cloud only through the public client package (HTTPS) and
// MQTT: it knows no server package.
//
// Files in the data directory: keys/ (the file key store, when no PKCS#11
// token is used), cert.pem (the certificate chain), next-cert.pem (during
// a renewal), queue.db (the queue), queue.key and kdk.key (the queue's data
// key and the key-delivery X25519 key, sealed by the key store), meshkeys
// (the last key set as delivered: sealed to the key-delivery key) and
// nodes (the node list, sealed by the key store).
package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotransit/iotransit/internal/gateway/keystore"
	"github.com/iotransit/iotransit/internal/gateway/queue"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/mesh"
	"github.com/iotransit/iotransit/internal/retry"
)

// Version is the agent's version, sent in every status.
var Version = "dev"

// FirmwareHandler acts on firmware notices (the updater implements it).
type FirmwareHandler interface {
	// Notice is called with each notice received on the firmware topic.
	Notice(ctx context.Context, n gwproto.FirmwareNotice) error
	// Installed returns the active slot's firmware version and slot ("a"
	// or "b"), "" when not known.
	Installed() (version, slot string)
}

// logFirmware is the default FirmwareHandler: it logs notices and ignores
// them.
type logFirmware struct{ log *slog.Logger }

func (l logFirmware) Notice(_ context.Context, n gwproto.FirmwareNotice) error {
	l.log.Info("firmware notice ignored: no updater", "rollout", n.RolloutID, "target", n.Target, "version", n.Version)
	return nil
}

func (logFirmware) Installed() (string, string) { return "", "" }

// Config is how the agent runs.
type Config struct {
	// DataDir holds the agent's files (created 0700).
	DataDir string
	// Server is the HTTPS API (https://host:port).
	Server string
	// MQTTAddr is the ingest's host:port.
	MQTTAddr string
	// CAPEM verifies the servers (API and MQTT).
	CAPEM []byte
	// ServerName is the name checked in the MQTT server's certificate
	// (default: MQTTAddr's host).
	ServerName string
	// Serial is the gateway's serial.
	Serial string
	// EnrollToken is spent on the first start (no certificate yet).
	EnrollToken string
	// MeshAddr is the UDP address of the mesh receiver.
	MeshAddr string
	// PKCS11 selects a token for the keys instead of files.
	PKCS11 *keystore.PKCS11Config
	// Queue bounds the store-and-forward queue (default
	// queue.DefaultOptions).
	Queue queue.Options
	// Firmware acts on firmware notices (default: log and ignore).
	Firmware FirmwareHandler
	// Logger (default slog.Default).
	Logger *slog.Logger

	// StatusInterval is the least time between two statuses sent because
	// something changed (default one minute).
	StatusInterval time.Duration
	// Reconnect is the backoff between connection attempts (default 1 s
	// to 1 min).
	Reconnect retry.Backoff
	// RenewBackoff is the backoff between failed renewals (default 10 s
	// to 10 min).
	RenewBackoff retry.Backoff
	// BatchMessages and BatchBytes bound one publish (a JSON array);
	// Window is how many publishes may wait for their PUBACK (defaults
	// 100 messages, 64 KiB, 16).
	BatchMessages, BatchBytes, Window int
	// Linger is how long accepted frames are gathered before they are
	// written to the queue in one commit (default 10 ms; negative: none).
	// Frames come one by one from many nodes: a commit (and a disk sync)
	// per frame cost 285 µs of CPU per frame at 2,000 frames/s.
	Linger time.Duration
}

func (c *Config) defaults() {
	if c.Queue == (queue.Options{}) {
		c.Queue = queue.DefaultOptions()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Firmware == nil {
		c.Firmware = logFirmware{c.Logger}
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = time.Minute
	}
	if c.Reconnect.Base <= 0 {
		c.Reconnect = retry.Backoff{Base: time.Second, Max: time.Minute}
	}
	if c.RenewBackoff.Base <= 0 {
		c.RenewBackoff = retry.Backoff{Base: 10 * time.Second, Max: 10 * time.Minute}
	}
	if c.BatchMessages <= 0 {
		c.BatchMessages = 100
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = 64 << 10
	}
	if c.Window <= 0 {
		c.Window = 16
	}
	if c.Linger == 0 {
		c.Linger = 10 * time.Millisecond
	}
	if c.ServerName == "" {
		if h, _, err := net.SplitHostPort(c.MQTTAddr); err == nil {
			c.ServerName = h
		}
	}
}

// validate reports every missing setting at once.
func (c *Config) validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"data directory", c.DataDir}, {"server", c.Server}, {"MQTT address", c.MQTTAddr}, {"serial", c.Serial}, {"mesh address", c.MeshAddr}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("agent: a %s is required", f.name))
		}
	}
	if len(c.CAPEM) == 0 {
		errs = append(errs, errors.New("agent: the CA that verifies the servers is required"))
	}
	if c.PKCS11 != nil {
		errs = append(errs, c.PKCS11.Validate())
	}
	return errors.Join(errs...)
}

// meshReadBuffer is the mesh socket's receive buffer asked for.
const meshReadBuffer = 4 << 20

// Agent is a running gateway agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	pool  *x509.CertPool
	store keystore.Store
	q     *queue.Queue
	rcv   *mesh.Receiver
	id    *identity
	kdk   *deliveryKey
	conn  *net.UDPConn

	inbox chan []byte // accepted mesh messages waiting for the queue
	// restored are the replay windows read from the queue at New, and
	// restoredMark the receiver's change mark then.
	restored     []mesh.NodeState
	restoredMark uint64

	renewMu   sync.Mutex // one renewal at a time
	fatal     error      // what ended Run (fail)
	stopRun   context.CancelFunc
	mu        sync.Mutex
	renewErr  string // the last renewal failure, "" after a success
	changed   chan struct{}
	connected atomic.Bool

	// Counters of the uploader.
	// published and refused count messages by PUBACK, rejected those the
	// cloud's reports name, recordErrors queue records that did not open.
	published, refused, rejected, recordErrors atomic.Uint64
}

// New opens the agent's stores, enrolls on the first start, restores the
// keys, node list and replay windows, and binds the mesh socket. Run
// starts it; Close releases what New opened.
func New(ctx context.Context, cfg Config) (_ *Agent, err error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	addr, err := net.ResolveUDPAddr("udp", cfg.MeshAddr)
	if err != nil {
		return nil, fmt.Errorf("agent: mesh address: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.CAPEM) {
		return nil, errors.New("agent: no PEM certificate in the CA")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("serial", cfg.Serial), pool: pool,
		rcv: mesh.NewReceiver(nil), inbox: make(chan []byte, 4096), changed: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	a.store, err = keystore.Open(keystore.Config{Dir: a.path("keys"), PKCS11: cfg.PKCS11})
	if err != nil {
		return nil, fmt.Errorf("agent: key store: %w", err)
	}
	if a.id, err = loadIdentity(ctx, a); err != nil {
		return nil, err
	}
	if a.kdk, err = loadDeliveryKey(a.store, a.path("kdk.key")); err != nil {
		return nil, err
	}
	a.q, err = a.openQueue()
	if err != nil {
		return nil, fmt.Errorf("agent: queue: %w", err)
	}
	if err := a.restoreMesh(); err != nil {
		return nil, err
	}
	if a.conn, err = net.ListenUDP("udp", addr); err != nil {
		return nil, fmt.Errorf("agent: mesh receiver: %w", err)
	}
	// Room for a burst of frames while the reader is busy (the kernel
	// caps it at net.core.rmem_max).
	_ = a.conn.SetReadBuffer(meshReadBuffer)
	return a, nil
}

// path is a file of the data directory.
func (a *Agent) path(name string) string { return filepath.Join(a.cfg.DataDir, name) }

// MeshAddr is the mesh receiver's address (the port when 0 was asked).
func (a *Agent) MeshAddr() net.Addr { return a.conn.LocalAddr() }

// Receiver is the agent's mesh receiver (for its counters).
func (a *Agent) Receiver() *mesh.Receiver { return a.rcv }

// Queue is the agent's store-and-forward queue (for its counters).
func (a *Agent) Queue() *queue.Queue { return a.q }

// Connected reports whether the MQTT session is up.
func (a *Agent) Connected() bool { return a.connected.Load() }

// SetFirmwareHandler sets the handler of firmware notices (the updater,
// which needs APIClient, so it comes after New); call it before Run.
func (a *Agent) SetFirmwareHandler(h FirmwareHandler) {
	if h != nil {
		a.cfg.Firmware = h
	}
}

// Refused is how many messages the cloud refused for good (PUBACK):
// counted and skipped.
func (a *Agent) Refused() uint64 { return a.refused.Load() }

// Rejected is how many messages the cloud's reports (down/errors) named
// as rejected.
func (a *Agent) Rejected() uint64 { return a.rejected.Load() }

// Certificate returns the certificate in use.
func (a *Agent) Certificate() *x509.Certificate { return a.id.leaf() }

// Run runs the agent until ctx ends: the mesh receiver, the queue's
// appender, the renewal, and the MQTT session (reconnected with backoff).
// It returns nil then, or an error when the queue broke (after replacing
// it): the agent's supervisor should start it again.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.mu.Lock()
	a.stopRun = cancel
	a.mu.Unlock()
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(a.receive)
	run(a.appendLoop)
	run(a.renewLoop)
	run(a.sessionLoop)
	<-ctx.Done()
	a.conn.Close() // ends receive
	wg.Wait()
	a.mu.Lock()
	err := a.fatal
	a.mu.Unlock()
	if err != nil {
		if rerr := a.recoverQueue(); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// Close releases the socket, the queue and the key store.
func (a *Agent) Close() {
	if a.conn != nil {
		a.conn.Close()
	}
	if a.q != nil {
		if err := a.q.Close(); err != nil {
			a.log.Error("close queue", "err", err)
		}
	}
	if a.store != nil {
		a.store.Close()
	}
}

// markChanged asks for a status soon (within the status interval).
func (a *Agent) markChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}
