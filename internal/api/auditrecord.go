package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/fault"
)

// record writes an audit entry; a failure to audit is logged, not hidden.
func (s *Server) record(ctx context.Context, r *http.Request, tenant string, p *Principal, action, target string, err error, detail map[string]string) {
	if s.deps.Audit == nil || tenant == "" {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = fault.From(err).Code()
	}
	ev := audit.Event{Actor: p.Actor(), Action: action, Target: target, Source: r.RemoteAddr, Outcome: outcome, Detail: detail}
	if _, aerr := s.deps.Audit.Append(context.WithoutCancel(ctx), tenant, ev); aerr != nil {
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
