// Package node is the one wiring point of iotransit: it starts the
// backbone, kms, registry, store, credentials, audit log, forwarding,
// ingest and API of one running node, connects them, and stops them in
// reverse order. cmd/iotransit and the end-to-end tests
// (internal/testutil/nodetest) start a node through it, so both run the
// same wiring. Anything that is not wiring lives in the package that owns
// it; the development bootstrap (dev.go) and the platform's own secrets
// (secrets.go) compose parts, so they stay here beside the wiring.
package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/backbone"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/firmware"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/forward/egress"
	"github.com/iotransit/iotransit/internal/gwproto"
	"github.com/iotransit/iotransit/internal/gwstate"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/kms"
	"github.com/iotransit/iotransit/internal/meshnet"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/reencrypt"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/retry"
	"github.com/iotransit/iotransit/internal/securefile"
	"github.com/iotransit/iotransit/internal/store"
)

// Durability levels of --fsync.
const (
	FsyncDefault = "default" // the write reached the OS before the ack: survives kill -9
	FsyncAlways  = "always"  // fsync before the ack: survives power loss of the node
)

// OperatorKeyFile is the file in the data directory that holds the
// operator credential, made at the first start (0600).
const OperatorKeyFile = "operator.key"

// Config is everything a node needs. Zero values take the defaults of
// DefaultConfig.
type Config struct {
	DataDir  string
	MQTTAddr string
	APIAddr  string
	// AdminAddr, when set, serves the operator routes (and /metrics) on
	// their own HTTPS listener, and no longer on APIAddr (api.Config).
	AdminAddr string
	// AdminClientCAFile, when set (with AdminAddr), is a PEM file of the
	// CAs that issue operators' client certificates: the second factor of
	// an operator key (api.Config.AdminClientCAs).
	AdminClientCAFile string
	// ResetBootstrapOperator makes the data directory's operator key work
	// again after it was retired (recovery; audited in _system).
	ResetBootstrapOperator bool
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
	// Ingest configures the gateway listener; its Addr is MQTTAddr.
	Ingest ingest.Config
	Store  store.Config
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
	// Firmware tunes the firmware repositories (zero values: defaults).
	Firmware firmware.Config
	// KMS selects the root key provider (default: the file
	// <data-dir>/root.key; rootkey.go).
	KMS KMSConfig
	// ReencryptRate bounds the records a re-encryption job re-seals a
	// second (0: 100), so that live work is not starved.
	ReencryptRate float64
	Logger        *slog.Logger
}

// DefaultConfig returns the configuration of a node on the standard ports
// with every part at its own defaults. A node still needs DataDir, and
// ServerNames, TLSCertFile and TLSKeyFile, or Dev.
func DefaultConfig() Config {
	in, a := ingest.DefaultConfig(), api.DefaultConfig()
	mqttAddr := in.Addr
	in.Addr = "" // MQTTAddr is the listener
	return Config{
		MQTTAddr: mqttAddr, APIAddr: a.Addr,
		Replicas: backbone.DefaultConfig().Replicas, Fsync: FsyncDefault, CertValidity: a.CertValidity,
		Ingest: in, Store: store.DefaultConfig(), APILimits: a.Limits, StreamRecheck: a.StreamRecheck,
		MaxStreamsPerCredential: a.MaxStreamsPerCredential, MaxStreamsPerTenant: a.MaxStreamsPerTenant,
		Audit: audit.DefaultConfig(), Forward: forward.DefaultConfig(),
	}
}

// defaults fills the zero values that the node itself decides; the parts
// fill theirs.
func (c *Config) defaults() {
	d := DefaultConfig()
	if c.Dev && len(c.ServerNames) == 0 {
		c.ServerNames = []string{"localhost", "127.0.0.1"}
	}
	if c.Fsync == "" {
		c.Fsync = d.Fsync
	}
	if c.CertValidity == 0 {
		c.CertValidity = d.CertValidity
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Ingest.Addr == "" {
		c.Ingest.Addr = c.MQTTAddr
	}
}

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
	for _, a := range c.listeners() {
		if _, port, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want HOST:PORT or :PORT", a.flag, a.addr))
		} else if _, err := net.LookupPort("tcp", port); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %q is not a port", a.flag, a.addr, port))
		}
	}
	if _, port, _ := net.SplitHostPort(c.AdminAddr); port != "0" && c.AdminAddr != "" && (c.AdminAddr == c.APIAddr || c.AdminAddr == c.MQTTAddr) {
		errs = append(errs, fmt.Errorf("--admin-addr %q: must differ from --api-addr and --mqtt-addr", c.AdminAddr))
	}
	if c.AdminClientCAFile != "" && c.AdminAddr == "" {
		errs = append(errs, errors.New("--admin-client-ca needs --admin-addr: operators' certificates are checked on the admin listener"))
	}
	if c.TLSCertFile != "" && c.TLSKeyFile != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", c.TLSCertFile, c.TLSKeyFile, err))
		}
	}
	if err := c.Ingest.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.KMS.Validate(); err != nil {
		errs = append(errs, err)
	}
	bb := c.backboneConfig()
	if err := bb.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// listeners are the configured listener addresses by flag.
func (c *Config) listeners() []struct{ flag, addr string } {
	ls := []struct{ flag, addr string }{{"--mqtt-addr", c.MQTTAddr}, {"--api-addr", c.APIAddr}}
	if c.AdminAddr != "" {
		ls = append(ls, struct{ flag, addr string }{"--admin-addr", c.AdminAddr})
	}
	return ls
}

// lockFile is the data directory's lock (lockDataDir).
const lockFile = "LOCK"

// Check is Validate and what only trying can tell: that the listeners'
// addresses are free and that no running server holds the data directory.
// It reports every problem at once and leaves nothing behind.
func (c *Config) Check() error {
	d := *c
	d.defaults()
	errs := []error{d.Validate()}
	for _, a := range d.listeners() {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			continue // Validate said so
		}
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: cannot listen (in use by another program?): %w", a.flag, a.addr, err))
			continue
		}
		ln.Close()
	}
	if d.DataDir != "" {
		if _, err := os.Stat(d.DataDir); err == nil {
			release, err := lockDataDir(d.DataDir)
			if err != nil {
				errs = append(errs, err)
			} else {
				release()
			}
		}
	}
	errs = append(errs, d.KMS.check(d.DataDir))
	return errors.Join(errs...)
}

func (c *Config) backboneConfig() backbone.Config {
	r := c.Replicas
	if r == 0 {
		r = backbone.DefaultConfig().Replicas
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
	audit    *audit.Log
	appender *audit.Appender
	fwd      *forward.Engine
	fwdReg   *forward.Registry
	// retentionParts is set once audit, fwd and fwdReg are (policy.go).
	retentionParts atomic.Bool
	fw             *firmware.Repos
	ing            *ingest.Server
	api            *api.Server
	gwState        *gwstate.Tracker
	mesh           *meshnet.Service
	delivery       *meshnet.Delivery
	serverCA       []byte
	opKey          string
	metrics        *prometheus.Registry

	// platformKeys are the rotatable token and audit signing keys.
	platformKeys *platformKeys

	// deleteHook, set by tests, runs before each step of a tenant's
	// deletion; its error fails the step (tenantdelete.go).
	deleteHook func(step string) error

	// ctx ends the node's background work (tenant repair) at Close.
	ctx    context.Context
	cancel context.CancelFunc
	// closers stop what Start started, in reverse order.
	closers   []func()
	closeOnce sync.Once
}

// onClose adds a part's stop to the ones Close runs, last added first.
func (n *Node) onClose(stop func()) { n.closers = append(n.closers, stop) }

// Start starts a node. On error everything started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, metrics: prometheus.NewRegistry()}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Close() // a return statement has already set the result to nil
		}
	}()
	n.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	release, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n.onClose(release)
	if n.opKey, err = securefile.LoadOrCreateSecret(filepath.Join(cfg.DataDir, OperatorKeyFile), "itop_"); err != nil {
		return nil, err
	}
	if n.bb, err = backbone.Start(ctx, cfg.backboneConfig(), n.log); err != nil {
		return nil, err
	}
	n.onClose(n.bb.Close)
	// The root key, checked before anything else reads or writes a key.
	if err := n.openKeys(ctx); err != nil {
		return nil, err
	}
	if n.reg, err = registry.Open(ctx, n.bb, n.keys, n.log); err != nil {
		return nil, err
	}
	n.onClose(n.reg.Close)
	n.fw = firmware.New(cfg.Firmware, n.bb, n.keys)
	scfg := cfg.Store
	scfg.GroupCommit = cfg.Fsync == FsyncAlways // concurrent uploads share fsyncs
	n.st = store.New(scfg, n.bb, n.bb.JS, n.keys)
	n.metrics.MustRegister(n.st.Collectors()...)
	n.onClose(n.st.Close) // after the ingest stopped: nothing is queued then
	n.followPolicies()    // before the tenants' streams are ensured
	creds, err := credential.Open(ctx, n.bb)
	if err != nil {
		return nil, err
	}
	sec, err := n.secrets(ctx)
	if err != nil {
		return nil, err
	}
	jwtKey, err := sec.signingKey(ctx, "jwt-ed25519")
	if err != nil {
		return nil, err
	}
	auditKey, err := sec.signingKey(ctx, "audit-ed25519")
	if err != nil {
		return nil, err
	}
	if n.audit, err = audit.Open(ctx, cfg.Audit, n.bb, n.bb.JS, auditKey, n.log); err != nil {
		return nil, err
	}
	// Key rotation (platformkeys.go): the versions made since, followed.
	tokens := credential.NewIssuer(jwtKey, "iotransit", 0)
	if n.platformKeys, err = n.startPlatformKeys(ctx, sec, tokens); err != nil {
		return nil, err
	}
	n.onClose(n.audit.Close)
	n.audit.SetTenantRetention(n.auditRetention) // the tenants' policies (policy.go)
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
	// Gateway connection events reach the audit log through a queue: a
	// connection waits for it at most audit.AppenderWait; what is left out
	// is counted and summarised in the tenant's log (an
	// audit.events_dropped entry). It drains after forwarding stops.
	n.appender = audit.NewAppender(n.audit, n.log)
	const droppedHelp = "Connection events not audited one by one: the queue stayed full (why=full) or the append failed (why=failed), each counted in the tenant's audit.events_dropped entry; or the node was shutting down (why=closed), counted here only."
	for why, count := range map[string]func() int64{"full": n.appender.Dropped, "failed": n.appender.Failed, "closed": n.appender.DroppedClosed} {
		n.metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "iotransit_audit_events_dropped_total", Help: droppedHelp,
			ConstLabels: prometheus.Labels{"why": why}}, func() float64 { return float64(count()) }))
	}
	n.onClose(n.appender.Close)
	fcfg := cfg.Forward
	fcfg.Policy = egress.Policy{AllowPrivate: cfg.AllowPrivateTargets || cfg.Dev}
	if fcfg.NodeID == "" { // stable across restarts: a restarted node takes its leases back at once
		id, err := securefile.LoadOrCreateSecret(filepath.Join(cfg.DataDir, "node.id"), "node-")
		if err != nil {
			return nil, err
		}
		fcfg.NodeID = id[:17]
	}
	fcfg.ParseKey = parseKey
	fdeps := forward.Deps{JetStream: n.bb.JS, KV: n.bb, Streams: n.bb, Keys: n.keys, Messages: n.st, Factories: factories(), Metrics: n.metrics, Logger: n.log}
	n.fwd = forward.New(fcfg, fdeps)
	n.fwd.SetDeadLetterRetention(n.deadLetterRetention) // the tenants' policies (policy.go)
	n.onClose(n.fwd.Close)
	n.fwdReg = forward.NewRegistry(fcfg, fdeps, n.fwd)
	n.retentionParts.Store(true) // policy changes reach the audit and dead-letter streams from now on
	for _, t := range n.reg.Tenants() {
		n.fwd.AddTenant(t.ID)
	}
	// Tenants created anywhere get their streams here too (and a tenant whose
	// creation was cut short is repaired), retried until it works.
	n.reg.OnTenantAdded(func(t registry.Tenant) {
		go n.ensureTenant(t.ID)
		n.fwd.AddTenant(t.ID)
	})
	cfg.Ingest.OnEvent = n.auditConnection
	// Gateway state and mesh delivery: the tracker is stopped after the
	// ingest (its last disconnects are written), the delivery before it.
	n.gwState = gwstate.New(gwstate.Config{}, n.bb, n.log)
	n.onClose(n.gwState.Close)
	if n.mesh, err = meshnet.Open(ctx, n.bb, n.keys); err != nil {
		return nil, err
	}
	cfg.Ingest.Presence = presence{n}
	certs, err := n.serverCertificate(ctx, sec)
	if err != nil {
		return nil, err
	}
	if n.ing, err = ingest.New(cfg.Ingest, pki.ServerTLSConfig(certs), n.reg, n.st, n.metrics, n.log); err != nil {
		return nil, err
	}
	n.onClose(func() { _ = n.ing.Close() })
	n.delivery = meshnet.NewDelivery(n.mesh, n.ing, n.gwState.DeliveryKey, n.log)
	n.onClose(n.delivery.Close)
	if err := n.mesh.Watch(n.ctx, n.delivery.Tenant); err != nil { // changes made on any node
		return nil, err
	}
	n.reg.OnGatewayChange(n.closeSessions)
	go n.endRetiredCASessions(n.ctx) // caretire.go
	// A tenant deleted anywhere is dropped here too (tenantdelete.go).
	n.reg.OnTenantDeleted(func(t registry.Tenant) { go n.dropTenantHere(t.ID) })
	// One marked before that, while this node made its tenants' streams
	// and started their forwarding, is dropped too (each step may run twice).
	for _, t := range n.reg.DeletedTenants() {
		go n.dropTenantHere(t.ID)
	}
	if err := n.ing.Start(); err != nil {
		return nil, fmt.Errorf("start ingest: %w", err)
	}
	if err := n.fw.WatchNotices(n.ctx, n.retainFirmwareNotice); err != nil {
		return nil, fmt.Errorf("watch firmware notices: %w", err)
	}
	reenc := n.startReencryption(reencrypt.Config{NodeID: fcfg.NodeID, RecordRate: cfg.ReencryptRate})
	operators, err := n.operators(ctx, creds)
	if err != nil {
		return nil, err
	}
	adminCAs, err := loadCertPool(cfg.AdminClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("--admin-client-ca: %w", err)
	}
	if n.api, err = api.New(api.Config{Addr: cfg.APIAddr, AdminAddr: cfg.AdminAddr, AdminClientCAs: adminCAs, OperatorKey: n.opKey, Limits: cfg.APILimits, CertValidity: cfg.CertValidity, StreamRecheck: cfg.StreamRecheck,
		MaxStreamsPerCredential: cfg.MaxStreamsPerCredential, MaxStreamsPerTenant: cfg.MaxStreamsPerTenant,
		PolicyDefaults: n.policyDefaults(cfg)}, pki.ServerTLSConfig(certs), api.Deps{
		Registry: n.reg, Credentials: creds, Operators: operators, Messages: n.st, Audit: n.audit,
		Integrations: n.fwdReg, Stream: n.st, ParseKey: parseKey,
		Tokens:       tokens,
		CreateTenant: n.CreateTenant, ServerCA: n.serverCA, Connected: n.ing.Connected, MQTTPort: portOf(n.ing.Addr()),
		Mesh: n.mesh, GatewayStates: n.gwState,
		Ready: n.Ready, Gatherer: n.metrics, Registerer: n.metrics, Firmware: n.fw,
		KMS: n.keys, Reencryption: reenc,
		CAs: n.reg, PlatformKeys: n.platformKeys,
		// Erasure of a sensor's data (issue 12).
		Erasure:        n.st,
		StoredBytes:    n.storedBytes, // policy.go
		TenantDeletion: n,
	}, n.log); err != nil {
		return nil, fmt.Errorf("api on %s: %w", cfg.APIAddr, err)
	}
	n.onClose(func() { _ = n.api.Close() })
	n.api.Start()
	if cfg.Dev {
		if err := n.devBootstrap(ctx); err != nil {
			return nil, fmt.Errorf("dev bootstrap: %w", err)
		}
	}
	n.resumeDeletions() // of tenants whose deletion was cut short
	n.log.Info("iotransit started", "mqtt_addr", n.MQTTAddr(), "api_addr", n.APIAddr(), "admin_addr", n.AdminAddr(), "fsync", cfg.Fsync, "dev", cfg.Dev)
	return n, nil
}

// Close stops the node: its background work, then what Start started in
// reverse order: API, ingest, forwarding, the audit queue (drained), audit
// log, registry watches, backbone.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		n.cancel()
		for i := len(n.closers) - 1; i >= 0; i-- {
			n.closers[i]()
		}
	})
}

// closeSessions ends the live sessions a gateway change no longer allows:
// the gateway was revoked or isolated, or a renewal superseded the
// certificate a session is on (the gateway reconnects with its new one).
// The session's disconnect is recorded with that reason.
func (n *Node) closeSessions(g registry.Gateway) {
	var reason string
	if n.ing.KickStale(g.Tenant, g.Serial, func(certSerial string) string {
		reason = ingest.EndReason(g, certSerial, time.Now())
		return reason
	}) {
		n.log.Info("live session closed", "tenant_id", g.Tenant, "gateway_id", g.Serial, "state", string(g.State), "reason", reason)
	}
}

// presence tells the gateway-state tracker of the ingest's sessions, and
// the mesh delivery of each status (it names the key the mesh keys are
// sealed to).
type presence struct{ n *Node }

func (p presence) Connected(id ingest.Identity) { p.n.gwState.Connected(id.Tenant, id.Serial) }
func (p presence) Seen(id ingest.Identity)      { p.n.gwState.Seen(id.Tenant, id.Serial) }
func (p presence) Disconnected(id ingest.Identity) {
	p.n.gwState.Disconnected(id.Tenant, id.Serial)
}
func (p presence) Status(id ingest.Identity, st gwproto.Status) {
	p.n.gwState.Status(id.Tenant, id.Serial, st)
	p.n.delivery.Gateway(id.Tenant, id.Serial)
}

// auditConnection queues a gateway connection event, or a summary of
// several, for the audit log, holding the connection at most
// audit.AppenderWait when the queue is full (audit.Appender). The ingest
// decides what reaches it (its EventBudget: refusals that name no tenant
// within the listener's budget, a tenant's events within the tenant's and
// the gateway's, the rest as summaries with their count). A refusal not
// attributed to a tenant goes to the platform's log.
func (n *Node) auditConnection(e ingest.Event) {
	tenant := e.Tenant
	if tenant == "" {
		tenant = systemKeys
	}
	if _, gone := n.reg.DeletedTenant(tenant); gone { // its log is being deleted
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
	detail := map[string]string{}
	if e.Kind == ingest.EventDisconnect {
		detail["reason"] = e.Reason
	}
	if e.Count > 0 { // "N refused from network A between T1 and T2 for reason R"
		detail["count"] = strconv.Itoa(e.Count)
		detail["first"] = e.First.UTC().Format(time.RFC3339Nano)
		detail["last"] = e.Last.UTC().Format(time.RFC3339Nano)
	}
	ev := audit.Event{Actor: actor, Action: "ingest.connection." + e.Kind, Target: target, Source: e.Remote, Outcome: outcome, Detail: detail}
	n.appender.Enqueue(tenant, ev)
}

// retainFirmwareNotice leaves a gateway's firmware notice retained on this
// node's broker, for the tenant's gateway of that serial only.
func (n *Node) retainFirmwareNotice(tenant, serial string, notice []byte) {
	if err := n.ing.DeliverFor(tenant, serial, gwproto.FirmwareTopic(serial), notice); err != nil {
		n.log.Error("firmware notice not published", "gateway_id", serial, "error", err)
	}
}

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
	_ = retry.Until(n.ctx, retry.Backoff{Base: time.Second, Max: time.Minute}, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return errors.Join(n.st.EnsureTenant(ctx, id), n.audit.EnsureTenant(ctx, id))
	}, func(err error, wait time.Duration) {
		n.log.Warn("tenant streams not ready; retrying", "tenant_id", id, "error", err, "retry_in", wait.String())
	})
}

// Ready reports whether the node can take and serve data.
func (n *Node) Ready(ctx context.Context) error { return n.bb.Ready(ctx) }

// MQTTAddr returns the bound gateway listener address.
func (n *Node) MQTTAddr() string { return n.ing.Addr() }

// portOf returns the port of a bound listener address, 0 when it has none.
func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	port, _ := strconv.Atoi(p)
	return port
}

// APIAddr returns the bound API address.
func (n *Node) APIAddr() string { return n.api.Addr() }

// AdminAddr returns the bound admin listener address, "" without one.
func (n *Node) AdminAddr() string { return n.api.AdminAddr() }

// operators opens the named operators and follows the bootstrap key's
// retirement on the backbone; with ResetBootstrapOperator it first makes
// the bootstrap key work again, audited in _system.
func (n *Node) operators(ctx context.Context, creds *credential.Store) (*credential.Operators, error) {
	ops := credential.NewOperators(creds)
	if n.cfg.ResetBootstrapOperator {
		// Written ahead: the key works again only once _system says so.
		ev := audit.Event{Actor: "node", Action: "operator.bootstrap.reset", Target: "operator", Outcome: "started",
			Detail: map[string]string{"flag": "--reset-bootstrap-operator"}}
		if _, err := n.audit.Append(ctx, audit.SystemTenant, ev); err != nil {
			return nil, fmt.Errorf("audit the bootstrap reset: %w", err)
		}
		rerr := ops.ResetBootstrap(ctx)
		ev.Outcome = "ok"
		if rerr != nil {
			ev.Outcome = fault.From(rerr).Code()
		}
		if _, err := n.audit.Append(ctx, audit.SystemTenant, ev); err != nil {
			n.log.Error("audit of the bootstrap reset's outcome failed", "error", err)
		}
		if rerr != nil {
			return nil, rerr
		}
		n.log.Warn("the bootstrap operator key works again (--reset-bootstrap-operator)")
	}
	if err := ops.WatchBootstrap(n.ctx); err != nil {
		return nil, err
	}
	return ops, nil
}

// OperatorKey returns the operator credential.
func (n *Node) OperatorKey() string { return n.opKey }

// ServerCAPEM returns the PEM that verifies the node's server certificates.
func (n *Node) ServerCAPEM() []byte { return n.serverCA }

// Metrics returns the node's metrics.
func (n *Node) Metrics() prometheus.Gatherer { return n.metrics }

// Routes returns the API's route table.
func (n *Node) Routes() []api.Route { return n.api.Routes() }

// Registry returns the registry, for tests and operations (bench, demo)
// that act on gateways directly.
func (n *Node) Registry() *registry.Registry { return n.reg }

// Follow calls fn with each message the tenant stores from now on, until
// ctx ends.
func (n *Node) Follow(ctx context.Context, tenant string, fn func(store.Message)) error {
	return n.st.Follow(ctx, tenant, fn)
}

// Forward returns the integrations registry, for tests and operations
// (demo) that manage integrations directly.
func (n *Node) Forward() *forward.Registry { return n.fwdReg }

// JetStream returns the node's JetStream context, for tests and operations
// that read streams directly.
func (n *Node) JetStream() jetstream.JetStream { return n.bb.JS }

// loadCertPool reads a PEM file of CA certificates; "" is none (nil).
func loadCertPool(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in the file", file)
	}
	return pool, nil
}
