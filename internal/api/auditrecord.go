package api

import (
	"context"
	"maps"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
)

// Audit of changes: fail closed
//
// Every change made through the API is audited, and a change whose audit
// entry cannot be written does not take effect. The dispatcher
// (serveRoute) does this for every change route, whatever its handler, so
// that a route added later is covered without a line of its own: a change
// route is any route whose method is not GET and whose access is Tenant or
// Operator.
//
// Once such a request is authenticated and authorised, and before its
// handler runs, the dispatcher appends a write-ahead entry to the audit
// log the change belongs to: action "api.change", target
// "route:METHOD PATTERN", outcome "started", with the request id and the
// path in its detail. The log is the path's tenant's when the path names a
// tenant the registry knows, else the platform's (audit.SystemTenant):
// operator changes without a tenant (creating a tenant, provisioning) and
// operator changes naming an unknown tenant. If that append fails, the
// handler does not run and the client gets 503 problem+json with code
// audit.unavailable, its request id, and Retry-After: nothing changed.
// A certificate renewal (POST /v1/reenroll, Gateway access) and a
// gateway's firmware report are written ahead the same way by their
// handlers, to the log of the tenant the certificate names (writeAheadTo).
// An OAuth2 access token is handed out only once its entry
// (credential.oauth2.token, naming the client, its scopes and the token's
// id) is written: it is one entry, since nothing happened before it.
//
// The handler then writes the outcome as before (record: its own action
// such as credential.apikey.create, outcome "ok" or the error code), with
// the same request id in its detail, so the two entries pair up. When the
// handler recorded nothing (a request refused by its own checks, such as
// a body that does not decode), the dispatcher writes the outcome itself,
// as action "api.change" with the handler's error code or "ok".
//
// What remains: the outcome entry is written after the change, so if the
// log fails between the two appends the change stands with only its
// "started" entry; that failure is logged and counted
// (iotransit_api_audit_failed_total), and the entry says who started what,
// when and from where. GET requests (reads) are never refused by this
// rule; reads of customer data are audited apart (readaudit.go).

// actionChange is the action of the dispatcher's own entries of a change.
const actionChange = "api.change"

// writeAheadTimeout bounds the write-ahead append of one change.
const writeAheadTimeout = 5 * time.Second

// changeTrail is the audit state of one change request, in its context.
type changeTrail struct {
	tenant, target string
	recorded       atomic.Bool // the handler wrote an entry (record)
}

type changeTrailKey struct{}

// isChange reports whether rt is a change route (see above).
func isChange(rt Route) bool {
	return rt.Method != http.MethodGet && (rt.Access == Tenant || rt.Access == Operator)
}

// changeLog names the audit log a change of r is written ahead to.
func (s *Server) changeLog(r *http.Request) string {
	t := r.PathValue("tenant")
	if t == "" || !registry.ValidTenantID(t) {
		return audit.SystemTenant
	}
	if _, ok := s.deps.Registry.Tenant(t); !ok {
		return audit.SystemTenant
	}
	return t
}

// writeAhead appends the write-ahead entry of a change route's request
// and returns the request to hand to the handler; it refuses the change
// with audit.unavailable when the entry cannot be written.
func (s *Server) writeAhead(rt Route, w http.ResponseWriter, r *http.Request, p *Principal) (*http.Request, error) {
	if s.deps.Audit == nil || !isChange(rt) {
		return r, nil
	}
	log := s.changeLog(r)
	if changeInSystemLog(rt) {
		log = audit.SystemTenant
	}
	return s.writeAheadTo(w, r, p, log, "route:"+rt.Method+" "+rt.Pattern)
}

// writeAheadTo appends the write-ahead entry of a change to tenant's log
// and returns the request to carry on with; it refuses the change with
// audit.unavailable when the entry cannot be written. The routes whose
// log the dispatcher cannot tell from the path (certificate issuance:
// the token or certificate names the tenant) call it themselves before
// they change anything.
func (s *Server) writeAheadTo(w http.ResponseWriter, r *http.Request, p *Principal, tenant, target string) (*http.Request, error) {
	if s.deps.Audit == nil {
		return r, nil
	}
	tr := &changeTrail{tenant: tenant, target: target}
	ev := audit.Event{Actor: p.Actor(), Action: actionChange, Target: tr.target, Source: r.RemoteAddr, Outcome: "started",
		Detail: map[string]string{"requestId": requestID(r), "path": r.URL.Path}}
	if err := s.appendOrRefuse(w, r, tenant, ev, "the change was not made"); err != nil {
		return r, err
	}
	return r.WithContext(context.WithValue(r.Context(), changeTrailKey{}, tr)), nil
}

// appendOrRefuse appends ev to tenant's log before what it records takes
// effect, and returns audit.unavailable (503, Retry-After) when it cannot:
// notDone says what did not happen then.
func (s *Server) appendOrRefuse(w http.ResponseWriter, r *http.Request, tenant string, ev audit.Event, notDone string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeAheadTimeout)
	defer cancel()
	if _, err := s.deps.Audit.Append(ctx, tenant, ev); err != nil {
		s.counters.auditFailed.WithLabelValues("write_ahead").Inc()
		retryAfter(w, 5*time.Second)
		return audit.ErrUnavailable.Wrap(err).WithDetail("%s: its audit entry could not be written; retry later", notDone)
	}
	return nil
}

// closeChange writes the outcome of a change whose handler recorded none.
func (s *Server) closeChange(r *http.Request, p *Principal, err error) {
	tr, ok := r.Context().Value(changeTrailKey{}).(*changeTrail)
	if !ok || tr.recorded.Load() {
		return
	}
	s.record(r.Context(), r, tr.tenant, p, actionChange, tr.target, err, nil)
}

// record writes an audit entry, with the request id in its detail; a
// failure to audit is logged and counted, not hidden. For a change, the
// dispatcher's write-ahead entry was written before (see above).
func (s *Server) record(ctx context.Context, r *http.Request, tenant string, p *Principal, action, target string, err error, detail map[string]string) {
	if s.deps.Audit == nil || tenant == "" {
		return
	}
	if tr, ok := r.Context().Value(changeTrailKey{}).(*changeTrail); ok {
		tr.recorded.Store(true)
	}
	outcome := "ok"
	if err != nil {
		outcome = fault.From(err).Code()
	}
	if rid := requestID(r); rid != "" {
		d := make(map[string]string, len(detail)+1)
		maps.Copy(d, detail)
		d["requestId"] = rid
		detail = d
	}
	ev := audit.Event{Actor: p.Actor(), Action: action, Target: target, Source: r.RemoteAddr, Outcome: outcome, Detail: detail}
	if _, aerr := s.deps.Audit.Append(context.WithoutCancel(ctx), tenant, ev); aerr != nil {
		s.counters.auditFailed.WithLabelValues("record").Inc()
		s.log.Error("audit append failed", "tenant_id", tenant, "action", action, "request_id", requestID(r), "error", aerr)
	}
}

// recordRefusal writes a refused authentication that names tenant to its
// audit log within the tenant's budget of refusals (Limits.AuditRefusals):
// anyone who knows a key or client id can cause one, and must not be able
// to flood the log. The entry written after some were left out says how
// many (refusalsLeftOut).
func (s *Server) recordRefusal(r *http.Request, tenant string, p *Principal, action, target string, err error, now time.Time) {
	if tenant == "" {
		return
	}
	write, leftOut := s.limits.auditRefusal(tenant, now)
	if !write {
		return
	}
	var detail map[string]string
	if leftOut > 0 {
		detail = map[string]string{"refusalsLeftOut": strconv.Itoa(leftOut)}
	}
	s.record(r.Context(), r, tenant, p, action, target, err, detail)
}
