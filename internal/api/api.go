// Package api is iotransit's HTTPS management API: JSON over TLS 1.2+,
// bearer authentication, RFC 9457 problem+json errors with a stable code and
// a request id, and nothing internal in any response.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
	"github.com/iotransit/iotransit/internal/store"
)

// Config configures the API server.
type Config struct {
	// Addr is the HTTPS listen address (default ":8443").
	Addr string
	// OperatorKey is the operator credential (from the data directory).
	OperatorKey string
}

// Messages reads stored messages (store.Store).
type Messages interface {
	Messages(ctx context.Context, tenant string, limit int) ([]store.Message, error)
	RejectedMessages(ctx context.Context, tenant string, limit int) ([]store.StoredRejected, error)
}

// Tenants looks tenants up (registry.Registry).
type Tenants interface {
	Tenant(id string) (registry.Tenant, bool)
}

// Deps are the parts the API serves.
type Deps struct {
	Tenants  Tenants
	Messages Messages
	// Ready reports whether the node can serve (backbone and listeners up).
	Ready func(context.Context) error
	// Gatherer exposes metrics at /metrics (operator only).
	Gatherer prometheus.Gatherer
}

// Server is the running API.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	srv     *http.Server
	ln      net.Listener
	opKey   [32]byte
	handler http.Handler
}

// MaxLimit is the largest page a list endpoint returns.
const MaxLimit = 1000

// New builds the API on a listener with tlsCfg (from pki.ServerTLSConfig).
func New(cfg Config, tlsCfg *tls.Config, deps Deps, log *slog.Logger) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":8443"
	}
	if len(cfg.OperatorKey) < 32 {
		return nil, errors.New("api: the operator key must be at least 32 characters")
	}
	s := &Server{cfg: cfg, deps: deps, log: log.With("component", "api"), opKey: sha256.Sum256([]byte(cfg.OperatorKey))}
	s.handler = s.routes()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s.ln = tls.NewListener(ln, tlsCfg)
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Handler returns the HTTP handler (for tests).
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Start serves in the background.
func (s *Server) Start() {
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server stopped", "error", err)
		}
	}()
}

// Close shuts the server down, waiting briefly for requests in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

type ctxKey int

const requestIDKey ctxKey = 1

func requestID(r *http.Request) string {
	if v, ok := r.Context().Value(requestIDKey).(string); ok {
		return v
	}
	return ""
}

// handlerFunc is a handler that returns its error; one place turns errors
// into responses.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, auth bool, h handlerFunc) {
		mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if auth && !s.operator(r) {
				writeError(w, r, s.log, ErrUnauthenticated.New())
				return
			}
			if err := h(w, r); err != nil {
				writeError(w, r, s.log, err)
			}
		}))
	}
	handle("GET /healthz", false, func(w http.ResponseWriter, r *http.Request) error {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	})
	handle("GET /readyz", false, s.readyz)
	handle("GET /v1/tenants/{tenant}/messages", true, s.listMessages)
	handle("GET /v1/tenants/{tenant}/rejected", true, s.listRejected)
	if s.deps.Gatherer != nil {
		metrics := promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{})
		handle("GET /metrics", true, func(w http.ResponseWriter, r *http.Request) error {
			metrics.ServeHTTP(w, r)
			return nil
		})
	}
	return s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			s.unrouted(w, r, mux)
			return
		}
		mux.ServeHTTP(w, r)
	}))
}

// unrouted answers a request no route takes: 405 with Allow when the path
// exists for other methods, else 404, both as problem+json.
func (s *Server) unrouted(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		writeError(w, r, s.log, ErrNotFound.New())
		return
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, r, s.log, ErrMethod.New())
}

// middleware sets the request id and the security headers of every answer.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rid := newRequestID()
		h := w.Header()
		h.Set("X-Request-Id", rid)
		h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		ctx := context.WithValue(r.Context(), requestIDKey, rid)
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("handler panic", "request_id", rid, "panic", v)
				writeError(w, r.WithContext(ctx), s.log, fault.ErrInternal.New())
			}
		}()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// operator reports whether the request carries the operator key, compared
// in constant time.
func (s *Server) operator(r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) <= len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return false
	}
	got := sha256.Sum256([]byte(auth[len(prefix):]))
	return subtle.ConstantTimeCompare(got[:], s.opKey[:]) == 1
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Ready != nil {
		if err := s.deps.Ready(r.Context()); err != nil {
			return ErrUnavailable.Wrap(err)
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

func (s *Server) tenant(r *http.Request) (string, error) {
	t := r.PathValue("tenant")
	if !registry.ValidTenantID(t) {
		return "", registry.ErrTenantNotFound.New()
	}
	if _, ok := s.deps.Tenants.Tenant(t); !ok {
		return "", registry.ErrTenantNotFound.New()
	}
	return t, nil
}

func limitParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, ErrBadParameter.WithDetail("limit must be an integer from 1 to %d", MaxLimit)
	}
	return n, nil
}

// list is the envelope of every list answer.
type list[T any] struct {
	Items []T `json:"items"`
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenant(r)
	if err != nil {
		return err
	}
	limit, err := limitParam(r)
	if err != nil {
		return err
	}
	msgs, err := s.deps.Messages.Messages(r.Context(), t, limit)
	if err != nil && !errors.Is(err, store.ErrNoStream) {
		return err
	}
	if msgs == nil {
		msgs = []store.Message{}
	}
	writeJSON(w, http.StatusOK, list[store.Message]{Items: msgs})
	return nil
}

// rejectedItem is a rejected message as the API shows it: the message
// itself when it is a JSON object, otherwise the raw payload as text or
// base64.
type rejectedItem struct {
	Seq           uint64          `json:"seq"`
	ReceivedAt    time.Time       `json:"receivedAt"`
	Gateway       string          `json:"gateway"`
	Index         int             `json:"index"`
	Code          string          `json:"code"`
	Field         string          `json:"field,omitempty"`
	Reason        string          `json:"reason"`
	TsmID         int             `json:"tsmId,omitempty"`
	Tuid          string          `json:"tsmTuid,omitempty"`
	Message       json.RawMessage `json:"message,omitempty"`
	Payload       string          `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payloadBase64,omitempty"`
}

func (s *Server) listRejected(w http.ResponseWriter, r *http.Request) error {
	t, err := s.tenant(r)
	if err != nil {
		return err
	}
	limit, err := limitParam(r)
	if err != nil {
		return err
	}
	recs, err := s.deps.Messages.RejectedMessages(r.Context(), t, limit)
	if err != nil && !errors.Is(err, store.ErrNoStream) {
		return err
	}
	items := make([]rejectedItem, 0, len(recs))
	for _, rec := range recs {
		it := rejectedItem{
			Seq: rec.Seq, ReceivedAt: rec.ReceivedAt, Gateway: rec.Gateway, Index: rec.Index,
			Code: rec.Code, Field: rec.Field, Reason: rec.Reason, TsmID: rec.TsmID, Tuid: rec.Tuid,
		}
		switch {
		case isJSONObject(rec.Raw):
			it.Message = rec.Raw
		case utf8.Valid(rec.Raw):
			it.Payload = string(rec.Raw)
		default:
			it.PayloadBase64 = base64.StdEncoding.EncodeToString(rec.Raw)
		}
		items = append(items, it)
	}
	writeJSON(w, http.StatusOK, list[rejectedItem]{Items: items})
	return nil
}

func isJSONObject(b []byte) bool {
	t := strings.TrimSpace(string(b))
	return strings.HasPrefix(t, "{") && json.Valid(b)
}
