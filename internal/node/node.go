// Package node wires one running iotransit: backbone, kms, registry, store,
// ingest and API, plus the development bootstrap. cmd/iotransit and the
// end-to-end tests start a node through it, so both run the same wiring.
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/iotransit/iotransit/internal/store"
)

// Durability levels of --fsync.
const (
	FsyncDefault = "default" // the write reached the OS before the ack: survives kill -9
	FsyncAlways  = "always"  // fsync before the ack: survives power loss of the node
)

// Config is everything a node needs.
type Config struct {
	DataDir  string
	MQTTAddr string
	APIAddr  string
	// Dev creates tenant "dev" with gateway DevGateway and its key and
	// certificate files, and serves certificates valid for localhost.
	Dev bool
	// ServerNames are the DNS names and IP addresses of the server
	// certificate issued by the internal server CA (dev: localhost, 127.0.0.1).
	ServerNames []string
	// TLSCertFile and TLSKeyFile replace the internal server CA with the
	// operator's own certificate chain and key.
	TLSCertFile, TLSKeyFile string
	// NATSURLs of an external cluster (empty: embedded), its credentials and
	// the replication of streams and buckets.
	NATSURLs  []string
	NATSCreds string
	Replicas  int
	// Fsync is FsyncDefault or FsyncAlways.
	Fsync string
	// CertValidity is the lifetime of issued gateway certificates (default 365 days).
	CertValidity time.Duration
	Ingest       ingest.Config
	Store        store.Config
	// APILimits are the API's rate limits (zero values: defaults).
	APILimits api.Limits
	// StreamRecheck is how often an open WebSocket stream re-checks its
	// credential (default 10s).
	StreamRecheck time.Duration
	// MaxStreamsPerCredential and MaxStreamsPerTenant bound the WebSocket
	// streams open at once (0: the API's defaults).
	MaxStreamsPerCredential, MaxStreamsPerTenant int
	// Audit configures checkpoints of the audit log.
	Audit audit.Config
	// AllowPrivateTargets lets integrations reach loopback, private and
	// link-local addresses (on in dev mode).
	AllowPrivateTargets bool
	// Forward tunes delivery (zero values: defaults).
	Forward forward.Config
	Logger  *slog.Logger
}

// DevTenant and DevGateway are what --dev creates.
const (
	DevTenant  = "dev"
	DevGateway = "TSGW06DEV00000001"
)

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("a data directory is required (--data-dir)"))
	}
	switch c.Fsync {
	case "", FsyncDefault, FsyncAlways:
	default:
		errs = append(errs, fmt.Errorf("--fsync %q: want %q or %q", c.Fsync, FsyncDefault, FsyncAlways))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.TLSCertFile == "" && len(c.ServerNames) == 0 && !c.Dev {
		errs = append(errs, errors.New("the server certificate needs --server-name (or --tls-cert and --tls-key)"))
	}
	if err := c.Ingest.Validate(); err != nil {
		errs = append(errs, err)
	}
	bb := c.backboneConfig()
	if err := bb.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) backboneConfig() backbone.Config {
	r := c.Replicas
	if r == 0 {
		r = 1
	}
	return backbone.Config{
		DataDir: c.DataDir, URLs: c.NATSURLs, CredsFile: c.NATSCreds, Replicas: r,
		SyncAlways: c.Fsync == FsyncAlways,
	}
}

// Node is a running iotransit.
type Node struct {
	cfg      Config
	log      *slog.Logger
	bb       *backbone.Backbone
	keys     *kms.Keyring
	reg      *registry.Registry
	st       *store.Store
	creds    *credential.Store
	audit    *audit.Log
	events   chan auditEvent
	fwd      *forward.Engine
	fwdReg   *forward.Registry
	ing      *ingest.Server
	api      *api.Server
	serverCA []byte
	opKey    string
	metrics  *prometheus.Registry

	eventsMu     sync.RWMutex
	eventsClosed bool

	stopOnce  sync.Once
	stop      chan struct{}
	auditDone chan struct{}
}

// Start starts a node. On error everything started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Dev && len(cfg.ServerNames) == 0 {
		cfg.ServerNames = []string{"localhost", "127.0.0.1"}
	}
	if cfg.Fsync == "" {
		cfg.Fsync = FsyncDefault
	}
	if cfg.CertValidity == 0 {
		cfg.CertValidity = 365 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Ingest.Addr == "" {
		cfg.Ingest.Addr = cfg.MQTTAddr
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), auditDone: make(chan struct{}), metrics: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			n.Close() // a return statement has already set the result to nil
		}
	}()
	n.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	root, err := kms.LoadOrCreateRootKey(filepath.Join(cfg.DataDir, "root.key"))
	if err != nil {
		return nil, err
	}
	if n.opKey, err = loadOrCreateSecret(filepath.Join(cfg.DataDir, "operator.key"), "itop_"); err != nil {
		return nil, err
	}
	if n.bb, err = backbone.Start(ctx, cfg.backboneConfig(), n.log); err != nil {
		return nil, err
	}
	kmsKV, err := n.bb.KV(ctx, names.KMSBucket, 1)
	if err != nil {
		return nil, err
	}
	if n.keys, err = kms.New(root, backbone.KeyStore{KV: kmsKV}); err != nil {
		return nil, err
	}
	if n.reg, err = registry.Open(ctx, n.bb, n.keys, n.log); err != nil {
		return nil, err
	}
	n.st = store.New(cfg.Store, n.bb, n.bb.JS, n.keys)
	if n.creds, err = credential.Open(ctx, n.bb); err != nil {
		return nil, err
	}
	jwtKey, err := n.systemKey(ctx, "jwt-ed25519")
	if err != nil {
		return nil, err
	}
	auditKey, err := n.systemKey(ctx, "audit-ed25519")
	if err != nil {
		return nil, err
	}
	if n.audit, err = audit.Open(ctx, cfg.Audit, n.bb, n.bb.JS, auditKey, n.log); err != nil {
		return nil, err
	}
	if err := n.audit.EnsureTenant(ctx, systemKeys); err != nil {
		return nil, err
	}
	for _, t := range n.reg.Tenants() {
		if err := n.st.EnsureTenant(ctx, t.ID); err != nil {
			return nil, err
		}
		if err := n.audit.EnsureTenant(ctx, t.ID); err != nil {
			return nil, err
		}
	}
	fcfg := cfg.Forward
	fcfg.Policy = egress.Policy{AllowPrivate: cfg.AllowPrivateTargets || cfg.Dev}
	if fcfg.NodeID == "" { // stable across restarts: a restarted node takes its leases back at once
		id, err := loadOrCreateSecret(filepath.Join(cfg.DataDir, "node.id"), "node-")
		if err != nil {
			return nil, err
		}
		fcfg.NodeID = id[:17]
	}
	fcfg.ParseKey = parseKey
	fdeps := forward.Deps{JetStream: n.bb.JS, KV: n.bb, Streams: n.bb, Keys: n.keys, Messages: n.st, Factories: factories(), Metrics: n.metrics, Logger: n.log}
	n.fwd = forward.New(fcfg, fdeps)
	n.fwdReg = forward.NewRegistry(fcfg, fdeps, n.fwd)
	for _, t := range n.reg.Tenants() {
		n.fwd.AddTenant(t.ID)
	}
	// Tenants created anywhere get their streams here too (and a tenant whose
	// creation was cut short is repaired), retried until it works.
	n.reg.OnTenantAdded(func(t registry.Tenant) {
		go n.ensureTenant(t.ID)
		n.fwd.AddTenant(t.ID)
	})
	n.events = make(chan auditEvent, 4096)
	go n.auditLoop()
	cfg.Ingest.OnEvent = n.ingestEvent
	certs, err := n.serverCertificate(ctx)
	if err != nil {
		return nil, err
	}
	if n.ing, err = ingest.New(cfg.Ingest, pki.ServerTLSConfig(certs), n.reg, n.st, n.metrics, n.log); err != nil {
		return nil, err
	}
	n.reg.OnGatewayChange(func(g registry.Gateway) {
		if g.State != registry.StateActive {
			if n.ing.Kick(g.Tenant, g.Serial) {
				n.log.Info("live session closed", "tenant_id", g.Tenant, "gateway_id", g.Serial, "state", string(g.State))
			}
			return
		}
		// A renewal supersedes older certificates: a session still on one
		// of them ends too (the gateway reconnects with its new one).
		if n.ing.KickStale(g.Tenant, g.Serial, func(certSerial string) bool { return !g.CertificateValid(certSerial, time.Now()) }) {
			n.log.Info("live session closed: its certificate was revoked", "tenant_id", g.Tenant, "gateway_id", g.Serial)
		}
	})
	if err := n.ing.Start(); err != nil {
		return nil, fmt.Errorf("start ingest: %w", err)
	}
	if n.api, err = api.New(api.Config{Addr: cfg.APIAddr, OperatorKey: n.opKey, Limits: cfg.APILimits, CertValidity: cfg.CertValidity, StreamRecheck: cfg.StreamRecheck,
		MaxStreamsPerCredential: cfg.MaxStreamsPerCredential, MaxStreamsPerTenant: cfg.MaxStreamsPerTenant}, pki.ServerTLSConfig(certs), api.Deps{
		Registry: n.reg, Credentials: n.creds, Messages: n.st, Audit: n.audit,
		Integrations: n.fwdReg, Stream: n.st, ParseKey: parseKey,
		Tokens:       credential.NewIssuer(jwtKey, "iotransit", 0),
		CreateTenant: n.CreateTenant, ServerCA: n.serverCA, Connected: n.ing.Connected,
		Ready: n.Ready, Gatherer: n.metrics, Registerer: n.metrics,
	}, n.log); err != nil {
		return nil, fmt.Errorf("api on %s: %w", cfg.APIAddr, err)
	}
	n.api.Start()
	if cfg.Dev {
		if err := n.devBootstrap(ctx); err != nil {
			return nil, fmt.Errorf("dev bootstrap: %w", err)
		}
	}
	n.log.Info("iotransit started", "mqtt_addr", n.MQTTAddr(), "api_addr", n.APIAddr(), "fsync", cfg.Fsync, "dev", cfg.Dev)
	return n, nil
}

// Close stops the node: API, ingest, registry watches, backbone.
func (n *Node) Close() {
	n.stopOnce.Do(func() {
		close(n.stop)
		if n.api != nil {
			_ = n.api.Close()
		}
		if n.ing != nil {
			_ = n.ing.Close()
		}
		if n.fwd != nil {
			n.fwd.Close()
		}
		if n.events != nil {
			n.eventsMu.Lock()
			n.eventsClosed = true
			close(n.events)
			n.eventsMu.Unlock()
			<-n.auditDone
		}
		if n.audit != nil {
			n.audit.Close()
		}
		if n.reg != nil {
			n.reg.Close()
		}
		if n.bb != nil {
			n.bb.Close()
		}
	})
}

// Ready reports whether the node can take and serve data.
func (n *Node) Ready(ctx context.Context) error { return n.bb.Ready(ctx) }

// MQTTAddr returns the bound gateway listener address.
func (n *Node) MQTTAddr() string { return n.ing.Addr() }

// APIAddr returns the bound API address.
func (n *Node) APIAddr() string { return n.api.Addr() }

// OperatorKey returns the operator credential.
func (n *Node) OperatorKey() string { return n.opKey }

// ServerCAPEM returns the PEM that verifies the node's server certificates.
func (n *Node) ServerCAPEM() []byte { return n.serverCA }

// Registry returns the registry.
func (n *Node) Registry() *registry.Registry { return n.reg }

// Store returns the message store.
func (n *Node) Store() *store.Store { return n.st }

// Ingest returns the ingest server.
func (n *Node) Ingest() *ingest.Server { return n.ing }

// Metrics returns the node's metrics registry.
func (n *Node) Metrics() prometheus.Gatherer { return n.metrics }

// CreateTenant creates a tenant with its CA and streams.
func (n *Node) CreateTenant(ctx context.Context, id string) (registry.Tenant, error) {
	t, err := n.reg.CreateTenant(ctx, id)
	if err != nil {
		return t, err
	}
	if err := n.st.EnsureTenant(ctx, id); err != nil {
		return t, err
	}
	return t, n.audit.EnsureTenant(ctx, id)
}

// ensureTenant creates a tenant's streams, retrying with backoff until it
// works or the node stops.
func (n *Node) ensureTenant(id string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	_ = retry.Until(ctx, retry.Backoff{Base: time.Second, Max: time.Minute}, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return errors.Join(n.st.EnsureTenant(ctx, id), n.audit.EnsureTenant(ctx, id))
	}, func(err error, wait time.Duration) {
		n.log.Warn("tenant streams not ready; retrying", "tenant_id", id, "error", err, "retry_in", wait.String())
	})
}

// Audit returns the audit log.
func (n *Node) Audit() *audit.Log { return n.audit }

// Credentials returns the credential store.
func (n *Node) Credentials() *credential.Store { return n.creds }

// auditEvent is a gateway connection event waiting to be audited.
type auditEvent struct {
	tenant string
	ev     audit.Event
}

// ingestEvent queues a gateway connection event for the audit log without
// blocking the connection; when the queue is full the event is counted
// and logged as dropped.
func (n *Node) ingestEvent(e ingest.Event) {
	tenant := e.Tenant
	if tenant == "" {
		tenant = systemKeys
	}
	actor, target := "gateway:"+e.Serial, "gateway:"+e.Serial
	if e.Serial == "" {
		actor, target = "anonymous", "listener:mqtt"
	}
	outcome := "ok"
	if e.Kind == ingest.EventRefused {
		outcome = e.Reason
	}
	ev := audit.Event{Actor: actor, Action: "ingest.connection." + e.Kind, Target: target, Source: e.Remote, Outcome: outcome}
	if e.Kind == ingest.EventDisconnect {
		ev.Detail = map[string]string{"reason": e.Reason}
	}
	n.eventsMu.RLock()
	defer n.eventsMu.RUnlock()
	if n.eventsClosed { // shutting down: sessions closing now are not audited
		return
	}
	select {
	case n.events <- auditEvent{tenant: tenant, ev: ev}:
	default:
		n.log.Error("audit queue full: connection event dropped", "tenant_id", tenant, "action", ev.Action)
	}
}

func (n *Node) auditLoop() {
	defer close(n.auditDone)
	for e := range n.events {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := n.audit.Append(ctx, e.tenant, e.ev); err != nil {
			n.log.Error("audit append failed", "tenant_id", e.tenant, "action", e.ev.Action, "error", err)
		}
		cancel()
	}
}

// systemKey returns the platform Ed25519 key called name, creating it on
// first start; it is kept in KV sealed by kms.
func (n *Node) systemKey(ctx context.Context, name string) (ed25519.PrivateKey, error) {
	kv, err := n.bb.KV(ctx, names.SystemBucket, 1)
	if err != nil {
		return nil, err
	}
	if err := n.keys.EnsureTenant(ctx, systemKeys); err != nil {
		return nil, err
	}
	aad := []byte("node/system-key/" + name)
	for {
		e, err := kv.Get(ctx, name)
		if err == nil {
			seed, err := n.keys.Open(ctx, systemKeys, e.Value(), aad)
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", name, err)
			}
			if len(seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("%s has a bad size", name)
			}
			return ed25519.NewKeyFromSeed(seed), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
		sealed, err := n.keys.Seal(ctx, systemKeys, seed, aad)
		if err != nil {
			return nil, err
		}
		if _, err := kv.Create(ctx, name, sealed); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("store %s: %w", name, err)
		}
		// Loop: read back whichever node's key won.
	}
}

// loadOrCreateSecret reads a secret file, creating it (0600) with prefix and
// 32 random bytes if missing. A file readable by others is refused.
func loadOrCreateSecret(path, prefix string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return "", err
		}
		secret := prefix + base64.RawURLEncoding.EncodeToString(raw)
		if err := writeFileExcl(path, []byte(secret+"\n"), 0o600); err != nil {
			return "", err
		}
		return secret, nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s has mode %v; it must be 0600", path, st.Mode().Perm())
	}
	return strings.TrimSpace(string(b)), nil
}

func writeFileExcl(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeFileAtomic replaces path with data (mode) through a temporary file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// systemKeys is the kms owner of platform secrets (not a tenant: tenant ids
// cannot start with '_').
const systemKeys = "_system"

type serverCARecord struct {
	Cert string `json:"cert"`
	Key  []byte `json:"key"` // PKCS#8, sealed by kms
}

const serverCAKeyAAD = "node/server-ca-key"

// serverCertificate returns the certificate source of the listeners: the
// operator's files, or a certificate from the internal server CA (kept in
// KV, its key sealed by kms) renewed in the background.
func (n *Node) serverCertificate(ctx context.Context) (*pki.CertSource, error) {
	if n.cfg.TLSCertFile != "" {
		c, err := tls.LoadX509KeyPair(n.cfg.TLSCertFile, n.cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		pemBytes, err := os.ReadFile(n.cfg.TLSCertFile)
		if err != nil {
			return nil, err
		}
		certs, err := pki.ParseCertsPEM(pemBytes)
		if err != nil {
			return nil, err
		}
		n.serverCA = pki.EncodeCertPEM(certs[len(certs)-1].Raw)
		return pki.NewCertSource(&c), nil
	}
	ca, err := n.loadServerCA(ctx)
	if err != nil {
		return nil, err
	}
	n.serverCA = ca.CertPEM
	const validity = 90 * 24 * time.Hour
	issue := func() (*tls.Certificate, error) {
		key, err := pki.NewKey()
		if err != nil {
			return nil, err
		}
		cert, _, err := ca.IssueServer(key.Public(), n.cfg.ServerNames, validity, time.Now())
		if err != nil {
			return nil, err
		}
		return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
	}
	c, err := issue()
	if err != nil {
		return nil, err
	}
	src := pki.NewCertSource(c)
	go func() { // renew at two thirds of the lifetime
		for {
			select {
			case <-n.stop:
				return
			case <-time.After(validity * 2 / 3):
				if c, err := issue(); err != nil {
					n.log.Error("renew server certificate", "error", err)
				} else {
					src.Set(c)
				}
			}
		}
	}()
	return src, nil
}

// loadServerCA returns the internal server CA, creating it on first start.
func (n *Node) loadServerCA(ctx context.Context) (*pki.CA, error) {
	kv, err := n.bb.KV(ctx, names.SystemBucket, 1)
	if err != nil {
		return nil, err
	}
	if err := n.keys.EnsureTenant(ctx, systemKeys); err != nil {
		return nil, err
	}
	for {
		e, err := kv.Get(ctx, "server-ca")
		if err == nil {
			var rec serverCARecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return nil, fmt.Errorf("decode server CA: %w", err)
			}
			der, err := n.keys.Open(ctx, systemKeys, rec.Key, []byte(serverCAKeyAAD))
			if err != nil {
				return nil, fmt.Errorf("open server CA key: %w", err)
			}
			return pki.LoadCA([]byte(rec.Cert), der)
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("read server CA: %w", err)
		}
		ca, err := pki.NewCA("iotransit server CA", 20*365*24*time.Hour, time.Now())
		if err != nil {
			return nil, err
		}
		der, err := ca.KeyDER()
		if err != nil {
			return nil, err
		}
		sealed, err := n.keys.Seal(ctx, systemKeys, der, []byte(serverCAKeyAAD))
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(serverCARecord{Cert: string(ca.CertPEM), Key: sealed})
		if err != nil {
			return nil, err
		}
		if _, err := kv.Create(ctx, "server-ca", b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("store server CA: %w", err)
		}
		// Loop: read back whichever node's CA won.
	}
}

// DevGatewayDir returns where --dev writes the dev gateway's files.
func (n *Node) DevGatewayDir() string {
	return filepath.Join(n.cfg.DataDir, DevTenant, "gateways", DevGateway)
}

// devBootstrap creates (or reuses) tenant dev, gateway DevGateway, its key,
// CSR and certificate, and writes ca.pem, cert.pem and key.pem (0600).
func (n *Node) devBootstrap(ctx context.Context) error {
	record := func(tenant, action, target string) error {
		_, err := n.audit.Append(ctx, tenant, audit.Event{Actor: "system", Action: action, Target: target, Outcome: "ok", Detail: map[string]string{"by": "dev bootstrap"}})
		return err
	}
	if _, ok := n.reg.Tenant(DevTenant); !ok {
		if _, err := n.CreateTenant(ctx, DevTenant); err != nil {
			return err
		}
		if err := errors.Join(record(systemKeys, "registry.tenant.create", "tenant:"+DevTenant), record(DevTenant, "registry.tenant.create", "tenant:"+DevTenant)); err != nil {
			return err
		}
	}
	if _, ok := n.reg.Gateway(DevTenant, DevGateway); !ok {
		if _, err := n.reg.RegisterGateway(ctx, DevTenant, DevGateway); err != nil {
			return err
		}
		if err := record(DevTenant, "registry.gateway.register", "gateway:"+DevGateway); err != nil {
			return err
		}
	}
	dir := n.DevGatewayDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "ca.pem"), n.serverCA, 0o644); err != nil {
		return err
	}
	if n.devCertUsable(dir) {
		return nil
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.MakeCSR(key, DevGateway)
	if err != nil {
		return err
	}
	certPEM, _, err := n.reg.IssueCertificate(ctx, DevTenant, DevGateway, csr, n.cfg.CertValidity)
	if err != nil {
		return err
	}
	if err := record(DevTenant, "pki.cert.issue", "gateway:"+DevGateway); err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "cert.pem"), certPEM, 0o644)
}

// devCertUsable reports whether the dev gateway's files hold a certificate
// the node would accept now.
func (n *Node) devCertUsable(dir string) bool {
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return false
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return false
	}
	_, err = n.reg.Authenticate([]*x509.Certificate{leaf}, time.Now().Add(24*time.Hour))
	return err == nil
}

// LocalHostPort splits addr with an unspecified host replaced by localhost.
func LocalHostPort(addr string) (string, string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "localhost", addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return host, port
}

// DevPublishCommand returns a mosquitto_pub command line that publishes one
// valid Thingsee message as the dev gateway.
func (n *Node) DevPublishCommand() string {
	host, port := LocalHostPort(n.MQTTAddr())
	dir := n.DevGatewayDir()
	msg := fmt.Sprintf(`{"tsmId":12100,"tsmEv":10,"tsmTs":%d,"tsmTuid":"TSEN01DEV00000042","temp":21.5,"humd":40.2,"airp":101325}`, time.Now().Unix())
	return fmt.Sprintf("mosquitto_pub -V mqttv5 -h %s -p %s --cafile %s --cert %s --key %s -i %s -t %s -q 1 -m '%s'",
		host, port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"),
		DevGateway, ingest.UpTopic(DevGateway), msg)
}

// JetStream returns the node's JetStream context (operations and tests).
func (n *Node) JetStream() jetstream.JetStream { return n.bb.JS }

// API returns the API server.
func (n *Node) API() *api.Server { return n.api }

// Forward returns the integrations registry (forwarding's side the API calls).
func (n *Node) Forward() *forward.Registry { return n.fwdReg }
