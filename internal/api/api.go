// Package api is iotransit's HTTPS management API: JSON over TLS 1.2+,
// authentication by the operator key (the data directory's bootstrap key,
// or named operator credentials with roles: operators.go), API keys and
// OAuth2 access tokens, least-privilege scopes declared per route, tenant
// isolation (another tenant's resources answer 404, as if they did not
// exist), token-bucket rate limits, strict request decoding, RFC 9457
// problem+json errors with a stable code and a request id, and an audit
// entry for every change. The operator routes may be served on a listener
// of their own (Config.AdminAddr).
//
// Every JSON shape the API accepts or answers is declared once, in the
// public package client: handlers decode requests into its types and
// encode answers from them, converting from the domain types where those
// hold more (hashes, sealed keys) than the API shows.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/forward"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/store"
)

// Config configures the API server.
type Config struct {
	// Addr is the HTTPS listen address (default ":8443").
	Addr string
	// AdminAddr, when set, is a second HTTPS listener (same server
	// certificate) for the operator routes (Access Operator: /metrics,
	// tenants, factory, operators); the public listener then answers
	// them 404, as unknown routes, and the admin listener serves no
	// tenant, gateway or enrollment route. Health and whoami are on both.
	AdminAddr string
	// AdminClientCAs, when set (with AdminAddr), is the operators' second
	// factor: the admin listener then completes a TLS handshake only with
	// a client certificate these CAs issued, and serves the tenant routes
	// too (for operators); an operator key works only there, a named
	// operator's only with a certificate whose common name is its name
	// (operatorCertificate). Nil: operator keys are bearer secrets alone.
	AdminClientCAs *x509.CertPool
	// OperatorKey is the operator credential (from the data directory).
	OperatorKey string
	// Limits are the rate limits; zero values take the defaults.
	Limits Limits
	// MaxBody is the largest request body in bytes (default 64 KiB).
	MaxBody int64
	// CertValidity is the lifetime of certificates issued by enrollment (default 365 days).
	CertValidity time.Duration
	// StreamRecheck is how often an open stream re-checks its credential (default 10s).
	StreamRecheck time.Duration
	// MaxStreamsPerCredential and MaxStreamsPerTenant bound the WebSocket
	// streams open at once on this node (defaults 8 and 64): each holds a
	// JetStream consumer.
	MaxStreamsPerCredential, MaxStreamsPerTenant int
	// PolicyDefaults are the node's values that a tenant's policy may
	// replace (its Quotas: the ingest's rate, burst and connections; its
	// Retention), shown by GET .../policy.
	PolicyDefaults client.Policy
}

// Registry is what the API uses of the registry (registry.Registry).
type Registry interface {
	Tenant(id string) (registry.Tenant, bool)
	Tenants() []registry.Tenant
	Gateway(tenant, serial string) (registry.Gateway, bool)
	Gateways(tenant string) ([]registry.Gateway, error)
	RegisterGateway(ctx context.Context, tenant, serial string) (registry.Gateway, error)
	SetGatewayState(ctx context.Context, tenant, serial string, state registry.GatewayState) (registry.Gateway, error)
	SetLabels(ctx context.Context, tenant, serial string, labels map[string]string) (registry.Gateway, error)
	ChangeLabels(ctx context.Context, tenant, serial string, set map[string]string, remove []string) (registry.Gateway, error)
	SetDeploymentGroup(ctx context.Context, tenant, serial, id string) (registry.Gateway, error)
	DeleteGateway(ctx context.Context, tenant, serial string) error
	CreateEnrollmentToken(ctx context.Context, tenant, serial string, ttl time.Duration, createdBy string) (registry.EnrollmentToken, string, error)
	EnrollmentTokens(ctx context.Context, tenant string) ([]registry.EnrollmentToken, error)
	RevokeEnrollmentToken(ctx context.Context, tenant, id string) (registry.EnrollmentToken, error)
	Enroll(ctx context.Context, token string, csrPEM []byte, validity time.Duration, ahead func(tenant, serial string) error) (registry.Enrollment, error)
	Reenroll(ctx context.Context, id registry.Identity, csrPEM []byte, validity time.Duration) (registry.Enrollment, error)
	Authenticate(chain []*x509.Certificate, now time.Time) (registry.Identity, error)
	// Factory provisioning and claims.
	Provision(ctx context.Context, model string, count int) (string, []registry.Provisioned, error)
	Claim(ctx context.Context, tenant, serial, code string) (registry.Gateway, error)
	// SetPolicy replaces a tenant's security policy.
	SetPolicy(ctx context.Context, tenant string, p client.Policy) (before, after registry.Tenant, err error)
}

// Credentials is what the API uses of the credential store (credential.Store).
type Credentials interface {
	// CreateAPIKeyWithin and CreateClientWithin make credentials that
	// expire no later than notAfter (zero: no bound).
	CreateAPIKeyWithin(ctx context.Context, tenant, name string, scopes, held []string, ttl time.Duration, notAfter time.Time, createdBy string) (credential.APIKey, string, error)
	CreateClientWithin(ctx context.Context, tenant, name string, scopes, held []string, ttl time.Duration, notAfter time.Time, createdBy string) (credential.Client, string, error)
	APIKeys(ctx context.Context, tenant string) ([]credential.APIKey, error)
	APIKey(ctx context.Context, tenant, id string) (credential.APIKey, error)
	RevokeAPIKey(ctx context.Context, tenant, id string) (credential.APIKey, error)
	VerifyAPIKey(ctx context.Context, token string) (credential.APIKey, error)
	Clients(ctx context.Context, tenant string) ([]credential.Client, error)
	Client(ctx context.Context, tenant, clientID string) (credential.Client, error)
	RevokeClient(ctx context.Context, tenant, clientID string) (credential.Client, error)
	VerifyClient(ctx context.Context, clientID, secret string) (credential.Client, error)
	ActiveClient(ctx context.Context, tenant, clientID string) (credential.Client, error)
}

// Operators manages the named operator credentials (credential.Operators).
type Operators interface {
	Create(ctx context.Context, name, role string, ttl time.Duration, createdBy string) (credential.Operator, string, error)
	List(ctx context.Context) ([]credential.Operator, error)
	Get(ctx context.Context, id string) (credential.Operator, error)
	Rotate(ctx context.Context, id string) (credential.Operator, string, error)
	Revoke(ctx context.Context, id string) (credential.Operator, error)
	Verify(ctx context.Context, token string) (credential.Operator, error)
	RetireBootstrap(ctx context.Context, by string) (client.BootstrapOperator, error)
	// BootstrapRetired reports whether the data directory's operator key
	// is retired (followed from the backbone, so on every node).
	BootstrapRetired() bool
}

// Tokens issues and verifies OAuth2 access tokens (credential.Issuer).
type Tokens interface {
	Issue(c credential.Client) (string, error)
	Verify(token string) (credential.Claims, error)
	TTL() time.Duration
}

// Messages queries stored messages (store.Store).
type Messages interface {
	QueryMessages(ctx context.Context, tenant string, q store.Query) (store.Page[store.Message], error)
	QueryRejected(ctx context.Context, tenant string, q store.RejectedQuery) (store.Page[store.StoredRejected], error)
}

// Audit records and reads the audit log (audit.Log).
type Audit interface {
	Append(ctx context.Context, tenant string, e audit.Event) (audit.Entry, error)
	ListPage(ctx context.Context, tenant string, f audit.Filter) (audit.Page, error)
	// VerifyWithin verifies the tenant's log once admit accepted what it
	// will read.
	VerifyWithin(ctx context.Context, tenant string, admit func(reads int) error) (audit.Report, error)
}

// Deps are the parts the API serves.
type Deps struct {
	Registry    Registry
	Credentials Credentials
	Tokens      Tokens
	Messages    Messages
	Audit       Audit
	// Integrations manages forwarding (nil: the routes answer 404).
	Integrations Integrations
	// Stream feeds the WebSocket stream (nil: the route answers 404).
	Stream Stream
	// ParseKey turns an integration's public key into a Sealer (HPKE).
	ParseKey func(pemBytes []byte) (forward.Sealer, string, error)
	// CreateTenant provisions a tenant: CA, streams, audit log.
	CreateTenant func(ctx context.Context, id string) (registry.Tenant, error)
	// ServerCA is the PEM that verifies the server certificates, returned by enrollment.
	ServerCA []byte
	// MQTTPort is the port of the MQTT listener, returned by enrollment (0: not said).
	MQTTPort int
	// Connected reports whether a gateway has a live MQTT session on this node.
	Connected func(tenant, serial string) bool
	// Mesh manages the tenants' mesh networks (nil: the routes answer 404).
	Mesh Mesh
	// GatewayStates reads the gateways' last status and lastSeen (nil: not shown).
	GatewayStates GatewayStates
	// Ready reports whether the node can serve (backbone and listeners up).
	Ready func(context.Context) error
	// Gatherer exposes metrics at /metrics (operator only).
	Gatherer prometheus.Gatherer
	// Registerer receives the API's own metrics.
	Registerer prometheus.Registerer
	// Firmware serves the tenants' TUF repositories and rollouts (nil: the
	// routes answer 404).
	Firmware Firmware

	// Operators are the named operator credentials (nil: only the
	// bootstrap key works, and the /v1/operators routes answer 404).
	Operators Operators
	// KMS rotates and shows the tenants' data keys (nil: the routes answer
	// 404).
	KMS KMS
	// CAs rotates the tenants' CAs, and PlatformKeys the token and audit
	// signing keys (nil: their routes answer 404; keyrotation.go).
	CAs          CAs
	PlatformKeys PlatformKeys
	// Reencryption runs the re-encryption after a data key rotation (nil:
	// its route answers 404).
	Reencryption Reencryption

	// Erasure erases a sensor's stored data (nil: the route answers 404).
	Erasure Erasure

	// StoredBytes reads a tenant's stored-bytes quota and its use, shown
	// with its policy (nil: not shown).
	StoredBytes func(ctx context.Context, tenant string) (client.StoredBytesUsage, error)
	// TenantDeletion deletes tenants (nil: DELETE /v1/tenants/{t} answers 404).
	TenantDeletion TenantDeletion
}

// Server is the running API.
type Server struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	srv      *http.Server
	ln       net.Listener
	admin    *http.Server // nil without Config.AdminAddr
	adminLn  net.Listener
	opKey    [32]byte
	limits   *limiter
	handler  http.Handler
	routes   []Route
	streams  streamCount
	counters *metrics
	reads    *readAudit // audit of reads of customer data (readaudit.go)
	erasures erasures   // erasures running (erase.go)
}

// New builds the API on a listener with tlsCfg (from pki.ServerTLSConfig).
// The listener asks for, but does not require, a client certificate: only
// POST /v1/reenroll uses one.
func New(cfg Config, tlsCfg *tls.Config, deps Deps, log *slog.Logger) (*Server, error) {
	cfg.defaults()
	if len(cfg.OperatorKey) < 32 {
		return nil, errors.New("api: the operator key must be at least 32 characters")
	}
	s := &Server{
		cfg: cfg, deps: deps, log: log.With("component", "api"),
		opKey:    sha256.Sum256([]byte(cfg.OperatorKey)),
		limits:   newLimiter(cfg.Limits),
		counters: newMetrics(deps.Registerer),
	}
	s.routes = s.routeTable()
	s.reads = newReadAudit(s)
	if cfg.AdminClientCAs != nil && cfg.AdminAddr == "" {
		return nil, errors.New("api: operator client certificates need the admin listener")
	}
	var adminHandler http.Handler
	switch {
	case cfg.AdminAddr == "":
		s.handler = s.buildHandler(func(Route) bool { return true })
	case cfg.AdminClientCAs != nil:
		// Operators lose the public listener, so the admin one serves them
		// the tenant routes too.
		s.handler = s.buildHandler(onPublic)
		adminHandler = s.buildHandler(func(rt Route) bool { return onAdmin(rt) || rt.Access == Tenant })
	default:
		s.handler = s.buildHandler(onPublic)
		adminHandler = s.buildHandler(onAdmin)
	}
	tc := tlsCfg.Clone()
	tc.ClientAuth = tls.RequestClientCert
	var err error
	if s.ln, s.srv, err = s.listen(cfg.Addr, tc, s.handler); err != nil {
		s.reads.close()
		return nil, err
	}
	if cfg.AdminAddr != "" {
		atc := tlsCfg.Clone()
		if cfg.AdminClientCAs != nil {
			atc.ClientAuth, atc.ClientCAs = tls.RequireAndVerifyClientCert, cfg.AdminClientCAs
		}
		if s.adminLn, s.admin, err = s.listen(cfg.AdminAddr, atc, adminHandler); err != nil {
			_ = s.ln.Close()
			s.reads.close()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	return s, nil
}

// listen opens a TLS listener on addr and the HTTP server of h on it.
func (s *Server) listen(addr string, tc *tls.Config, h http.Handler) (net.Listener, *http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	return tls.NewListener(ln, tc), &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}, nil
}

// Handler returns the HTTP handler of the public listener.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AdminAddr returns the bound address of the admin listener, "" without one.
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

// Start serves in the background.
func (s *Server) Start() {
	serve := func(srv *http.Server, ln net.Listener, name string) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server stopped", "listener", name, "error", err)
		}
	}
	go serve(s.srv, s.ln, "public")
	if s.admin != nil {
		go serve(s.admin, s.adminLn, "admin")
	}
}

// Close shuts the server down, waiting briefly for requests in flight,
// then writes the audit entries of the reads it summed.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var aerr error
	if s.admin != nil {
		aerr = s.admin.Shutdown(ctx)
	}
	err := errors.Join(s.srv.Shutdown(ctx), aerr)
	s.reads.close()
	return err
}
