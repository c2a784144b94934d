package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iotransit/iotransit/apispec"
	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
	"github.com/iotransit/iotransit/internal/fault"
)

// nowFunc is the API's clock.
var nowFunc = time.Now

// routeTable lists every route. Keep it in step with apispec/openapi.yaml (a
// test checks both directions).
func (s *Server) routeTable() []Route {
	t := func(method, pattern, scope string, h handlerFunc) Route {
		return Route{Method: method, Pattern: pattern, Access: Tenant, Scope: scope, handle: h}
	}
	// delivers marks a route that may send the tenant's messages somewhere:
	// it needs messages:read as well (where the handler says).
	delivers := func(rt Route) Route {
		rt.Also = credential.ScopeMessagesRead
		return rt
	}
	// system marks a route on which the operator may name the tenant
	// _system (Route.System).
	system := func(rt Route) Route {
		rt.System = true
		return rt
	}
	return []Route{
		{Method: "GET", Pattern: "/healthz", Access: Public, handle: s.healthz},
		{Method: "GET", Pattern: "/readyz", Access: Public, handle: s.readyz},
		{Method: "GET", Pattern: "/v1/openapi.yaml", Access: Public, handle: s.openapi},
		{Method: "GET", Pattern: "/metrics", Access: Operator, handle: s.metrics},
		{Method: "POST", Pattern: "/v1/enroll", Access: Public, handle: s.enroll},
		{Method: "POST", Pattern: "/v1/reenroll", Access: Gateway, handle: s.reenroll},
		{Method: "POST", Pattern: "/oauth2/token", Access: Public, handle: s.token},
		{Method: "GET", Pattern: "/v1/whoami", Access: Credential, handle: s.whoami},

		{Method: "POST", Pattern: "/v1/tenants", Access: Operator, handle: s.createTenant},
		{Method: "GET", Pattern: "/v1/tenants", Access: Operator, handle: s.listTenants},
		t("GET", "/v1/tenants/{tenant}", credential.ScopeGatewaysRead, s.getTenant),
		// Tenant deletion (operator:admin, audited in _system: tenants_delete.go).
		{Method: "DELETE", Pattern: routeDeleteTenant, Access: Operator, handle: s.deleteTenant},

		// The tenant's security policy: read by the tenant (with the scope
		// that reads its tenant record), set by the operator only.
		t("GET", "/v1/tenants/{tenant}/policy", credential.ScopeGatewaysRead, s.getPolicy),
		{Method: "PUT", Pattern: "/v1/tenants/{tenant}/policy", Access: Operator, handle: s.putPolicy},

		{Method: "POST", Pattern: "/v1/tenants/{tenant}/gateways", Access: Operator, handle: s.registerGateway},
		t("GET", "/v1/tenants/{tenant}/gateways", credential.ScopeGatewaysRead, s.listGateways),
		t("GET", "/v1/tenants/{tenant}/gateways/{serial}", credential.ScopeGatewaysRead, s.getGateway),
		t("PATCH", "/v1/tenants/{tenant}/gateways/{serial}", credential.ScopeGatewaysWrite, s.updateGateway),
		t("DELETE", "/v1/tenants/{tenant}/gateways/{serial}", credential.ScopeGatewaysWrite, s.deleteGateway),
		t("POST", "/v1/tenants/{tenant}/gateways/{serial}/isolate", credential.ScopeGatewaysWrite, s.gatewayState("isolate")),
		t("POST", "/v1/tenants/{tenant}/gateways/{serial}/activate", credential.ScopeGatewaysWrite, s.gatewayState("activate")),
		t("POST", "/v1/tenants/{tenant}/gateways/{serial}/revoke", credential.ScopeGatewaysWrite, s.gatewayState("revoke")),
		t("GET", "/v1/tenants/{tenant}/gateways/{serial}/certificates", credential.ScopeGatewaysRead, s.listCertificates),

		{Method: "POST", Pattern: "/v1/factory/gateways", Access: Operator, handle: s.provisionGateways},

		// Named operators (operator:admin) and the bootstrap key's retirement.
		{Method: "POST", Pattern: "/v1/operators", Access: Operator, handle: s.createOperator},
		{Method: "GET", Pattern: "/v1/operators", Access: Operator, handle: s.listOperators},
		{Method: "GET", Pattern: "/v1/operators/{id}", Access: Operator, handle: s.getOperator},
		{Method: "POST", Pattern: "/v1/operators/{id}/rotate", Access: Operator, handle: s.rotateOperator},
		{Method: "POST", Pattern: "/v1/operators/{id}/revoke", Access: Operator, handle: s.revokeOperator},
		{Method: "POST", Pattern: "/v1/operators/bootstrap/retire", Access: Operator, handle: s.retireBootstrap},
		t("POST", "/v1/tenants/{tenant}/gateways/claim", credential.ScopeGatewaysWrite, s.claimGateway),

		t("POST", "/v1/tenants/{tenant}/enrollment-tokens", credential.ScopeGatewaysWrite, s.createEnrollmentToken),
		t("GET", "/v1/tenants/{tenant}/enrollment-tokens", credential.ScopeGatewaysRead, s.listEnrollmentTokens),
		t("POST", "/v1/tenants/{tenant}/enrollment-tokens/{id}/revoke", credential.ScopeGatewaysWrite, s.revokeEnrollmentToken),

		t("GET", "/v1/tenants/{tenant}/messages", credential.ScopeMessagesRead, s.listMessages),
		t("GET", "/v1/tenants/{tenant}/rejected", credential.ScopeMessagesRead, s.listRejected),
		// Erasure of one sensor's data (erase.go).
		t("DELETE", "/v1/tenants/{tenant}/devices/{tsmTuid}/messages", credential.ScopeMessagesErase, s.eraseDevice),

		t("POST", "/v1/tenants/{tenant}/api-keys", credential.ScopeKeysWrite, s.createAPIKey),
		t("GET", "/v1/tenants/{tenant}/api-keys", credential.ScopeKeysRead, s.listAPIKeys),
		t("GET", "/v1/tenants/{tenant}/api-keys/{id}", credential.ScopeKeysRead, s.getAPIKey),
		t("POST", "/v1/tenants/{tenant}/api-keys/{id}/revoke", credential.ScopeKeysWrite, s.revokeAPIKey),

		t("POST", "/v1/tenants/{tenant}/kms/rotate", credential.ScopeKeysWrite, s.rotateKMSKey),
		t("GET", "/v1/tenants/{tenant}/kms", credential.ScopeKeysRead, s.getKMSStatus),
		t("POST", "/v1/tenants/{tenant}/kms/reencrypt", credential.ScopeKeysWrite, s.reencryptKMS),

		// Key rotation (keyrotation.go): the tenant's CA by the tenant's
		// key holders, the platform's signing keys by the operator.
		t("POST", "/v1/tenants/{tenant}/ca/rotate", credential.ScopeKeysWrite, s.rotateCA),
		t("POST", "/v1/tenants/{tenant}/ca/retire", credential.ScopeKeysWrite, s.retireCA),
		t("GET", "/v1/tenants/{tenant}/ca", credential.ScopeKeysRead, s.getCA),
		{Method: "GET", Pattern: "/v1/system/keys", Access: Operator, handle: s.listPlatformKeys},
		{Method: "POST", Pattern: "/v1/system/jwt/rotate", Access: Operator, handle: s.rotatePlatformKey("jwt")},
		{Method: "POST", Pattern: "/v1/system/audit-key/rotate", Access: Operator, handle: s.rotatePlatformKey("audit")},

		t("POST", "/v1/tenants/{tenant}/oauth2-clients", credential.ScopeKeysWrite, s.createClient),
		t("GET", "/v1/tenants/{tenant}/oauth2-clients", credential.ScopeKeysRead, s.listClients),
		t("GET", "/v1/tenants/{tenant}/oauth2-clients/{id}", credential.ScopeKeysRead, s.getClient),
		t("POST", "/v1/tenants/{tenant}/oauth2-clients/{id}/revoke", credential.ScopeKeysWrite, s.revokeClient),

		delivers(t("POST", "/v1/tenants/{tenant}/integrations", credential.ScopeIntegrationsWrite, s.createIntegration)),
		t("GET", "/v1/tenants/{tenant}/integrations", credential.ScopeIntegrationsRead, s.listIntegrations),
		t("GET", "/v1/tenants/{tenant}/integrations/{id}", credential.ScopeIntegrationsRead, s.getIntegration),
		delivers(t("PATCH", "/v1/tenants/{tenant}/integrations/{id}", credential.ScopeIntegrationsWrite, s.updateIntegration)),
		t("DELETE", "/v1/tenants/{tenant}/integrations/{id}", credential.ScopeIntegrationsWrite, s.deleteIntegration),
		t("POST", "/v1/tenants/{tenant}/integrations/{id}/pause", credential.ScopeIntegrationsWrite, s.pauseIntegration(true)),
		t("POST", "/v1/tenants/{tenant}/integrations/{id}/resume", credential.ScopeIntegrationsWrite, s.pauseIntegration(false)),
		t("POST", "/v1/tenants/{tenant}/integrations/{id}/retry-now", credential.ScopeIntegrationsWrite, s.retryIntegrationNow()),
		t("POST", "/v1/tenants/{tenant}/integrations/{id}/test", credential.ScopeIntegrationsWrite, s.testIntegration),
		t("POST", "/v1/tenants/{tenant}/integrations/{id}/rotate-secret", credential.ScopeIntegrationsWrite, s.rotateSecret),
		t("GET", "/v1/tenants/{tenant}/integrations/{id}/dead-letters", credential.ScopeIntegrationsRead, s.listDeadLetters),
		delivers(t("POST", "/v1/tenants/{tenant}/integrations/{id}/dead-letters/redrive", credential.ScopeIntegrationsWrite, s.redrive)),
		t("GET", "/v1/tenants/{tenant}/stream", credential.ScopeMessagesRead, s.stream),

		// The operator reads and verifies the platform's log too (_system).
		system(t("GET", "/v1/tenants/{tenant}/audit", credential.ScopeAuditRead, s.listAudit)),
		system(t("GET", "/v1/tenants/{tenant}/audit/verify", credential.ScopeAuditRead, s.verifyAudit)),

		t("POST", "/v1/tenants/{tenant}/mesh/keys", credential.ScopeMeshWrite, s.mesh(s.rotateMeshKey)),
		t("GET", "/v1/tenants/{tenant}/mesh/keys", credential.ScopeMeshRead, s.mesh(s.getMeshKeys)),
		t("POST", "/v1/tenants/{tenant}/mesh/keys/export", credential.ScopeMeshWrite, s.mesh(s.exportMeshKeys)),
		t("GET", "/v1/tenants/{tenant}/mesh/nodes", credential.ScopeMeshRead, s.mesh(s.listMeshNodes)),
		t("POST", "/v1/tenants/{tenant}/mesh/nodes", credential.ScopeMeshWrite, s.mesh(s.addMeshNodes)),
		t("PUT", "/v1/tenants/{tenant}/mesh/nodes/{nodeId}", credential.ScopeMeshWrite, s.mesh(s.putMeshNode)),
		t("GET", "/v1/tenants/{tenant}/mesh/nodes/{nodeId}", credential.ScopeMeshRead, s.mesh(s.getMeshNode)),
		t("DELETE", "/v1/tenants/{tenant}/mesh/nodes/{nodeId}", credential.ScopeMeshWrite, s.mesh(s.deleteMeshNode)),
		// Firmware: the tenant's TUF repository, its images and rollouts;
		// gateways read their own tenant's over mutual TLS.
		t("GET", "/v1/tenants/{tenant}/firmware/online-keys", credential.ScopeFirmwareRead, s.firmwareOnlineKeys),
		t("POST", "/v1/tenants/{tenant}/firmware/repository", credential.ScopeFirmwareWrite, s.initFirmware),
		t("GET", "/v1/tenants/{tenant}/firmware/repository", credential.ScopeFirmwareRead, s.getFirmwareRepository),
		t("GET", "/v1/tenants/{tenant}/firmware/metadata/{file}", credential.ScopeFirmwareRead, s.getFirmwareMetadata),
		t("PUT", "/v1/tenants/{tenant}/firmware/images/{sha256}", credential.ScopeFirmwareWrite, s.putFirmwareImage),
		t("POST", "/v1/tenants/{tenant}/firmware/targets", credential.ScopeFirmwareWrite, s.publishFirmware),
		t("POST", "/v1/tenants/{tenant}/firmware/root", credential.ScopeFirmwareWrite, s.rotateFirmwareRoot),
		t("POST", "/v1/tenants/{tenant}/firmware/rollouts", credential.ScopeFirmwareWrite, s.createRollout),
		t("GET", "/v1/tenants/{tenant}/firmware/rollouts/{id}", credential.ScopeFirmwareRead, s.getRollout),
		{Method: "GET", Pattern: "/v1/gw/tuf/{file}", Access: Gateway, handle: s.gatewayTUF},
		{Method: "GET", Pattern: "/v1/gw/tuf/targets/{name}", Access: Gateway, handle: s.gatewayFirmwareImage},
		{Method: "POST", Pattern: "/v1/gw/firmware/report", Access: Gateway, handle: s.reportFirmware},
	}
}

// buildHandler assembles the mux of the routes serves takes: per-address
// limit, authentication (with failed-authentication throttling),
// per-credential limit, authorisation, then the route's handler. A route
// it leaves out (served on the other listener) is answered as if it did
// not exist: 404 like an unknown path, or 405 with Allow naming only this
// listener's methods where the path has routes here, so that the listener
// does not tell it exists.
func (s *Server) buildHandler(serves func(Route) bool) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes {
		if !serves(rt) {
			continue
		}
		mux.Handle(rt.Method+" "+rt.Pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.serveRoute(rt, w, r)
		}))
	}
	return s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			s.unrouted(w, r, mux)
			return
		}
		mux.ServeHTTP(w, r)
	}))
}

// onAdmin reports whether the admin listener (Config.AdminAddr) serves a
// route: the operator's routes, health, the spec and whoami.
func onAdmin(rt Route) bool {
	switch rt.Access {
	case Operator, Credential:
		return true
	case Public:
		return rt.Method == http.MethodGet // health and the spec, not enrollment or tokens
	}
	return false
}

// onPublic reports whether the public listener serves a route when an
// admin listener is set: all but the operator's routes.
func onPublic(rt Route) bool { return rt.Access != Operator }

func (s *Server) serveRoute(rt Route, w http.ResponseWriter, r *http.Request) {
	now := nowFunc()
	ip := clientIP(r)
	if ok, wait := s.limits.allowIP(ip, now); !ok {
		retryAfter(w, wait)
		writeError(w, r, s.log, ErrRateLimited.New())
		return
	}
	var p *Principal
	if rt.Access != Public {
		if locked, wait := s.limits.throttled(ip, now); locked {
			retryAfter(w, wait)
			writeError(w, r, s.log, ErrAuthThrottle.New())
			return
		}
		var tenant string
		var err error
		if rt.Access == Gateway {
			p, tenant, err = s.authenticateGateway(r)
		} else {
			p, tenant, err = s.authenticate(r)
			if err == nil {
				if err = s.operatorCertificate(r, p); err != nil {
					tenant = audit.SystemTenant
				}
			}
		}
		if err != nil {
			if k := fault.From(err).Kind(); k == fault.Unauthenticated {
				s.limits.failed(ip, now)
				s.recordRefusal(r, tenant, p, "api.auth.refuse", "route:"+rt.Method+" "+rt.Pattern, err, now)
			} else if ErrSourceNotAllowed.Is(err) {
				s.recordRefusal(r, tenant, p, "api.source.refuse", "route:"+rt.Method+" "+rt.Pattern, err, now)
			}
			writeError(w, r, s.log, err)
			return
		}
		if ok, wait := s.limits.allowCredential(p.Actor(), now); !ok {
			retryAfter(w, wait)
			writeError(w, r, s.log, ErrRateLimited.New())
			return
		}
		if err := s.authorize(rt, p, r); err != nil {
			writeError(w, r, s.log, err)
			return
		}
	}
	// A change is written ahead to the audit log, or refused (fail
	// closed: see auditrecord.go).
	r, err := s.writeAhead(rt, w, r, p)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	err = rt.handle(w, r, p)
	s.closeChange(r, p, err)
	if err != nil {
		writeError(w, r, s.log, err)
	}
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

type ctxKey int

const requestIDKey ctxKey = 1

func requestID(r *http.Request) string {
	if v, ok := r.Context().Value(requestIDKey).(string); ok {
		return v
	}
	return ""
}

// middleware sets the request id and the security headers of every answer
// and turns a panic into a 500 without detail.
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
		h.Set("X-Frame-Options", "DENY")
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, rid))
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "request_id", rid, "panic", v)
				writeError(w, r, s.log, fault.ErrInternal.New())
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	writeJSON(w, http.StatusOK, client.Health{Status: "ok"})
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	if s.deps.Ready != nil {
		if err := s.deps.Ready(r.Context()); err != nil {
			return ErrUnavailable.Wrap(err)
		}
	}
	writeJSON(w, http.StatusOK, client.Health{Status: "ready"})
	return nil
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(apispec.OpenAPI)
	return nil
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	if s.deps.Gatherer == nil {
		return ErrNotFound.New()
	}
	promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}
